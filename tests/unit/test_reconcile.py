"""Reconcile: every observed phase × live state gives the right transition, cancel or relaunch."""

from __future__ import annotations

import dataclasses

from dispatcher.core.jobs import JobPhase, JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.reconcile import reconcile_sweep
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState

NOW = 10_000.0


def record(live, *, total=4, cursor=4, **launch):
    return SweepRecord(
        sweep_id="s-aaaaaaaa", state=SweepState.ACTIVE, total=total, cursor=cursor,
        launch=LaunchSettings(**launch), kind="job", submitted_at="t", live={t.index: t for t in live},
    )


def job(name, phase, index=0, attempt=1, **kw):
    return JobStatus(name=name, kind="job", sweep_id="s-aaaaaaaa", trial_index=index, attempt=attempt, phase=phase, **kw)


def test_claimed_trial_without_job_is_relaunched_not_lost():
    t = LiveTrial(0, 1, TrialState.PENDING, "s-aaaaaaaa-0-a1", claimed_at=NOW - 5)
    out = reconcile_sweep(record([t], total=5), {}, now=NOW)
    assert [(r.index, r.attempt, r.job_name) for r in out.relaunches] == [(0, 1, "s-aaaaaaaa-0-a1")]
    assert out.transitions == [] and out.end is None


def test_launched_job_that_vanished_is_lost_and_retried_with_waiting():
    t = LiveTrial(0, 1, TrialState.RUNNING, "s-aaaaaaaa-0-a1", claimed_at=NOW - 50, started_at=NOW - 40)
    out = reconcile_sweep(record([t], total=5, max_retries=1), {}, now=NOW)
    (tr,) = out.transitions
    assert tr.outcome is TrialState.LOST and tr.trial_state is TrialState.WAITING
    assert tr.new.state is TrialState.WAITING and "vanished" in tr.reason


def test_failed_job_out_of_retries_fails_the_trial_and_completes_the_sweep():
    t = LiveTrial(3, 2, TrialState.RUNNING, "s-aaaaaaaa-3-a2", claimed_at=NOW - 50)
    out = reconcile_sweep(record([t], max_retries=1), {t.job_name: job(t.job_name, JobPhase.FAILED, 3, 2, reason="OOMKilled")}, now=NOW)
    (tr,) = out.transitions
    assert tr.new is None and tr.trial_state is TrialState.FAILED and "OOMKilled" in tr.reason and "attempt 2 of 2" in tr.reason
    assert out.end == (SweepState.COMPLETED, "0 succeeded, 1 failed, 0 cancelled")


def test_success_leaves_live_and_completes_when_nothing_is_left():
    t = LiveTrial(3, 1, TrialState.RUNNING, "s-aaaaaaaa-3-a1")
    out = reconcile_sweep(record([t]), {t.job_name: job(t.job_name, JobPhase.SUCCEEDED, 3)}, now=NOW)
    assert out.transitions[0].trial_state is TrialState.SUCCEEDED
    assert out.end[0] is SweepState.COMPLETED and out.record.succeeded == 1


def test_pending_job_becomes_launched_then_running_with_start_time():
    t = LiveTrial(0, 1, TrialState.PENDING, "s-aaaaaaaa-0-a1", claimed_at=NOW - 5)
    out = reconcile_sweep(record([t], total=5), {t.job_name: job(t.job_name, JobPhase.PENDING)}, now=NOW)
    assert out.transitions[0].new.state is TrialState.LAUNCHED
    t2 = dataclasses.replace(t, state=TrialState.LAUNCHED)
    out = reconcile_sweep(record([t2], total=5), {t.job_name: job(t.job_name, JobPhase.RUNNING, started_at=NOW - 3)}, now=NOW)
    assert out.transitions[0].new.state is TrialState.RUNNING and out.transitions[0].new.started_at == NOW - 3


def test_start_timeout_cancels_and_retries():
    t = LiveTrial(0, 1, TrialState.LAUNCHED, "s-aaaaaaaa-0-a1", claimed_at=NOW - 4000)
    out = reconcile_sweep(record([t], total=5, start_timeout=1800), {t.job_name: job(t.job_name, JobPhase.PENDING)}, now=NOW)
    assert [c.name for c in out.cancels] == [t.job_name]
    assert out.transitions[0].trial_state is TrialState.WAITING and "start_timeout" in out.transitions[0].reason


def test_max_runtime_cancels_a_running_job():
    t = LiveTrial(0, 1, TrialState.RUNNING, "s-aaaaaaaa-0-a1", started_at=NOW - 7300)
    out = reconcile_sweep(record([t], total=5, max_runtime="2h", max_retries=0), {t.job_name: job(t.job_name, JobPhase.RUNNING)}, now=NOW)
    assert [c.name for c in out.cancels] == [t.job_name]
    assert out.transitions[0].trial_state is TrialState.FAILED and "max_runtime" in out.transitions[0].reason


def test_circuit_breaker_fails_the_sweep_and_cancels_the_rest():
    failing = LiveTrial(0, 1, TrialState.RUNNING, "s-aaaaaaaa-0-a1")
    running = LiveTrial(1, 1, TrialState.RUNNING, "s-aaaaaaaa-1-a1")
    rec = dataclasses.replace(record([failing, running], total=10, cursor=2, max_retries=0, max_failed_trials=2), failed=1)
    jobs = {failing.job_name: job(failing.job_name, JobPhase.FAILED), running.job_name: job(running.job_name, JobPhase.RUNNING, 1)}
    out = reconcile_sweep(rec, jobs, now=NOW)
    assert out.end[0] is SweepState.FAILED and "circuit breaker: 2 trials failed" in out.end[1]
    assert [c.name for c in out.cancels] == [running.job_name]
    assert [tr.trial_state for tr in out.transitions] == [TrialState.FAILED, TrialState.CANCELLED]


def test_cancel_request_cancels_live_jobs_and_orphans():
    running = LiveTrial(1, 1, TrialState.RUNNING, "s-aaaaaaaa-1-a1")
    orphan = job("s-aaaaaaaa-2-a1", JobPhase.RUNNING, 2)
    rec = dataclasses.replace(record([running], total=10, cursor=3), cancel_requested=True)
    out = reconcile_sweep(rec, {running.job_name: job(running.job_name, JobPhase.RUNNING, 1), orphan.name: orphan}, now=NOW)
    assert sorted(c.name for c in out.cancels) == ["s-aaaaaaaa-1-a1", "s-aaaaaaaa-2-a1"]
    assert out.end[0] is SweepState.CANCELLED


def test_superseded_attempt_job_is_an_orphan():
    live = LiveTrial(0, 2, TrialState.PENDING, "s-aaaaaaaa-0-a2", claimed_at=NOW)
    old = job("s-aaaaaaaa-0-a1", JobPhase.RUNNING)
    out = reconcile_sweep(record([live], total=5), {old.name: old}, now=NOW)
    assert [c.name for c in out.cancels] == ["s-aaaaaaaa-0-a1"]
