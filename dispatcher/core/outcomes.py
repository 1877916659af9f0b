"""What a failed attempt means for its trial, and what a sweep's counters mean for the sweep.

Purely computational, no side effects; the reconcile step calls these and performs the result.

**Retry or not** (:func:`decide_retry`). A failed, lost or timed-out attempt is retried (the
trial goes WAITING for attempt *a+1*) unless

* it is out of retries (``max_retries`` extra attempts were used), or
* its failure can never succeed by retrying (:func:`classify`): the program refused its
  arguments (an argparse error: ``trainer: error: unknown argument --learning_rte``), the program
  or module is missing (``can't open file``, ``No module named``, exit 126/127), the image cannot
  be pulled (``ImagePullBackOff``, ``ErrImagePull``), the pod cannot be configured
  (``CreateContainerConfigError``: a missing Secret), or Python cannot even compile it
  (``SyntaxError``), or
* it failed with the same error as the attempt before (:func:`signature`: the cause line with
  numbers and addresses masked; the live entry keeps it as :func:`fingerprint`), so a
  deterministic bug costs two attempts, not ``max_retries + 1``. Interruptions (signals,
  preemption, eviction, a vanished job, start or run timeouts) never count as "the same error":
  they say nothing about the trial itself.

**Counted or not.** An attempt the *cluster* stopped — a pod with the ``DisruptionTarget``
condition (node shutdown or drain, preemption by the scheduler, a NoExecute taint, pod GC; the
backends mark it "not the trial's fault") — is retried without spending the trial's
``max_retries``: its note reads ``attempt 1 of 4; not counted …`` (the trial's attempts grow by
one). At most :data:`MAX_UNCOUNTED` attempts of a trial go uncounted; beyond that they count like
any failure, so a trial on a node pool that keeps failing still ends. A Kueue eviction or
preemption does not end the attempt at all (the same job is suspended and resumes when
re-admitted): the reconcile step records it and spends nothing.

Out-of-memory failures are retried (a resumed attempt may get further), and stopped by the
same-error rule when they repeat.

**The sweep's end** (:func:`end_state`): when every trial is terminal, a sweep with no successful
trial ends FAILED; one with some successes ends COMPLETED and its reason says how many failed
(``3 succeeded, 1 failed, 0 cancelled``), which ``producer list`` shows next to the state.

**Circuit breaker** (:func:`breaker`): an explicit ``max_failed_trials`` fails the sweep (and
cancels the rest) after that many FAILED trials. Without one, two defaults apply:
*fail-fast* — :data:`FAIL_FAST` trials failed and none succeeded yet ("nothing works": a typo'd
argument, a broken image) — and a proportional cap, :func:`default_max_failed` (a quarter of
the sweep, at least 10). Each reason names the setting that changes it.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Sequence

from dispatcher.core.failures import parse_failure
from dispatcher.core.records import SweepState

FAIL_FAST = 3
FINGERPRINT_LEN = 6  # hex digits of fingerprint(): the live entry is bounded (records.MAX_LIVE_ENTRY_BYTES)
MAX_UNCOUNTED = 5  # attempts of one trial the cluster stopped that are not counted against max_retries
_EXIT_CODE = re.compile(r"\bexit code (-?\d+)\b")


class Category(str, enum.Enum):
    USAGE = "usage"
    MISSING_PROGRAM = "missing-program"
    IMAGE = "image"
    CONFIG = "config"
    CODE = "code"
    QUEUE = "queue"
    DISRUPTED = "disrupted"
    OOM = "oom"
    INTERRUPTED = "interrupted"
    ERROR = "error"


# (category, retryable, why, pattern) — the first match wins, so the specific come first.
_RULES: tuple[tuple[Category, bool, str, re.Pattern[str]], ...] = (
    (Category.IMAGE, False, "the image cannot be pulled: fix the image name, tag or registry access",
     re.compile(r"ImagePullBackOff|ErrImagePull|InvalidImageName|ErrImageNeverPull|pull access denied|manifest unknown")),
    (Category.CONFIG, False, "the pod cannot be configured — a missing Secret, ConfigMap or key: create it, then resubmit",
     re.compile(r"CreateContainerConfigError|CreateContainerError|(secret|configmap) \"[^\"]+\" not found|couldn't find key")),
    (Category.USAGE, False, "the program refused its arguments: fix the parameter names or values",
     # argparse (and the reference trainer) report every argument error as "<prog>: error: ..." and exit 2
     re.compile(r"(^|: )[\w.-]+: error: |^usage: ", re.MULTILINE)),
    (Category.MISSING_PROGRAM, False, "the program or module does not exist where the trial runs: fix program or command",
     re.compile(r"can't open file|No module named|ModuleNotFoundError|command not found|not found on PATH|is not a file in|cannot be imported|"
                r"executable file not found|exit code 12[67]\b")),
    (Category.CODE, False, "Python cannot compile the program: fix the syntax error",
     re.compile(r"(^|: )(SyntaxError|IndentationError|TabError)\b", re.MULTILINE)),
    # Kueue refuses the job as the cluster stands (unknown LocalQueue, inactive ClusterQueue, a request
    # over the queue's capacity, no Workload made for it): the same job would wait the same way
    (Category.QUEUE, False, "Kueue cannot admit the job as the cluster stands: fix the LocalQueue, ClusterQueue or "
                            "the request as the reason says, then resubmit",
     re.compile(r"Kueue cannot admit it|Kueue made no Workload|Kueue \(manageJobsWithoutQueueName\)")),
    # kube_pods marks a pod the cluster stopped (DisruptionTarget) "not the trial's fault"
    (Category.DISRUPTED, True, "stopped by the cluster, not by the trial: node shutdown, drain, preemption or taint",
     re.compile(r"not the trial's fault|(^|: )disrupted \(", re.MULTILINE)),
    (Category.OOM, True, "out of memory",
     re.compile(r"OOMKilled|out of memory|OutOfMemoryError", re.IGNORECASE)),
    (Category.INTERRUPTED, True, "interrupted from outside the trial",
     re.compile(r"killed by signal|vanished|never started|Evicted|Preempt|NodeLost|DeadlineExceeded|still pending after|"
                r"over max_runtime|max_runtime \S+ exceeded|supervisor got SIG|cancelled", re.IGNORECASE)),
)


@dataclass(frozen=True)
class Classification:
    category: Category
    retryable: bool
    why: str


def exit_code_of(reason: str) -> int | None:
    match = _EXIT_CODE.search(parse_failure(reason).ended)
    return int(match.group(1)) if match else None


def classify(reason: str, *, exit_code: int | None = None, log_tail: Sequence[str] = ()) -> Classification:
    """Can this failure ever succeed by retrying? ``reason`` as the backend wrote it (see
    :mod:`dispatcher.core.failures`); ``exit_code`` and ``log_tail`` when known apart from it."""
    failure = parse_failure(reason)
    code = exit_code if exit_code is not None else exit_code_of(reason)
    text = "\n".join([failure.summary, *failure.tail, *log_tail] + ([f"exit code {code}"] if code is not None else []))
    for category, retryable, why, pattern in _RULES:
        if pattern.search(text):
            return Classification(category, retryable, why)
    return Classification(Category.ERROR, True, "failed")


def signature(reason: str) -> str:
    """What two failures must share to be "the same error": category and cause, with numbers,
    addresses, temporary paths and pod/job names masked (pids, ports, timestamps, step counts and
    each attempt's names differ)."""
    failure = parse_failure(reason)
    text = failure.cause or failure.ended
    text = re.sub(r"\b(pod|job) [a-z0-9][a-z0-9.-]*", r"\1 #", text)  # Kubernetes names: per attempt
    text = re.sub(r"0x[0-9a-fA-F]+", "0x#", text)
    text = re.sub(r"/tmp/\S+", "/tmp/#", text)
    text = re.sub(r"\d+", "#", text)
    return f"{classify(reason).category.value}|{' '.join(text.split()).lower()}"


def fingerprint(reason: str) -> str:
    """A short hash of :func:`signature`, small enough for the trial's live entry: what the next
    attempt's failure is compared with. Empty for interruptions (never "the same error")."""
    if classify(reason).category in (Category.INTERRUPTED, Category.DISRUPTED):
        return ""
    return hashlib.sha256(signature(reason).encode()).hexdigest()[:FINGERPRINT_LEN]


def counts(reason: str) -> bool:
    """Does this ended attempt count against the trial's ``max_retries``? Not when the cluster
    stopped it (:data:`Category.DISRUPTED`); see the module docstring for the bound."""
    return classify(reason).category is not Category.DISRUPTED


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    note: str = ""  # for the reason: "attempt 1 of 3; not retried: ...", "attempt 1 of 3; retried"
    counted: bool = True  # whether this attempt counts against max_retries


def decide_retry(*, reason: str, attempt: int, max_retries: int, previous_reason: str = "",
                 previous_fingerprint: str = "", uncounted: int = 0) -> RetryDecision:
    """Retry this failed attempt (``attempt``, 1-based) or give the trial up as FAILED?

    ``previous_reason``: the failure of attempt ``attempt - 1`` ("" if none or unknown), or its
    :func:`fingerprint` as ``previous_fingerprint``. ``uncounted``: how many earlier attempts of
    the trial did not count (the cluster stopped them); each one adds an attempt to the trial's
    ``max_retries + 1``, which the note says (``attempt 2 of 4``).
    """
    verdict = classify(reason)
    free = verdict.category is Category.DISRUPTED and uncounted < MAX_UNCOUNTED
    attempts = max_retries + 1 + uncounted + free
    where = f"attempt {attempt} of {attempts}"
    if free:
        return RetryDecision(True, f"{where}; not counted against max_retries: {verdict.why}", counted=False)
    if attempt >= attempts:
        return RetryDecision(False, where)
    if not verdict.retryable:
        return RetryDecision(False, f"{where}; not retried: {verdict.why}")
    previous = previous_fingerprint or (fingerprint(previous_reason) if previous_reason else "")
    if previous and previous == fingerprint(reason):
        return RetryDecision(False, f"{where}; not retried: the same error as attempt {attempt - 1}")
    return RetryDecision(True, f"{where}; retried")


def default_max_failed(total: int) -> int:
    """The proportional circuit breaker of a sweep that sets no ``max_failed_trials``."""
    return max(10, math.ceil(total / 4))


def breaker(*, total: int, succeeded: int, failed: int, max_failed_trials: int | None) -> str | None:
    """The reason to fail the sweep now (cancelling the rest), or None to go on."""
    if max_failed_trials is not None:
        if failed >= max_failed_trials:
            return f"circuit breaker: {failed} trials failed (max_failed_trials {max_failed_trials})"
        return None
    if succeeded == 0 and failed >= FAIL_FAST:
        return (f"fail-fast: {failed} trials failed and none succeeded — see `producer status --trials` for the "
                "cause; set sweepq.max_failed_trials to let such a sweep go on")
    limit = default_max_failed(total)
    if failed >= limit:
        return (f"circuit breaker: {failed} trials failed (default max_failed_trials {limit}, a quarter of the "
                "sweep) — set sweepq.max_failed_trials to change it")
    return None


def end_state(*, succeeded: int, failed: int, cancelled: int, early_stopped: int = 0) -> tuple[SweepState, str]:
    """The state of a sweep whose trials are all terminal, and its reason. A trial Hyperband stopped
    early ran fine (it lost): it counts as a trial that did not fail."""
    counts = f"{succeeded} succeeded, {failed} failed, {cancelled} cancelled"
    if early_stopped:
        counts += f", {early_stopped} early-stopped"
    if succeeded + early_stopped == 0 and failed > 0:
        return SweepState.FAILED, f"no trial succeeded: {counts}"
    if failed:
        return SweepState.COMPLETED, f"completed with failures: {counts}"
    return SweepState.COMPLETED, counts
