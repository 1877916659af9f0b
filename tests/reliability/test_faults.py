"""Scenario 3 — injected faults: sweeps still finish, exactly once.

* 10 % of the dispatchers' AWS calls fail (throttles and 5xx; a third of them *after* AWS applied
  the call, so the dispatcher cannot know whether it happened), seeded.
* Kubernetes answers 429/500/503 or hangs past the client's read timeout on list, create and
  delete; jobs fail, run over ``max_runtime`` (the cancel itself may fail) and vanish.
* SQS redelivers: bodies of sweeps already accepted — even finished — are sent again later.
* Two dispatchers alternate, so a tick that died with the lease held is taken over on expiry.
* And one deterministic case: a dispatcher paused between claim and create while its lease
  expires and another takes over can neither claim nor mark anything afterwards.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import boto3
import pytest
from faults import AwsFaults, KubeFaults
from helpers import Clock, bootstrap, grid_spec, submit
from invariants import Ledger, is_terminal, labels_of
from sweepworld import KIND, delete_job

from dispatcher.adapters.queue import Queue
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.errors import Conflict, SweepqError
from dispatcher.core.jobs import LABEL_SWEEP_ID, JobPhase
from dispatcher.core.planner import Launch
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

CAP = 4


def drive(kube: Any, rng: random.Random, slow: set[str]) -> None:
    """The operators: jobs start, most end (20 % fail), a few vanish; `slow` sweeps' jobs overrun."""
    for job in sorted(kube.list_objects(KIND), key=lambda j: j["metadata"]["name"]):
        if is_terminal(job):
            continue
        name = job["metadata"]["name"]
        conditions = {c["type"] for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
        if "Running" not in conditions:
            if rng.random() < 0.8:
                kube.set_job_phase(KIND, name, JobPhase.RUNNING)
        elif labels_of(job)[LABEL_SWEEP_ID] in slow:
            if rng.random() < 0.1:
                kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
        elif rng.random() < 0.03:
            delete_job(kube, name)
        elif rng.random() < 0.5:
            kube.set_job_phase(KIND, name, JobPhase.FAILED if rng.random() < 0.2 else JobPhase.SUCCEEDED)


def run_under_faults(aws: Any, kube: Any, ledger: Ledger, seed: int, *, sweeps: int, steps: int,
                     rate: float = 0.1, hang_s: float = 0.0) -> dict[str, Any]:
    rng = random.Random(seed)
    settings = Settings.load({}, backend=KIND, max_running=CAP, namespace="sweepq", lease_seconds=60)
    store, queue = bootstrap(aws, settings, visibility_timeout=0)  # the test's own, fault-free clients
    faulty = boto3.session.Session(region_name="us-east-1")
    aws_faults = AwsFaults(random.Random(seed * 7919), rate=rate).install(faulty)
    kube_faults = KubeFaults(kube, random.Random(seed * 104729), rate=rate, hang_s=hang_s)
    clock = Clock(start=time.time())  # near the emulator's own timestamps (job startTime)
    dynamodb, sqs = faulty.client("dynamodb"), faulty.client("sqs")
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq", request_timeout=(2, 0.3))
    dispatchers = [Dispatcher(settings=settings, store=Store(settings.table, dynamodb), queue=Queue(sqs, queue.url),
                              backends={KIND: backend}, clock=clock, owner=f"faulty-{i}") for i in range(2)]
    sent: list[tuple[dict[str, Any], dict[str, Any], str, str]] = []  # what was submitted, to redeliver
    slow: set[str] = set()
    aborted = resent = 0

    def send(n: int) -> None:
        spec = grid_spec(f"f{seed}-{n}", rng.randint(1, 3), rng.randint(1, 2))
        launch: dict[str, Any] = {"max_retries": rng.choice([1, 2, 3])}
        if rng.random() < 0.4:
            launch["max_concurrent"] = rng.randint(1, 2)
        if rng.random() < 0.25:
            launch["max_runtime"] = 120  # its jobs overrun: cancelled (the delete may fail) and retried
        token, at = f"faults-{seed}-{n}", f"2026-01-01T00:00:{n:02d}.000Z"
        sweep_id = submit(queue, spec, launch, token=token, submitted_at=at)
        total = len(spec["parameters"]["learning_rate"]["values"]) * len(spec["parameters"]["batch_size"]["values"])
        ledger.expect(sweep_id, "TERMINAL", total=total, max_concurrent=launch.get("max_concurrent"))
        if "max_runtime" in launch:
            slow.add(sweep_id)
        sent.append((spec, launch, token, at))

    for n in range(sweeps // 2):
        send(n)
    step = 0
    for step in range(steps):
        if len(sent) < sweeps and rng.random() < 0.3:
            send(len(sent))
        if sent and rng.random() < 0.15:  # SQS redelivers a body already processed (maybe finished)
            spec, launch, token, at = rng.choice(sent)
            submit(queue, spec, launch, token=token, submitted_at=at)
            resent += 1
        kube_faults.step()
        try:
            dispatchers[step % 2].tick()
        except SweepqError:
            aborted += 1  # a lease call failed: the tick ended early, its lease expires or is retaken
        ledger.observe()
        drive(kube, rng, slow)
        clock.advance(20)
        if len(sent) == sweeps and not store.active_sweeps() and not _queued(queue):
            break
    else:
        pytest.fail(f"seed {seed}: {len(store.active_sweeps())} sweeps still active after {steps} steps")
    figures = ledger.check_final(store)
    ledger.assert_ok(figures)
    return {"seed": seed, "steps": step + 1, "aws_calls": aws_faults.calls, "aws_faults": aws_faults.total,
            "kube_faults": kube_faults.total, "ticks_aborted": aborted, "redeliveries": resent,
            "figures": figures}


def _queued(queue: Queue) -> int:
    attrs = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def report(out: dict[str, Any]) -> str:
    f = out["figures"]
    return (f"faults seed {out['seed']}: {out['steps']} ticks, {out['aws_calls']} AWS calls, {out['aws_faults']} AWS "
            f"faults, {out['kube_faults']} Kubernetes faults, {out['ticks_aborted']} ticks aborted, "
            f"{out['redeliveries']} redeliveries — {f.line()}")


FAST_SEEDS = (1,)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [pytest.param(s, marks=() if s in FAST_SEEDS else pytest.mark.soak) for s in range(1, 9)])
def test_sweeps_finish_exactly_once_under_aws_and_kubernetes_faults(atomic_aws, kube, seed) -> None:
    ledger = Ledger(kube, cap=CAP)
    monkeypatch = pytest.MonkeyPatch()
    ledger.install(monkeypatch)
    try:
        out = run_under_faults(atomic_aws, kube, ledger, seed, sweeps=6, steps=150, hang_s=0.5 if seed % 2 else 0.0)
    finally:
        monkeypatch.undo()
    print("\n" + report(out))
    assert out["aws_faults"] > 0 and out["kube_faults"] > 0


class SlowCreate:
    """The backend of a dispatcher that pauses (GC, a frozen VM) right before its creates: the
    first create waits until resumed, and so does every create that starts before that (the tick
    creates several sweeps' jobs at once)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.kind = backend, backend.kind
        self.paused, self.resume = threading.Event(), threading.Event()
        self.submits: list[str] = []

    def dryrun(self, request: Any) -> Any:
        return self.backend.dryrun(request)

    def observe(self) -> Any:
        return self.backend.observe()

    def cancel(self, name: str) -> None:
        self.backend.cancel(name)

    def submit(self, dryrun: Any) -> str:
        if not self.resume.is_set():
            self.paused.set()
            assert self.resume.wait(30), "never resumed"
        self.submits.append(dryrun.job_name)
        return self.backend.submit(dryrun)


def test_an_expired_lease_taken_over_between_claim_and_create_cannot_claim_again(atomic_aws, kube, ledger) -> None:
    # GIVEN two sweeps, and dispatcher A that pauses between its first claim and that job's create
    settings = Settings.load({}, backend=KIND, max_running=CAP, namespace="sweepq", lease_seconds=60)
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    ledger.cap = CAP
    first = submit(queue, grid_spec("first", 1, 2), submitted_at="2026-01-01T00:00:00.000Z")
    second = submit(queue, grid_spec("second", 1, 2), submitted_at="2026-01-01T00:00:01.000Z")
    for sweep_id in (first, second):
        ledger.expect(sweep_id, "COMPLETED", total=2)
    clock = Clock()
    plain = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    slow = SlowCreate(plain)
    a = Dispatcher(settings=settings, store=store, queue=queue, backends={KIND: slow}, clock=clock, owner="A")
    b = Dispatcher(settings=settings, store=store, queue=queue, backends={KIND: plain}, clock=clock, owner="B")
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(a.tick()))
    thread.start()
    assert slow.paused.wait(30), "A never reached its first create"
    # WHEN A's lease expires (beyond the clock-skew margin) and B takes over: B creates the claimed
    # trial's job and launches the rest
    clock.advance(settings.lease_seconds + settings.lease_seconds / 8 + 1)
    taken = b.tick()
    assert taken.lease == "held" and taken.launched == 4, taken
    # AND A wakes up and goes on with its tick
    slow.resume.set()
    thread.join(30)
    (late,) = reports
    # THEN A's creates (the first of each sweep whose claims it committed before B took over: the
    # first sweep's, and the second's when A committed it in time) found their jobs already there
    # (409: counted as launched, nothing created), A created nothing after, and every write A tried
    # after was refused
    assert f"{first}-0-a1" in slow.submits and set(slow.submits) <= {f"{first}-0-a1", f"{second}-0-a1"}
    assert late.launched == len(slow.submits) and late.errors, late
    assert all("lost a conditional write" in e or "re-planned" in e for e in late.errors), late.errors
    # AND A cannot claim anything any more: its claim is a transaction with the lease check
    record = next(r for r in a.load_active(late) if r.sweep_id == second)
    with pytest.raises(Conflict):
        a.claim(record, Launch(second, 1, 2, retry=False), clock())
    # AND B finishes both sweeps with one job per trial
    for _ in range(10):
        for job in kube.list_objects(KIND):
            kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.SUCCEEDED)
        clock.advance(30)
        b.tick()
        ledger.observe()
        if not store.active_sweeps():
            break
    figures = ledger.check_final(store)
    ledger.assert_ok(figures)
    assert figures.creates == 4
