"""What a trial's metric history leaves on its trial item when it ends — ``metric_summary``, pure.

W&B's engines read a run's history long after it ended: Hyperband compares every trial's value
at each band (:mod:`dispatcher.core.hyperband`), bayes fits a finished run at the extremum of
history + summary and imputes a failed or stopped one from it (``metric.impute``: ``latest`` is
the last finite history value, ``best`` the extremum, ``worst`` the worst extremum of the ended
runs — ``sweeps.bayes_search.impute``). The history itself is the trial's word in the metrics
table (CONTRACTS C1) and stays writable by the pod until it exits, so when a trial leaves the
live set (succeeded, failed, cancelled, early-stopped, lost and given up) the tick keeps a small
summary of the sweep metric's history *as it last read it*, written in the same transaction as
the transition, and never reads that trial's metrics item again:

``{"n": <finite values reported>, "min": .., "max": .., "latest": .., "summary": .., "bands": {..}}``

* ``min`` / ``max`` / ``latest``: over the finite history values (absent when there are none);
  ``summary``: the metric's value W&B would hold as the run's summary (the final value of a
  succeeded trial, else the latest value in the item's ``metrics``; absent when none is finite).
  The engine is then given the history ``(min, max, latest)`` (:func:`engine_history`): every
  extremum, ``impute: latest`` and the worst-run imputation come out exactly as from the whole
  history (W&B reads nothing else of a run that is not running).
* ``bands``: only for a sweep with ``early_terminate`` — :func:`~dispatcher.core.hyperband.compact`,
  the value at each band the trial reached (W&B's engine reads a finished run only there).

**Bound.** Four numbers and a count, plus one entry per band reached: at most the sweep's number
of distinct bands — ≤ 100 for ``min_iter`` (W&B's 100 bands), ≤ ``s`` ≤ 1,000 for ``max_iter`` —
and never more than the positions the dispatcher reads (``MAX_POSITION`` = 10,000), whatever the
trial wrote. As JSON text (a finite metric can exceed DynamoDB's number range) that is ≤ 100
bytes without bands, ≈ 30 bytes a band: under 1 KB for usual specs (``eta`` 3: ≤ 20 bands below
10⁹), ≤ ~35 KB for the largest spec the validator accepts. Stored as ``metric_summary``
(:data:`FIELD`) with ``metric`` naming the metric it summarises.

**Old items** (ended before this field existed, or whose history could not be read when they
ended: the read was refused or left unprocessed) have no summary. Hyperband then reads their
metrics item as it did before; bayes treats the item's ``metrics`` value (a stopped trial's
"what it reached", a finished one's final value) as the one value of its history — the same y
as before for a finished trial, and ``impute: latest`` = that last reported value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

from dispatcher.core.hyperband import HyperbandSpec, compact
from dispatcher.core.metrics import MetricsItem, history_series
from dispatcher.core.search import Observation, Outcome, observation
from dispatcher.core.spec import Sweep

FIELD = "metric_summary"  # the trial item's attribute (JSON text)
_NUMBERS = ("min", "max", "latest", "summary")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def needed(sweep: Sweep) -> bool:
    """Whether an ended trial of ``sweep`` gets a summary: its engine reads ended trials' histories
    (``method: bayes``, or Hyperband ``early_terminate``) and it has a metric."""
    return sweep.spec.metric is not None and (sweep.method == "bayes" or sweep.hyperband is not None)


def summarize(values: Sequence[float | int | None], *, metric: str, summary: float | int | None = None,
              hyperband: HyperbandSpec | None = None) -> dict[str, Any]:
    """The summary of a history read as ``values`` (the metric by position, ``None`` where not
    reported) and the run's summary value ``summary``. Bounded: see the module docstring."""
    reported = [v for v in (_finite(x) for x in values) if v is not None]
    out: dict[str, Any] = {"metric": metric, "n": len(reported)}
    if reported:
        out.update({"min": min(reported), "max": max(reported), "latest": reported[-1]})
    final = _finite(summary)
    if final is not None:
        out["summary"] = final
    if hyperband is not None:
        out["bands"] = {str(band): value for band, value in compact(hyperband, reported).items()}
    return out


def summarize_item(item: MetricsItem | None, *, metric: str, hyperband: HyperbandSpec | None = None,
                   summary: float | int | None = None) -> dict[str, Any]:
    """:func:`summarize` of a verified metrics item (``None``: the read found none — an empty
    history). ``summary`` defaults to the item's latest value of the metric."""
    if item is None:
        return summarize((), metric=metric, summary=summary, hyperband=hyperband)
    latest = item.metrics.get(metric) if summary is None else summary
    return summarize(history_series(item, metric), metric=metric, summary=latest, hyperband=hyperband)


def dump(summary: Mapping[str, Any]) -> str:
    """The stored text (:data:`FIELD`)."""
    return json.dumps(dict(summary), sort_keys=True, separators=(",", ":"), allow_nan=False)


def load(raw: Any, *, metric: str) -> dict[str, Any] | None:
    """A trial item's stored summary for ``metric``, or ``None`` (no field — an old item —, not
    this metric's, or not readable: the caller falls back as the module docstring says)."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("metric") != metric or not isinstance(data.get("n"), int):
        return None
    out: dict[str, Any] = {"metric": metric, "n": data["n"]}
    for name in _NUMBERS:
        value = _finite(data.get(name))
        if value is not None:
            out[name] = value
    bands = data.get("bands")
    if isinstance(bands, dict):
        kept = {}
        for key, value in bands.items():
            number = _finite(value)
            if str(key).isdigit() and number is not None:
                kept[int(key)] = number
        out["bands"] = kept
    return out


def engine_history(summary: Mapping[str, Any]) -> tuple[float, ...]:
    """The history W&B's bayes engine is given for an ended trial: ``(min, max, latest)`` — its
    extrema and its last value are those of the whole history (empty when none was reported)."""
    if not all(name in summary for name in ("min", "max", "latest")):
        return ()
    return (float(summary["min"]), float(summary["max"]), float(summary["latest"]))


def ended_observation(index: int, params: Mapping[str, Any], outcome: Outcome, *, metric: str,
                      metrics: Mapping[str, Any] | None, stored: Any) -> Observation:
    """An ended trial as W&B's bayes engine sees it, from its trial item: ``metrics`` (its final
    values, or what it reached) and ``stored`` (its :data:`FIELD`). With a summary, the history is
    :func:`engine_history` and the summary value the item's metric (else the summary's own); an
    item without one (see the module docstring) has its metric as the one value of its history."""
    base = observation(index, params, outcome, metric_name=metric, metrics=metrics)
    kept = load(stored, metric=metric)
    if kept is None:
        return dataclasses.replace(base, history=(base.metric,) if base.metric is not None else ())
    summary = base.metric if base.metric is not None else kept.get("summary")
    return dataclasses.replace(base, metric=summary, history=engine_history(kept))


def running_observation(index: int, params: Mapping[str, Any], outcome: Outcome, *, metric: str,
                        item: MetricsItem) -> Observation:
    """A running trial as W&B's engine sees it with ``impute_while_running``: its history and
    latest value as its verified metrics item holds them now (≤ ``MAX_POSITION`` positions)."""
    values = tuple(_finite(v) for v in history_series(item, metric))
    return Observation(index=index, params=params, outcome=outcome, metric=_finite(item.metrics.get(metric)),
                       history=values)
