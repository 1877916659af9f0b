"""Reconcile with the outcome rules (issue 18): what a failed attempt means for its trial, and the
sweep's end. The rules themselves are tested in test_outcomes.py; here, that reconcile applies
them and records the decision (the reason's note, whether the attempt counted). Pure."""

from __future__ import annotations

import dataclasses

import pytest

from dispatcher.core.jobs import JobPhase, JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.outcomes import MAX_UNCOUNTED, fingerprint
from dispatcher.core.reconcile import reconcile_sweep
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState

NOW = 10_000.0
TYPO = "exit code 2: trainer: error: unknown argument --learning_rte (did you mean --learning_rate?)"
KEYERROR = "exit code 1: KeyError: 'learning_rate'\nlog: /s/jobs/j/log.txt\n| KeyError: 'learning_rate'"
DISRUPTED = ("pod s-aaaaaaaa-0-a1-worker-0: disrupted (PreemptionByScheduler): preempted by a higher-priority pod; "
             "not the trial's fault")


def record(live, *, total=4, cursor=4, **launch) -> SweepRecord:
    return SweepRecord(sweep_id="s-aaaaaaaa", state=SweepState.ACTIVE, total=total, cursor=cursor,
                       launch=LaunchSettings(**launch), kind="job", submitted_at="t", live={t.index: t for t in live})


def running(index=0, attempt=1, **kw) -> LiveTrial:
    return LiveTrial(index, attempt, TrialState.RUNNING, f"s-aaaaaaaa-{index}-a{attempt}", claimed_at=NOW - 50, **kw)


def failed(t: LiveTrial, reason: str = "", detail: str = "") -> dict[str, JobStatus]:
    return {t.job_name: JobStatus(name=t.job_name, kind="job", sweep_id="s-aaaaaaaa", trial_index=t.index,
                                  attempt=t.attempt, phase=JobPhase.FAILED, reason=reason, detail=detail)}


def one(out):
    (tr,) = [tr for tr in out.transitions if tr.index == 0]
    return tr


# -- the trial ------------------------------------------------------------------------------------

def test_an_argument_error_is_not_retried_and_says_why() -> None:
    t = running()
    tr = one(reconcile_sweep(record([t], total=5, cursor=1, max_retries=2), failed(t, TYPO), now=NOW))
    assert tr.trial_state is TrialState.FAILED and tr.new is None and tr.counted is True
    assert tr.reason.startswith(TYPO)
    assert "(attempt 1 of 3; not retried: the program refused its arguments" in tr.reason


def test_a_retryable_failure_is_retried_and_the_same_error_twice_is_not_retried_a_third_time() -> None:
    t = running()
    tr = one(reconcile_sweep(record([t], max_retries=5), failed(t, KEYERROR), now=NOW))
    assert tr.trial_state is TrialState.WAITING and tr.counted is True
    assert tr.reason.splitlines()[0] == "exit code 1: KeyError: 'learning_rate' (attempt 1 of 6; retried)"
    assert tr.new.fingerprint == fingerprint(KEYERROR) != "" and tr.new.reason == tr.reason
    # attempt 2 (the claim carries the fingerprint over) fails the same way: given up
    second = running(attempt=2, fingerprint=tr.new.fingerprint)
    tr = one(reconcile_sweep(record([second], max_retries=5), failed(second, KEYERROR), now=NOW))
    assert tr.trial_state is TrialState.FAILED and "attempt 2 of 6; not retried: the same error as attempt 1" in tr.reason
    # ... but another error is retried
    tr = one(reconcile_sweep(record([second], max_retries=5), failed(second, "exit code 1: ValueError: nan"), now=NOW))
    assert tr.trial_state is TrialState.WAITING


def test_a_vanished_job_is_retried_and_never_the_same_error() -> None:
    t = running(fingerprint="abcdef")
    tr = one(reconcile_sweep(record([t], max_retries=2), {}, now=NOW))
    assert tr.outcome is TrialState.LOST and tr.trial_state is TrialState.WAITING and tr.counted is True
    assert tr.new.fingerprint == ""


@pytest.mark.parametrize(("detail", "retried", "words"), [
    ("pod j-worker-0: OOMKilled (container pytorch, exit code 137) — raise resources.memory", True, "OOMKilled"),
    ('pod j-worker-0: ImagePullBackOff: Back-off pulling image "ghcr.io/acme/trainr:1"', False,
     "not retried: the image cannot be pulled"),
    ('pod j-worker-0: CreateContainerConfigError: secret "wandb" not found', False, "not retried: the pod cannot be configured"),
    ("pod j-worker-0: exit code 1 (container pytorch)", True, "exit code 1"),
], ids=["oom", "image-pull", "missing-secret", "exit-1"])
def test_the_pods_cause_decides_for_a_failed_kubernetes_job(detail: str, retried: bool, words: str) -> None:
    t = running()
    tr = one(reconcile_sweep(record([t], max_retries=2), failed(t, "BackoffLimitExceeded", detail), now=NOW))
    assert tr.reason.startswith("BackoffLimitExceeded: pod j-worker-0:") and words in tr.reason
    assert (tr.trial_state is TrialState.WAITING) is retried and tr.counted is True


