"""Sweeps this machine submitted that the table does not hold yet: shown as QUEUED, never written anywhere shared.

A researcher may only *send* to the queue and *read* the table, and the dispatcher stores a sweep
when its tick takes the message, so right after ``producer submit`` the table has nothing. Peeking
at the queue is no way out: an SQS receive hides the message and counts towards the DLQ redrive,
so ``producer status`` would push sweeps into the DLQ. Instead ``producer submit`` keeps a small
local record of what it sent::

    $SWEEPQ_HOME/submitted/<sweep id>.json      (default ~/.local/state/sweepq, or $XDG_STATE_HOME/sweepq)

``status`` and ``list`` read the table first; a sweep the table does not have but a record does
is shown as **QUEUED**, with the queue's depth as far as SQS tells (``sqs:GetQueueAttributes``:
``ApproximateNumberOfMessages`` waiting, ``…NotVisible`` being taken by a dispatcher — SQS gives no
position in a standard queue). Once the table has the sweep, the record is deleted and the table
is the only truth; records older than :data:`MAX_AGE_S` are dropped (SQS keeps a message 4 days
by default). The records are display state only: intake's exactly-once (the conditional put of
the sweep, keyed by the id derived from the submit token) is untouched, and a lost or stale record
can only change what this machine displays.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

HOME_ENV = "SWEEPQ_HOME"
MAX_AGE_S = 14 * 86400
QUEUED = "QUEUED"


def home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "sweepq"


def _dir() -> Path:
    return home() / "submitted"


def record(entry: Mapping[str, Any]) -> Path | None:
    """Keep ``entry`` (needs ``sweep_id``; also name, total, table, region, queue_url, submitted_at).
    Never fails the submit that calls it: a record that cannot be written is logged and skipped."""
    path = _dir() / f"{entry['sweep_id']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps({**entry, "recorded_at": time.time()}, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not keep a local record of sweep %s in %s (%s); `producer status` will not show it "
                    "as queued", entry["sweep_id"], path.parent, exc)
        return None
    return path


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "sweep_id" in data else None


def _matches(entry: Mapping[str, Any], table: str, region: str | None) -> bool:
    return entry.get("table") == table and (region is None or entry.get("region") in (None, region))


def get(sweep_id: str, *, table: str, region: str | None = None) -> dict[str, Any] | None:
    entry = _read(_dir() / f"{sweep_id}.json")
    return entry if entry is not None and _matches(entry, table, region) else None


def pending(*, table: str, region: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
    """This machine's records for ``table``, newest first; stale ones are deleted on the way."""
    now = time.time() if now is None else now
    out = []
    try:
        paths = sorted(_dir().glob("*.json"))
    except OSError:
        return []
    for path in paths:
        entry = _read(path)
        if entry is None:
            continue
        if now - float(entry.get("recorded_at", now)) > MAX_AGE_S:
            forget(str(entry["sweep_id"]))
            continue
        if _matches(entry, table, region):
            out.append(entry)
    return sorted(out, key=lambda e: str(e.get("submitted_at", "")), reverse=True)


def forget(sweep_id: str) -> None:
    try:
        (_dir() / f"{sweep_id}.json").unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not delete the local record of %s: %s", sweep_id, exc)


def status_doc(entry: Mapping[str, Any], depth: Mapping[str, int] | None) -> dict[str, Any]:
    """``producer status -o json`` of a queued sweep: the keys of a stored sweep's, plus ``queue``."""
    total = int(entry.get("total", 0))
    return {
        "sweep_id": entry["sweep_id"], "state": QUEUED, "total": total,
        "counts": {"not_started": total, "waiting": 0, "pending": 0, "launched": 0, "running": 0,
                   "succeeded": 0, "failed": 0, "cancelled": 0, "early_stopped": 0},
        "best": None,
        "reason": "sent to the queue; the dispatcher stores it on its next tick",
        "submitter": entry.get("submitter", ""), "submitted_at": entry.get("submitted_at", ""),
        "paused": False, "control_refused": None,
        "queue": {"url": entry.get("queue_url"), "depth": dict(depth) if depth is not None else None},
    }


def list_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"sweep_id": entry["sweep_id"], "name": entry.get("name", ""), "submitter": entry.get("submitter", ""),
            "state": QUEUED, "finished": 0, "total": int(entry.get("total", 0)),
            "submitted_at": entry.get("submitted_at", "")}
