"""The planner: who gets the free capacity this tick. Purely computational, no side effects.

**Hierarchical fair share.** Free jobs and GPUs go one trial at a time to the sweep first in line:

1. *team* — the team holding the smallest dominant share of the cluster divided by its weight
   (dominant share = the larger of jobs/``SWEEPQ_MAX_RUNNING`` and GPUs/``SWEEPQ_MAX_GPUS``, as in
   DRF and Kueue's fair sharing); priority never crosses teams;
2. inside the team, *priority*: only its sweeps of the highest priority with work compete;
3. among those, the *submitter* (SQS SenderId) holding the smallest share of the team's part;
4. among that submitter's sweeps, the least-loaded sweep (smallest share; then earlier submit
   time, then id) — today's rule, one level down.

A trial's retries (WAITING) go before its fresh trials. Shares only *order*: any sweep whose next
trial fits gets capacity while the ones before it have none to use (borrowing — work-conserving).
Hard limits: ``Caps`` (cluster), each team's ``max_jobs``/``max_gpus`` quota, each sweep's
``max_concurrent``, and per Kueue queue ``max_waiting`` jobs not yet admitted. Paused, held and
cancelling sweeps launch nothing (their running trials are untouched and still count).

**Order at equal shares.** A team or submitter at the same share as another goes first when its
next trial needs more GPUs (compared in GPUs: under a job cap the dominant shares of a 1-GPU and an
8-GPU trial are both 1/max_jobs), then by name. When only GPUs are capped, a GPU-less trial uses no
cap — its team's share would stay 0 and take every launch of every tick while GPUs idle — so when
the tick's launches are limited (``SWEEPQ_MAX_LAUNCHES_PER_TICK``) its launches of this tick count
as a share of that limit.

**GPU reservation.** When the sweep first in line needs more than is free at some level (cluster
or its team), the planner *reserves* for its next trial what it will take of what is free now —
per resource ``min(need, free at each of its levels)`` — at every level of that trial. Another trial
may launch only from what is left beyond the holds at each level it shares (backfill that cannot
delay the reserved trial). A trial short of its *team's* quota starts only after jobs of its team
end, and those give their job slot and GPUs back at the cluster too: at the cluster it holds only
what they will not (its missing GPUs, no fewer than its team's narrowest GPU job; or, short of a job
slot, that narrowest job's GPUs) — so with one trial width everywhere it holds nothing at the
cluster. Later sweeps that do not fit either reserve in turn. So freed GPUs accumulate for the wide
trial instead of going one by one to narrow trials. The bound (tests/unit/test_planner_properties.py):
while a sweep stays first in line, no GPU freed at its blocking level goes to anyone else, so its
trial starts as soon as ``need − free`` GPUs have been freed there, i.e. within the completion of
the jobs holding them. It stays first in line while its team's (and submitter's) share is the
smallest — at equal shares the wider next trial goes first — hence always for a team with nothing
running, and for the highest priority of a team first in line. The cost: at most ``need − 1`` GPUs
per reservation stay idle until it starts (measured in ``benchmarks/utilization.py --teams``),
held at the cluster by a team-quota-blocked trial only while its team's narrower jobs run. With
one trial width everywhere a reservation costs nothing: what it holds, no other trial could have
used. A sweep whose smallest trial can never start — a GPU limit below it, a job limit or its Kueue
queue's ``max_waiting`` of 0 (``sharing.fit_problems``, what intake rejects) — holds nothing.

The elastic range ``nodes: MIN:MAX`` counts at the size the trial is launched with,
see :mod:`dispatcher.core.sharing`.

Entry points: :func:`make_plan` (the tick: records + observed jobs + caps + policy → :class:`Plan`
with the launches and, per sweep, its share and what it waits for) and :func:`plan`, the older
call shape (free capacity in, launches out). A sweep given twice is planned once (see
:func:`distinct`). Cost: see :mod:`dispatcher.core.allocator` — O(sweeps) on a full cluster.
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping, Sequence

from dispatcher.core.allocator import Allocator, Launch, Pool, Sweep
from dispatcher.core.jobs import JobStatus
from dispatcher.core.records import SweepRecord
from dispatcher.core.sharing import Caps, SharePolicy, measure_usage
from dispatcher.core.waits import Free, Plan, SweepShare, TeamStatus, Wait
from dispatcher.core.waits import WaitKind as W

__all__ = ["Capacity", "Launch", "free_capacity", "make_plan", "plan"]


@dataclass(frozen=True)
class Capacity:
    jobs: int | None  # free job slots (None = unlimited)
    gpus: int | None  # free GPUs (None = unlimited)


def free_capacity(*, max_running: int | None, max_gpus: int | None, used_jobs: int, used_gpus: int) -> Capacity:
    return Capacity(
        jobs=None if max_running is None else max(0, max_running - used_jobs),
        gpus=None if max_gpus is None else max(0, max_gpus - used_gpus),
    )


# --------------------------------------------------------------------------- what each sweep waits for


def _wait(a: Allocator, s: Sweep, limit: int | None, holders: "Holders") -> Wait | None:
    r = s.rec
    if r.state.terminal:
        return None
    if r.cancel_requested:
        return Wait(W.CANCELLING, "cancel requested: its jobs are being deleted")
    if r.paused:
        return Wait(W.PAUSED, f"paused — {r.holding} running trial(s) continue; `producer resume {r.sweep_id}` "
                              "launches again")
    if s.duplicated:
        return Wait(W.HELD, f"given to the planner twice with different contents (two reads of sweep {r.sweep_id} "
                            "disagree): planned again next tick")
    if r.sweep_id in a.held:
        return Wait(W.HELD, "held by the dispatcher this tick (see the tick's errors); planned again next tick")
    if not s.has_work:
        if s.usage.queued:
            return Wait(W.KUEUE_QUOTA, f"{s.usage.queued} of its jobs wait for Kueue quota in queue {s.queue}")
        return None
    if s.never:
        return Wait(W.NEVER_FITS, _never_fits(a, s))
    if s.room == 0:
        return Wait(W.MAX_CONCURRENT, f"its max_concurrent: {r.launch.max_concurrent} trials hold slots")
    if s.queue and a.kueue_full(s):
        return Wait(W.KUEUE_WAITING, f"Kueue queue {s.queue}: {a.waiting[s.queue]}/{s.max_waiting} jobs wait "
                                     "for quota (max_waiting)")
    raw = a.shortfall(s, beside_holds=False)
    reserved = max((h.get("gpus", 0) for h in s.holds.values()), default=0)
    if raw is not None:
        pool, resource = raw
        text = _short_text(a, s, pool, resource)
        if s.need["gpus"] and reserved:
            text += f"; {reserved} of the {s.need['gpus']} GPUs its next trial needs are held for it"
        return Wait(W.TEAM_QUOTA if pool is not a.cluster else W.CLUSTER_CAP, text)
    beside = a.shortfall(s, beside_holds=True)
    if beside is not None:
        return Wait(W.RESERVED_FOR_OTHER, holders.text(a, s, *beside))
    if limit is not None and len(a.launches) >= limit:
        return Wait(W.TICK_LIMIT, f"SWEEPQ_MAX_LAUNCHES_PER_TICK ({limit}) reached; it continues next tick")
    return None


def _short_text(a: Allocator, s: Sweep, pool: Pool, resource: str) -> str:
    cap = pool.cap[resource]
    free = pool.free[resource]
    assert cap is not None and free is not None
    unit = "GPUs" if resource == "gpus" else "jobs"
    need = f"its next trial needs {s.need['gpus']} GPUs" if resource == "gpus" else "its next trial needs a job slot"
    if pool is a.cluster:
        setting = "SWEEPQ_MAX_GPUS" if resource == "gpus" else "SWEEPQ_MAX_RUNNING"
        return f"cluster cap: {cap - free}/{cap} {unit} in use ({setting}), {need}"
    return f"team {pool.name} quota: {cap - free}/{cap} {unit} in use (max_{resource}), {need}"


class Holders:
    """Which reservation holds what at each level: (pool key, resource) → the sweeps holding some of
    it, in the order they reserved — built once per plan, so each wait text is O(1)."""

    def __init__(self, a: Allocator) -> None:
        self.by_pool: dict[tuple[str, str], list[Sweep]] = {}
        self.reservation = {res.sweep_id: res for res in a.reservations}
        for res in a.reservations:
            holder = a.by_id[res.sweep_id]
            for key, held in holder.holds.items():
                for resource, amount in held.items():
                    if amount:
                        self.by_pool.setdefault((key, resource), []).append(holder)

    def text(self, a: Allocator, s: Sweep, pool: Pool, resource: str) -> str:
        """What keeps ``s`` out beside the holds: the first other reservation holding ``resource``
        at ``pool``, named with what it holds there (GPUs or job slots)."""
        holder = next((h for h in self.by_pool.get((pool.key, resource), ()) if h is not s), None)
        if holder is None:
            return "free capacity is held for a trial first in line"
        res = self.reservation[holder.rec.sweep_id]
        amount = holder.holds[pool.key][resource]
        what = f"{amount} free GPU(s)" if resource == "gpus" else f"{amount} free job slot(s)"
        where = "" if pool is a.cluster else f" of team {pool.name}'s quota"
        needs = f"{s.need['gpus']} GPUs" if resource == "gpus" else "a job slot"
        return (f"{what}{where} held for sweep {res.sweep_id} trial {res.index} (first in line, needs "
                f"{res.needs_gpus} GPUs); its next trial needs {needs}")


def _never_fits(a: Allocator, s: Sweep) -> str:
    """Only the limits the sweep's smallest trial cannot start under (the same rules as
    ``sharing.fit_problems`` at intake)."""
    launch = s.rec.launch
    share = a.policy.share(s.team)
    smallest = launch.min_nodes * launch.gpus_per_node
    over = [f"SWEEPQ_MAX_GPUS {a.caps.max_gpus}"] if a.caps.max_gpus is not None and smallest > a.caps.max_gpus \
        else []
    if share.max_gpus is not None and smallest > share.max_gpus:
        over.append(f"team {s.team} max_gpus {share.max_gpus}")
    parts = [f"its smallest trial needs {launch.min_nodes} node(s) × {launch.gpus_per_node} GPUs = {smallest} "
             f"GPUs, more than {' and '.join(over)}"] if over else []
    if a.caps.max_jobs == 0:
        parts.append("SWEEPQ_MAX_RUNNING is 0")
    if share.max_jobs == 0:
        parts.append(f"team {s.team} allows 0 jobs (max_jobs 0)")
    if s.queue and s.max_waiting == 0:
        parts.append(f"Kueue queue {s.queue} allows 0 jobs waiting for quota (max_waiting 0)")
    if not parts:  # plan(): the old call shape's GPU limit is the free capacity
        parts.append(f"its trial needs {launch.gpus_per_trial} GPUs, more than the GPU limit")
    return "; ".join(parts) + " — it can never start; cancel it, or ask the operator to raise the cap"


def _result(a: Allocator, limit: int | None) -> Plan:
    sweeps = {}
    wanting: set[str] = set()
    holders = Holders(a)
    for s in a.sweeps:
        wait = _wait(a, s, limit, holders)
        if s.has_work and not s.rec.state.terminal:
            wanting.add(s.team)
        reserved = max((h.get("gpus", 0) for h in s.holds.values()), default=0)
        sweeps[s.rec.sweep_id] = SweepShare(
            sweep_id=s.rec.sweep_id, team=s.team, submitter=s.rec.submitter, priority=s.rec.priority,
            jobs=s.usage.jobs, gpus=s.usage.gpus, queued=s.usage.queued, launched=s.launched,
            trial_gpus=s.shape.gpus if s.shape else None, trial_nodes=s.shape.nodes if s.shape else None,
            share=a.dominant(s.usage), wait=wait, reserved_gpus=reserved,
        )
    active = {t for t, use in a.team_use.items() if use.jobs or t in wanting}
    total_weight = sum(a.policy.share(t).weight for t in active)
    teams = {}
    for team, use in sorted(a.team_use.items()):
        share = a.policy.share(team)
        teams[team] = TeamStatus(
            team=team, weight=share.weight, jobs=use.jobs, gpus=use.gpus, queued=use.queued,
            max_jobs=share.max_jobs, max_gpus=share.max_gpus, share=a.dominant(use),
            fair_share=share.weight / total_weight if team in active else 0.0,
        )
    return Plan(
        launches=tuple(a.launches), sweeps=sweeps, teams=teams, reservations=tuple(a.reservations),
        free_before=a.free_before, free_after=Free(a.cluster.free["jobs"], a.cluster.free["gpus"]),
    )


# --------------------------------------------------------------------------- entry points


def distinct(sweeps: Sequence[SweepRecord]) -> tuple[list[SweepRecord], set[str]]:
    """Each sweep once (the first copy), and the ids given more than once with different contents
    (two reads disagree: the planner cannot tell which is current, so that sweep launches nothing
    this tick). Identical copies — a duplicated index entry, a retried read — are one sweep."""
    first: dict[str, SweepRecord] = {}
    conflicting: set[str] = set()
    for r in sweeps:
        seen = first.setdefault(r.sweep_id, r)
        if seen is not r and seen != r:
            conflicting.add(r.sweep_id)
    return list(first.values()), conflicting


def make_plan(
    *,
    sweeps: Sequence[SweepRecord],
    jobs: Mapping[str, JobStatus],
    caps: Caps,
    policy: SharePolicy = SharePolicy(),
    limit: int | None = None,
    held: Collection[str] = frozenset(),
) -> Plan:
    """This tick's launches for the active ``sweeps`` given the observed ``jobs`` (every kind, as
    ``Dispatcher.observe`` returns them), the caps and the share policy. ``held`` sweeps count for
    usage and shares but launch nothing this tick. ``limit`` bounds the launches
    (``SWEEPQ_MAX_LAUNCHES_PER_TICK``). Each :class:`Launch` carries the size it was counted at;
    the tick renders its job at that size, ``sized_launch(record.launch, TrialShape(launch.nodes,
    launch.gpus))``, stores ``launch.nodes`` with the claim, and re-creates a claimed trial's job
    at ``claim_shape(record, trial, ...)`` — the stored size, not one recomputed from caps that
    may have changed since."""
    records, duplicated = distinct(sweeps)
    measured = measure_usage(records, jobs, policy=policy, caps=caps)
    allocator = Allocator(records, caps=caps, by_sweep=measured.by_sweep, cluster_used=measured.cluster,
                          policy=policy, held=held, sized=True, team_used=measured.by_team,
                          narrowest=measured.narrowest, duplicated=duplicated, limit=limit)
    allocator.run()
    return _result(allocator, limit)


def plan(*, sweeps: Sequence[SweepRecord], capacity: Capacity, limit: int | None = None,
         policy: SharePolicy = SharePolicy()) -> list[Launch]:
    """The older call shape: free ``capacity`` in (the tick computed it), launches out. Usage comes
    from the records alone, and a trial counts at its full ``max_nodes`` (the tick renders
    ``record.launch`` as it is), so elastic ranges are not resized here, and the caps it shares
    by are rebuilt from the free capacity (jobs of sweeps not given are invisible to it): use
    :func:`make_plan`."""
    records, duplicated = distinct(sweeps)
    unsized = Caps()
    measured = measure_usage(records, {}, policy=policy, caps=unsized)
    used = measured.cluster
    caps = Caps(
        max_jobs=None if capacity.jobs is None else capacity.jobs + used.jobs,
        max_gpus=None if capacity.gpus is None else capacity.gpus + used.gpus,
    )
    allocator = Allocator(records, caps=caps, by_sweep=measured.by_sweep, cluster_used=used, policy=policy,
                          held=(), sized=False, narrowest=measured.narrowest, duplicated=duplicated, limit=limit)
    allocator.run()
    return list(allocator.launches)
