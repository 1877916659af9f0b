"""Reconcile with Kueue (issue 13): admitted vs waiting vs evicted vs preempted vs inadmissible.

``start_timeout`` counts from admission: a job waiting for quota is never late; one admitted and
not started within it is cancelled and retried. An eviction or preemption suspends the same job:
the attempt goes on, nothing is counted, the cause is recorded once on the trial. Pure.
"""

from __future__ import annotations

import dataclasses

import pytest

from dispatcher.core.jobs import Admission, JobPhase, JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.reconcile import reconcile_sweep
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState

NOW = 1_800_100_000.0
JOB = "s-aaaaaaaa-0-a1"
DAY = 86_400


def record(*live: LiveTrial, **launch) -> SweepRecord:
    return SweepRecord(sweep_id="s-aaaaaaaa", state=SweepState.ACTIVE, total=4, cursor=4,
                       launch=LaunchSettings(**{"start_timeout": 1800, **launch}), kind="trainjob",
                       submitted_at="t", live={t.index: t for t in live})


def trial(state: TrialState = TrialState.LAUNCHED, **kw) -> LiveTrial:
    return LiveTrial(0, kw.pop("attempt", 1), state, JOB, claimed_at=kw.pop("claimed_at", NOW - DAY), **kw)


def job(admission: Admission | None, phase: JobPhase = JobPhase.PENDING, **kw) -> JobStatus:
    return JobStatus(name=JOB, kind="trainjob", sweep_id="s-aaaaaaaa", trial_index=0, attempt=1, phase=phase,
                     admission=admission, **kw)


def observe(t: LiveTrial, j: JobStatus, **launch):
    return reconcile_sweep(record(t, **launch), {JOB: j}, now=NOW)


# -- waiting for quota ---------------------------------------------------------------------------

@pytest.mark.parametrize("state", [TrialState.PENDING, TrialState.LAUNCHED])
def test_a_job_waiting_for_quota_longer_than_start_timeout_is_never_cancelled(state: TrialState) -> None:
    # claimed a day ago, start_timeout 30 min, Kueue still has no quota for it
    out = observe(trial(state), job(Admission.QUEUED, detail="waiting for Kueue quota (LocalQueue team-a)"))
    assert out.cancels == [] and out.end is None
    if state is TrialState.PENDING:  # its job exists: recorded LAUNCHED, nothing else
        (tr,) = out.transitions
        assert tr.new.state is TrialState.LAUNCHED and tr.outcome is None and tr.new.admitted_at is None
    else:
        assert out.transitions == []


def test_a_waiting_job_is_not_late_whatever_its_wait_even_for_weeks() -> None:
    out = observe(trial(claimed_at=NOW - 29 * DAY), job(Admission.QUEUED), start_timeout=60)
    assert (out.transitions, out.cancels) == ([], [])


# -- admitted -----------------------------------------------------------------------------------

def test_start_timeout_counts_from_admission_not_from_the_claim() -> None:
    # waited 23 h for quota, admitted 10 min ago, pods not running yet: not late
    admitted = job(Admission.ADMITTED, admitted_at=NOW - 600)
    out = observe(trial(), admitted)
    (tr,) = out.transitions
    assert out.cancels == [] and tr.new.state is TrialState.LAUNCHED and tr.new.admitted_at == NOW - 600
    assert tr.outcome is None and tr.reason == ""
    # the admission time is kept: the next tick writes nothing
    assert observe(tr.new, admitted).transitions == []


def test_a_job_admitted_and_not_started_within_start_timeout_is_cancelled_and_retried() -> None:
    t = trial(admitted_at=NOW - 1900)
    out = observe(t, job(Admission.ADMITTED, admitted_at=NOW - 1900, detail="Unschedulable: 0/4 nodes are available"))
    assert [c.name for c in out.cancels] == [JOB]
    (tr,) = out.transitions
    assert tr.trial_state is TrialState.WAITING and tr.outcome is TrialState.FAILED and tr.counted is True
    assert tr.reason.startswith("admitted by Kueue, still pending after 1900 s (start_timeout 1800 s): Unschedulable")
    assert "attempt 1 of 3; retried" in tr.reason


