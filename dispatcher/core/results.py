"""Trial results as a researcher reads them (Ray Tune style). Purely computational, ``now`` injected.

From the trial items of a sweep to rows: the swept parameters as their own columns (dotted names
for nested groups, ``optimizer.lr``), the sweep's metric, its epoch, how long the trial has run,
and the summary of why it failed. Shared by ``producer status --trials`` and ``dispatcher demo``.

* Numbers are rounded for reading (:func:`fmt_number`: 4 significant digits, ``1.971e-05``), so
  a column of learning rates fits 80 columns; the JSON output keeps the exact values.
* A metric is **partial** when its trial did not succeed (running, waiting, cancelled, failed):
  it is the latest value the trainer reported, not a final one — the text marks it with ``*``.
* ``--sort`` orders by a column; ``--top N`` keeps the N best trials by the metric (ties by index).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from dispatcher.core.failures import parse_failure

SORT_KEYS = ("index", "metric", "state", "attempt", "elapsed", "epoch")
PARTIAL_MARK = "*"
PARTIAL_NOTE = "* not final: the latest value of a trial that did not succeed (running, stopped, cancelled or failed)"


@dataclass(frozen=True)
class TrialRow:
    index: int
    trial_id: str
    state: str
    attempt: int
    params: Mapping[str, Any]  # nested, as in the sweep file
    flat: Mapping[str, Any]  # dotted names → values
    metric: float | None = None
    partial: bool = False  # the metric is not a final one
    epoch: float | None = None
    elapsed_s: float | None = None
    reason: str = ""
    job: str = ""
    attempts: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        """One line: why the trial (or its last attempt) failed."""
        return parse_failure(self.reason).summary if self.reason else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "trial_id": self.trial_id, "state": self.state, "attempt": self.attempt,
            "params": dict(self.params), "metric": self.metric, "metric_partial": self.partial,
            "epoch": self.epoch, "elapsed_s": self.elapsed_s, "reason": self.reason, "job": self.job,
            "attempts": [dict(a) for a in self.attempts],
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # DynamoDB numbers arrive as Decimal
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def trial_rows(items: Iterable[Mapping[str, Any]], *, metric_name: str | None, now: float) -> list[TrialRow]:
    """Rows of the given trial items (as the store returns them), by trial index."""
    rows = []
    for item in items:
        raw_metrics = item.get("metrics")
        metrics: Mapping[str, Any] = raw_metrics if isinstance(raw_metrics, Mapping) else {}
        state = str(item.get("state", ""))
        metric = _number(metrics.get(metric_name)) if metric_name else None
        started = _number(item.get("started_at"))
        finished = _number(item.get("finished_at"))
        elapsed = None
        if started is not None:
            elapsed = max((finished if finished is not None else now) - started, 0.0)
        params = _params(item.get("params", {}))
        rows.append(TrialRow(
            index=int(item.get("index", 0)), trial_id=str(item.get("trial_id", "")), state=state,
            attempt=int(item.get("attempt", 0) or 0), params=params, flat=flatten(params), metric=metric,
            partial=metric is not None and state != "SUCCEEDED", epoch=_number(metrics.get("epoch")),
            elapsed_s=elapsed, reason=str(item.get("reason", "") or ""), job=str(item.get("job", "")),
            attempts=tuple(a for a in item.get("attempts", []) or [] if isinstance(a, Mapping)),
        ))
    return sorted(rows, key=lambda r: r.index)


def swept_names(rows: Sequence[TrialRow], declared: Iterable[str] | None = None) -> list[str]:
    """The parameter columns: those the sweep declares as swept (not constants), or, when the spec
    is unknown, those whose value differs between the rows (all of them if there is one row)."""
    names = sorted({name for row in rows for name in row.flat})
    if declared is not None:
        wanted = set(declared)
        return [n for n in names if n in wanted or any(n.startswith(w + ".") for w in wanted)]
    varying = [n for n in names if len({json.dumps(r.flat.get(n), sort_keys=True, default=str) for r in rows}) > 1]
    return varying or names


def _metric_key(goal: str) -> Any:
    sign = -1.0 if goal == "maximize" else 1.0

    def key(row: TrialRow) -> tuple[int, float, int]:
        return (0, sign * row.metric, row.index) if row.metric is not None else (1, 0.0, row.index)
    return key


def sort_rows(rows: Sequence[TrialRow], key: str, *, goal: str = "minimize") -> list[TrialRow]:
    """Rows ordered by ``key``: a column of :data:`SORT_KEYS` or a parameter name. The metric sorts
    best first; missing values go last."""
    if key == "metric":
        return sorted(rows, key=_metric_key(goal))
    if key in ("index", "state", "attempt"):
        return sorted(rows, key=lambda r: (getattr(r, key), r.index))
    if key in ("elapsed", "epoch"):
        attr = "elapsed_s" if key == "elapsed" else "epoch"
        return sorted(rows, key=lambda r: (getattr(r, attr) is None, -(getattr(r, attr) or 0.0), r.index))

    def by_param(row: TrialRow) -> tuple[int, Any, int]:
        value = row.flat.get(key)
        number = _number(value)
        if number is not None:
            return (0, number, row.index)
        return (1 if value is not None else 2, str(value), row.index)
    return sorted(rows, key=by_param)


def top(rows: Sequence[TrialRow], n: int, *, goal: str = "minimize") -> list[TrialRow]:
    """The ``n`` best rows by the metric (final values before partial ones of equal rank)."""
    scored = [r for r in rows if r.metric is not None]
    return sorted(scored, key=_metric_key(goal))[:n]


def fmt_number(value: Any) -> str:
    """4 significant digits for floats (``0.001971``, ``1.971e-05``, ``0.9634``), ints as they are."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e6:
            return f"{value:.1f}"
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def fmt_metric(row: TrialRow) -> str:
    if row.metric is None:
        return ""
    text = f"{row.metric:.4f}" if abs(row.metric) < 1000 else f"{row.metric:.4g}"
    return text + (PARTIAL_MARK if row.partial else "")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = int(round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_epoch(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def metric_label(name: str | None, goal: str) -> str:
    """The metric column's header: its name, and ↑ (higher is better) or ↓."""
    if not name:
        return "metric"
    return f"{name} {'↑' if goal == 'maximize' else '↓'}"


@dataclass(frozen=True)
class EarlyStopSavings:
    """What Hyperband saved: ``trials`` stopped, and the minutes they did not run — estimated
    against the mean runtime of the succeeded trials (or, before any, the longest trial's)."""

    trials: tuple[int, ...]
    trial_minutes: float
    gpu_minutes: float

    def line(self) -> str:
        shown = ", ".join(f"#{i}" for i in self.trials)
        gpu = f", ≈ {self.gpu_minutes:,.1f} GPU-minutes" if self.gpu_minutes else ""
        return (f"early-stopped by hyperband: {len(self.trials)} trial{'s' if len(self.trials) != 1 else ''} ({shown}) — "
                f"≈ {self.trial_minutes:,.1f} trial-minutes saved{gpu} (against the mean succeeded trial's runtime)")


def early_stop_savings(rows: Sequence[TrialRow], *, gpus_per_trial: int = 0) -> EarlyStopSavings | None:
    """The :class:`EarlyStopSavings` of these rows, or ``None`` when none was early-stopped."""
    stopped = [r for r in rows if r.state == "EARLY_STOPPED"]
    if not stopped:
        return None
    done = [r.elapsed_s for r in rows if r.state == "SUCCEEDED" and r.elapsed_s is not None]
    every = [r.elapsed_s for r in rows if r.elapsed_s is not None]
    full = sum(done) / len(done) if done else max(every, default=0.0)
    seconds = sum(max(0.0, full - (r.elapsed_s or 0.0)) for r in stopped)
    return EarlyStopSavings(tuple(sorted(r.index for r in stopped)), round(seconds / 60, 2),
                            round(seconds / 60 * max(gpus_per_trial, 0), 2))

