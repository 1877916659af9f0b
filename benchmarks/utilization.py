"""GPU-slot utilization and sweep makespan under different tick triggers: a discrete-event simulation
on a virtual clock that drives the **real** dispatcher.

Real: ``Dispatcher.tick()`` (intake, reconcile, planner, claims, retries, sweep completion) with its
DynamoDB table and SQS queue on moto in-process (``moto.mock_aws``). Simulated: the cluster — a
small :class:`~dispatcher.core.jobs.Backend` with ``--slots`` GPU slots (the dispatcher's
``max_running``) where a job runs from the moment it is created; trial durations are drawn from a
seeded lognormal (median ``--median-min`` minutes, shape ``--sigma``) and ``--fail-rate`` of the
attempts fail part-way (the dispatcher retries them). Every trigger mode sees the same draws for
the same (sweep, trial, attempt).

Trigger modes:

* a fixed schedule (10 minutes — the seed project's SQS + Lambda sample — or 1 minute); the first
  scheduled tick comes half a period after the sweeps are submitted (the mean phase);
* schedule + event-driven top-up: a tick also runs ``--wake-delay`` seconds after each job ends and
  after the submission (the trainer's wake message through the Lambda SQS event source, or
  ``dispatcher run``'s watch); wakes arriving while a wake tick is pending join it (coalesced);
* a reference with no dispatcher at all: a slot is refilled the instant it frees (the best case).

Utilization = busy slot-time / slot-time that work could have used, counted only while work
remains (some trial, or a retry, waits to be launched): at each instant the usable slots are
``min(slots, running + waiting)``. Makespan = submission → the tick that marks the last sweep done.

    python benchmarks/utilization.py           # 3 sweeps, 200 trials, 16 slots (about 1 minute)
    python benchmarks/utilization.py --quick   # 2 sweeps, 24 trials, 4 slots (seconds)

``--teams`` runs the other comparison, of planners rather than triggers: two teams with mixed
trial widths, today's planner next to the fair-share planner with and without GPU reservation,
utilization and per-team share over time, written as a plot (``--plot``) — see ``_teams.py``.

    python benchmarks/utilization.py --teams            # 32 GPUs, 7 sweeps, 436 trials (seconds)
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AwsCalls, CountingSession, fast_moto_transactions, header, markdown_table, write_json  # noqa: E402
from helpers import Clock, bootstrap, grid_spec, submit  # noqa: E402

from dispatcher.adapters.store import Store  # noqa: E402
from dispatcher.core.jobs import DryRun, JobPhase, JobStatus, LaunchRequest  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.tick import Dispatcher  # noqa: E402

KIND = "pytorchjob"
MAX_RETRIES = 2  # the launch default: up to 3 attempts per trial


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """The sweeps and the seeded duration/failure draw of every (sweep, trial, attempt)."""

    sweeps: tuple[tuple[str, int, int], ...]  # (name, learning rates, batch sizes): trials = product
    seed: int
    median_s: float
    sigma: float
    fail_rate: float

    @property
    def trials(self) -> int:
        return sum(a * b for _, a, b in self.sweeps)

    def draw(self, sweep: str, index: int, attempt: int) -> tuple[float, bool]:
        """(seconds the attempt runs, whether it fails at the end of them)."""
        rng = random.Random(f"{self.seed}/{sweep}/{index}/{attempt}")
        seconds = self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0))
        fails = rng.random() < self.fail_rate
        if fails:
            seconds *= rng.uniform(0.05, 1.0)  # dies part-way
        return seconds, fails


@dataclass
class SimJob:
    name: str
    sweep: str  # sweep name
    sweep_id: str
    index: int
    attempt: int
    start: float
    end: float
    fails: bool


class SimCluster:
    """A cluster with ``slots`` GPUs behind the Backend protocol; time is the injected clock."""

    kind = KIND

    def __init__(self, clock: Clock, workload: Workload, names: dict[str, str]) -> None:
        self.clock, self.workload, self.names = clock, workload, names
        self.jobs: dict[str, SimJob] = {}

    def dryrun(self, request: LaunchRequest) -> DryRun:
        return DryRun(job_name=request.job_name, kind=KIND, request=request, rendered=request.job_name)

    def submit(self, dryrun: DryRun) -> str:
        if dryrun.job_name in self.jobs:
            return dryrun.job_name  # already launched: success, like a 409
        request: LaunchRequest = dryrun.request
        sweep = self.names[request.sweep_id]
        seconds, fails = self.workload.draw(sweep, request.trial_index, request.attempt)
        now = self.clock()
        self.jobs[dryrun.job_name] = SimJob(dryrun.job_name, sweep, request.sweep_id, request.trial_index,
                                            request.attempt, now, now + seconds, fails)
        return dryrun.job_name

    def observe(self) -> dict[str, JobStatus]:
        now = self.clock()
        out = {}
        for job in self.jobs.values():
            done = now >= job.end
            phase = (JobPhase.FAILED if job.fails else JobPhase.SUCCEEDED) if done else JobPhase.RUNNING
            out[job.name] = JobStatus(name=job.name, kind=KIND, sweep_id=job.sweep_id, trial_index=job.index,
                                      attempt=job.attempt, phase=phase, gpus=1, created_at=job.start,
                                      started_at=job.start, finished_at=job.end if done else None,
                                      reason="exit code 1" if done and job.fails else "")
        return out

    def cancel(self, name: str) -> None:
        job = self.jobs.get(name)
        if job is not None and job.end > self.clock():
            job.end = self.clock()


# --------------------------------------------------------------------------- measures


def utilization(jobs: list[SimJob], *, t0: float, slots: int, trials: int) -> tuple[float, float]:
    """(utilization while work remained, idle usable slot-hours) — see the module docstring."""
    events: list[tuple[float, int, int]] = []  # (time, Δrunning, Δwaiting)
    by_attempt = {(j.sweep, j.index, j.attempt): j for j in jobs}
    first_attempts = [j for j in jobs if j.attempt == 1]
    events.append((t0, 0, trials - len(first_attempts)))  # never launched (only if a run was cut short)
    for j in jobs:
        events += [(j.start, +1, 0), (j.end, -1, 0)]
        if j.attempt == 1:
            events += [(t0, 0, +1), (j.start, 0, -1)]
        retry = by_attempt.get((j.sweep, j.index, j.attempt + 1))
        if j.fails and retry is not None:
            events += [(j.end, 0, +1), (retry.start, 0, -1)]
    events.sort()
    running = waiting = 0
    busy = usable = 0.0
    previous: float | None = None
    for when, group in itertools.groupby(events, key=lambda e: e[0]):
        if previous is not None and waiting > 0:
            busy += running * (when - previous)
            usable += min(slots, running + waiting) * (when - previous)
        for _, d_running, d_waiting in group:
            running += d_running
            waiting += d_waiting
        previous = when
    return (busy / usable if usable else 1.0), (usable - busy) / 3600


def instant_refill(workload: Workload, *, slots: int, t0: float) -> list[SimJob]:
    """The best case: every slot is refilled the instant it frees (no dispatcher, no tick delay),
    handed out like the planner does in a tick: round-robin over the sweeps in submission order,
    starting from the first sweep at every refill, a sweep's retries before its fresh trials."""
    fresh = {name: list(range(a * b)) for name, a, b in workload.sweeps}
    retries: dict[str, list[tuple[int, int]]] = {name: [] for name in fresh}
    jobs: list[SimJob] = []
    running: list[tuple[float, int]] = []  # heap of (end, job number)
    now = t0

    def one_round(free: int) -> list[tuple[str, int, int]]:
        picked: list[tuple[str, int, int]] = []
        progressed = True
        while len(picked) < free and progressed:
            progressed = False
            for name in fresh:
                if len(picked) >= free:
                    break
                if retries[name]:
                    picked.append((name, *retries[name].pop(0)))
                elif fresh[name]:
                    picked.append((name, fresh[name].pop(0), 1))
                else:
                    continue
                progressed = True
        return picked

    while True:
        for name, index, attempt in one_round(slots - len(running)):
            seconds, fails = workload.draw(name, index, attempt)
            jobs.append(SimJob(f"{name}-{index}-a{attempt}", name, name, index, attempt, now, now + seconds, fails))
            heapq.heappush(running, (jobs[-1].end, len(jobs) - 1))
        if not running:
            return jobs
        now = running[0][0]
        while running and running[0][0] == now:
            ended = jobs[heapq.heappop(running)[1]]
            if ended.fails and ended.attempt <= MAX_RETRIES:
                retries[ended.sweep].append((ended.index, ended.attempt + 1))


