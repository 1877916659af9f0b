"""State records of sweeps and trials, and their state machines. Pure, frozen, ``now`` injected.

Sweep:  ACTIVE → COMPLETED | FAILED (circuit breaker) | CANCELLED;  REJECTED at intake.
Trial:  (not yet claimed: index ≥ cursor)
        PENDING  claimed for attempt *a*, its job may or may not exist yet (a crash can stop here)
        → LAUNCHED (job created) → RUNNING (job's workers running)
        → SUCCEEDED | FAILED | CANCELLED;  LOST when a launched job vanished from the cluster.
        WAITING  a failed/lost/timed-out attempt that will be retried with attempt a+1 when the
                 planner gives it a slot (retries are planned like launches, so caps hold).

The sweep item carries the *live* trials (PENDING/LAUNCHED/RUNNING/WAITING) in a small map, so
one consistent read per active sweep gives the tick everything it needs: cost O(active sweeps +
live trials), independent of how many trials a sweep has finished.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from dispatcher.core.launch import LaunchSettings


class SweepState(str, enum.Enum):
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def terminal(self) -> bool:
        return self is not SweepState.ACTIVE


class TrialState(str, enum.Enum):
    WAITING = "WAITING"
    PENDING = "PENDING"
    LAUNCHED = "LAUNCHED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self in (TrialState.SUCCEEDED, TrialState.FAILED, TrialState.CANCELLED)

    @property
    def holds_slot(self) -> bool:
        """Counts against caps: a job exists or is about to be created."""
        return self in (TrialState.PENDING, TrialState.LAUNCHED, TrialState.RUNNING)


@dataclass(frozen=True)
class LiveTrial:
    index: int
    attempt: int
    state: TrialState
    job_name: str = ""
    claimed_at: float = 0.0
    started_at: float | None = None
    reason: str = ""

    def to_item(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attempt": self.attempt,
            "state": self.state.value,
            "job": self.job_name,
            "claimed_at": self.claimed_at,
        }
        if self.started_at is not None:
            out["started_at"] = self.started_at
        if self.reason:
            out["reason"] = self.reason[:500]
        return out

    @classmethod
    def from_item(cls, index: int, item: Mapping[str, Any]) -> "LiveTrial":
        started = item.get("started_at")
        return cls(
            index=index,
            attempt=int(item["attempt"]),
            state=TrialState(item["state"]),
            job_name=str(item.get("job", "")),
            claimed_at=float(item.get("claimed_at", 0)),
            started_at=float(started) if started is not None else None,
            reason=str(item.get("reason", "")),
        )


@dataclass(frozen=True)
class SweepRecord:
    """The tick's view of one sweep (its META item)."""

    sweep_id: str
    state: SweepState
    total: int
    cursor: int  # trials 0..cursor-1 have been claimed at least once
    launch: LaunchSettings
    kind: str  # resolved job kind
    submitted_at: str
    live: Mapping[int, LiveTrial] = field(default_factory=dict)
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    cancel_requested: bool = False
    metric_name: str | None = None
    metric_goal: str = "minimize"
    best: Mapping[str, Any] | None = None
    reason: str = ""

    @property
    def priority(self) -> int:
        return self.launch.priority

    @property
    def holding(self) -> int:
        return sum(1 for t in self.live.values() if t.state.holds_slot)

    @property
    def waiting(self) -> list[int]:
        return sorted(i for i, t in self.live.items() if t.state is TrialState.WAITING)

    @property
    def remaining_fresh(self) -> int:
        return self.total - self.cursor

    @property
    def done(self) -> bool:
        return self.cursor >= self.total and not self.live

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled


def better(goal: str, candidate: float, incumbent: float | None) -> bool:
    if incumbent is None:
        return True
    return candidate > incumbent if goal == "maximize" else candidate < incumbent
