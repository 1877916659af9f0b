"""Reconcile: compare each active sweep's live trials with the jobs observed on the cluster.

Purely computational, no side effects: :func:`reconcile_sweep` returns what should change; the
tick performs it. ``now`` is injected (epoch seconds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from dispatcher.core.jobs import JobPhase, JobStatus
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState


@dataclass(frozen=True)
class Transition:
    """One live trial changes. ``new`` is ``None`` when it leaves the live set (terminal)."""

    sweep_id: str
    index: int
    attempt: int  # the attempt the change is about (condition on the write)
    new: LiveTrial | None
    trial_state: TrialState  # what the trial item records
    outcome: TrialState | None = None  # terminal outcome of *this attempt* (SUCCEEDED/FAILED/LOST/CANCELLED)
    reason: str = ""


@dataclass(frozen=True)
class CancelJob:
    kind: str
    name: str
    reason: str


@dataclass(frozen=True)
class Relaunch:
    """A PENDING trial whose job is not on the cluster: create it (idempotent by name)."""

    sweep_id: str
    index: int
    attempt: int
    job_name: str


@dataclass(frozen=True)
class SweepOutcome:
    transitions: list[Transition] = field(default_factory=list)
    cancels: list[CancelJob] = field(default_factory=list)
    relaunches: list[Relaunch] = field(default_factory=list)
    end: tuple[SweepState, str] | None = None  # the sweep becomes terminal after the effects above
    record: SweepRecord | None = None  # the sweep as it will be after the transitions


def fail_attempt(sweep: SweepRecord, t: LiveTrial, outcome: TrialState, reason: str) -> Transition:
    """This attempt ended badly: retry it (WAITING for a slot) or, out of retries, FAILED."""
    if t.attempt <= sweep.launch.max_retries:
        waiting = dataclasses.replace(t, state=TrialState.WAITING, reason=reason, started_at=None)
        return Transition(sweep.sweep_id, t.index, t.attempt, waiting, TrialState.WAITING, outcome, reason)
    final = f"{reason} (attempt {t.attempt} of {sweep.launch.max_retries + 1})"
    return Transition(sweep.sweep_id, t.index, t.attempt, None, TrialState.FAILED, outcome, final)


def _observe_trial(sweep: SweepRecord, t: LiveTrial, job: JobStatus | None, now: float) -> tuple[list[Transition], list[CancelJob], list[Relaunch]]:
    sid, launch = sweep.sweep_id, sweep.launch
    if t.state is TrialState.WAITING:
        return [], [], []
    if job is None:
        if t.state is TrialState.PENDING:
            return [], [], [Relaunch(sid, t.index, t.attempt, t.job_name)]
        return [fail_attempt(sweep, t, TrialState.LOST, f"job {t.job_name} vanished from the cluster")], [], []
    if job.phase is JobPhase.SUCCEEDED:
        return [Transition(sid, t.index, t.attempt, None, TrialState.SUCCEEDED, TrialState.SUCCEEDED)], [], []
    if job.phase is JobPhase.FAILED:
        return [fail_attempt(sweep, t, TrialState.FAILED, job.reason or "job failed")], [], []
    if job.phase is JobPhase.PENDING:
        waited = now - t.claimed_at
        if waited > launch.start_timeout:
            reason = f"still pending after {int(waited)} s (start_timeout {launch.start_timeout} s)"
            return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(job.kind, job.name, reason)], []
        if t.state is TrialState.PENDING:
            launched = dataclasses.replace(t, state=TrialState.LAUNCHED)
            return [Transition(sid, t.index, t.attempt, launched, TrialState.LAUNCHED)], [], []
        return [], [], []
    # RUNNING
    started = t.started_at if t.started_at is not None else (job.started_at or now)
    if launch.max_runtime and now - started > launch.max_runtime:
        reason = f"ran {int(now - started)} s, over max_runtime {launch.max_runtime} s"
        return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(job.kind, job.name, reason)], []
    if t.state is not TrialState.RUNNING:
        running = dataclasses.replace(t, state=TrialState.RUNNING, started_at=started)
        return [Transition(sid, t.index, t.attempt, running, TrialState.RUNNING)], [], []
    return [], [], []


def _apply(sweep: SweepRecord, transitions: list[Transition]) -> SweepRecord:
    live = dict(sweep.live)
    succeeded, failed, cancelled = sweep.succeeded, sweep.failed, sweep.cancelled
    for tr in transitions:
        if tr.new is None:
            live.pop(tr.index, None)
            succeeded += tr.trial_state is TrialState.SUCCEEDED
            failed += tr.trial_state is TrialState.FAILED
            cancelled += tr.trial_state is TrialState.CANCELLED
        else:
            live[tr.index] = tr.new
    return dataclasses.replace(sweep, live=live, succeeded=succeeded, failed=failed, cancelled=cancelled)


def _stop_all(sweep: SweepRecord, jobs: Mapping[str, JobStatus], reason: str) -> tuple[list[Transition], list[CancelJob]]:
    transitions, cancels = [], []
    for t in sorted(sweep.live.values(), key=lambda t: t.index):
        job = jobs.get(t.job_name)
        if job is not None and not job.phase.terminal:
            cancels.append(CancelJob(job.kind, job.name, reason))
        elif t.state is TrialState.PENDING:
            # the create may be in flight elsewhere: delete by name too (a no-op if absent)
            cancels.append(CancelJob(sweep.kind, t.job_name, reason))
        transitions.append(
            Transition(sweep.sweep_id, t.index, t.attempt, None, TrialState.CANCELLED, TrialState.CANCELLED, reason)
        )
    return transitions, cancels


def _orphans(sweep: SweepRecord, jobs: Mapping[str, JobStatus]) -> list[CancelJob]:
    """Non-terminal jobs of this sweep that no live trial owns (a superseded attempt, or a job
    created by a dispatcher that crashed after its trial was already given up)."""
    owned = {t.job_name for t in sweep.live.values()}
    return [
        CancelJob(job.kind, job.name, "orphan: no live trial owns this job")
        for job in sorted(jobs.values(), key=lambda j: j.name)
        if job.sweep_id == sweep.sweep_id and job.name not in owned and not job.phase.terminal
    ]


def reconcile_sweep(sweep: SweepRecord, jobs: Mapping[str, JobStatus], *, now: float) -> SweepOutcome:
    """Decide what changes for one active sweep given the observed jobs (keyed by job name).

    The sweep's end state (if any) must only be written after every cancel succeeded.
    """
    orphans = _orphans(sweep, jobs)
    if sweep.cancel_requested:
        transitions, cancels = _stop_all(sweep, jobs, "sweep cancelled")
        end = (SweepState.CANCELLED, "cancelled by request")
        return SweepOutcome(transitions, orphans + cancels, [], end, _apply(sweep, transitions))

    transitions: list[Transition] = []
    cancels: list[CancelJob] = list(orphans)
    relaunches: list[Relaunch] = []
    for t in sorted(sweep.live.values(), key=lambda t: t.index):
        trs, cs, rs = _observe_trial(sweep, t, jobs.get(t.job_name), now)
        transitions += trs
        cancels += cs
        relaunches += rs
    after = _apply(sweep, transitions)

    limit = sweep.launch.max_failed_trials
    if limit and after.failed >= limit:
        reason = f"circuit breaker: {after.failed} trials failed (max_failed_trials {limit})"
        more, more_cancels = _stop_all(after, jobs, reason)
        return SweepOutcome(transitions + more, cancels + more_cancels, [], (SweepState.FAILED, reason), _apply(after, more))
    if after.done:
        reason = f"{after.succeeded} succeeded, {after.failed} failed, {after.cancelled} cancelled"
        return SweepOutcome(transitions, cancels, [], (SweepState.COMPLETED, reason), after)
    return SweepOutcome(transitions, cancels, relaunches, None, after)
