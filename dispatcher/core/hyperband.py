"""Hyperband early termination — W&B's ``early_terminate: {type: hyperband, ...}`` — as pure building blocks.

Three parts, all purely computational (no I/O, no clock):

* :func:`parse_early_terminate` validates the block the way W&B's schema and engine do, so a file
  that sweepq accepts never makes ``sweeps.stop_runs`` raise later: ``type: hyperband``; either
  ``min_iter`` (integer ≥ 1) or ``max_iter`` (integer) with ``s`` (integer ≥ 1); ``eta`` > 1
  (default 3); ``strict`` (default ``true`` — W&B's schema default, which its engine fills in);
  no other key; a ``metric`` to compare. Beyond W&B's schema, on purpose: numbers are bounded
  (``min_iter``/``max_iter`` ≤ 10⁹, ``eta`` ≤ 1000: above that W&B's band loop overflows a float and
  raises), ``s`` must be whole (W&B's engine calls ``range(s)``), and the bands must not be empty
  (``max_iter ≥ eta``), which W&B's engine only reports when it first evaluates.
* :func:`bands` — the history lengths at which runs are compared, exactly as W&B's engine derives
  them: ``int(min_iter·eta^k)`` for k = 0…99, or ``int(max_iter/eta^k)`` for k = 1…s (while ≥ 1).
* :func:`stop` — which running trials to stop now, by **W&B's own engine** (``sweeps.stop_runs``,
  imported lazily: it needs numpy, see the ``bayes`` extra).

The iteration is the *position* in the metric's history (C1: the trainer writes the metric once
per evaluation — an epoch or ``eval_every`` steps — keyed by a 0-based position restored from the
checkpoint, so a retried attempt rewrites the same positions and never shifts them). At band ``b``
a running trial whose history holds at least ``b`` values is compared with the top ``1/eta``
quantile of every trial's value at position ``b - 1`` (``sorted(values)[int(len/eta)]``, values
negated for ``goal: maximize``); ``strict`` compares the trial's own value at ``b - 1``, otherwise
its best value so far. Positions with no value (not reported, or NaN/inf written as NULL) are
skipped, as W&B skips logged rows without a finite metric.

How the tick uses it (the contract for whoever wires it; the decision is pure, the effects are not):

1. Evaluate a sweep when any of its running trials reported a new position (each tick and on the
   trainer's wake message): build one :class:`TrialHistory` per trial that has reported anything —
   running ones from their metrics item (:func:`history_values`), terminal ones from the record kept
   when they ended (:func:`compact`, a few numbers per trial, so a finished trial's metrics item is
   never read again).
2. ``decisions = stop(config=sweep.raw, trials=...)`` — deterministic: the same histories give the
   same decisions, so a tick that crashes and reruns decides the same (or, with more data, a
   decision it is entitled to make anyway).
3. For each decision, first commit the intent — the trial goes RUNNING → STOPPING with the
   decision's ``reason``, conditional on its attempt (and the lease) — *then* delete the attempt's
   whole job (every rank; 404 = already gone), then record EARLY_STOPPED (terminal: not failed, not
   retried, counted as done, eligible for best trial on what it reached) and free the slot. A crash
   after the intent is repaired by the next tick: a STOPPING trial's job is deleted again. A trial
   that finished before the intent committed stays SUCCEEDED (the condition fails).
4. When a trial ends (any terminal state), keep ``compact(spec, values)`` for it (the tick keeps it
   as the ``bands`` of the trial item's ``metric_summary``, :mod:`dispatcher.core.history`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_ITER = 10**9
MAX_ETA = 1000.0


def _whole(value: Any, field: str) -> int:
    """An int, or a float with no fraction (W&B's schema ``integer`` takes ``27.0``); never a bool
    or a string (pydantic would turn ``"3"`` into 3; W&B's schema refuses it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field}: {value!r:.40} is not a whole number — write e.g. {field.split('.')[-1]}: 3")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{field}: {value!r} is not a whole number — write e.g. {field.split('.')[-1]}: 3")
    return int(value)


class HyperbandSpec(BaseModel):
    """``early_terminate`` of ``type: hyperband``, validated and with W&B's defaults filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["hyperband"]
    min_iter: int | None = Field(default=None, ge=1, le=MAX_ITER, description="First band (history length).")
    max_iter: int | None = Field(default=None, ge=1, le=MAX_ITER, description="Last band; bands work back by eta.")
    s: int | None = Field(default=None, ge=1, le=1000, description="Number of bands below max_iter.")
    # int | float keeps an int an int: the bands are then W&B's exact integer products (3**34 is not
    # 3.0**34 in floating point).
    eta: int | float = Field(default=3, gt=1, le=MAX_ETA, description="Keep the top 1/eta at each band.")
    strict: bool = Field(default=True, description="Compare the value at the band (else the best so far).")

    @field_validator("min_iter", "max_iter", "s", mode="before")
    @classmethod
    def _ints(cls, value: Any, info: Any) -> Any:
        return None if value is None else _whole(value, f"early_terminate.{info.field_name}")

    @field_validator("eta", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"early_terminate.eta: {value!r:.40} is not a number — write e.g. eta: 3")
        return value

    @field_validator("strict", mode="before")
    @classmethod
    def _bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"early_terminate.strict: {value!r:.40} is not true or false")
        return value


_BOUNDS = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤", "less_than": "<"}
_WHY = {
    "eta": "eta is the factor between bands (W&B's default 3); at each band the top 1/eta go on",
    "min_iter": "min_iter is the first band, counted in reported evaluations",
    "max_iter": "max_iter is the last band, counted in reported evaluations",
    "s": "s is the number of bands below max_iter",
}


def bands(spec: HyperbandSpec) -> tuple[int, ...]:
    """History lengths at which runs are compared, as ``sweeps.hyperband_stopping`` computes them."""
    out: list[int] = []
    band: int | float
    if spec.max_iter is not None:  # W&B's engine tries max_iter first when both are given
        band = spec.max_iter
        for _ in range(spec.s or 0):
            band /= spec.eta
            if band < 1:
                break
            out.append(int(band))
        return tuple(sorted(out))
    band = spec.min_iter or 1
    for _ in range(100):
        out.append(int(band))
        band *= spec.eta
    return tuple(out)


def parse_early_terminate(raw: Any, *, has_metric: bool) -> tuple[HyperbandSpec | None, list[str]]:
    """Validate ``early_terminate``. Returns ``(spec, problems)``; never raises."""
    where = "early_terminate"
    if not isinstance(raw, dict):
        return None, [f"{where}: must be a mapping, e.g. early_terminate: {{type: hyperband, min_iter: 3}}"]
    kind = raw.get("type")
    if kind != "hyperband":
        shown = "missing" if kind is None else f"{kind!r:.40} is not a type"
        return None, [f"{where}.type: {shown} — W&B's only early termination is type: hyperband"]
    problems: list[str] = []
    if "min_iter" not in raw and not ("max_iter" in raw and "s" in raw):
        problems.append(
            f"{where}: give min_iter (the first band, e.g. min_iter: 3), or max_iter with s "
            "(e.g. max_iter: 27, s: 2) — W&B's schema needs one of the two"
        )
    try:
        spec = HyperbandSpec.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"{where}.{loc}: unknown key — known keys: eta, max_iter, min_iter, s, strict, type"
            elif err["type"] in _BOUNDS:
                bound = next(iter((err.get("ctx") or {}).values()), "?")
                msg = f"{where}.{loc}: {err.get('input')!r:.40} must be {_BOUNDS[err['type']]} {bound} — {_WHY[loc]}"
            elif not msg.startswith(where):
                msg = f"{where}.{loc}: {err.get('input')!r:.40} — {msg.lower()}"
            problems.append(msg)
        return None, problems
    if problems:
        return None, problems
    if not bands(spec):
        problems.append(
            f"{where}: max_iter {spec.max_iter} / eta {spec.eta:g} is below 1, so there are no bands — raise "
            "max_iter or lower eta (W&B's engine refuses this when it first evaluates)"
        )
    if not has_metric:
        problems.append("metric: missing — early_terminate compares the metric; add metric: {name: ..., goal: ...}")
    return (spec, problems) if not problems else (None, problems)


# -- histories -----------------------------------------------------------------------------------

def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def history_values(history: Mapping[str, Any] | None, metric: str) -> tuple[float | None, ...]:
    """The metric's values by position from a C1 ``history`` map (``{"0": {"eval/loss": 0.7}, ...}``).

    Position ``p`` of the result is the value at position ``p``; a position that was not written,
    or holds NULL / a non-number, is ``None``. Keys that are not non-negative integers are ignored.
    """
    by_position: dict[int, float | None] = {}
    for key, row in (history or {}).items():
        text = str(key)
        if not text.isdigit() or not isinstance(row, Mapping):
            continue
        by_position[int(text)] = _finite(row.get(metric))
    if not by_position:
        return ()
    return tuple(by_position.get(p) for p in range(max(by_position) + 1))


@dataclass(frozen=True)
class TrialHistory:
    """One trial as the engine sees it: its index, whether it is running now, and its metric by position."""

    index: int
    running: bool
    values: tuple[float | None, ...]


def compact(spec: HyperbandSpec, values: Sequence[float | None]) -> dict[int, float]:
    """What a *terminal* trial contributes from now on: its value at each band it reached.

    ``{band: value}``, a few entries (keep it as JSON text: a finite metric can exceed the range of a
    DynamoDB number). W&B's engine reads a finished run's history only at the band
    positions (of the history with gaps skipped), so :meth:`TrialHistory` rebuilt by
    :func:`from_compact` gives exactly the same thresholds as the whole history.
    """
    reported = [v for v in values if v is not None]
    return {band: reported[band - 1] for band in bands(spec) if band <= len(reported)}


def from_compact(index: int, record: Mapping[Any, float]) -> TrialHistory:
    """A terminal trial rebuilt from :func:`compact` (keys may be strings after a JSON round trip)."""
    by_band = {int(k): float(v) for k, v in record.items()}
    if not by_band:
        return TrialHistory(index=index, running=False, values=())
    length = max(by_band)
    # Positions between bands are never read for a trial that is not running; any finite number
    # keeps the later ones in place.
    filler = next(iter(by_band.values()))
    return TrialHistory(index=index, running=False, values=tuple(by_band.get(p + 1, filler) for p in range(length)))


# -- decisions -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StopDecision:
    """Stop trial ``index``: at band ``band`` its ``value`` is worse than ``threshold``."""

    index: int
    band: int
    value: float
    threshold: float
    reason: str


def engine_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What W&B's engine reads for stopping: ``metric``, and ``early_terminate`` as validated
    (``s: 2.0`` becomes 2 — the engine's ``range(s)`` takes no float — and defaults are filled)."""
    spec = HyperbandSpec.model_validate(config["early_terminate"])
    return {
        "method": config.get("method", "grid"),
        "metric": dict(config["metric"]),
        "early_terminate": spec.model_dump(exclude_none=True),
    }


def stop(*, config: Mapping[str, Any], trials: Sequence[TrialHistory]) -> list[StopDecision]:
    """Which running trials W&B's Hyperband stops now. ``config`` is the validated sweep file.

    Purely computational (the engine is called on copies); deterministic for the same input.
    """
    from sweeps import RunState, SweepRun, stop_runs  # lazy: numpy/scipy (the `bayes` extra)

    cfg = engine_config(config)
    metric = cfg["metric"]["name"]
    maximize = cfg["metric"].get("goal") == "maximize"
    runs = [
        SweepRun(
            name=str(t.index),
            state=RunState.running if t.running else RunState.finished,
            history=[{metric: v} if v is not None else {} for v in t.values],
        )
        for t in trials
    ]
    stopped = stop_runs(cfg, runs)  # sets early_terminate_info on our own fresh runs only
    out = []
    for run in stopped:
        info = run.early_terminate_info or {}
        history = [(-v if maximize else v) for v in run.metric_history(metric, filter_invalid=True)]
        reached = [(b, t) for b, t in zip(info.get("bands", []), info.get("thresholds", []), strict=False) if b <= len(history)]
        band, threshold = reached[-1]
        strict = cfg["early_terminate"]["strict"] is True
        value = history[band - 1] if strict else min(history)
        sign = -1.0 if maximize else 1.0
        value, threshold = sign * float(value), sign * float(threshold)
        word = "best so far" if not strict else f"value at position {band - 1}"
        reason = (
            f"hyperband: {metric} {word} {value:.6g} is worse than the band-{band} threshold {threshold:.6g} "
            f"(top 1/{cfg['early_terminate']['eta']:g} of trials at position {band - 1})"
        )
        out.append(StopDecision(index=int(run.name or 0), band=band, value=value, threshold=threshold, reason=reason))
    return sorted(out, key=lambda d: d.index)
