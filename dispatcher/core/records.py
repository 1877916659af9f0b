"""State records of sweeps and trials, and their state machines. Pure, frozen, ``now`` injected.

Sweep:  ACTIVE → COMPLETED | FAILED (circuit breaker) | CANCELLED;  REJECTED at intake.
Trial:  (not yet claimed: index ≥ cursor)
        PENDING  claimed for attempt *a*, its job may or may not exist yet (a crash can stop here)
        → LAUNCHED (job created: recorded by the first tick that lists it) → RUNNING (job's workers running)
        → SUCCEEDED | FAILED | CANCELLED | EARLY_STOPPED;  LOST when a launched job vanished.
        EARLY_STOPPED  a running trial Hyperband stopped (``early_terminate``): its job deleted; not
                 failed, never retried, counted as done, its best-trial value what it reached.
        WAITING  a failed/lost/timed-out attempt that will be retried with attempt a+1 when the
                 planner gives it a slot (retries are planned like launches, so caps hold).

The sweep item carries the *live* trials (PENDING/LAUNCHED/RUNNING/WAITING) in a small map, so
one consistent read per active sweep gives the tick everything it needs: cost O(active sweeps +
live trials), independent of how many trials a sweep has finished. The map is bounded whatever
the caps: a sweep holds at most :data:`MAX_LIVE_PER_SWEEP` live trials (the tick claims no fresh
trial beyond it, see :func:`planning_view`) and an entry is at most :data:`MAX_LIVE_ENTRY_BYTES`,
so the live map stays far below DynamoDB's 400 KB item limit (figures in docs/RELIABILITY.md).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Mapping

from dispatcher.core.launch import LaunchSettings

MAX_LIVE_PER_SWEEP = 1000  # live trials of one sweep (the tick claims no fresh trial beyond it)
MAX_LIVE_ENTRY_BYTES = 150  # upper bound of one stored live entry as DynamoDB counts it (a test checks it)


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
    EARLY_STOPPED = "EARLY_STOPPED"

    @property
    def terminal(self) -> bool:
        return self in (TrialState.SUCCEEDED, TrialState.FAILED, TrialState.CANCELLED, TrialState.EARLY_STOPPED)

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
    reason: str = ""  # why a WAITING attempt ended; in memory only (the trial item keeps it)
    # the node count the attempt's job is created (and re-created after a crash) with, stored with its
    # claim (``planner.Launch.nodes``); None: claimed before it was stored (``sharing.claim_shape``)
    nodes: int | None = None
    # Kueue (issue 13): when the tick first saw this attempt's job admitted (start_timeout counts
    # from it, never while the job waits for quota); None: not admitted (yet, or again since an eviction).
    admitted_at: float | None = None
    # Outcomes (issue 18), carried from attempt to attempt: how many earlier attempts the cluster
    # stopped (not counted against max_retries), and the fingerprint of the last attempt's failure
    # (outcomes.fingerprint: "the same error twice" is not retried a third time).
    uncounted: int = 0
    fingerprint: str = ""

    def to_item(self) -> dict[str, Any]:
        """The stored live entry: only what the tick needs, so its size is bounded (the reason,
        of any length, is recorded on the trial item and its attempt history)."""
        out: dict[str, Any] = {
            "attempt": self.attempt,
            "state": self.state.value,
            "job": self.job_name,
            "claimed_at": self.claimed_at,
        }
        if self.started_at is not None:
            out["started_at"] = self.started_at
        if self.nodes is not None:
            out["nodes"] = self.nodes
        if self.admitted_at is not None:  # only before the job runs: never with started_at
            out["adm"] = int(self.admitted_at)  # whole seconds: the entry stays within its bound
        if self.fingerprint or self.uncounted:  # one short attribute: "<fingerprint>[.<uncounted>]"
            out["f"] = self.fingerprint + (f".{self.uncounted}" if self.uncounted else "")
        return out

    @classmethod
    def from_item(cls, index: int, item: Mapping[str, Any]) -> "LiveTrial":
        started = item.get("started_at")
        nodes = item.get("nodes")
        admitted = item.get("adm")
        fingerprint, _, uncounted = str(item.get("f", "")).partition(".")
        return cls(
            index=index,
            attempt=int(item["attempt"]),
            state=TrialState(item["state"]),
            job_name=str(item.get("job", "")),
            claimed_at=float(item.get("claimed_at", 0)),
            started_at=float(started) if started is not None else None,
            reason=str(item.get("reason", "")),
            nodes=_whole(nodes),
            admitted_at=float(admitted) if admitted is not None else None,
            uncounted=int(uncounted or 0),
            fingerprint=fingerprint,
        )


def _whole(value: Any) -> int | None:
    """A stored positive whole number (DynamoDB gives a Decimal), else None (absent or garbage)."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and number == value else None


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
    early_stopped: int = 0  # trials Hyperband stopped (terminal, done, not failed)
    cancel_requested: bool = False
    metric_name: str | None = None
    metric_goal: str = "minimize"
    best: Mapping[str, Any] | None = None
    reason: str = ""
    # Fair sharing (issue 15), read by the planner; populated by intake / the control messages.
    submitter: str = ""  # SQS SenderId of the submit message (CONTRACTS C4); "" = unknown (a record from before it)
    team: str | None = None  # the team the operator policy assigned at intake; None = launch.team or the default
    paused: bool = False  # `producer pause`: launches nothing new; running trials are left alone
    scope: str | None = None  # the dispatcher scope that accepted it (None: stored before scopes)
    namespace: str | None = None  # where its jobs run (None: stored before it was recorded)
    failures: int = 0  # consecutive ticks whose handling of this sweep failed
    held: str = ""  # non-empty: held for an operator after repeated failures (the reason)
    template_resource: str | None = None  # kind template: "plural.group/version" its jobs are (set at intake)
    requested: LaunchSettings | None = None  # the launch settings as the sender asked (None: stored before it was kept)
    policy_hold: str = ""  # non-empty: the operator policy refuses the sweep's launches now (the reasons)

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
        return self.succeeded + self.failed + self.cancelled + self.early_stopped


def planning_view(sweep: SweepRecord, *, alive_jobs: AbstractSet[str] = frozenset()) -> SweepRecord:
    """The sweep as the planner should see it. Pure.

    * Fresh trials beyond what keeps its live map within :data:`MAX_LIVE_PER_SWEEP` are hidden
      (``total`` clamped). Retries are not: a retry reuses its WAITING entry, so the bound can
      never block a sweep whose live trials all wait.
    * A WAITING trial whose ended attempt's job is still alive on the cluster (``alive_jobs``:
      non-terminal job names, e.g. a cancelled job still terminating) gets no retry yet: never two
      live jobs for one trial.
    """
    room = max(0, MAX_LIVE_PER_SWEEP - len(sweep.live))
    view = sweep
    if sweep.total - sweep.cursor > room:
        view = dataclasses.replace(view, total=sweep.cursor + room)
    lingering = [i for i, t in sweep.live.items() if t.state is TrialState.WAITING and t.job_name in alive_jobs]
    if lingering:
        view = dataclasses.replace(view, live={i: t for i, t in sweep.live.items() if i not in lingering})
    return view


def better(goal: str, candidate: float, incumbent: float | None) -> bool:
    if incumbent is None:
        return True
    return candidate > incumbent if goal == "maximize" else candidate < incumbent
