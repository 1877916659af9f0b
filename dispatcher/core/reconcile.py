"""Reconcile: compare each active sweep's live trials with the jobs observed on the cluster.

Purely computational, no side effects: :func:`reconcile_sweep` returns what should change; the
tick performs it. ``now`` is injected (epoch seconds).

* A failed, lost or timed-out attempt is judged by :mod:`dispatcher.core.outcomes` from its reason
  (a Kubernetes job's own reason joined with its pods' cause, :func:`~dispatcher.core.failures.job_reason`):
  retried, given up (with why, as the reason's note), or retried without counting (the cluster
  stopped it). The sweep ends FAILED when no trial succeeded; the default breakers apply.
* Kueue (``JobStatus.admission``): ``start_timeout`` counts from admission — a job waiting for
  quota is never late; an eviction keeps the attempt (recorded, nothing spent); a job Kueue
  cannot admit is given up after ``start_timeout`` from its claim. See :func:`_pending`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from dispatcher.core.failures import job_reason, with_note
from dispatcher.core.jobs import Admission, JobPhase, JobStatus
from dispatcher.core.outcomes import breaker, decide_retry, end_state, fingerprint
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
    # whether this ended attempt counts against the trial's max_retries (None: it did not end, or
    # it succeeded or was cancelled); recorded with the attempt on the trial item
    counted: bool | None = None
    evicted: bool = False  # Kueue suspended the attempt's job again: the attempt goes on, nothing spent


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
    """This attempt ended badly: retry it (WAITING for a slot) or give the trial up as FAILED, as
    :func:`dispatcher.core.outcomes.decide_retry` says — out of retries, a failure that can never
    succeed by retrying, or the same error as the attempt before. An attempt the cluster stopped
    (a disrupted pod) is retried without counting against ``max_retries``. The reason keeps the
    decision as its note (``attempt 1 of 3; not retried: …``); ``counted`` says whether it counted."""
    decision = decide_retry(reason=reason, attempt=t.attempt, max_retries=sweep.launch.max_retries,
                            previous_fingerprint=t.fingerprint, uncounted=t.uncounted)
    noted = with_note(reason, decision.note) if decision.note else reason
    if decision.retry:
        waiting = dataclasses.replace(
            t, state=TrialState.WAITING, reason=noted, started_at=None, admitted_at=None,
            fingerprint=fingerprint(reason), uncounted=t.uncounted + (not decision.counted))
        return Transition(sweep.sweep_id, t.index, t.attempt, waiting, TrialState.WAITING, outcome, noted,
                          counted=decision.counted)
    return Transition(sweep.sweep_id, t.index, t.attempt, None, TrialState.FAILED, outcome, noted,
                      counted=decision.counted)


def _change(sweep: SweepRecord, t: LiveTrial, new: LiveTrial, reason: str = "") -> list[Transition]:
    """``t`` becomes ``new`` (still live), when anything stored changed."""
    if new.to_item() == t.to_item() and not reason:
        return []
    return [Transition(sweep.sweep_id, t.index, t.attempt, new, new.state, None, reason)]


def _admitted_since(t: LiveTrial, job: JobStatus, now: float) -> float:
    """When this attempt's job was admitted, for its start_timeout: Kueue's time (the Workload's
    ``Admitted`` condition) within [claim, now], so skew between the cluster's clock and ours
    never makes an admission look older than the attempt, nor in the future; the tick's own
    ``now`` when Kueue's time is unknown (Workloads unreadable)."""
    if job.admitted_at is None:
        return now
    return min(now, max(t.claimed_at, job.admitted_at))