def test_an_admitted_job_whose_pods_cannot_pull_their_image_is_not_retried() -> None:
    t = trial(admitted_at=NOW - 1900)
    out = observe(t, job(Admission.ADMITTED, detail='pod j-node-0-0: ImagePullBackOff: back-off pulling image "x"'))
    (tr,) = out.transitions
    assert tr.trial_state is TrialState.FAILED and "not retried: the image cannot be pulled" in tr.reason


def test_kueues_admission_time_is_bounded_by_the_claim_and_now() -> None:
    # a cluster clock behind ours cannot make an admission older than the attempt...
    (tr,) = observe(trial(claimed_at=NOW - 100), job(Admission.ADMITTED, admitted_at=NOW - DAY)).transitions
    assert tr.new.admitted_at == NOW - 100 and not tr.new.state.terminal
    # ... nor one ahead put it in the future; without Kueue's time (Workloads unreadable) it is now
    (tr,) = observe(trial(), job(Admission.ADMITTED, admitted_at=NOW + 50)).transitions
    assert tr.new.admitted_at == NOW
    (tr,) = observe(trial(), job(Admission.ADMITTED)).transitions
    assert tr.new.admitted_at == NOW


def test_a_job_without_kueue_still_counts_from_its_claim() -> None:
    out = observe(trial(claimed_at=NOW - 1900), job(None))
    assert [c.name for c in out.cancels] == [JOB]
    assert out.transitions[0].reason.startswith("still pending after 1900 s (start_timeout 1800 s)")


def test_running_after_admission_drops_the_admission_time_and_counts_the_run_from_it() -> None:
    # a re-admitted job whose status still carries its first run's start: max_runtime counts from the admission
    t = trial(admitted_at=NOW - 60)
    out = observe(t, job(Admission.ADMITTED, JobPhase.RUNNING, admitted_at=NOW - 60, started_at=NOW - DAY),
                  max_runtime=3600)
    (tr,) = out.transitions
    assert out.cancels == [] and tr.new.state is TrialState.RUNNING
    assert (tr.new.started_at, tr.new.admitted_at) == (NOW - 60, None)


# -- evicted / preempted ------------------------------------------------------------------------

@pytest.mark.parametrize("cause", ["Preempted", "PodsReadyTimeout"])
def test_an_evicted_or_preempted_running_trial_keeps_its_attempt_and_records_the_cause(cause: str) -> None:
    t = trial(TrialState.RUNNING, started_at=NOW - 500, attempt=2, uncounted=1, fingerprint="abc123")
    detail = f"evicted by Kueue ({cause}: ...); resumes from its checkpoint when re-admitted"
    out = observe(t, job(Admission.EVICTED, detail=detail), max_retries=2)
    assert out.cancels == [] and out.relaunches == [] and out.end is None
    (tr,) = out.transitions
    # back to LAUNCHED (waiting for Kueue again), same attempt, nothing counted, nothing ended
    assert (tr.attempt, tr.outcome, tr.counted, tr.evicted) == (2, None, None, True)
    assert tr.new.state is TrialState.LAUNCHED and tr.new.attempt == 2
    assert (tr.new.started_at, tr.new.admitted_at) == (None, None)
    assert (tr.new.uncounted, tr.new.fingerprint) == (1, "abc123")  # what carries over attempts is kept
    assert tr.reason.startswith(f"evicted by Kueue ({cause}")
    assert tr.reason.endswith("(attempt 2 of 4 goes on; not counted against max_retries)")
    # and the next ticks, while it waits to be re-admitted, record nothing more and never time it out
    assert observe(tr.new, job(Admission.EVICTED, detail=detail), start_timeout=60).transitions == []


def test_an_eviction_before_the_pods_ran_is_recorded_too() -> None:
    t = trial(admitted_at=NOW - 30)
    (tr,) = observe(t, job(Admission.EVICTED, detail="evicted by Kueue (PodsReadyTimeout)")).transitions
    assert tr.evicted and tr.new.state is TrialState.LAUNCHED and tr.new.admitted_at is None


