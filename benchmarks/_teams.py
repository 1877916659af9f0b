"""``utilization.py --teams``: two teams with mixed trial widths on one GPU cap, planned by today's
planner (main before issue 15) and by the hierarchical fair-share planner with and without GPU
reservation — a discrete-event simulation of the **pure planners** with a plan after every event
(a job end, an arrival, a pause or resume: event-driven top-up with no delay), so the planners are
compared, not the tick cadence.

Workload (default): 32 GPUs (``SWEEPQ_MAX_GPUS``). Team *vision* (alice 3 sweeps, bob 2) runs 1-GPU
trials from t=0; team *nlp* submits at t=30 min, when vision fills the cluster: carol's sweep of
8-GPU trials and dave's sweep of 2-GPU trials. Durations lognormal (median 20 min, 40 min for the
8-GPU trials, σ 0.4), seeded per (sweep, trial): every planner sees the same draws. One of alice's
sweeps is paused from 2 h to 3 h.

Measured: GPU utilization while work waited (busy GPU-time / the GPU-time waiting work could
have used: at each instant ``min(cap, running + waiting GPUs)``, paused sweeps' work not counted),
each team's share of the cap while both had work waiting, the 8-GPU trials' waits (start minus
the moment they were next in their sweep), launches of the paused sweep while paused, when each
team finished — and a plot of GPUs held per team over time.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dispatcher.core.jobs import JobPhase, JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.planner import Capacity, Launch, make_plan
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState
from dispatcher.core.sharing import Caps, SharePolicy


@dataclass(frozen=True)
class SweepSpec:
    name: str
    team: str
    submitter: str
    gpus: int  # per trial (one node)
    trials: int
    median_min: float
    arrive_min: float


@dataclass(frozen=True)
class Scenario:
    sweeps: tuple[SweepSpec, ...]
    cap_gpus: int
    sigma: float
    seed: int
    pause: tuple[str, float, float] | None  # (sweep, from min, to min)

    def draw(self, sweep: SweepSpec, index: int) -> float:
        rng = random.Random(f"{self.seed}/{sweep.name}/{index}")
        return sweep.median_min * 60 * math.exp(self.sigma * rng.gauss(0.0, 1.0))


def scenario(*, quick: bool, seed: int, cap: int | None = None) -> Scenario:
    n = 12 if quick else 60
    vision = [SweepSpec(f"vision-{who}-{i}", "vision", who, 1, n, 20, 0)
              for who, count in (("alice", 3), ("bob", 2)) for i in range(count)]
    nlp = [SweepSpec("nlp-carol-wide", "nlp", "carol", 8, 4 if quick else 16, 40, 30),
           SweepSpec("nlp-dave-2gpu", "nlp", "dave", 2, 10 if quick else 40, 20, 30)]
    return Scenario(tuple(vision + nlp), cap or (16 if quick else 32), 0.4, seed,
                    ("vision-alice-0", 30.0, 50.0) if quick else ("vision-alice-0", 120.0, 180.0))


# --------------------------------------------------------------------------- today's planner


def todays_plan(*, sweeps: Sequence[SweepRecord], capacity: Capacity) -> list[Launch]:
    """``dispatcher/core/planner.py::plan`` as on main before issue 15 (commit 0bae119), unchanged
    but for the comments: per-sweep least-loaded, GPUs counted at ``max_nodes``, a sweep whose trial
    does not fit the free GPUs skipped. It has no pause: paused sweeps are left out of its input."""
    order = [s for s in sweeps if not s.state.terminal and not s.cancel_requested]
    retries = {s.sweep_id: [(i, s.live[i].attempt + 1) for i in s.waiting] for s in order}
    cursor = {s.sweep_id: s.cursor for s in order}
    load = {s.sweep_id: s.holding for s in order}
    room = {s.sweep_id: None if s.launch.max_concurrent is None else max(0, s.launch.max_concurrent - s.holding)
            for s in order}
    jobs_left, gpus_left = capacity.jobs, capacity.gpus
    out: list[Launch] = []

    def eligible(s: SweepRecord) -> bool:
        has_work = bool(retries[s.sweep_id]) or cursor[s.sweep_id] < s.total
        fits = gpus_left is None or s.launch.gpus_per_trial <= gpus_left
        return has_work and fits and room[s.sweep_id] != 0

    while jobs_left is None or jobs_left > 0:
        candidates = [s for s in order if eligible(s)]
        if not candidates:
            break
        s = min(candidates, key=lambda s: (load[s.sweep_id], -s.priority, s.submitted_at, s.sweep_id))
        sid = s.sweep_id
        if retries[sid]:
            index, attempt = retries[sid].pop(0)
            out.append(Launch(sid, index, attempt, True, s.launch.max_nodes, s.launch.gpus_per_trial))
        else:
            out.append(Launch(sid, cursor[sid], 1, False, s.launch.max_nodes, s.launch.gpus_per_trial))
            cursor[sid] += 1
        load[sid] += 1
        if jobs_left is not None:
            jobs_left -= 1
        if gpus_left is not None:
            gpus_left -= s.launch.gpus_per_trial
        if room[sid] is not None:
            room[sid] -= 1
    return out


Planner = Callable[[list[SweepRecord], dict[str, JobStatus], int], Sequence[Launch]]


def planner_today(records: list[SweepRecord], jobs: dict[str, JobStatus], cap: int) -> Sequence[Launch]:
    used = sum(j.gpus for j in jobs.values())
    return todays_plan(sweeps=[r for r in records if not r.paused], capacity=Capacity(None, max(0, cap - used)))


def planner_fair(reserve: bool) -> Planner:
    policy = SharePolicy(reserve_gpus=reserve)

    def run(records: list[SweepRecord], jobs: dict[str, JobStatus], cap: int) -> Sequence[Launch]:
        return make_plan(sweeps=records, jobs=jobs, caps=Caps(max_gpus=cap), policy=policy).launches
    return run


MODES: tuple[tuple[str, Callable[[], Planner]], ...] = (
    ("today's planner (per sweep)", lambda: planner_today),
    ("fair share, no reservation", lambda: planner_fair(False)),
    ("fair share + GPU reservation", lambda: planner_fair(True)),
)


# --------------------------------------------------------------------------- the simulation


@dataclass
class Run:
    label: str
    samples: list[tuple[float, dict[str, int], dict[str, int]]] = field(default_factory=list)  # t, held, waiting
    starts: list[tuple[float, str, int]] = field(default_factory=list)  # (t, sweep, index)
    ends: list[float] = field(default_factory=list)
    team_done_min: dict[str, float] = field(default_factory=dict)
    paused_launches: int = 0
    resumed_launches: int = 0
    plans: int = 0


def simulate(sc: Scenario, label: str, planner: Planner, *, period_s: float = 0.0) -> Run:
    """``period_s`` 0: a plan after every batch of simultaneous events; else a plan every
    ``period_s`` seconds only (a scheduled tick without top-up)."""
    specs = {s.name: s for s in sc.sweeps}
    records: dict[str, SweepRecord] = {}
    jobs: dict[str, JobStatus] = {}
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, name)
    for s in sc.sweeps:
        heapq.heappush(events, (s.arrive_min * 60, 0, "arrive", s.name))
    if sc.pause:
        heapq.heappush(events, (sc.pause[1] * 60, 1, "pause", sc.pause[0]))
        heapq.heappush(events, (sc.pause[2] * 60, 1, "resume", sc.pause[0]))
    if period_s:
        heapq.heappush(events, (period_s, 3, "tick", ""))
    run = Run(label)
    while events:
        now = events[0][0]
        ticked = not period_s
        while events and events[0][0] == now:
            _, _, kind, name = heapq.heappop(events)
            if kind == "tick":
                ticked = True
                if len(events) > 0:  # anything left to happen or to launch: tick again
                    heapq.heappush(events, (now + period_s, 3, "tick", ""))
                elif any(r.cursor < r.total for r in records.values()):
                    heapq.heappush(events, (now + period_s, 3, "tick", ""))
            elif kind == "arrive":
                records[name] = _record(specs[name])
            elif kind in ("pause", "resume"):
                records[name] = dataclasses.replace(records[name], paused=kind == "pause")
            else:
                job = jobs.pop(name)
                r = records[job.sweep_id]
                records[r.sweep_id] = dataclasses.replace(
                    r, live={i: t for i, t in r.live.items() if i != job.trial_index}, succeeded=r.succeeded + 1)
                run.ends.append(now)
                team = specs[job.sweep_id].team
                run.team_done_min[team] = max(run.team_done_min.get(team, 0.0), now / 60)
        if not ticked:
            held = {team: sum(j.gpus for j in jobs.values() if specs[j.sweep_id].team == team) for team in _teams(sc)}
            run.samples.append((now, held, _waiting(records, specs)))
            continue
        launches = planner(list(records.values()), jobs, sc.cap_gpus)
        run.plans += 1
        for launch in launches:
            r = records[launch.sweep_id]
            name = f"{r.sweep_id}-{launch.index}"
            records[r.sweep_id] = dataclasses.replace(
                r, cursor=launch.index + 1, live={**r.live, launch.index: LiveTrial(launch.index, 1, TrialState.RUNNING,
                                                                                    name)})
            jobs[name] = JobStatus(name=name, kind="pytorchjob", sweep_id=r.sweep_id, trial_index=launch.index,
                                   attempt=1, phase=JobPhase.RUNNING, gpus=launch.gpus)
            heapq.heappush(events, (now + sc.draw(specs[r.sweep_id], launch.index), 2, "end", name))
            run.starts.append((now, r.sweep_id, launch.index))
            if sc.pause and r.sweep_id == sc.pause[0] and sc.pause[1] * 60 <= now < sc.pause[2] * 60:
                run.paused_launches += 1
            elif sc.pause and r.sweep_id == sc.pause[0] and now >= sc.pause[2] * 60:
                run.resumed_launches += 1
        assert sum(j.gpus for j in jobs.values()) <= sc.cap_gpus, f"{label}: over the GPU cap at {now}"
        held = {team: sum(j.gpus for j in jobs.values() if specs[j.sweep_id].team == team) for team in _teams(sc)}
        run.samples.append((now, held, _waiting(records, specs)))
    return run


def _record(spec: SweepSpec) -> SweepRecord:
    return SweepRecord(sweep_id=spec.name, state=SweepState.ACTIVE, total=spec.trials, cursor=0,
                       launch=LaunchSettings(gpus_per_node=spec.gpus, kind="pytorchjob"), kind="pytorchjob",
                       submitted_at=f"{spec.arrive_min:08.1f}#{spec.name}", team=spec.team,
                       submitter=f"AIDA{spec.submitter.upper()}")


def _teams(sc: Scenario) -> list[str]:
    return sorted({s.team for s in sc.sweeps})


def _waiting(records: dict[str, SweepRecord], specs: dict[str, SweepSpec]) -> dict[str, int]:
    """GPUs of the trials not launched yet, per team (paused sweeps' not counted: nobody may use them)."""
    out = {team: 0 for team in {s.team for s in specs.values()}}
    for r in records.values():
        if not r.paused:
            out[specs[r.sweep_id].team] += (r.total - r.cursor) * specs[r.sweep_id].gpus
    return out


# --------------------------------------------------------------------------- measures


def measure(sc: Scenario, run: Run) -> dict[str, Any]:
    teams = _teams(sc)
    busy = usable = contested = 0.0
    team_time = {t: 0.0 for t in teams}
    for (t0, held, waiting), (t1, _, _) in zip(run.samples, run.samples[1:], strict=False):
        dt = t1 - t0
        running = sum(held.values())
        if sum(waiting.values()) > 0:
            busy += running * dt
            usable += min(sc.cap_gpus, running + sum(waiting.values())) * dt
        if all(waiting[t] > 0 for t in teams):
            contested += dt
            for t in teams:
                team_time[t] += held[t] * dt
    wide = next(s for s in sc.sweeps if s.gpus == max(x.gpus for x in sc.sweeps))
    waits, previous = [], wide.arrive_min * 60
    for t, sweep, _ in run.starts:
        if sweep == wide.name:
            waits.append((t - previous) / 60)
            previous = t
    first = next((t for t, s, _ in run.starts if s == wide.name), None)
    freed_before_first = sum(1 for e in run.ends if wide.arrive_min * 60 <= e <= (first if first is not None
                                                                                  else math.inf))
    return {
        "mode": run.label, "plans": run.plans, "utilization": busy / usable if usable else 1.0,
        "idle_usable_gpu_h": (usable - busy) / 3600, "contested_h": contested / 3600,
        "team_share": {t: (team_time[t] / (sc.cap_gpus * contested) if contested else 0.0) for t in teams},
        "wide_sweep": wide.name, "wide_started": sum(1 for _, s, _ in run.starts if s == wide.name),
        "wide_trials": wide.trials, "wide_wait_median_min": _median(waits), "wide_wait_max_min": max(waits, default=0),
        "freed_slots_before_first_wide": freed_before_first,
        "paused_launches": run.paused_launches, "resumed_launches": run.resumed_launches,
        "team_done_h": {t: run.team_done_min.get(t, math.nan) / 60 for t in teams},
        "makespan_h": max(run.ends) / 3600 if run.ends else 0.0,
    }


def _median(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def plot(sc: Scenario, runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teams = _teams(sc)
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.6 * len(runs)), sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        times = [t / 3600 for t, _, _ in run.samples]
        stacks = [[held[team] for _, held, _ in run.samples] for team in teams]
        ax.stackplot(times, stacks, labels=[f"team {t}" for t in teams], step="post", alpha=0.8)
        ax.axhline(sc.cap_gpus, color="black", linewidth=0.8, linestyle="--", label="SWEEPQ_MAX_GPUS")
        ax.axhline(sc.cap_gpus / 2, color="grey", linewidth=0.6, linestyle=":", label="equal share")
        if sc.pause:
            ax.axvspan(sc.pause[1] / 60, sc.pause[2] / 60, color="grey", alpha=0.15, label=f"{sc.pause[0]} paused")
        ax.set_title(run.label, fontsize=10)
        ax.set_ylabel("GPUs held")
        ax.set_ylim(0, sc.cap_gpus * 1.08)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", fontsize=8, ncol=5, frameon=False)
    axes[-1, 0].set_xlabel("hours since the first submission")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the report


def table(rows: list[dict[str, Any]], teams: list[str]) -> str:
    from _common import markdown_table

    headers = ["planner", "GPU utilization while work waited", "idle usable GPU-hours",
               "share of the GPUs while both teams waited", "8-GPU trials started",
               "freed slots before the first 8-GPU trial", "8-GPU trial wait, median / max (min)",
               "paused sweep's launches while paused / after resume", "each team done at (h)"]
    out = []
    for r in rows:
        out.append([r["mode"], f"{r['utilization'] * 100:.1f}%", round(r["idle_usable_gpu_h"], 2),
                    " / ".join(f"{t} {r['team_share'][t] * 100:.0f}%" for t in teams),
                    f"{r['wide_started']} of {r['wide_trials']}", r["freed_slots_before_first_wide"],
                    f"{r['wide_wait_median_min']:.0f} / {r['wide_wait_max_min']:.0f}",
                    f"{r['paused_launches']} / {r['resumed_launches']}",
                    ", ".join(f"{t} {r['team_done_h'][t]:.2f}" for t in teams)])
    return markdown_table(headers, out)


def main(args: Any, argv: list[str]) -> dict[str, Any]:
    import time

    from _common import header, write_json

    started = time.perf_counter()
    sc = scenario(quick=args.quick, seed=args.seed, cap=args.gpus)
    runs = [simulate(sc, label, make(), period_s=args.period) for label, make in MODES]
    rows = [measure(sc, run) for run in runs]
    if args.plot:
        plot(sc, runs, args.plot)
    elapsed = time.perf_counter() - started
    teams = _teams(sc)
    print(header("Two teams, mixed trial widths: today's planner vs hierarchical fair share (pure planners)",
                 "utilization.py", argv))
    trigger = f"a plan every {args.period:g} s" if args.period else "a plan after every event (top-up)"
    widths = ", ".join(f"{s.name} {s.trials}×{s.gpus} GPU" for s in sc.sweeps)
    pause = f"; {sc.pause[0]} paused {sc.pause[1]:g}–{sc.pause[2]:g} min" if sc.pause else ""
    print(f"Workload: SWEEPQ_MAX_GPUS={sc.cap_gpus}; {trigger}; {widths}; nlp submits at "
          f"{min(s.arrive_min for s in sc.sweeps if s.team == 'nlp'):g} min{pause}; durations lognormal σ "
          f"{sc.sigma:g}, seed {sc.seed}.\n")
    print(table(rows, teams))
    fair = rows[-1]
    today, plain = rows[0], rows[1]
    print(f"\nnlp's share while both teams waited: today {today['team_share']['nlp']:.0%}, fair share "
          f"{fair['team_share']['nlp']:.0%} (equal share 50%).")
    print(f"8-GPU trials started: today {today['wide_started']}, fair share without reservation "
          f"{plain['wide_started']}, with reservation {fair['wide_started']} of {fair['wide_trials']}.")
    print(f"Cost of the reservation: {(plain['utilization'] - fair['utilization']) * 100:.1f} utilization points "
          f"({fair['utilization'] * 100:.1f}% with it, {plain['utilization'] * 100:.1f}% without), "
          f"{fair['idle_usable_gpu_h'] - plain['idle_usable_gpu_h']:.2f} more idle usable GPU-hours.")
    print(f"Plot: {args.plot}" if args.plot else "Plot: not written (--plot '')")
    print(f"Runtime: {elapsed:.1f} s.")
    payload = {"benchmark": "utilization-teams", "argv": argv, "rows": rows, "plot": args.plot,
               "cap_gpus": sc.cap_gpus, "runtime_s": elapsed}
    write_json(args.json, payload)
    return payload
