"""Builders for the planner tests: sweep records, their running trials and the jobs observed for them,
and a tiny cluster that runs a plan and frees jobs one by one (pure, no clock)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dispatcher.core.jobs import JobPhase, JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.planner import Launch, make_plan
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState
from dispatcher.core.sharing import Caps, SharePolicy
from dispatcher.core.waits import Plan


@dataclass(frozen=True)
class KueueJob(JobStatus):
    """A JobStatus with CONTRACTS C7's ``admission`` (the Kueue backend adds the field to JobStatus)."""

    admission: str | None = None


def record(sid: str, *, team: str | None = None, submitter: str = "", total: int = 100, priority: int = 0,
           submitted: str | None = None, running: int = 0, paused: bool = False, **launch: Any) -> SweepRecord:
    """An ACTIVE sweep; ``running`` trials 0..running-1 are RUNNING (cursor after them)."""
    live = {i: LiveTrial(i, 1, TrialState.RUNNING, f"{sid}-{i}-a1") for i in range(running)}
    return SweepRecord(
        sweep_id=sid, state=SweepState.ACTIVE, total=total, cursor=running,
        launch=LaunchSettings(priority=priority, **launch), kind="pytorchjob",
        submitted_at=submitted or f"2026-01-01T00:00:{len(sid):02d}Z#{sid}", live=live,
        team=team, submitter=submitter, paused=paused,
    )


def jobs_of(*records: SweepRecord, gpus: dict[str, int] | None = None, admission: str | None = None) -> dict[str, JobStatus]:
    """Observed RUNNING jobs for every live holding trial (``gpus``: per sweep id, else its max width)."""
    out: dict[str, JobStatus] = {}
    for r in records:
        width = (gpus or {}).get(r.sweep_id, r.launch.gpus_per_trial)
        for t in r.live.values():
            if t.state.holds_slot:
                out[t.job_name] = KueueJob(name=t.job_name, kind=r.kind, sweep_id=r.sweep_id, trial_index=t.index,
                                           attempt=t.attempt, phase=JobPhase.RUNNING, gpus=width, admission=admission)
    return out


def ids(launches: Any) -> list[str]:
    return [launch.sweep_id for launch in launches]


def count(launches: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for launch in launches:
        out[launch.sweep_id] = out.get(launch.sweep_id, 0) + 1
    return out


@dataclass
class Cluster:
    """Applies plans to the records, observes their jobs, and ends jobs when told: the planner's
    world without the tick's writes. ``ended`` lists finished job names in order."""

    records: dict[str, SweepRecord]
    caps: Caps
    policy: SharePolicy = SharePolicy()
    jobs: dict[str, JobStatus] = field(default_factory=dict)
    started: list[tuple[int, Launch]] = field(default_factory=list)  # (completions seen so far, launch)
    ended: list[str] = field(default_factory=list)

    def tick(self, limit: int | None = None) -> Plan:
        plan = make_plan(sweeps=list(self.records.values()), jobs=self.jobs, caps=self.caps, policy=self.policy,
                         limit=limit)
        for launch in plan.launches:
            self.apply(launch)
        return plan

    def apply(self, launch: Launch) -> None:
        r = self.records[launch.sweep_id]
        name = f"{r.sweep_id}-{launch.index}-a{launch.attempt}"
        live = {**r.live, launch.index: LiveTrial(launch.index, launch.attempt, TrialState.RUNNING, name)}
        self.records[r.sweep_id] = dataclasses.replace(
            r, live=live, cursor=r.cursor if launch.retry else launch.index + 1)
        self.jobs[name] = JobStatus(name=name, kind=r.kind, sweep_id=r.sweep_id, trial_index=launch.index,
                                    attempt=launch.attempt, phase=JobPhase.RUNNING, gpus=launch.gpus)
        self.started.append((len(self.ended), launch))

    def end(self, name: str) -> None:
        """The job succeeds; its trial leaves the live map (what the tick's reconcile does)."""
        job = self.jobs.pop(name)
        r = self.records[job.sweep_id]
        live = {i: t for i, t in r.live.items() if i != job.trial_index}
        self.records[r.sweep_id] = dataclasses.replace(r, live=live, succeeded=r.succeeded + 1)
        self.ended.append(name)

    def running(self, sweep_id: str) -> list[str]:
        """Its jobs, oldest first."""
        names = {f"{launch.sweep_id}-{launch.index}-a{launch.attempt}": n for n, (_, launch) in enumerate(self.started)}
        return sorted((n for n, j in self.jobs.items() if j.sweep_id == sweep_id), key=lambda n: names.get(n, -1))

    def held(self, team: str | None = None) -> tuple[int, int]:
        """(jobs, GPUs) running, for one team or all."""
        pick = [j for j in self.jobs.values()
                if team is None or self.policy.team_of(self.records[j.sweep_id]) == team]
        return len(pick), sum(j.gpus for j in pick)
