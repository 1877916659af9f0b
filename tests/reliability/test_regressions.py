"""Deterministic replays of the bugs the randomised scenarios found (see docs/RELIABILITY.md).

Each test drives one exact interleaving through the real adapters (moto, the emulator) and checks
the invariants with the ledger at every job create.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError
from helpers import Clock, bootstrap, grid_spec, submit

from dispatcher.adapters.queue import Queue
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher
from dispatcher.wake import run_loop

KIND = "pytorchjob"


def _dispatcher(session: Any, kube: Any, queue: Queue, clock: Clock, **settings: Any) -> Dispatcher:
    s = Settings.load({}, backend=KIND, namespace="sweepq", lease_seconds=60, **settings)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    return Dispatcher(settings=s, store=Store(s.table, session.client("dynamodb")), queue=Queue(session.client("sqs"),
                      queue.url), backends={KIND: backend}, clock=clock, owner="only")


def test_a_trial_whose_job_could_not_be_cancelled_keeps_its_slot(atomic_aws, kube, ledger) -> None:
    # GIVEN a running trial over its max_runtime, and a delete that the API server refuses (500)
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    ledger.cap = 3
    sweep_id = submit(queue, grid_spec("overrun", 1, 1), {"max_runtime": 60, "max_retries": 1})
    ledger.expect(sweep_id, "COMPLETED", total=1)
    clock = Clock(start=time.time())  # the emulator stamps startTime with the real clock
    d = _dispatcher(atomic_aws, kube, queue, clock, max_running=3)
    d.tick()
    kube.set_job_phase(KIND, f"{sweep_id}-0-a1", JobPhase.RUNNING)
    clock.advance(30)
    d.tick()  # RUNNING recorded, started now
    clock.advance(120)
    kube.fail_next(KIND, 500, verb="delete")
    # WHEN the tick decides to cancel it and retry, but the cancel fails
    report = d.tick()
    assert any("cancel" in e for e in report.errors), report.errors
    # THEN the retry is not launched while the first attempt still runs (one live job per trial)
    assert [j["metadata"]["name"] for j in kube.list_objects(KIND)] == [f"{sweep_id}-0-a1"]
    assert store.get_sweep(sweep_id)["live"]["0"]["state"] == "RUNNING"
    # AND the next tick cancels it; the retry waits until the first attempt's job is gone from the
    # cluster (a deleted job stays listed while its pods terminate), then launches
    clock.advance(30)
    d.tick()
    assert kube.list_objects(KIND) == []
    clock.advance(30)
    d.tick()
    assert [j["metadata"]["name"] for j in kube.list_objects(KIND)] == [f"{sweep_id}-0-a2"]
    kube.set_job_phase(KIND, f"{sweep_id}-0-a2", JobPhase.SUCCEEDED)
    clock.advance(30)
    d.tick()
    ledger.assert_ok(ledger.check_final(store))


def test_a_sweep_whose_reconcile_failed_keeps_its_slots_for_the_cap(atomic_aws, kube, ledger) -> None:
    # GIVEN cap 2 and sweep X with trial 0 running and trial 1 claimed but not created (its create
    # failed with a 500)
    settings = Settings.load({}, backend=KIND, max_running=2, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    ledger.cap = 2
    x = submit(queue, grid_spec("x", 1, 2), submitted_at="2026-01-01T00:00:00.000Z")
    ledger.expect(x, "COMPLETED", total=2)
    clock = Clock(start=time.time())
    one_a_tick = _dispatcher(atomic_aws, kube, queue, clock, max_running=2, max_launches_per_tick=1)
    one_a_tick.tick()
    kube.set_job_phase(KIND, f"{x}-0-a1", JobPhase.RUNNING)
    kube.fail_next(KIND, 500, verb="create")
    one_a_tick.tick()
    assert store.get_sweep(x)["live"]["1"]["state"] == "PENDING"
    assert len(kube.list_objects(KIND)) == 1
    # AND sweep Y arrives; WHEN trial 0 succeeds but writing that fails (DynamoDB 500): X cannot be
    # reconciled this tick (the tick's first write stores Y, its second is X's)
    y = submit(queue, grid_spec("y", 2, 2), submitted_at="2026-01-01T00:00:01.000Z")
    ledger.expect(y, "COMPLETED", total=4)
    kube.set_job_phase(KIND, f"{x}-0-a1", JobPhase.SUCCEEDED)
    flaky = boto3.session.Session(region_name="us-east-1")
    transactions = [0]

    def fail_the_second(**_: Any) -> None:
        transactions[0] += 1
        if transactions[0] == 2:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, "TransactWriteItems")

    flaky.events.register("before-call.dynamodb.TransactWriteItems", fail_the_second)
    clock.advance(30)
    d = _dispatcher(flaky, kube, queue, clock, max_running=2)
    report = d.tick()
    assert transactions[0] >= 2 and any(x in e for e in report.errors), report.errors
    # THEN its claimed trial still counts against the cap: the next tick, which creates that
    # trial's job, finds no more than 2 running, and neither does any later one
    clock.advance(30)
    d.tick()
    for _ in range(12):
        ledger.observe()
        for job in kube.list_objects(KIND):
            kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.SUCCEEDED)
        clock.advance(30)
        d.tick()
        if not store.active_sweeps():
            break
    ledger.assert_ok(ledger.check_final(store))


def test_the_run_loop_outlives_a_tick_that_aws_fails(atomic_aws, kube) -> None:
    # GIVEN `dispatcher run`'s loop, and AWS failing the lease call of its first tick (a throttle
    # that outlasted the SDK's own retries)
    settings = Settings.load({}, backend=KIND, max_running=2, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    sweep_id = submit(queue, grid_spec("loop", 1, 1))
    flaky = boto3.session.Session(region_name="us-east-1")
    armed = [True]

    def throttle_once(**_: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "PutItem")

    flaky.events.register("before-call.dynamodb.PutItem", throttle_once)
    d = _dispatcher(flaky, kube, queue, Clock(start=time.time()), max_running=2)
    stop, reports = threading.Event(), []

    def on_tick(report: Any) -> None:
        reports.append(report)
        stop.set()

    # WHEN the loop runs; THEN the failed tick is logged and the next one goes on
    ticks = run_loop(d, interval=0.01, stop=stop, on_tick=on_tick)
    assert not armed[0] and ticks >= 1 and reports and reports[-1].accepted == 1
    assert store.get_sweep(sweep_id)["state"] == "ACTIVE"


def test_a_job_is_never_cancelled_while_its_trial_is_recorded_pending(atomic_aws, kube, ledger) -> None:
    # GIVEN a trial whose job was created but whose LAUNCHED write failed (it stays PENDING, the
    # state that means "the job may not exist yet: create it"), and whose job then overran
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    ledger.cap = 3
    sweep_id = submit(queue, grid_spec("pending", 1, 1), {"max_runtime": 60, "max_retries": 2})
    ledger.expect(sweep_id, "COMPLETED", total=1)
    flaky = boto3.session.Session(region_name="us-east-1")
    transactions, failing = [0], {3, 4}  # put_sweep, claim, LAUNCHED (fails); the next write (fails)

    def fail_some(**_: Any) -> None:
        transactions[0] += 1
        if transactions[0] in failing:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, "TransactWriteItems")

    flaky.events.register("before-call.dynamodb.TransactWriteItems", fail_some)
    clock = Clock(start=time.time())
    d = _dispatcher(flaky, kube, queue, clock, max_running=3)
    d.tick()
    assert store.get_sweep(sweep_id)["live"]["0"]["state"] == "PENDING"
    kube.set_job_phase(KIND, f"{sweep_id}-0-a1", JobPhase.RUNNING)
    clock.advance(120)
    # WHEN the tick that finds it over max_runtime cannot write, and later ticks go on
    for _ in range(8):
        d.tick()
        ledger.observe()
        for job in kube.list_objects(KIND):
            if job["metadata"]["name"].endswith("-a2"):
                kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.SUCCEEDED)
        clock.advance(30)
        if not store.active_sweeps():
            break
    # THEN attempt 1's job was created once (never re-created after its own cancel), the retry ran
    assert ledger.creates_by_trial()[(sweep_id, 0)] == [1, 2]
    ledger.assert_ok(ledger.check_final(store))