def _pending(sweep: SweepRecord, t: LiveTrial, job: JobStatus, now: float) -> tuple[list[Transition], list[CancelJob]]:
    """A job that is not running (yet, or again). With Kueue, ``start_timeout`` counts from the
    job's admission: a job waiting for quota (QUEUED) or suspended by an eviction or preemption
    (EVICTED) is never late and never cancelled; an eviction spends nothing of the trial — the
    same job, same attempt, resumes from its checkpoint when re-admitted — and its cause is
    recorded on the trial. A job Kueue cannot admit as the cluster stands (INADMISSIBLE) is given
    up after ``start_timeout`` from its claim, with Kueue's reason."""
    launch = sweep.launch
    launched = dataclasses.replace(t, state=TrialState.LAUNCHED) if t.state is TrialState.PENDING else t
    admission = job.admission
    if admission in (Admission.QUEUED, Admission.EVICTED):
        # suspended again after it was admitted: evicted or preempted (read as QUEUED when Kueue's
        # Workloads cannot be read). Recorded once, when the trial learns it.
        evicted = t.state is TrialState.RUNNING or t.admitted_at is not None
        new = dataclasses.replace(launched, admitted_at=None)
        if t.state is TrialState.RUNNING:
            new = dataclasses.replace(new, state=TrialState.LAUNCHED, started_at=None)
        if not evicted:
            return _change(sweep, t, new), []
        cause = job.detail if admission is Admission.EVICTED and job.detail else \
            "suspended again by Kueue (evicted or preempted); resumes from its checkpoint when re-admitted"
        reason = with_note(cause, f"attempt {t.attempt} of {launch.max_retries + 1 + t.uncounted} goes on; "
                                  "not counted against max_retries")
        return [Transition(sweep.sweep_id, t.index, t.attempt, new, new.state, None, reason, evicted=True)], []
    if admission is Admission.INADMISSIBLE:
        waited = now - t.claimed_at
        if waited > launch.start_timeout:
            reason = (f"Kueue never admitted job {job.name} within start_timeout ({int(waited)} s > "
                      f"{launch.start_timeout} s): {job.detail or 'Kueue cannot admit it'}")
            return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(job.kind, job.name, reason)]
        return _change(sweep, t, launched), []
    since, new = t.claimed_at, launched
    if admission is Admission.ADMITTED and t.state is not TrialState.RUNNING:
        since = t.admitted_at if t.admitted_at is not None else _admitted_since(t, job, now)
        new = dataclasses.replace(launched, admitted_at=since)
    waited = now - since
    if waited > launch.start_timeout:
        what = "admitted by Kueue, still pending" if admission is Admission.ADMITTED else "still pending"
        reason = job_reason(f"{what} after {int(waited)} s (start_timeout {launch.start_timeout} s)", job.detail)
        return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(job.kind, job.name, reason)]
    return _change(sweep, t, new), []


def _observe_trial(sweep: SweepRecord, t: LiveTrial, job: JobStatus | None, now: float) -> tuple[list[Transition], list[CancelJob], list[Relaunch]]:
    sid, launch = sweep.sweep_id, sweep.launch
    if t.state is TrialState.WAITING:
        return [], [], []
    if job is None:
        if t.state is TrialState.PENDING:
            waited = now - t.claimed_at
            if waited > launch.start_timeout:
                # its create kept failing (or its job was lost before anything recorded it): the
                # attempt must not hold its slot forever. Delete by name too, in case a create is
                # still in flight somewhere; a late one is an orphan of a non-live attempt anyway.
                reason = (f"job {t.job_name} could not be created within start_timeout "
                          f"({int(waited)} s > {launch.start_timeout} s)")
                return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(sweep.kind, t.job_name, reason)], []
            return [], [], [Relaunch(sid, t.index, t.attempt, t.job_name)]
        return [fail_attempt(sweep, t, TrialState.LOST, f"job {t.job_name} vanished from the cluster")], [], []
    if job.phase is JobPhase.SUCCEEDED:
        return [Transition(sid, t.index, t.attempt, None, TrialState.SUCCEEDED, TrialState.SUCCEEDED)], [], []
    if job.phase is JobPhase.FAILED:
        # the job's own reason with the pods' cause (OOMKilled, ImagePullBackOff, a disruption…)
        return [fail_attempt(sweep, t, TrialState.FAILED, job_reason(job.reason, job.detail))], [], []
    if job.phase is JobPhase.PENDING:
        transitions, cancels = _pending(sweep, t, job, now)
        return transitions, cancels, []
    # RUNNING. After a Kueue eviction the job's start time may be the first run's: the run that
    # counts for max_runtime began no earlier than its latest admission.
    started = t.started_at
    if started is None:
        started = job.started_at or now
        if job.admitted_at is not None and job.admitted_at <= now:
            started = max(started, job.admitted_at)
    if launch.max_runtime and now - started > launch.max_runtime:
        reason = f"ran {int(now - started)} s, over max_runtime {launch.max_runtime} s"
        return [fail_attempt(sweep, t, TrialState.FAILED, reason)], [CancelJob(job.kind, job.name, reason)], []
    if t.state is not TrialState.RUNNING:
        running = dataclasses.replace(t, state=TrialState.RUNNING, started_at=started, admitted_at=None)
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
        if job is not None and job.phase is JobPhase.SUCCEEDED and t.state is not TrialState.WAITING:
            # it finished before the stop: its result is real (a success whose metrics were not
            # readable last tick, say) and is recorded as one, never relabelled CANCELLED (rev17 finding 3)
            transitions.append(Transition(sweep.sweep_id, t.index, t.attempt, None, TrialState.SUCCEEDED,
                                          TrialState.SUCCEEDED))
            continue
        if job is not None and not job.phase.terminal:
            cancels.append(CancelJob(job.kind, job.name, reason))
        elif t.state is TrialState.PENDING:
            # the create may be in flight elsewhere: delete by name too (a no-op if absent)
            cancels.append(CancelJob(sweep.kind, t.job_name, reason))
        transitions.append(
            Transition(sweep.sweep_id, t.index, t.attempt, None, TrialState.CANCELLED, TrialState.CANCELLED, reason)
        )
    return transitions, cancels


