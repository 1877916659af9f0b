"""The planner's state and loop: pools of free capacity, the order of sweeps, fitting, taking and
reserving (the rules are told in :mod:`dispatcher.core.planner`). Purely computational.

Order is kept in three levels of heaps — the sweeps of one group (team, priority, submitter), the
groups of one team, the teams — whose keys change only for what a step touched: a launch re-keys
its sweep, the groups of its submitter in its team (one per priority) and its team; a block drops
its sweep and re-keys its group and team; a Kueue queue reaching a sweep's ``max_waiting`` drops
the sweeps it stops (once each). Stale heap entries are skipped when they come up. The loop ends
as soon as no job slot, or no GPU and no eligible GPU-less trial, is left beyond the holds. So a
plan costs O((sweeps + launches × priorities of one submitter) × log sweeps): on a full cluster,
O(sweeps).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Collection, Generic, Hashable, Mapping, Sequence, TypeVar

from dispatcher.core.records import SweepRecord
from dispatcher.core.sharing import (
    Caps,
    SharePolicy,
    TrialShape,
    Usage,
    fit_problems,
    gpu_limit,
    shape_for,
    submitter_key,
)
from dispatcher.core.waits import Free, Reservation

RESOURCES = ("jobs", "gpus")
Group = tuple[str, int, str]  # (team, priority, submitter)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Launch:
    """One trial attempt to claim and create. The job is rendered with ``nodes`` nodes
    (``sharing.sized_launch``) and counts ``gpus`` GPUs; the claim stores ``nodes`` so that a
    re-create renders the same job (``sharing.claim_shape``)."""

    sweep_id: str
    index: int
    attempt: int
    retry: bool
    nodes: int = 1
    gpus: int = 0


@dataclass
class Pool:
    """Free capacity at one level — the cluster or one team's quota — and what reservations hold of it."""

    name: str  # "cluster" or the team
    key: str  # "cluster" or "team/<name>" (a team may be called "cluster")
    cap: dict[str, int | None]
    free: dict[str, int | None]  # None = unlimited
    held: dict[str, int] = field(default_factory=lambda: {"jobs": 0, "gpus": 0})

    def left(self, resource: str, *, beside: int = 0) -> float:
        """Free beyond the holds (``beside``: a hold to leave out of them, e.g. the asker's own)."""
        free = self.free[resource]
        return math.inf if free is None else free - self.held[resource] + beside


@dataclass
class Sweep:
    rec: SweepRecord
    team: str
    submitter: str
    shape: TrialShape | None  # None: it can never start under these caps (``never``)
    queue: str | None
    max_waiting: int | None
    retries: list[tuple[int, int]]
    cursor: int
    room: int | None  # max_concurrent left (None = no limit)
    usage: Usage
    never: bool = False  # fit_problems: the caps or its team's quota never let a trial start
    duplicated: bool = False  # given twice with different contents: planned with the first, launches nothing
    launched: int = 0
    free_launched: int = 0  # launches of this plan that use no capped resource (see Allocator.share)
    out: bool = False  # gets nothing more this tick (its next trial did not fit)
    holds: dict[str, dict[str, int]] = field(default_factory=dict)  # pool key → resource → held for it

    @property
    def group(self) -> Group:
        return self.team, self.rec.priority, self.submitter

    @property
    def need(self) -> dict[str, int]:
        return {"jobs": 1, "gpus": self.shape.gpus if self.shape else 0}

    @property
    def has_work(self) -> bool:
        return bool(self.retries) or self.cursor < self.rec.total

    def next_index(self) -> int:
        return self.retries[0][0] if self.retries else self.cursor


class Ranking(Generic[K]):
    """A min-heap of items whose keys change: :meth:`set` pushes the new key under a new version, and
    entries of an older version are dropped when they reach the top. Keys end with a unique name."""

    def __init__(self) -> None:
        self.heap: list[tuple[Any, int, K]] = []
        self.version: dict[K, int] = {}

    def set(self, item: K, key: Any | None) -> None:
        """``key`` None: the item leaves the ranking."""
        version = self.version.get(item, 0) + 1
        self.version[item] = version
        if key is not None:
            heapq.heappush(self.heap, (key, version, item))

    def top(self) -> K | None:
        while self.heap:
            _, version, item = self.heap[0]
            if self.version[item] == version:
                return item
            heapq.heappop(self.heap)
        return None


def free_of(cap: Mapping[str, int | None], used: Usage) -> dict[str, int | None]:
    held = {"jobs": used.jobs, "gpus": used.gpus}
    free: dict[str, int | None] = {}
    for r in RESOURCES:
        limit = cap[r]
        free[r] = None if limit is None else max(0, limit - held[r])
    return free


