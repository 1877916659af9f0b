"""The tick's report: one JSON log line and the return value of every entry point."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TickReport:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    dead_letters: int = 0  # bodies left for SQS to redrive into the DLQ
    wakes: int = 0
    cancel_requests: int = 0
    pause_requests: int = 0  # pause and resume messages handled
    launched: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    early_stopped: int = 0  # running trials Hyperband stopped (early_terminate)
    evicted: int = 0  # attempts whose job Kueue evicted or preempted (not failures: they resume when re-admitted)
    leaked: int = 0  # jobs deleted because no live attempt owns them (superseded, late, or of an ended sweep)
    capacity: int | None = None
    active_sweeps: int = 0
    held: list[str] = field(default_factory=list)  # "<sweep id>: <why>" — sweeps left untouched this tick
    scope: str = ""
    lease: str = "held"  # held | busy
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