def test_suspended_again_without_workloads_reads_as_queued_and_is_an_eviction() -> None:
    # Workloads unreadable (degraded): an evicted job reads QUEUED; the trial was running
    t = trial(TrialState.RUNNING, started_at=NOW - 500)
    (tr,) = observe(t, job(Admission.QUEUED)).transitions
    assert tr.evicted and tr.new.state is TrialState.LAUNCHED and "suspended again by Kueue" in tr.reason


def test_a_deactivated_workload_ends_the_attempt_as_a_counted_failure() -> None:
    # the backend reports FAILED with Kueue's reason (its requeuing limit was reached)
    failed = job(Admission.EVICTED, JobPhase.FAILED,
                 reason="Kueue deactivated its Workload and will not admit it again (RequeuingLimitExceeded)")
    (tr,) = observe(trial(), failed).transitions
    assert tr.trial_state is TrialState.WAITING and tr.outcome is TrialState.FAILED and tr.counted is True
    assert "RequeuingLimitExceeded" in tr.reason


# -- inadmissible -------------------------------------------------------------------------------

def test_an_inadmissible_job_waits_within_start_timeout_then_is_given_up_with_kueues_reason() -> None:
    detail = "Kueue cannot admit it (LocalQueue team-x): LocalQueue team-x doesn't exist — fix the queue or the request"
    young = trial(TrialState.PENDING, claimed_at=NOW - 60)
    out = observe(young, job(Admission.INADMISSIBLE, detail=detail))
    assert out.cancels == [] and out.transitions[0].new.state is TrialState.LAUNCHED
    out = observe(trial(claimed_at=NOW - 1900), job(Admission.INADMISSIBLE, detail=detail))
    assert [c.name for c in out.cancels] == [JOB]
    (tr,) = out.transitions
    # the same job would wait the same way: not retried
    assert tr.trial_state is TrialState.FAILED and "LocalQueue team-x doesn't exist" in tr.reason
    assert "not retried: Kueue cannot admit the job" in tr.reason
    assert out.end == (SweepState.FAILED, "no trial succeeded: 0 succeeded, 1 failed, 0 cancelled")


def test_the_live_entry_round_trips_what_kueue_and_outcomes_keep() -> None:
    t = trial(admitted_at=NOW - 0.7, uncounted=2, fingerprint="0a1b2c")
    item = t.to_item()
    assert item["adm"] == int(NOW - 0.7) and item["f"] == "0a1b2c.2"
    back = LiveTrial.from_item(0, item)
    assert (back.admitted_at, back.uncounted, back.fingerprint) == (float(int(NOW - 0.7)), 2, "0a1b2c")
    plain = LiveTrial.from_item(0, dataclasses.replace(t, admitted_at=None, uncounted=0, fingerprint="").to_item())
    assert (plain.admitted_at, plain.uncounted, plain.fingerprint) == (None, 0, "")
    only_uncounted = LiveTrial.from_item(0, dataclasses.replace(t, fingerprint="").to_item())
    assert (only_uncounted.uncounted, only_uncounted.fingerprint) == (2, "")


def test_producer_status_shows_an_eviction_on_the_trial_that_goes_on() -> None:
    from dispatcher.core.results import trial_rows
    from dispatcher.results_view import last_failure

    evicted = "evicted by Kueue (Preempted: ...) (attempt 1 of 3 goes on; not counted against max_retries)"
    earlier = {"attempt": 1, "outcome": "FAILED", "reason": "exit code 1: KeyError: 'x' (attempt 1 of 3; retried)"}
    items = [{"index": 0, "state": "LAUNCHED", "attempt": 1, "reason": evicted},
             {"index": 1, "state": "RUNNING", "attempt": 2, "reason": earlier["reason"], "attempts": [earlier]},
             {"index": 2, "state": "RUNNING", "attempt": 2, "reason": evicted, "attempts": [earlier]}]
    shown = [last_failure(row) for row in trial_rows(items, metric_name=None, now=NOW)]
    assert shown[0] == "evicted by Kueue (Preempted: ...) (attempt 1 of 3 goes on; not counted against max_retries)"
    assert shown[1] == "attempt 1: exit code 1: KeyError: 'x' (attempt 1 of 3; retried)"
    assert shown[2].startswith("evicted by Kueue")
