"""The planner: who gets the free slots this tick. Purely computational, no side effects.

capacity = global caps (jobs and/or GPUs) minus what the cluster already runs, and each sweep's
own ``max_concurrent``. Free slots are shared **round-robin, least-loaded first**, across active
sweeps ordered by priority (higher first), then submit time, then id — so one big sweep cannot
starve the others, also when slots free one at a time.
Within a sweep, retries (WAITING trials) go before fresh trials (they are older work).
A sweep whose trial needs more GPUs than are left is skipped for the rest of the tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dispatcher.core.records import SweepRecord


@dataclass(frozen=True)
class Launch:
    sweep_id: str
    index: int
    attempt: int
    retry: bool


@dataclass(frozen=True)
class Capacity:
    jobs: int | None  # free job slots (None = unlimited)
    gpus: int | None  # free GPUs (None = unlimited)


def free_capacity(*, max_running: int | None, max_gpus: int | None, used_jobs: int, used_gpus: int) -> Capacity:
    return Capacity(
        jobs=None if max_running is None else max(0, max_running - used_jobs),
        gpus=None if max_gpus is None else max(0, max_gpus - used_gpus),
    )


def plan(*, sweeps: Sequence[SweepRecord], capacity: Capacity, limit: int | None = None) -> list[Launch]:
    """Launches for this tick, in the order they should happen. ``limit`` bounds work per tick.

    Each free slot goes to the *least-loaded* eligible sweep (live trials holding a slot plus
    launches already planned this tick); ties go to higher priority, then earlier submit time, then
    id. With empty sweeps this is plain round-robin in priority order, and it stays fair when slots
    free one at a time (event-driven top-up): a freed slot goes to the sweep running the fewest
    trials, not back to the first sweep in the list.
    """
    order = [s for s in sweeps if not s.state.terminal and not s.cancel_requested]
    retries = {s.sweep_id: [(i, s.live[i].attempt + 1) for i in s.waiting] for s in order}
    cursor = {s.sweep_id: s.cursor for s in order}
    load = {s.sweep_id: s.holding for s in order}
    room = {
        s.sweep_id: None if s.launch.max_concurrent is None else max(0, s.launch.max_concurrent - s.holding)
        for s in order
    }
    jobs_left, gpus_left = capacity.jobs, capacity.gpus
    out: list[Launch] = []

    def eligible(s: SweepRecord) -> bool:
        has_work = bool(retries[s.sweep_id]) or cursor[s.sweep_id] < s.total
        fits = gpus_left is None or s.launch.gpus_per_trial <= gpus_left
        return has_work and fits and room[s.sweep_id] != 0

    while (jobs_left is None or jobs_left > 0) and (limit is None or len(out) < limit):
        candidates = [s for s in order if eligible(s)]
        if not candidates:
            break
        s = min(candidates, key=lambda s: (load[s.sweep_id], -s.priority, s.submitted_at, s.sweep_id))
        sid = s.sweep_id
        if retries[sid]:
            index, attempt = retries[sid].pop(0)
            out.append(Launch(sid, index, attempt, retry=True))
        else:
            out.append(Launch(sid, cursor[sid], 1, retry=False))
            cursor[sid] += 1
        load[sid] += 1
        if jobs_left is not None:
            jobs_left -= 1
        if gpus_left is not None:
            gpus_left -= s.launch.gpus_per_trial
        if room[sid] is not None:
            room[sid] -= 1
    return out
