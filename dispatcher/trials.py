"""From stored sweep data to what backends and the store need: records, requests, items."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Mapping

from dispatcher.core.command import render_command
from dispatcher.core.errors import PermanentError
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.jobs import LaunchRequest
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState
from dispatcher.core.spec import Sweep, validate_sweep
from dispatcher.settings import Settings


def stored_params(item: Mapping[str, Any] | None, *, where: str) -> dict[str, Any]:
    """The parameters persisted on a trial item by its claim (JSON text). A trial item without
    them cannot be launched: a :class:`PermanentError` naming it (the attempt fails with it)."""
    text = (item or {}).get("params")
    try:
        params = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        params = None
    if not isinstance(params, dict):
        raise PermanentError(f"{where}: the trial item holds no stored parameters (params {str(text)[:40]!r}) — "
                             "its claim wrote them; the item was changed outside sweepq")
    return params


def record_from_item(item: Mapping[str, Any]) -> SweepRecord:
    launch = LaunchSettings.model_validate(json.loads(item["launch"]))
    live = {int(k): LiveTrial.from_item(int(k), v) for k, v in (item.get("live") or {}).items()}
    return SweepRecord(
        sweep_id=item["sweep_id"],
        state=SweepState(item["state"]),
        total=int(item.get("total", 0)),
        cursor=int(item.get("cursor", 0)),
        launch=launch,
        kind=item.get("kind") or launch.kind or "pytorchjob",
        submitted_at=str(item.get("submitted_at", "")),
        live=live,
        succeeded=int(item.get("succeeded", 0)),
        failed=int(item.get("failed", 0)),
        cancelled=int(item.get("cancelled", 0)),
        early_stopped=int(item.get("early_stopped", 0)),
        cancel_requested=bool(item.get("cancel_requested", False)),
        metric_name=item.get("metric_name"),
        metric_goal=item.get("metric_goal", "minimize"),
        best=item.get("best"),
        reason=str(item.get("reason", "")),
        scope=item.get("scope"),
        namespace=item.get("namespace"),
        failures=int(item.get("failures", 0)),
        submitter=str(item.get("sender_id") or ""),
        team=item.get("team"),
        paused=bool(item.get("paused", False)),
        template_resource=item.get("template_resource"),
        requested=LaunchSettings.model_validate(json.loads(item["requested"])) if item.get("requested") else None,
        policy_hold=str(item.get("policy_hold") or ""),
        held=str((item.get("held") or {}).get("reason", "")) if isinstance(item.get("held"), dict) else "",
    )


class SpecCache:
    """Specs are immutable once stored: parse each once per process (warm Lambda / loop). Safe to
    share between threads (the tick's creates run on several): two that miss the same spec both
    load it, and the cache keeps one."""

    MAX_SIZE = 20_000  # specs kept at most, whatever the number of active sweeps

    def __init__(self, loader: Any, size: int = 512) -> None:
        self._loader = loader
        self._items: OrderedDict[str, Sweep] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def hold(self, count: int) -> None:
        """Keep at least ``count`` specs (the tick's active sweeps, with a margin): every tick
        touches every active sweep's spec (its method, its early termination), so a cache smaller
        than the active sweeps evicts each before its next use and reads every spec every tick —
        2,000 ``GetItem`` calls per tick at 2,000 sweeps (benchmarks/tick.py found it). Grows
        only, up to :attr:`MAX_SIZE` (a parsed spec is a few KB)."""
        with self._lock:
            self._size = max(self._size, min(self.MAX_SIZE, count + count // 4))

    def get(self, sweep_id: str) -> Sweep:
        with self._lock:
            cached = self._items.get(sweep_id)
            if cached is not None:
                self._items.move_to_end(sweep_id)
                return cached
        raw = self._loader(sweep_id)
        if raw is None:
            raise KeyError(f"sweep {sweep_id} has no stored spec")
        # Accepted sweeps were validated at intake; the grid limit applied then.
        sweep = validate_sweep(raw, source=sweep_id, max_grid_size=2**62)
        with self._lock:
            self._items[sweep_id] = sweep
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return sweep


# Names sweepq owns in every trial's environment: a sender's ``sweepq.env`` can never set them
# (these exact names, and any SWEEPQ_* name); the operator policy may refuse more at intake.
OWNED_NAMES = frozenset({"SWEEP_ID", "TRIAL_INDEX", "TRIAL_ID", "POD_NAME", "WANDB_RUN_GROUP", "WANDB_RUN_ID",
                         "WANDB_NAME", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_SWEEP_ID", "WANDB_API_KEY"})
OWNED_PREFIXES = ("SWEEPQ_",)


def owned_name(name: str) -> bool:
    return name in OWNED_NAMES or name.startswith(OWNED_PREFIXES)


def trial_env(
    settings: Settings, sweep: Sweep, sweep_id: str, launch: LaunchSettings, index: int, attempt: int,
    wake_queue_url: str | None = None,
) -> dict[str, str]:
    """The environment contract with the trainer (CONTRACTS C2; the README's table).

    The sender's ``launch.env`` is applied first and sweepq's own variables always win: a sweep
    cannot set ``SWEEP_ID``, ``TRIAL_ID``, ``SWEEPQ_*`` or the W&B identity of its trials.
    A sweep registered with W&B (``launch.wandb_sweep_id``) gives every trial ``WANDB_SWEEP_ID`` and
    the ``WANDB_ENTITY``/``WANDB_PROJECT`` W&B filed it under, so each run appears under that sweep.
    Trials get no handle on the sweep table or the sweep queue: metrics go to
    ``SWEEPQ_METRICS_TABLE`` and the "trial finished" trigger to ``SWEEPQ_WAKE_QUEUE_URL``.
    """
    tid = trial_id(sweep_id, index)
    env = {name: value for name, value in launch.env.items() if not owned_name(name)}
    ours = {
        "SWEEP_ID": sweep_id,
        "TRIAL_INDEX": str(index),
        "TRIAL_ID": tid,
        "SWEEPQ_ATTEMPT": str(attempt),
        "SWEEPQ_JOB_NAME": job_name(sweep_id, index, attempt),
        "SWEEPQ_KIND": launch.kind or settings.backend,
        "SWEEPQ_METRICS_TABLE": str(settings.metrics_table),
        "WANDB_RUN_GROUP": sweep_id,
        "WANDB_RUN_ID": tid,
        "WANDB_NAME": tid,
    }
    project = sweep.spec.project or settings.wandb_project
    entity = sweep.spec.entity
    if launch.wandb_sweep_id:
        # The W&B sweep producer submit registered: the run attaches to it at wandb.init, and only
        # in the entity/project W&B filed the sweep under (validated plain names, like the id).
        ours["WANDB_SWEEP_ID"] = launch.wandb_sweep_id
        project = launch.wandb_project or project
        entity = launch.wandb_entity or entity
    if project:
        ours["WANDB_PROJECT"] = project
    if entity:
        ours["WANDB_ENTITY"] = entity
    if settings.output_dir:
        ours["SWEEPQ_OUTPUT_DIR"] = settings.output_dir
    elif launch.output_pvc:
        ours["SWEEPQ_OUTPUT_DIR"] = "/outputs"  # where the kube backends mount the PVC
    wake_url = wake_queue_url or settings.wake_queue_url
    if settings.wake and wake_url:
        ours["SWEEPQ_WAKE_QUEUE_URL"] = wake_url
    env.update(ours)
    return env


def launch_request(
    settings: Settings,
    sweep: Sweep,
    sweep_id: str,
    launch: LaunchSettings,
    index: int,
    attempt: int,
    wake_queue_url: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
) -> LaunchRequest:
    """The request for one trial attempt. Also used by ``producer submit --dry-run``.
    ``wake_queue_url`` overrides ``settings.wake_queue_url`` (the dispatcher passes the URL it
    resolved from ``SWEEPQ_WAKE_QUEUE_NAME``). ``params``: the trial's parameters as stored with
    its claim (bayes: the engine's suggestion); without them they are ``sweep.trial(index)``,
    which refuses a bayes trial (its parameters exist only on its trial item)."""
    params = dict(params) if params is not None else sweep.trial(index)
    if any(owned_name(name) for name in launch.env):
        # backends merge launch.env under the request's env: hand them only the sender's own names
        launch = launch.model_copy(update={"env": {k: v for k, v in launch.env.items() if not owned_name(k)}})
    return LaunchRequest(
        sweep_id=sweep_id,
        trial_index=index,
        trial_id=trial_id(sweep_id, index),
        attempt=attempt,
        job_name=job_name(sweep_id, index, attempt),
        namespace=settings.namespace,
        params=params,
        command=render_command(sweep, params),
        launch=launch,
        env=trial_env(settings, sweep, sweep_id, launch, index, attempt, wake_queue_url),
    )