def owned_jobs(sweep: SweepRecord) -> set[str]:
    """The job names the sweep's live trials own: their current attempts. A WAITING trial's job
    belongs to an attempt that is over (failed, lost, timed out): it owns none."""
    return {t.job_name for t in sweep.live.values() if t.state is not TrialState.WAITING}


def _orphans(sweep: SweepRecord, jobs: Mapping[str, JobStatus]) -> list[CancelJob]:
    """Non-terminal jobs of this sweep that no live attempt owns (a superseded or ended attempt,
    or a job created late by a dispatcher whose lease expired after its trial was given up)."""
    owned = owned_jobs(sweep)
    return [
        CancelJob(job.kind, job.name, "orphan: no live trial owns this job")
        for job in sorted(jobs.values(), key=lambda j: j.name)
        if job.sweep_id == sweep.sweep_id and job.name not in owned and not job.phase.terminal
    ]


def leaked_jobs(*, state: str | None, sweep_scope: str | None, owned: set[str], jobs: Mapping[str, JobStatus],
                scope: str) -> list[CancelJob]:
    """Which of the observed non-terminal ``jobs`` of one sweep the tick did not load must go,
    given that sweep's META as read strongly now (``state`` None: not in this table). Pure.

    * not in this table, or another scope's: none (not ours to touch);
    * terminal (COMPLETED/FAILED/CANCELLED/REJECTED): all of them — nothing of it may run, e.g. a
      create that landed after a lease loss, once another tick had ended the sweep;
    * ACTIVE in this scope (not loaded this tick): the ones no live attempt owns (``owned``).
    """
    if state is None or sweep_scope not in (None, scope):
        return []
    live = [job for job in sorted(jobs.values(), key=lambda j: j.name) if not job.phase.terminal]
    if state != SweepState.ACTIVE.value:
        return [CancelJob(job.kind, job.name, f"leak: its sweep is {state}") for job in live]
    return [CancelJob(job.kind, job.name, "orphan: no live attempt owns this job")
            for job in live if job.name not in owned]


def reconcile_sweep(sweep: SweepRecord, jobs: Mapping[str, JobStatus], *, now: float) -> SweepOutcome:
    """Decide what changes for one active sweep given the observed jobs (keyed by job name).

    The sweep's end state (if any) must only be written after every cancel succeeded.
    """
    orphans = _orphans(sweep, jobs)
    if sweep.cancel_requested:
        stopped, stops = _stop_all(sweep, jobs, "sweep cancelled")
        end = (SweepState.CANCELLED, "cancelled by request")
        return SweepOutcome(stopped, orphans + stops, [], end, _apply(sweep, stopped))

    transitions: list[Transition] = []
    cancels: list[CancelJob] = list(orphans)
    relaunches: list[Relaunch] = []
    for t in sorted(sweep.live.values(), key=lambda t: t.index):
        trs, cs, rs = _observe_trial(sweep, t, jobs.get(t.job_name), now)
        transitions += trs
        cancels += cs
        relaunches += rs
    after = _apply(sweep, transitions)

    if after.done:  # every trial is terminal: FAILED when none succeeded (outcomes.end_state)
        return SweepOutcome(transitions, cancels, [], end_state(succeeded=after.succeeded, failed=after.failed,
                                                               cancelled=after.cancelled,
                                                               early_stopped=after.early_stopped), after)
    tripped = breaker(total=after.total, succeeded=after.succeeded, failed=after.failed,
                      max_failed_trials=sweep.launch.max_failed_trials)
    if tripped:
        more, more_cancels = _stop_all(after, jobs, tripped)
        return SweepOutcome(transitions + more, cancels + more_cancels, [], (SweepState.FAILED, tripped),
                            _apply(after, more))
    return SweepOutcome(transitions, cancels, relaunches, None, after)
