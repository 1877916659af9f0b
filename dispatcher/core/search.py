"""``method: bayes`` — the next trials' parameters from W&B's own engine, as a pure building block.

:func:`suggest` rebuilds W&B ``SweepRun``s from what sweepq stores (:class:`Observation`: finished
trials with their metric, failed / stopped ones — W&B's ``metric.impute`` decides what they count
as — and the running or claimed ones, which the engine "fantasises" so it does not suggest the same
point twice) and asks ``sweeps.next_runs`` for one suggestion per trial index. The engine is
W&B's: a Gaussian process (Matérn ν=1.5) fitted on at most 100 finished trials drawn at random,
expected improvement over 1,000 random candidates. It samples randomly, so :func:`suggest` seeds
numpy's generator from ``seed`` for the call (and restores it): the same input and seed give the
same suggestions. Determinism is a convenience; exactly-once does not depend on it (below).

``sweeps`` pulls numpy, scipy and scikit-learn: it is imported only when a suggestion is made and
is the optional extra ``sweepq[bayes]``; :func:`engine_missing` lets intake refuse a bayes or
hyperband sweep on a dispatcher without it, instead of failing the sweep later.

How the tick must use it (exactly once, whatever crashes or overlaps):

1. Only for free slots: the planner gives the sweep ``k`` launches; the fresh indices are
   ``cursor … cursor+k-1``, never ≥ ``total`` (``run_cap``) — the cost per tick is bounded by the
   launches it makes, never by the sweep's size: one GP fit per suggestion (two while trials are
   running) on at most 100 finished trials, measured at 0.25–3 s per suggestion on a shared 2-core
   machine whether 10 or 1,000 trials have finished (``benchmarks/bayes.py``; nearly all of it is
   scikit-learn's kernel optimisation inside W&B's engine). Bound the suggestions one tick makes
   (a few per sweep, and a time budget) so a Lambda tick stays inside its lease.
2. ``observations`` = every trial of the sweep that has a trial item: terminal ones
   (:func:`observation` from the item: state, persisted params, the metric the trainer reported,
   its history by position) and the live ones (claimed, launched, running, waiting to retry).
   Terminal observations never change: a tick may keep them (:meth:`Observation.to_item`) rather
   than re-reading finished trials.
3. ``suggestions = suggest(sweep, observations=..., indices=..., seed=default_seed(sweep, cursor))``.
4. For each suggestion, in index order: the **claim** transaction that reserves the index (cursor
   condition + ``attribute_not_exists`` on the trial item + lease check) also writes
   ``params = suggestion.params`` on the trial item. Only a committed claim's parameters are
   ever launched; a claim that loses (another tick took the index) drops its suggestion.
5. Launch and every retry read the parameters from the trial item (``render_command(sweep,
   params)``), never from a new suggestion: a crash between claim and create re-creates the job
   with the stored parameters; a retried attempt reuses them. :meth:`Sweep.trial` raises for
   bayes precisely so nothing can compute them any other way.

An engine failure (the GP cannot be fitted on these observations) raises :class:`EngineError`,
permanent for this input: the tick fails the sweep with its reason rather than retrying forever.
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from dispatcher.core.errors import PermanentError
from dispatcher.core.spec import Sweep

Outcome = Literal["finished", "failed", "stopped", "cancelled", "running", "pending"]
# sweepq's outcome → W&B's RunState. A stopped (hyperband) trial is what W&B records for a run its
# agent killed; failed and killed runs get metric.impute (default worst) in W&B's GP.
RUN_STATES: dict[str, str] = {
    "finished": "finished",
    "failed": "failed",
    "stopped": "killed",
    "cancelled": "killed",
    "running": "running",
    "pending": "pending",
}
# sweepq's trial states (core.records.TrialState, and the early-stop states the tick adds) → outcome.
# A trial waiting for its retry, or lost and about to be retried, keeps its parameters: it is
# pending, so the engine fantasises it rather than suggesting its point again.
OUTCOMES: dict[str, Outcome] = {
    "SUCCEEDED": "finished",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
    "EARLY_STOPPED": "stopped",
    "STOPPING": "stopped",
    "RUNNING": "running",
    "PENDING": "pending",
    "LAUNCHED": "pending",
    "WAITING": "pending",
    "LOST": "pending",
}
_NUMPY_LOCK = threading.Lock()  # the engine draws from numpy's global generator: one call at a time


class EngineError(PermanentError):
    """W&B's engine could not make a suggestion from these observations."""