def unsized_shape(record: SweepRecord, policy: SharePolicy, caps: Caps) -> TrialShape | None:
    """:func:`planner.plan`'s shape: the full ``max_nodes`` (what an unchanged tick renders), None
    when that exceeds a GPU limit."""
    shape = shape_for(record, policy, Caps())
    limit = gpu_limit(caps, policy.share(policy.team_of(record)))
    return None if shape is None or (limit is not None and shape.gpus > limit) else shape


class Allocator:
    def __init__(self, records: Sequence[SweepRecord], *, caps: Caps, by_sweep: Mapping[str, Usage],
                 cluster_used: Usage, policy: SharePolicy, held: Collection[str], sized: bool,
                 team_used: Mapping[str, Usage] | None = None,
                 narrowest: Mapping[str, tuple[int, int | None]] | None = None,
                 duplicated: Collection[str] = (), limit: int | None = None) -> None:
        self.policy, self.caps, self.limit = policy, caps, limit
        self.totals = {"jobs": caps.max_jobs or None, "gpus": caps.max_gpus or None}
        self.cluster = Pool("cluster", "cluster", {"jobs": caps.max_jobs, "gpus": caps.max_gpus},
                            free_of({"jobs": caps.max_jobs, "gpus": caps.max_gpus}, cluster_used))
        self.held = set(held)
        self.sweeps: list[Sweep] = []
        self.teams: dict[str, Pool] = {}
        self.team_use: dict[str, Usage] = dict(team_used or {})
        self.team_free: dict[str, int] = {}  # free launches (see share) per team
        self.sub_use: dict[tuple[str, str], Usage] = {}
        self.sub_free: dict[tuple[str, str], int] = {}
        self.narrowest: dict[str, tuple[int, int | None]] = dict(narrowest or {})
        self.waiting: dict[str, int] = {}  # Kueue queue → jobs not yet admitted
        self.groups: dict[Group, list[Sweep]] = {}
        self.sub_groups: dict[tuple[str, str], list[Group]] = {}
        # Kueue queue → max_waiting → the sweeps a queue with that many waiting jobs stops
        self.thresholds: dict[str, dict[int, list[Sweep]]] = {}
        for r in records:
            team = policy.team_of(r)
            use = by_sweep.get(r.sweep_id, Usage())
            queue = policy.kueue_queue(r)
            never = bool(fit_problems(r.launch, team=team, policy=policy, caps=caps if sized else Caps()))
            shape = shape_for(r, policy, caps) if sized else unsized_shape(r, policy, caps)
            s = Sweep(
                rec=r, team=team, submitter=submitter_key(r), shape=None if never else shape, queue=queue,
                max_waiting=policy.max_waiting(queue, team, caps) if queue else None,
                retries=[(i, r.live[i].attempt + 1) for i in r.waiting], cursor=r.cursor,
                room=None if r.launch.max_concurrent is None else max(0, r.launch.max_concurrent - r.holding),
                usage=use, never=never or shape is None, duplicated=r.sweep_id in duplicated,
            )
            self.sweeps.append(s)
            self.team_use[team] = self.team_use.get(team, Usage()) + use
            sub = (team, s.submitter)
            self.sub_use[sub] = self.sub_use.get(sub, Usage()) + use
            if s.group not in self.groups:
                self.groups[s.group] = []
                self.sub_groups.setdefault(sub, []).append(s.group)
            self.groups[s.group].append(s)
            if queue:
                self.waiting[queue] = self.waiting.get(queue, 0) + use.queued
                if s.max_waiting is not None:
                    self.thresholds.setdefault(queue, {}).setdefault(s.max_waiting, []).append(s)
        for team, use in self.team_use.items():
            quota = policy.share(team)
            cap = {"jobs": quota.max_jobs, "gpus": quota.max_gpus}
            self.teams[team] = Pool(team, f"team/{team}", cap, free_of(cap, use))
        self.free_before = Free(self.cluster.free["jobs"], self.cluster.free["gpus"])
        self.launches: list[Launch] = []
        self.reservations: list[Reservation] = []
        self.gpuless = [s for s in self.sweeps if s.need["gpus"] == 0 and self.eligible(s)]
        self.in_group: dict[Group, Ranking[str]] = {g: Ranking() for g in self.groups}
        self.in_team: dict[str, Ranking[Group]] = {t: Ranking() for t in self.team_use}
        self.top: Ranking[str] = Ranking()
        self.by_id = {s.rec.sweep_id: s for s in self.sweeps}
        for s in self.sweeps:
            self.rank_sweep(s)
        for g in self.groups:
            self.rank_group(g)
        for t in self.team_use:
            self.rank_team(t)

    # -- shares and order ---------------------------------------------------------------
    def dominant(self, use: Usage) -> float:
        """Dominant share of the cluster caps (jobs count when nothing is capped)."""
        tj, tg = self.totals["jobs"], self.totals["gpus"]
        if tj is None and tg is None:
            return float(use.jobs)
        return max(use.jobs / tj if tj else 0.0, use.gpus / tg if tg else 0.0)

    def share(self, use: Usage, free_launched: int) -> float:
        """What orders the line: the dominant share, and — when the tick's launches are limited and
        jobs are not capped — the part of this tick's launches taken by trials that use no capped
        resource (GPU-less trials under a GPU cap alone). Those trials hold no share of any cap, so
        without it they would be first in line for every launch of every tick while GPUs idle; the
        per-tick launch limit is the one thing they are short of, so it is shared like a cap."""
        share = self.dominant(use)
        if free_launched and self.limit:
            share = max(share, free_launched / self.limit)
        return share

    def uses_no_cap(self, s: Sweep) -> bool:
        """A GPU-less trial when only GPUs are capped (with nothing capped, jobs count in shares)."""
        return self.totals["jobs"] is None and self.totals["gpus"] is not None and s.need["gpus"] == 0

    def eligible(self, s: Sweep) -> bool:
        r = s.rec
        if s.out or r.state.terminal or r.cancel_requested or r.paused or r.sweep_id in self.held or s.duplicated:
            return False
        if not s.has_work or s.shape is None or s.room == 0:
            return False
        return not self.kueue_full(s)

    def kueue_full(self, s: Sweep) -> bool:
        return bool(s.queue) and s.max_waiting is not None and self.waiting[s.queue or ""] >= s.max_waiting

    def rank_sweep(self, s: Sweep) -> None:
        """Within a submitter's sweeps of one priority, the least loaded: smallest share, then
        earlier submit time, then id."""
        key = (self.share(s.usage, s.free_launched), s.rec.submitted_at, s.rec.sweep_id) if self.eligible(s) else None
        self.in_group[s.group].set(s.rec.sweep_id, key)

    def head_of(self, group: Group) -> Sweep | None:
        sid = self.in_group[group].top()
        return None if sid is None else self.by_id[sid]

    def rank_group(self, group: Group) -> None:
        """Within a team: its highest priority with work, then the submitter with the smallest share
        of the team's part; at equal shares the one whose next trial needs more GPUs (see
        :meth:`rank_team`), then the name."""
        team, priority, submitter = group
        head = self.head_of(group)
        key = None
        if head is not None:
            sub = (team, submitter)
            key = (-priority, self.share(self.sub_use[sub], self.sub_free.get(sub, 0)), -head.need["gpus"], submitter)
        self.in_team[team].set(group, key)

    def team_head(self, team: str) -> Sweep | None:
        group = self.in_team[team].top()
        return None if group is None else self.head_of(group)

    def rank_team(self, team: str) -> None:
        """Teams: the smallest weighted share first. At equal shares the team whose next trial needs
        more GPUs goes first — compared in GPUs, not in dominant shares, which tie under a job cap
        (every trial of up to max_gpus/max_jobs GPUs is 1/max_jobs): a narrow trial taking a tie
        would take the GPUs a wide one could start on or a reservation is gathering, so a team with
        nothing running keeps its wide trial first in line whatever the others' narrow trials do."""
        head = self.team_head(team)
        key = None
        if head is not None:
            share = self.share(self.team_use[team], self.team_free.get(team, 0))
            key = (share / self.policy.share(team).weight, -head.need["gpus"], team)
        self.top.set(team, key)

    def first_in_line(self) -> Sweep | None:
        team = self.top.top()
        return None if team is None else self.team_head(team)

    def anything_left(self) -> bool:
        """Could any trial still launch beside the holds? Every trial needs a job slot; a GPU trial
        needs a GPU, and a GPU-less one must be eligible (eligibility only ends during a plan, so
        the scan over GPU-less sweeps is paid once)."""
        if self.cluster.left("jobs") < 1:
            return False
        if self.cluster.left("gpus") >= 1:
            return True
        while self.gpuless and not self.eligible(self.gpuless[-1]):
            self.gpuless.pop()
        return bool(self.gpuless)

    # -- fitting ------------------------------------------------------------------------
    def pools(self, s: Sweep) -> tuple[Pool, Pool]:
        return self.teams[s.team], self.cluster

    def shortfall(self, s: Sweep, *, beside_holds: bool) -> tuple[Pool, str] | None:
        """The first level and resource where the next trial does not fit: in what is left beside
        the other sweeps' reservations (``beside_holds``), or in the raw free capacity."""
        for pool in self.pools(s):
            for resource, need in s.need.items():
                own = s.holds.get(pool.key, {}).get(resource, 0)
                left = pool.left(resource, beside=own if beside_holds else pool.held[resource])
                if need and left < need:
                    return pool, resource
        return None

    def take(self, s: Sweep) -> None:
        assert s.shape is not None
        if s.retries:
            index, attempt = s.retries.pop(0)
            self.launches.append(Launch(s.rec.sweep_id, index, attempt, True, s.shape.nodes, s.shape.gpus))
        else:
            self.launches.append(Launch(s.rec.sweep_id, s.cursor, 1, False, s.shape.nodes, s.shape.gpus))
            s.cursor += 1
        add = Usage(1, s.shape.gpus, 1 if s.queue else 0)
        free = 1 if self.uses_no_cap(s) else 0
        sub = (s.team, s.submitter)
        s.usage += add
        s.launched += 1
        s.free_launched += free
        self.team_use[s.team] += add
        self.team_free[s.team] = self.team_free.get(s.team, 0) + free
        self.sub_use[sub] += add
        self.sub_free[sub] = self.sub_free.get(sub, 0) + free
        fewest, fewest_gpus = self.narrowest.get(s.team, (s.shape.gpus, None))
        if s.shape.gpus:
            fewest_gpus = min(fewest_gpus or s.shape.gpus, s.shape.gpus)
        self.narrowest[s.team] = (min(fewest, s.shape.gpus), fewest_gpus)
        for pool in self.pools(s):
            for resource, need in s.need.items():
                left = pool.free[resource]
                if left is not None:
                    pool.free[resource] = max(0, left - need)
        if s.room is not None:
            s.room -= 1
        stopped: list[Sweep] = []
        if s.queue:
            self.waiting[s.queue] += 1
            stopped = self.thresholds.get(s.queue, {}).get(self.waiting[s.queue], [])
        # re-rank what changed: this sweep, its submitter's groups, the sweeps the queue now stops
        self.rank_sweep(s)
        groups = set(self.sub_groups[sub])
        for other in stopped:
            self.rank_sweep(other)
            groups.add(other.group)
        for group in groups:
            self.rank_group(group)
        for team in {g[0] for g in groups}:
            self.rank_team(team)

    def block(self, s: Sweep, blocked: Pool) -> None:
        s.out = True  # nothing more for it this tick
        if self.policy.reserve_gpus:
            self.reserve(s, blocked)
        self.rank_sweep(s)
        self.rank_group(s.group)
        self.rank_team(s.team)

    def returning(self, s: Sweep, resource: str, team: Pool) -> int:
        """What the jobs of ``s``'s team give back at the cluster, at least, by the time its team's
        quota lets the trial start (when the team is what it is short of): one job slot, and the
        GPUs it lacks at the team — no fewer than its team's narrowest GPU-holding job — or, when
        only a job slot is short, its narrowest job's GPUs. 0 when the team holds no job."""
        if not self.team_use[s.team].jobs or s.team not in self.narrowest:
            return 0
        if resource == "jobs":
            return 1
        fewest, fewest_gpus = self.narrowest[s.team]
        short = s.need["gpus"] - team.left("gpus")
        if short > 0:
            return int(max(short, fewest_gpus or 0))
        return fewest

    def reserve(self, s: Sweep, blocked: Pool) -> None:
        """Hold for ``s``'s next trial what it will take of what is free now, at each of its levels
        (``min(need, free at each level)``). When its own team's quota is what it is short of, it
        starts only after jobs of its team end, and those give their job slot and GPUs back at the
        cluster too: at the cluster it holds only what they will not (:meth:`returning`) — nothing
        when its team's jobs are as wide as its trial, so a reservation behind a team quota never
        idles cluster GPUs that its own team's jobs will bring back anyway."""
        team, cluster = self.pools(s)
        team_short = any(need and team.left(r) < need for r, need in s.need.items())
        held = {}
        for resource, need in s.need.items():
            amount = int(max(0, min(need, team.left(resource), cluster.left(resource))))
            at_cluster = min(amount, max(0, need - self.returning(s, resource, team))) if team_short else amount
            for pool, hold in ((team, amount), (cluster, at_cluster)):
                if pool.free[resource] is None:
                    continue
                pool.held[resource] += hold
                s.holds.setdefault(pool.key, {})[resource] = hold
            held[resource] = max((h.get(resource, 0) for h in s.holds.values()), default=0)
        self.reservations.append(Reservation(
            s.rec.sweep_id, s.next_index(), s.need["gpus"], held["gpus"], held["jobs"], s.team,
            "cluster" if blocked is self.cluster else "team",
        ))

    def run(self) -> None:
        while self.limit is None or len(self.launches) < self.limit:
            if not self.anything_left():
                return
            s = self.first_in_line()
            if s is None:
                return
            blocked = self.shortfall(s, beside_holds=True)
            if blocked is None:
                self.take(s)
            else:
                self.block(s, blocked[0])