# --------------------------------------------------------------------------- the real dispatcher


@dataclass(frozen=True)
class Mode:
    label: str
    period_s: float
    events: bool


def simulate(mode: Mode, workload: Workload, *, slots: int, wake_delay_s: float, max_ticks: int) -> dict[str, Any]:
    from moto import mock_aws

    wall_started = time.perf_counter()
    with mock_aws():
        counter = AwsCalls()
        session = CountingSession(None, counter)
        settings = Settings.load({}, backend=KIND, max_running=slots, namespace="sweepq", table="utilization")
        store, queue = bootstrap(session, settings)
        clock = Clock()
        names = {}
        for name, n_lr, n_bs in workload.sweeps:
            names[submit(queue, grid_spec(name, n_lr, n_bs), token=f"utilization-{name}")] = name
        cluster = SimCluster(clock, workload, names)
        dispatcher = Dispatcher(settings=settings, store=Store(settings.table, session.client("dynamodb")),
                                queue=queue, backends={KIND: cluster}, clock=clock, owner="simulation")
        counter.reset()
        t0 = clock.now
        next_scheduled = t0 + mode.period_s / 2
        wake_at: float | None = t0 + wake_delay_s if mode.events else None
        announced: set[str] = set()
        ticks = wake_ticks = accepted = 0
        done_at: float | None = None
        while ticks < max_ticks:
            if mode.events:
                wake_at = _coalesce_wakes(cluster, announced, wake_at, wake_delay_s)
            now = min(next_scheduled, wake_at if wake_at is not None else math.inf)
            clock.now = now
            if now >= next_scheduled:
                next_scheduled += mode.period_s
            else:
                wake_ticks += 1
            if wake_at is not None and wake_at <= now:
                wake_at = None
            report = dispatcher.tick()
            ticks += 1
            if report.errors:
                raise RuntimeError(f"{mode.label}: tick at +{now - t0:.0f} s failed: {report.errors}")
            accepted += report.accepted
            if accepted == len(workload.sweeps) and report.active_sweeps == 0:
                done_at = now
                break
        if done_at is None:
            raise RuntimeError(f"{mode.label}: sweeps not done after {max_ticks} ticks — raise --max-ticks")
        outcomes = {names[sid]: store.get_sweep(sid) for sid in names}
    jobs = list(cluster.jobs.values())
    used, idle_slot_h = utilization(jobs, t0=t0, slots=slots, trials=workload.trials)
    return {
        "mode": mode.label, "period_s": mode.period_s, "events": mode.events, "ticks": ticks, "wake_ticks": wake_ticks,
        "utilization": used, "idle_usable_slot_h": idle_slot_h, "makespan_h": (done_at - t0) / 3600,
        "last_job_end_h": (max(j.end for j in jobs) - t0) / 3600, "jobs": len(jobs),
        "sweep_done_h": {name: (float(o["ended_at"]) - t0) / 3600 for name, o in outcomes.items()},
        "succeeded": sum(int(o["succeeded"]) for o in outcomes.values()),
        "failed": sum(int(o["failed"]) for o in outcomes.values()),
        "states": sorted({o["state"] for o in outcomes.values()}), "aws_calls": sum(counter.calls.values()),
        "aws_s": counter.seconds, "wall_s": time.perf_counter() - wall_started,
    }