def engine_missing() -> str | None:
    """``None`` when W&B's engine can be imported here, else the reason and the fix."""
    try:
        with warnings.catch_warnings():  # sweeps 0.3 still spells a pydantic v1 config key: not ours to fix
            warnings.filterwarnings("ignore", message="Valid config keys have changed in V2", category=UserWarning)
            import sweeps  # noqa: F401
    except ImportError as exc:
        return (
            f"W&B's search engine is not installed on this dispatcher ({exc.name or exc}) — install the extra: "
            "pip install 'sweepq[bayes]' (method: bayes and early_terminate need it)"
        )
    return None


def outcome_of(state: str) -> Outcome:
    """The :data:`Outcome` of a stored trial state (``"SUCCEEDED"`` → ``"finished"``, ...)."""
    try:
        return OUTCOMES[str(state)]
    except KeyError:
        raise ValueError(f"trial state {state!r} has no bayes outcome — one of {', '.join(OUTCOMES)}") from None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Observation:
    """One trial as W&B's engine sees it. ``params`` nested as persisted with the claim; ``metric``
    the value the trainer last reported (W&B's summary); ``history`` the metric by position."""

    index: int
    params: Mapping[str, Any]
    outcome: Outcome
    metric: float | None = None
    history: tuple[float | None, ...] = field(default=())

    def to_item(self) -> dict[str, Any]:
        """A compact JSON-able record (for a tick that keeps terminal observations). Store it as JSON
        text, as trial parameters are: a metric such as 1e200 is a valid float but beyond the range
        of a DynamoDB number (±9.99e125)."""
        return {"i": self.index, "p": dict(self.params), "o": self.outcome, "m": self.metric, "h": list(self.history)}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> "Observation":
        return cls(index=int(item["i"]), params=dict(item["p"]), outcome=item["o"], metric=_finite(item.get("m")),
                   history=tuple(_finite(v) for v in item.get("h") or ()))


def observation(
    index: int, params: Mapping[str, Any], outcome: Outcome, *, metric_name: str,
    metrics: Mapping[str, Any] | None = None, history: Mapping[str, Any] | None = None,
) -> Observation:
    """An :class:`Observation` from a trial's stored parts: ``metrics`` (latest values, W&B summary
    keys) and ``history`` (C1: ``{"<position>": {metric: value}}``) as the trainer writes them."""
    from dispatcher.core.hyperband import history_values

    if outcome not in RUN_STATES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(RUN_STATES)}")
    return Observation(
        index=index,
        params=params,
        outcome=outcome,
        metric=_finite((metrics or {}).get(metric_name)),
        history=history_values(history, metric_name),
    )


@dataclass(frozen=True)
class Suggestion:
    """Parameters for trial ``index`` (nested like the file), and W&B's ``search_info`` for them."""

    index: int
    params: dict[str, Any]
    info: dict[str, Any]


