"""What ``producer status`` / ``list`` report, computed from the store's items. Purely computational.

A sweep's META item (written by :mod:`dispatcher.tick`) holds ``total``, ``cursor`` (trials
``0..cursor-1`` were claimed at least once), the ``live`` map ``{index: {attempt, state, job}}``
of trials that are PENDING/LAUNCHED/RUNNING/WAITING, and the counters ``succeeded``, ``failed``,
``cancelled``, ``early_stopped``. So every trial is in exactly one bucket:

* ``not_started`` = ``total - cursor`` (never claimed),
* ``waiting`` / ``pending`` / ``launched`` / ``running`` = live trials by state,
* ``succeeded`` / ``failed`` / ``cancelled`` / ``early_stopped`` (Hyperband) = the counters.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

COUNT_KEYS = ("not_started", "waiting", "pending", "launched", "running", "succeeded", "failed", "cancelled",
              "early_stopped")
ENDED = ("succeeded", "failed", "cancelled", "early_stopped")
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
    for key in ENDED:
        out[key] = _int(meta.get(key))
    return out


def finished(meta: Mapping[str, Any]) -> int:
    return sum(_int(meta.get(k)) for k in ENDED)


def best(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    item = meta.get("best")
    if not isinstance(item, Mapping) or not item:
        return None
    out = dict(item)
    if "params" in out:
        out["params"] = _json_value(out["params"])
    out.setdefault("goal", meta.get("metric_goal", "minimize"))
    return out


def shown_state(meta: Mapping[str, Any]) -> str:
    """The state ``status`` and ``list`` show: the stored one, except PAUSED for an active sweep
    that ``producer pause`` paused (stored as ACTIVE with ``paused``)."""
    state = str(meta.get("state", ""))
    return "PAUSED" if state == "ACTIVE" and meta.get("paused") is True else state


def control_refused(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The last refused cancel / pause / resume (who, what, why), or None."""
    item = meta.get("control_refused")
    if not isinstance(item, Mapping) or not item:
        return None
    raw_at = item.get("at")
    try:
        at = float(raw_at) if raw_at is not None else None
    except (TypeError, ValueError):
        at = None
    return {"action": str(item.get("action", "")), "by": str(item.get("by", "")), "reason": str(item.get("reason", "")),
            "at": at}


def status_doc(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of ``producer status --output json`` (keys fixed — scripts depend on them; new keys
    are only ever added). ``state`` is :func:`shown_state` (PAUSED for a paused active sweep)."""
    return {
        "sweep_id": meta.get("sweep_id", ""),
        "state": shown_state(meta),
        "total": _int(meta.get("total")),
        "counts": counts(meta),
        "best": best(meta),
        "reason": str(meta.get("reason", "")),
        "submitter": meta.get("submitter", ""),
        "submitted_at": meta.get("submitted_at", ""),
        "metric": meta.get("metric_name"),
        "goal": meta.get("metric_goal", "minimize"),
        "paused": meta.get("paused") is True,
        "control_refused": control_refused(meta),
        "team": meta.get("team"),
        # why the operator policy lets it launch nothing now
        "policy_hold": str(meta.get("policy_hold") or ""),
    }


def list_row(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "sweep_id": meta.get("sweep_id", ""),
        "name": meta.get("name", ""),
        "submitter": meta.get("submitter", ""),
        "state": shown_state(meta),
        "finished": finished(meta),
        "failed": _int(meta.get("failed")),
        "total": _int(meta.get("total")),
        "submitted_at": meta.get("submitted_at", ""),
    }