def _coalesce_wakes(cluster: SimCluster, announced: set[str], wake_at: float | None, delay: float) -> float | None:
    """Each job end sends one wake; it schedules a tick ``delay`` later unless a wake tick is
    already pending at or after its arrival, which it then joins."""
    for job in sorted((j for j in cluster.jobs.values() if j.name not in announced), key=lambda j: j.end):
        if wake_at is None:
            wake_at = job.end + delay
        elif job.end > wake_at:
            break  # arrives after the pending wake tick: announced after that tick ran
        announced.add(job.name)
    return wake_at


def reference(workload: Workload, *, slots: int) -> dict[str, Any]:
    t0 = 0.0
    jobs = instant_refill(workload, slots=slots, t0=t0)
    used, idle_slot_h = utilization(jobs, t0=t0, slots=slots, trials=workload.trials)
    end = max(j.end for j in jobs)
    done = {name: max(j.end for j in jobs if j.sweep == name) / 3600 for name, _, _ in workload.sweeps}
    return {"mode": "instant refill, no dispatcher (best case)", "period_s": 0, "events": False, "ticks": 0,
            "wake_ticks": 0, "utilization": used, "idle_usable_slot_h": idle_slot_h, "makespan_h": end / 3600,
            "sweep_done_h": done,
            "last_job_end_h": end / 3600, "jobs": len(jobs), "aws_calls": 0, "aws_s": 0.0, "wall_s": 0.0}


# --------------------------------------------------------------------------- output


