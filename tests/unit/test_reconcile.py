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


def test_failed_job_out_of_retries_fails_the_trial_and_the_sweep_without_a_success():
    t = LiveTrial(3, 2, TrialState.RUNNING, "s-aaaaaaaa-3-a2", claimed_at=NOW - 50)
    out = reconcile_sweep(record([t], max_retries=1), {t.job_name: job(t.job_name, JobPhase.FAILED, 3, 2, reason="OOMKilled")}, now=NOW)
    (tr,) = out.transitions
    assert tr.new is None and tr.trial_state is TrialState.FAILED and "OOMKilled" in tr.reason and "attempt 2 of 2" in tr.reason
    assert tr.counted is True
    assert out.end == (SweepState.FAILED, "no trial succeeded: 0 succeeded, 1 failed, 0 cancelled")
    # with a success before, the sweep completes and its reason says a trial failed
    done = dataclasses.replace(record([t], max_retries=1), succeeded=3)
    out = reconcile_sweep(done, {t.job_name: job(t.job_name, JobPhase.FAILED, 3, 2, reason="OOMKilled")}, now=NOW)
    assert out.end == (SweepState.COMPLETED, "completed with failures: 3 succeeded, 1 failed, 0 cancelled")


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


# -- issue 12 -----------------------------------------------------------------------------------

def test_a_claimed_trial_whose_job_never_appears_gives_up_its_slot_after_start_timeout():
    # its create kept failing with retryable errors: it used to stay PENDING, holding a slot, forever
    t = LiveTrial(0, 1, TrialState.PENDING, "s-aaaaaaaa-0-a1", claimed_at=NOW - 100)
    out = reconcile_sweep(record([t], total=5, start_timeout=90, max_retries=1), {}, now=NOW)
    (tr,) = out.transitions
    assert tr.trial_state is TrialState.WAITING and tr.outcome is TrialState.FAILED and "start_timeout" in tr.reason
    # deleted by name too: a create still in flight somewhere must not run
    assert [(c.kind, c.name) for c in out.cancels] == [("job", t.job_name)] and out.relaunches == []
    # within start_timeout it is re-created, as before
    young = dataclasses.replace(t, claimed_at=NOW - 30)
    assert [r.job_name for r in reconcile_sweep(record([young], total=5, start_timeout=90), {}, now=NOW).relaunches] \
        == [t.job_name]


def test_the_job_of_an_ended_attempt_is_an_orphan_while_the_trial_waits():
    waiting = LiveTrial(0, 1, TrialState.WAITING, "s-aaaaaaaa-0-a1", claimed_at=NOW - 50)
    lingering = job(waiting.job_name, JobPhase.RUNNING)  # e.g. cancelled for max_runtime, still terminating
    out = reconcile_sweep(record([waiting], total=5), {lingering.name: lingering}, now=NOW)
    assert [c.name for c in out.cancels] == [waiting.job_name] and out.transitions == []


def test_leaked_jobs_of_a_sweep_not_loaded_follow_its_strongly_read_state():
    from dispatcher.core.reconcile import leaked_jobs

    running, done = job("s-aaaaaaaa-0-a1", JobPhase.RUNNING), job("s-aaaaaaaa-1-a1", JobPhase.SUCCEEDED, 1)
    jobs = {running.name: running, done.name: done}

    def leaked(**kw):
        return [c.name for c in leaked_jobs(jobs=jobs, scope="c/ns", **{"owned": set(), **kw})]

    assert leaked(state="CANCELLED", sweep_scope="c/ns") == [running.name]  # ended: nothing of it runs
    assert leaked(state="COMPLETED", sweep_scope=None) == [running.name]  # stored before scopes: ours
    assert leaked(state="CANCELLED", sweep_scope="other/ns") == []  # another deployment's: never touched
    assert leaked(state=None, sweep_scope=None) == []  # not in this table: never touched
    assert leaked(state="ACTIVE", sweep_scope="c/ns", owned={running.name}) == []
    assert leaked(state="ACTIVE", sweep_scope="c/ns") == [running.name]


def test_the_planning_view_bounds_live_trials_but_never_blocks_retries():
    from dispatcher.core import records as r

    waiting = [LiveTrial(i, 1, TrialState.WAITING, f"s-aaaaaaaa-{i}-a1") for i in range(r.MAX_LIVE_PER_SWEEP)]
    full = record(waiting, total=10**6, cursor=r.MAX_LIVE_PER_SWEEP)
    view = r.planning_view(full)
    assert view.total == view.cursor == r.MAX_LIVE_PER_SWEEP and len(view.waiting) == r.MAX_LIVE_PER_SWEEP
    roomy = record(waiting[:10], total=10**6, cursor=10)
    assert r.planning_view(roomy).total == r.MAX_LIVE_PER_SWEEP  # 990 more fresh trials may be claimed
    # a retry waits while the ended attempt's job is still alive on the cluster
    assert r.planning_view(roomy, alive_jobs={"s-aaaaaaaa-3-a1"}).waiting == [i for i in range(10) if i != 3]
