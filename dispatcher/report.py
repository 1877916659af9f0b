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
    launched: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    capacity: int | None = None
    active_sweeps: int = 0
    lease: str = "held"  # held | busy
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
