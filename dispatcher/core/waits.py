"""What the planner tells about each sweep and team: what it holds, its share, and what it waits for.

For ``producer status`` / ``producer list``: the tick stores :meth:`SweepShare.to_item` on the sweep
(when it changed) and the CLI prints :attr:`Wait.detail`. Pure, frozen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class WaitKind(str, enum.Enum):
    """Why a sweep with trials left launched no (more) trial this tick, most specific first."""

    CANCELLING = "cancelling"  # cancel requested: its jobs are being deleted
    PAUSED = "paused"  # producer pause: nothing new starts; running trials continue
    HELD = "held"  # the tick holds it this round (e.g. a reconcile write failed)
    NEVER_FITS = "never_fits"  # its smallest trial exceeds a cap or its team quota (caps changed since intake)
    MAX_CONCURRENT = "max_concurrent"  # its own max_concurrent
    KUEUE_WAITING = "kueue_waiting"  # its Kueue queue already has max_waiting jobs waiting for quota
    TEAM_QUOTA = "team_quota"  # its team's max_jobs / max_gpus
    CLUSTER_CAP = "cluster_cap"  # SWEEPQ_MAX_RUNNING / SWEEPQ_MAX_GPUS
    RESERVED_FOR_OTHER = "reserved_for_other"  # free GPUs are held for a wider trial of another sweep
    TICK_LIMIT = "tick_limit"  # SWEEPQ_MAX_LAUNCHES_PER_TICK reached: next tick
    KUEUE_QUOTA = "kueue_quota"  # nothing more to launch now, and some of its jobs wait for Kueue admission


@dataclass(frozen=True)
class Wait:
    kind: WaitKind
    detail: str  # one line with the numbers, e.g. "team vision at its quota: 16/16 GPUs"


@dataclass(frozen=True)
class Reservation:
    """Free resources held this tick for the trial first in line that does not fit yet."""

    sweep_id: str
    index: int
    needs_gpus: int
    held_gpus: int
    held_jobs: int
    team: str
    blocked_by: str  # "cluster" or "team"


@dataclass(frozen=True)
class SweepShare:
    """One active sweep after this plan. ``share`` is its dominant share of the cluster caps
    (max of jobs/``SWEEPQ_MAX_RUNNING`` and GPUs/``SWEEPQ_MAX_GPUS``) with this tick's launches."""

    sweep_id: str
    team: str
    submitter: str
    priority: int
    jobs: int
    gpus: int
    queued: int  # of its jobs, waiting for Kueue quota
    launched: int  # this plan
    trial_gpus: int | None  # GPUs one trial is launched with; None = it can never fit
    trial_nodes: int | None
    share: float
    wait: Wait | None  # None: nothing holds it back (all its trials are out, or it got what it asked)
    reserved_gpus: int = 0  # GPUs held for its next trial this tick

    def to_item(self) -> dict[str, Any]:
        """Compact form for the sweep item (``producer status``); floats rounded for DynamoDB."""
        out: dict[str, Any] = {"team": self.team, "jobs": self.jobs, "gpus": self.gpus, "queued": self.queued,
                               "share": round(self.share, 4)}
        if self.wait is not None:
            out["wait"] = self.wait.kind.value
            out["detail"] = self.wait.detail
        if self.reserved_gpus:
            out["reserved_gpus"] = self.reserved_gpus
        return out


@dataclass(frozen=True)
class TeamStatus:
    """One team after this plan. ``fair_share`` = its weight over the weights of the teams holding or
    wanting capacity; ``share`` = its dominant share held (may exceed ``fair_share`` by borrowing)."""

    team: str
    weight: float
    jobs: int
    gpus: int
    queued: int
    max_jobs: int | None
    max_gpus: int | None
    share: float
    fair_share: float

    def describe(self) -> str:
        def part(held: int, cap: int | None, unit: str) -> str:
            return f"{held}/{cap} {unit}" if cap is not None else f"{held} {unit}"
        queued = f", {self.queued} waiting for Kueue" if self.queued else ""
        return (f"team {self.team}: {part(self.jobs, self.max_jobs, 'jobs')}, {part(self.gpus, self.max_gpus, 'GPUs')}"
                f"{queued}; share {self.share:.0%} (fair share {self.fair_share:.0%})")


@dataclass(frozen=True)
class Free:
    jobs: int | None  # None = unlimited
    gpus: int | None


@dataclass(frozen=True)
class Plan:
    """The planner's answer: launches in order, and the state behind them."""

    launches: tuple[Any, ...]  # tuple[planner.Launch, ...]
    sweeps: Mapping[str, SweepShare] = field(default_factory=dict)
    teams: Mapping[str, TeamStatus] = field(default_factory=dict)
    reservations: tuple[Reservation, ...] = ()
    free_before: Free = Free(None, None)  # cluster capacity free before this plan
    free_after: Free = Free(None, None)