def table(rows: list[dict[str, Any]], trials: int) -> str:
    base = next(r for r in rows if r["period_s"] == 600 and not r["events"])
    headers = ["trigger", "ticks (of which wakes)", "utilization while work remained", "idle usable slot-hours",
               "makespan (h)", "makespan vs 10-min schedule", "utilization vs 10-min schedule",
               "each sweep done at (h)", "jobs (retries)",
               "AWS calls", "simulation wall (s)"]
    out = []
    for r in rows:
        out.append([r["mode"], f"{r['ticks']:,} ({r['wake_ticks']:,})" if r["ticks"] else "—",
                    f"{r['utilization'] * 100:.1f}%", round(r["idle_usable_slot_h"], 2), round(r["makespan_h"], 2),
                    f"{r['makespan_h'] / base['makespan_h']:.3f}×", f"{r['utilization'] / base['utilization']:.3f}×",
                    ", ".join(f"{name} {h:.2f}" for name, h in r["sweep_done_h"].items()),
                    f"{r['jobs']} ({r['jobs'] - trials})", r["aws_calls"] or None,
                    round(r["wall_s"], 1) if r["wall_s"] else None])
    return markdown_table(headers, out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 sweeps, 24 trials, 4 slots")
    parser.add_argument("--sweeps", default="", help="NAME=LRSxBATCHES,... (default alpha=10x10,beta=10x6,gamma=8x5)")
    parser.add_argument("--slots", type=int, default=None, help="GPU slots = max_running (default 16; quick 4)")
    parser.add_argument("--median-min", type=float, default=20.0, help="median trial duration in minutes")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal shape of the durations")
    parser.add_argument("--fail-rate", type=float, default=0.05, help="share of attempts that fail part-way")
    parser.add_argument("--wake-delay", type=float, default=5.0, help="seconds from a job's end to its wake tick")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-ticks", type=int, default=5000)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--teams", action="store_true", help="compare planners: two teams, mixed trial widths")
    parser.add_argument("--gpus", type=int, default=None, help="--teams: SWEEPQ_MAX_GPUS (default 32; quick 16)")
    parser.add_argument("--period", type=float, default=0.0,
                        help="--teams: plan every this many seconds (default 0: after every event, as with top-up)")
    parser.add_argument("--plot", default=str(Path(__file__).with_name("utilization_teams.png")),
                        help="--teams: where the plot of GPUs held per team over time is written")
    return parser.parse_args(argv)


def parse_sweeps(text: str) -> tuple[tuple[str, int, int], ...]:
    out = []
    for part in text.split(","):
        name, _, shape = part.partition("=")
        try:
            lrs, batches = (int(x) for x in shape.split("x"))
        except ValueError:
            raise SystemExit(f"--sweeps: {part!r} is not NAME=LRSxBATCHES — e.g. alpha=10x10") from None
        out.append((name.strip(), lrs, batches))
    return tuple(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.teams:
        from _teams import main as teams_main

        return teams_main(args, argv)
    sweeps = parse_sweeps(args.sweeps or ("alpha=4x4,beta=4x2" if args.quick else "alpha=10x10,beta=10x6,gamma=8x5"))
    slots = args.slots or (4 if args.quick else 16)
    workload = Workload(sweeps, args.seed, args.median_min * 60, args.sigma, args.fail_rate)
    logging.getLogger("dispatcher").setLevel(logging.WARNING)
    fast_moto_transactions()
    started = time.perf_counter()
    modes = [Mode("10-minute schedule", 600, False), Mode("1-minute schedule", 60, False),
             Mode("10-minute schedule + event-driven top-up", 600, True),
             Mode("1-minute schedule + event-driven top-up", 60, True)]
    rows = []
    for mode in modes:
        rows.append(simulate(mode, workload, slots=slots, wake_delay_s=args.wake_delay, max_ticks=args.max_ticks))
        print(f"  {mode.label:<42} done at {time.perf_counter() - started:6.1f} s", file=sys.stderr)
    rows.append(reference(workload, slots=slots))
    elapsed = time.perf_counter() - started
    print(header("Slot utilization and makespan by tick trigger (real tick, simulated cluster)", __file__, argv))
    print(f"Workload: {len(sweeps)} sweeps, {workload.trials} trials, {slots} slots; durations lognormal, median "
          f"{args.median_min:g} min, σ {args.sigma:g}; {args.fail_rate:.0%} of attempts fail part-way and are "
          f"retried (max_retries {MAX_RETRIES}); wake ticks {args.wake_delay:g} s after a job ends; seed {args.seed}.\n")
    print(table(rows, workload.trials))
    top_up = next(r for r in rows if r["period_s"] == 60 and r["events"])
    print(f"\nWith event-driven top-up on a 1-minute schedule, utilization is {top_up['utilization'] * 100:.1f}% "
          f"(goal ≥ 99%: {'met' if top_up['utilization'] >= 0.99 else 'NOT met'}).")
    print(f"Runtime: {elapsed:.0f} s.")
    payload = {"benchmark": "utilization", "argv": argv, "rows": rows, "runtime_s": elapsed}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