def test_a_pod_the_cluster_stopped_is_retried_without_counting_against_max_retries() -> None:
    t = running()
    tr = one(reconcile_sweep(record([t], max_retries=0), failed(t, "BackoffLimitExceeded", DISRUPTED), now=NOW))
    # max_retries 0, yet retried: the attempt did not count, the trial has one attempt more
    assert tr.trial_state is TrialState.WAITING and tr.outcome is TrialState.FAILED and tr.counted is False
    assert tr.new.uncounted == 1 and tr.new.fingerprint == ""
    assert "(attempt 1 of 2; not counted against max_retries: stopped by the cluster" in tr.reason
    # attempt 2 fails on its own: it counts, and it was the trial's last counted attempt
    second = running(attempt=2, uncounted=1)
    tr = one(reconcile_sweep(record([second], max_retries=0), failed(second, KEYERROR), now=NOW))
    assert tr.trial_state is TrialState.FAILED and tr.counted is True and "(attempt 2 of 2)" in tr.reason


def test_uncounted_attempts_are_bounded() -> None:
    t = running(attempt=MAX_UNCOUNTED + 1, uncounted=MAX_UNCOUNTED)
    tr = one(reconcile_sweep(record([t], max_retries=0), failed(t, "BackoffLimitExceeded", DISRUPTED), now=NOW))
    assert tr.trial_state is TrialState.FAILED and tr.counted is True
    assert f"(attempt {MAX_UNCOUNTED + 1} of {MAX_UNCOUNTED + 1})" in tr.reason


# -- the sweep ------------------------------------------------------------------------------------

def test_a_sweep_with_no_successful_trial_ends_failed() -> None:
    t = running(3)
    out = reconcile_sweep(dataclasses.replace(record([t], max_retries=0), failed=1), failed(t, TYPO), now=NOW)
    assert out.end == (SweepState.FAILED, "no trial succeeded: 0 succeeded, 2 failed, 0 cancelled")


def test_fail_fast_by_default_when_three_trials_failed_and_none_succeeded() -> None:
    failing, other = running(0), running(1)
    rec = dataclasses.replace(record([failing, other], total=10, cursor=2, max_retries=0), failed=2)
    jobs = {**failed(failing, TYPO), other.job_name: JobStatus(name=other.job_name, kind="job", sweep_id="s-aaaaaaaa",
                                                               trial_index=1, attempt=1, phase=JobPhase.RUNNING)}
    out = reconcile_sweep(rec, jobs, now=NOW)
    assert out.end[0] is SweepState.FAILED and out.end[1].startswith("fail-fast: 3 trials failed and none succeeded")
    assert [c.name for c in out.cancels] == [other.job_name] and out.relaunches == []
    # one success earlier: the sweep goes on
    out = reconcile_sweep(dataclasses.replace(rec, succeeded=1), jobs, now=NOW)
    assert out.end is None and out.cancels == []


def test_an_explicit_max_failed_trials_replaces_the_defaults() -> None:
    t = running()
    rec = dataclasses.replace(record([t], total=10, cursor=1, max_retries=0, max_failed_trials=5), failed=2)
    assert reconcile_sweep(rec, failed(t, TYPO), now=NOW).end is None  # 3 failed: fail-fast would have stopped it
    rec = dataclasses.replace(rec, failed=4)
    assert reconcile_sweep(rec, failed(t, TYPO), now=NOW).end == (
        SweepState.FAILED, "circuit breaker: 5 trials failed (max_failed_trials 5)")


def test_the_default_proportional_breaker_applies_once_some_succeeded() -> None:
    t = running()
    rec = dataclasses.replace(record([t], total=100, cursor=50, max_retries=0), succeeded=40, failed=24)
    end = reconcile_sweep(rec, failed(t, TYPO), now=NOW).end
    assert end[0] is SweepState.FAILED and "default max_failed_trials 25" in end[1]


def test_the_same_pod_cause_in_another_attempts_pod_is_the_same_error() -> None:
    def oom(attempt: int, suffix: str) -> str:
        return (f"BackoffLimitExceeded: Job has reached the specified backoff limit: pod s-aaaaaaaa-0-a{attempt}-{suffix}: "
                "OOMKilled (container trainer, exit code 137)")
    second = running(attempt=2, fingerprint=fingerprint(oom(1, "519c2")))
    tr = one(reconcile_sweep(record([second], max_retries=5), failed(second, oom(2, "0c4bd")), now=NOW))
    assert tr.trial_state is TrialState.FAILED and "not retried: the same error as attempt 1" in tr.reason
