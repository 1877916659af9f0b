"""The planner: who gets the free slots this tick. Purely computational, no side effects.

capacity = global caps (jobs and/or GPUs) minus what the cluster already runs, and each sweep's
own ``max_concurrent``. Free slots are shared **round-robin** across active sweeps ordered by
priority (higher first), then submit time, then id — so one big sweep cannot starve the others.
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
    """Launches for this tick, in the order they should happen. ``limit`` bounds work per tick."""
    order = [
        s
        for s in sorted(sweeps, key=lambda s: (-s.priority, s.submitted_at, s.sweep_id))
        if not s.state.terminal and not s.cancel_requested
    ]
    retries = {s.sweep_id: [(i, s.live[i].attempt + 1) for i in s.waiting] for s in order}
    cursor = {s.sweep_id: s.cursor for s in order}
    room = {
        s.sweep_id: None if s.launch.max_concurrent is None else max(0, s.launch.max_concurrent - s.holding)
        for s in order
    }
    jobs_left, gpus_left = capacity.jobs, capacity.gpus
    out: list[Launch] = []

    def exhausted() -> bool:
        return (jobs_left is not None and jobs_left <= 0) or (limit is not None and len(out) >= limit)

    while not exhausted():
        progressed = False
        for s in order:
            sid = s.sweep_id
            if exhausted():
                break
            need = s.launch.gpus_per_trial
            if room[sid] == 0 or (gpus_left is not None and need > gpus_left):
                continue
            if retries[sid]:
                index, attempt = retries[sid].pop(0)
                out.append(Launch(sid, index, attempt, retry=True))
            elif cursor[sid] < s.total:
                out.append(Launch(sid, cursor[sid], 1, retry=False))
                cursor[sid] += 1
            else:
                continue
            progressed = True
            if jobs_left is not None:
                jobs_left -= 1
            if gpus_left is not None:
                gpus_left -= need
            if room[sid] is not None:
                room[sid] -= 1
        if not progressed:
            break
    return out