def default_seed(sweep: Sweep, first_index: int) -> int:
    """A seed per (sweep, first index of the call): a rerun of the same claim suggests the same."""
    digest = hashlib.sha256(f"{sweep.expansion.seed}:bayes:{first_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def engine_config(sweep: Sweep) -> dict[str, Any]:
    """What W&B's bayes reads: ``method``, ``metric`` (with ``impute``…), ``parameters``."""
    if sweep.method != "bayes" or sweep.spec.metric is None:
        raise ValueError("engine_config needs a validated bayes sweep (it has a metric)")
    return {
        "method": "bayes",
        "metric": sweep.spec.metric.model_dump(exclude_none=True),
        "parameters": _fixed_degenerate(sweep.raw["parameters"]),
    }


def _fixed_degenerate(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` with each ``sigma: 0`` normal made the constant it is (W&B's engine samples
    NaN there; :mod:`dispatcher.core.params` promises ``mu``, ``exp(mu)`` for log-normal)."""
    out: dict[str, Any] = {}
    for name, cfg in parameters.items():
        if isinstance(cfg, Mapping) and isinstance(cfg.get("parameters"), Mapping):
            out[name] = {**cfg, "parameters": _fixed_degenerate(cfg["parameters"])}
        elif isinstance(cfg, Mapping) and cfg.get("sigma") == 0 and "normal" in str(cfg.get("distribution", "")):
            mu = float(cfg.get("mu", 0.0))
            out[name] = {"value": math.exp(mu) if "log_normal" in str(cfg["distribution"]) else mu}
        else:
            out[name] = cfg
    return out


def _non_finite(params: Mapping[str, Any], prefix: str = "") -> str | None:
    for key, value in params.items():
        if isinstance(value, Mapping):
            found = _non_finite(value, f"{prefix}{key}.")
            if found:
                return found
        elif isinstance(value, float) and not math.isfinite(value):
            return f"{prefix}{key} = {value}"
    return None


def _plain(value: Any) -> Any:
    """numpy scalars and 0-d arrays → Python values (JSON, DynamoDB, argv)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _run(obs: Observation, metric_name: str) -> Any:
    from sweeps import SweepRun

    summary = {metric_name: obs.metric} if obs.metric is not None else {}
    return SweepRun(
        name=str(obs.index),
        state=RUN_STATES[obs.outcome],
        config={key: {"value": value} for key, value in obs.params.items()},
        summary_metrics=summary,
        history=[{metric_name: v} if v is not None else {} for v in obs.history],
    )


def suggest(sweep: Sweep, *, observations: Sequence[Observation], indices: Sequence[int], seed: int) -> list[Suggestion]:
    """Suggestions for ``indices`` (in order), from W&B's engine given ``observations``.

    Purely computational: numpy's global generator is seeded for the call and restored after it.
    """
    if not indices:
        return []
    config = engine_config(sweep)
    taken = {o.index for o in observations} & set(indices)
    if taken:
        raise ValueError(f"trial indices {sorted(taken)} already have parameters: read them, never re-suggest")
    import numpy as np
    from sweeps import next_runs

    runs = [_run(o, config["metric"]["name"]) for o in sorted(observations, key=lambda o: o.index)]
    with _NUMPY_LOCK:
        state = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            suggested = next_runs(config, runs, validate=False, n=len(indices))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            raise EngineError(f"method bayes: W&B's engine could not suggest trial {indices[0]}: {exc}") from exc
        finally:
            np.random.set_state(state)
    if len(suggested) != len(indices):
        raise EngineError(f"method bayes: W&B's engine suggested {len(suggested)} runs for {len(indices)} trials "
                          f"({indices[0]}…); the sweep waits and asks again next tick")
    out = []
    for index, run in zip(indices, suggested, strict=True):
        params = {key: _plain(cfg["value"]) for key, cfg in run.config.items()}
        bad = _non_finite(params)
        if bad:  # never launched as --x=inf: the sweep fails this tick with the reason, visible in status
            raise EngineError(f"method bayes: W&B's engine suggested {bad} for trial {index} — narrow that "
                              "parameter's range (or its mu/sigma)")
        info = {k: (_plain(v) if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in (run.search_info or {}).items()}
        out.append(Suggestion(index=index, params=params, info=info))
    return out
