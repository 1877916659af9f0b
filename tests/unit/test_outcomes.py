"""Failure reasons (dispatcher.core.failures) and what they mean (dispatcher.core.outcomes). Pure.

The logs under tests/data/logs/ are real torchrun output (CPU, torch 2.13) with paths rewritten:
a typo'd trainer argument, a KeyError in 2 ranks, and a program file that does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.failures import MAX_REASON, format_failure, parse_failure, useful_lines, with_note
from dispatcher.core.outcomes import (
    FAIL_FAST,
    Category,
    breaker,
    classify,
    decide_retry,
    default_max_failed,
    end_state,
    exit_code_of,
    signature,
)
from dispatcher.core.records import SweepState

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"


def log(name: str) -> list[str]:
    return (LOGS / f"torchrun-{name}.log").read_text().splitlines()


def reason_of(name: str, ended: str = "exit code 1") -> str:
    return format_failure(ended, log_lines=log(name), log=f"/state/jobs/{name}-0-a1/log.txt")


# -- the reason text ------------------------------------------------------------------------------

def test_the_trainers_own_error_line_is_the_cause_not_torchruns_report() -> None:
    reason = reason_of("typo", "exit code 2")
    failure = parse_failure(reason)
    assert failure.ended == "exit code 2"
    assert failure.cause.startswith("trainer: error: unknown argument --learning_rte (did you mean --learning_rate?)")
    assert failure.log == "/state/jobs/typo-0-a1/log.txt"
    assert not any("ChildFailedError" in line or "torch/distributed" in line for line in failure.tail)
    assert reason.splitlines()[0].startswith("exit code 2: trainer: error: unknown argument --learning_rte")


def test_a_traceback_keeps_its_last_frames_and_the_exception_is_the_cause() -> None:
    failure = parse_failure(reason_of("keyerror"))
    assert failure.cause == "KeyError: 'learning_rate'"
    assert failure.tail[-1] == "KeyError: 'learning_rate'"
    assert any('line 5, in main' in line for line in failure.tail)
    assert failure.tail[0].startswith("  ")  # indentation of the frames kept


def test_launcher_noise_is_dropped_and_repeated_lines_collapse() -> None:
    lines = useful_lines(log("keyerror"))
    assert "rank 0 starting" in lines and "rank 1 starting" in lines
    assert not any(line.startswith(("E1203", "*****", "Setting OMP", "=====", "Root Cause")) for line in lines)
    assert not any("ChildFailedError" in line for line in lines)
    assert useful_lines(["same", "same", "", "same", "other"]) == ["same", "other"]


def test_a_traceback_that_is_not_torchruns_is_kept_even_unterminated() -> None:
    lines = ["Traceback (most recent call last):", '  File "x.py", line 1, in <module>']
    assert useful_lines(lines) == lines


def test_reason_is_bounded_and_keeps_summary_and_log_path() -> None:
    long_lines = [f"line {i} " + "x" * 300 for i in range(100)] + ["RuntimeError: " + "y" * 1000]
    reason = format_failure("exit code 1", log_lines=long_lines, log="/l/log.txt")
    assert len(reason) <= MAX_REASON
    failure = parse_failure(reason)
    assert failure.cause.startswith("RuntimeError: yyy") and failure.cause.endswith("…")
    assert failure.log == "/l/log.txt"


def test_a_plain_reason_parses_as_how_it_ended() -> None:
    failure = parse_failure("job demo-0-a1 vanished from the cluster")
    assert (failure.ended, failure.cause, failure.log, failure.tail) == ("job demo-0-a1 vanished from the cluster", "", "", ())
    assert format_failure("exit code 3") == "exit code 3"


@pytest.mark.parametrize("where", ["end", "summary"])
def test_the_attempt_note_is_read_back_wherever_it_landed(where: str) -> None:
    reason = reason_of("keyerror")
    noted = f"{reason} (attempt 3 of 3)" if where == "end" else with_note(reason, "attempt 3 of 3")
    failure = parse_failure(noted)
    assert failure.note == "attempt 3 of 3" and failure.cause == "KeyError: 'learning_rate'"
    assert failure.tail[-1] == "KeyError: 'learning_rate'"
    assert failure.summary == "exit code 1: KeyError: 'learning_rate' (attempt 3 of 3)"


# -- classification -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("reason", "category", "retryable"),
    [
        (reason_of("typo", "exit code 2"), Category.USAGE, False),
        (reason_of("noprogram"), Category.MISSING_PROGRAM, False),
        (reason_of("keyerror"), Category.ERROR, True),
        ("exit code 1: ModuleNotFoundError: No module named 'trainr'", Category.MISSING_PROGRAM, False),
        ("exit code 127", Category.MISSING_PROGRAM, False),
        ("exit code 1: trainer: error: --optimizer='adamx' is not one of adamw, sgd", Category.USAGE, False),
        ("exit code 2: train.py: error: the following arguments are required: --lr", Category.USAGE, False),
        ("could not create job: program: 'train.py' is not a file in /w, where the local backend runs trials",
         Category.MISSING_PROGRAM, False),
        ("BackoffLimitExceeded: ImagePullBackOff: back-off pulling image \"sweepq-trainr:latest\"", Category.IMAGE, False),
        ("CreateContainerConfigError: secret \"wandb\" not found", Category.CONFIG, False),
        ("exit code 1: SyntaxError: invalid syntax", Category.CODE, False),
        ("OOMKilled (exit code 137)", Category.OOM, True),
        ("exit code 1: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", Category.OOM, True),
        ("killed by signal 9 (SIGKILL)", Category.INTERRUPTED, True),
        ("process vanished", Category.INTERRUPTED, True),
        ("job demo-0-a1 vanished from the cluster", Category.INTERRUPTED, True),
        ("still pending after 1900 s (start_timeout 1800 s)", Category.INTERRUPTED, True),
        ("ran 7300 s, over max_runtime 7200 s", Category.INTERRUPTED, True),
        ("exit code 1", Category.ERROR, True),
    ],
    ids=["argparse", "no-program-file", "keyerror", "no-module", "exit-127", "bad-choice", "argparse-required", "render-time", "image-pull", "missing-secret", "syntax",
         "oomkilled", "cuda-oom", "sigkill", "vanished", "lost", "start-timeout", "max-runtime", "bare-exit-1"],
)
def test_classify(reason: str, category: Category, retryable: bool) -> None:
    verdict = classify(reason)
    assert (verdict.category, verdict.retryable) == (category, retryable)
    assert verdict.why


def test_exit_code_and_tail_may_be_given_apart_from_the_reason() -> None:
    assert exit_code_of("exit code 2: x") == 2 and exit_code_of("process vanished") is None
    assert classify("failed", exit_code=127).category is Category.MISSING_PROGRAM
    assert classify("failed", log_tail=["prog: error: the following arguments are required: --x"]).category is Category.USAGE


def test_signature_masks_numbers_paths_and_addresses() -> None:
    one = "exit code 1: RuntimeError: NCCL timeout on rank 3 after 1800123 ms at 0x7f3a2b /tmp/abc123/x"
    two = "exit code 1: RuntimeError: NCCL timeout on rank 5 after 1800999 ms at 0x7f00ff /tmp/zz9/y"
    assert signature(one) == signature(two)
    assert signature(one) != signature("exit code 1: RuntimeError: something else")


# -- retry decisions ------------------------------------------------------------------------------

def test_a_retryable_failure_is_retried_until_out_of_retries() -> None:
    reason = reason_of("keyerror")
    assert decide_retry(reason=reason, attempt=1, max_retries=2).retry
    last = decide_retry(reason=reason, attempt=3, max_retries=2)
    assert (last.retry, last.note) == (False, "attempt 3 of 3")


def test_an_argument_error_is_not_retried() -> None:
    decision = decide_retry(reason=reason_of("typo", "exit code 2"), attempt=1, max_retries=2)
    assert not decision.retry
    assert decision.note == "attempt 1 of 3; not retried: the program refused its arguments: fix the parameter names or values"


def test_the_same_error_twice_is_not_retried_a_third_time() -> None:
    first = reason_of("keyerror")
    assert decide_retry(reason=first, attempt=1, max_retries=5).retry
    second = decide_retry(reason=first, attempt=2, max_retries=5, previous_reason=first)
    assert (second.retry, second.note) == (False, "attempt 2 of 6; not retried: the same error as attempt 1")
    other = decide_retry(reason="exit code 1: ValueError: x", attempt=2, max_retries=5, previous_reason=first)
    assert other.retry


def test_interruptions_are_never_the_same_error() -> None:
    for reason in ("killed by signal 9 (SIGKILL)", "job j vanished from the cluster", "ran 10 s, over max_runtime 5 s"):
        assert decide_retry(reason=reason, attempt=2, max_retries=5, previous_reason=reason).retry
    # an error after a preemption is not "the same" as the preemption
    assert decide_retry(reason=reason_of("keyerror"), attempt=2, max_retries=5,
                        previous_reason="killed by signal 9 (SIGKILL)").retry


# -- the sweep ------------------------------------------------------------------------------------

def test_end_state_no_success_is_failed_some_failures_are_said() -> None:
    assert end_state(succeeded=0, failed=6, cancelled=0) == (SweepState.FAILED, "no trial succeeded: 0 succeeded, 6 failed, 0 cancelled")
    assert end_state(succeeded=3, failed=1, cancelled=0) == (
        SweepState.COMPLETED, "completed with failures: 3 succeeded, 1 failed, 0 cancelled")
    assert end_state(succeeded=4, failed=0, cancelled=0) == (SweepState.COMPLETED, "4 succeeded, 0 failed, 0 cancelled")


def test_explicit_max_failed_trials_wins() -> None:
    assert breaker(total=100, succeeded=0, failed=4, max_failed_trials=5) is None
    assert breaker(total=100, succeeded=0, failed=5, max_failed_trials=5) == (
        "circuit breaker: 5 trials failed (max_failed_trials 5)")


def test_default_fail_fast_when_nothing_works() -> None:
    assert breaker(total=6, succeeded=0, failed=FAIL_FAST - 1, max_failed_trials=None) is None
    reason = breaker(total=6, succeeded=0, failed=FAIL_FAST, max_failed_trials=None)
    assert reason is not None and reason.startswith("fail-fast: 3 trials failed and none succeeded")
    assert "sweepq.max_failed_trials" in reason
    assert breaker(total=6, succeeded=1, failed=FAIL_FAST, max_failed_trials=None) is None


def test_default_proportional_breaker() -> None:
    assert default_max_failed(6) == 10 and default_max_failed(1000) == 250
    assert breaker(total=1000, succeeded=500, failed=249, max_failed_trials=None) is None
    reason = breaker(total=1000, succeeded=500, failed=250, max_failed_trials=None)
    assert reason is not None and "default max_failed_trials 250" in reason


def test_a_kubernetes_jobs_reason_and_its_pods_cause_make_one_reason() -> None:
    from dispatcher.core.failures import job_reason

    reason = job_reason("BackoffLimitExceeded", "ImagePullBackOff: back-off pulling image \"sweepq-trainr:latest\"")
    assert reason == 'BackoffLimitExceeded: ImagePullBackOff: back-off pulling image "sweepq-trainr:latest"'
    assert classify(reason).category is Category.IMAGE
    pending = job_reason("still pending after 1900 s (start_timeout 1800 s)", "Unschedulable: 0/4 nodes have 8 GPUs")
    assert classify(pending).category is Category.INTERRUPTED  # waiting for GPUs may end: retried
    assert job_reason("", "OOMKilled") == "OOMKilled" and job_reason("", "") == "job failed"
    assert job_reason("OOMKilled", "OOMKilled") == "OOMKilled"
