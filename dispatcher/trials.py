"""From stored sweep data to what backends and the store need: records, requests, items."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Mapping

from dispatcher.core.command import render_command
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.jobs import LaunchRequest
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState
from dispatcher.core.spec import Sweep, validate_sweep
from dispatcher.settings import Settings


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
        cancel_requested=bool(item.get("cancel_requested", False)),
        metric_name=item.get("metric_name"),
        metric_goal=item.get("metric_goal", "minimize"),
        best=item.get("best"),
        reason=str(item.get("reason", "")),
    )


class SpecCache:
    """Specs are immutable once stored: parse each once per process (warm Lambda / loop)."""

    def __init__(self, loader: Any, size: int = 512) -> None:
        self._loader = loader
        self._items: OrderedDict[str, Sweep] = OrderedDict()
        self._size = size

    def get(self, sweep_id: str) -> Sweep:
        if sweep_id in self._items:
            self._items.move_to_end(sweep_id)
            return self._items[sweep_id]
        raw = self._loader(sweep_id)
        if raw is None:
            raise KeyError(f"sweep {sweep_id} has no stored spec")
        # Accepted sweeps were validated at intake; the grid limit applied then.
        sweep = validate_sweep(raw, source=sweep_id, max_grid_size=2**62)
        self._items[sweep_id] = sweep
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return sweep


def trial_env(
    settings: Settings, sweep: Sweep, sweep_id: str, launch: LaunchSettings, index: int, attempt: int, queue_url: str | None
) -> dict[str, str]:
    """The environment contract with the trainer (see trainer/README or the README's table)."""
    tid = trial_id(sweep_id, index)
    env = {
        "SWEEP_ID": sweep_id,
        "TRIAL_INDEX": str(index),
        "TRIAL_ID": tid,
        "SWEEPQ_ATTEMPT": str(attempt),
        "SWEEPQ_TABLE": settings.table,
        "WANDB_RUN_GROUP": sweep_id,
        "WANDB_RUN_ID": tid,
        "WANDB_NAME": tid,
    }
    project = sweep.spec.project or settings.wandb_project
    if project:
        env["WANDB_PROJECT"] = project
    if sweep.spec.entity:
        env["WANDB_ENTITY"] = sweep.spec.entity
    if settings.output_dir:
        env["SWEEPQ_OUTPUT_DIR"] = settings.output_dir
    elif launch.output_pvc:
        env["SWEEPQ_OUTPUT_DIR"] = "/outputs"  # where the kube backends mount the PVC
    if settings.wake and queue_url:
        env["SWEEPQ_QUEUE_URL"] = queue_url
    env.update(launch.env)
    return env


def launch_request(
    settings: Settings,
    sweep: Sweep,
    sweep_id: str,
    launch: LaunchSettings,
    index: int,
    attempt: int,
    queue_url: str | None = None,
) -> LaunchRequest:
    """The request for one trial attempt. Also used by ``producer submit --dry-run``."""
    params = sweep.trial(index)
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
        env=trial_env(settings, sweep, sweep_id, launch, index, attempt, queue_url),
    )
