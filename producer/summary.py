"""What ``producer status`` / ``list`` report, computed from the store's items. Purely computational.

A sweep's META item (written by :mod:`dispatcher.tick`) holds ``total``, ``cursor`` (trials
``0..cursor-1`` were claimed at least once), the ``live`` map ``{index: {attempt, state, job}}``
of trials that are PENDING/LAUNCHED/RUNNING/WAITING, and the counters ``succeeded``, ``failed``,
``cancelled``. So every trial is in exactly one bucket:

* ``not_started`` = ``total - cursor`` (never claimed),
* ``waiting`` / ``pending`` / ``launched`` / ``running`` = live trials by state,
* ``succeeded`` / ``failed`` / ``cancelled`` = the counters.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

COUNT_KEYS = ("not_started", "waiting", "pending", "launched", "running", "succeeded", "failed", "cancelled")
LIVE_STATES = {"WAITING": "waiting", "PENDING": "pending", "LAUNCHED": "launched", "RUNNING": "running"}


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _json_value(value: Any) -> Any:
    """Trial params are stored as JSON text; show them as objects."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def counts(meta: Mapping[str, Any]) -> dict[str, int]:
    total, cursor = _int(meta.get("total")), _int(meta.get("cursor"))
    out = dict.fromkeys(COUNT_KEYS, 0)
    out["not_started"] = max(total - cursor, 0)
    for trial in (meta.get("live") or {}).values():
        bucket = LIVE_STATES.get(str((trial or {}).get("state", "")))
        if bucket:
            out[bucket] += 1
    for key in ("succeeded", "failed", "cancelled"):
        out[key] = _int(meta.get(key))
    return out


def finished(meta: Mapping[str, Any]) -> int:
    return sum(_int(meta.get(k)) for k in ("succeeded", "failed", "cancelled"))


def best(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    item = meta.get("best")
    if not isinstance(item, Mapping) or not item:
        return None
    out = dict(item)
    if "params" in out:
        out["params"] = _json_value(out["params"])
    out.setdefault("goal", meta.get("metric_goal", "minimize"))
    return out


def status_doc(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of ``producer status --output json`` (keys fixed; scripts depend on them)."""
    return {
        "sweep_id": meta.get("sweep_id", ""),
        "state": meta.get("state", ""),
        "total": _int(meta.get("total")),
        "counts": counts(meta),
        "best": best(meta),
        "reason": str(meta.get("reason", "")),
        "submitter": meta.get("submitter", ""),
        "submitted_at": meta.get("submitted_at", ""),
    }


def list_row(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sweep_id": meta.get("sweep_id", ""),
        "name": meta.get("name", ""),
        "submitter": meta.get("submitter", ""),
        "state": meta.get("state", ""),
        "finished": finished(meta),
        "total": _int(meta.get("total")),
        "submitted_at": meta.get("submitted_at", ""),
    }


def trial_row(item: Mapping[str, Any], metric_name: str | None) -> dict[str, Any]:
    metrics = item.get("metrics") or {}
    metric = metrics.get(metric_name) if metric_name and isinstance(metrics, Mapping) else None
    return {
        "index": _int(item.get("index")),
        "params": _json_value(item.get("params", {})),
        "state": item.get("state", ""),
        "attempt": _int(item.get("attempt")),
        "metric": metric,
    }
