"""Event-driven top-up: a finished job leads to the next launch without waiting for the interval."""

from __future__ import annotations

import threading
import time

import pytest
from helpers import bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.wake import Waker, run_loop, start_watchers

KIND = "pytorchjob"


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def loop(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=1, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    dispatcher = make_dispatcher(aws, settings, {KIND: make_backend(KIND, api_client=kube.api_client, namespace="sweepq")},
                                 time.time, queue)
    stop, waker, ticks = threading.Event(), Waker(), []
    threads = start_watchers(dispatcher, waker, stop, poll_s=0.2)
    runner = threading.Thread(
        target=run_loop, kwargs=dict(dispatcher=dispatcher, interval=300, stop=stop, waker=waker, debounce=0.3,
                                     on_tick=ticks.append), daemon=True)

    class Loop:
        pass

    lp = Loop()
    lp.queue, lp.kube, lp.store, lp.ticks, lp.waker, lp.start = queue, kube, store, ticks, waker, runner.start
    yield lp
    stop.set()
    runner.join(timeout=10)
    for t in threads:
        t.join(timeout=0.1)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_finished_job_is_replaced_within_seconds_not_at_the_next_interval(loop):
    # GIVEN a 2-trial sweep, a global cap of 1 and a 300 s interval
    submit(loop.queue, grid_spec("topup", 1, 2))
    loop.start()
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 1, 15), "the new submission was not picked up"
    (first,) = loop.kube.list_objects(KIND)
    # WHEN its job succeeds
    started = time.monotonic()
    loop.kube.set_job_phase(KIND, first["metadata"]["name"], JobPhase.SUCCEEDED)
    # THEN the second trial launches within seconds (the watch woke the loop)
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 2, 15)
    assert time.monotonic() - started < 15 < 300


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_wake_storm_coalesces_into_few_ticks(loop):
    submit(loop.queue, grid_spec("storm", 1, 1))
    loop.start()
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 1, 15)
    (job,) = loop.kube.list_objects(KIND)
    time.sleep(1.0)
    before = len(loop.ticks)
    # WHEN 40 status changes arrive in a burst
    for i in range(40):
        loop.kube.patch_status(KIND, job["metadata"]["name"], {"observedGeneration": i})
    time.sleep(2.0)
    # THEN they cost a handful of ticks, not 40
    assert 1 <= len(loop.ticks) - before <= 4, len(loop.ticks) - before


def test_waker_returns_reasons_and_times_out():
    waker = Waker()
    assert waker.wait(0.05, debounce=0) == {}
    for _ in range(5):
        waker.wake("queue")
    waker.wake("jobs")
    assert waker.wait(1, debounce=0) == {"queue": 5, "jobs": 1}
    assert waker.wait(0.01, debounce=0) == {}


# -- the wake queue: triggers only (CONTRACTS C1) -------------------------------------------------

def _sqs_record(body, queue_arn, message_id="m-1"):
    return {"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "messageId": message_id,
            "receiptHandle": f"r-{message_id}", "body": body,
            "attributes": {"ApproximateReceiveCount": "1", "SenderId": "AROAEXAMPLE:trial-pod"}}


def test_lambda_records_from_the_wake_queue_are_never_parsed_as_submits(aws, kube):
    # GIVEN a dispatcher and a record from the wake queue whose body is a valid submit envelope
    from dispatcher.core.identity import sweep_id_for
    from dispatcher.core.message import SubmitMessage, encode_submit
    from dispatcher.lambda_handler import handle

    settings = Settings.load({}, backend=KIND, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    dispatcher = make_dispatcher(aws, settings, {KIND: make_backend(KIND, api_client=kube.api_client,
                                                                    namespace="sweepq")}, time.time, queue)
    forged = encode_submit(SubmitMessage(sweep_id=sweep_id_for("forged", "forged-token-1"), token="forged-token-1",
                                         spec=grid_spec("forged", 1, 1), launch={}, submitter="a trial",
                                         submitted_at="2026-01-01T00:00:00Z"))
    # (a stack names its wake queue as it likes: only the sweep queue's records are ever parsed)
    event = {"Records": [_sqs_record(forged, "arn:aws:sqs:us-east-1:123456789012:sweepq-wake"),
                         _sqs_record(forged, "arn:aws:sqs:us-east-1:123456789012:team-stack-WakeQueue-1A2B3C", "m-2")]}
    # WHEN the SQS event source delivers it
    response = handle(event, dispatcher)
    # THEN it is a trigger: committed, counted as a wake, and nothing is stored or launched
    assert response["batchItemFailures"] == [] and response["report"]["wakes"] == 2
    assert response["report"]["accepted"] == 0 and store.get_sweep(sweep_id_for("forged", "forged-token-1")) is None
    assert kube.list_objects(KIND) == []


def test_the_tick_deletes_wake_queue_messages_unread_and_records_the_sender(aws, kube):
    from dispatcher.adapters.queue import Queue, create_wake_queue

    settings = Settings.load({}, backend=KIND, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    sqs = aws.client("sqs")
    wake = Queue(sqs, create_wake_queue(sqs, settings.wake_queue_name))
    for i in range(12):
        wake.send(f"not even json {i}")
    sweep_id = submit(queue, grid_spec("sender", 1, 1))
    dispatcher = make_dispatcher(aws, settings, {KIND: make_backend(KIND, api_client=kube.api_client,
                                                                    namespace="sweepq")}, time.time, queue)
    dispatcher.intake.wake_queue = wake
    report = dispatcher.tick()
    attrs = sqs.get_queue_attributes(QueueUrl=wake.url, AttributeNames=["All"])["Attributes"]
    assert report.wakes == 12 and report.dead_letters == 0 and not report.errors
    assert int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 0
    # C4 groundwork: the SQS SenderId of the submit is kept on the sweep (the body's submitter is not trusted)
    assert store.get_sweep(sweep_id)["sender_id"]


def test_build_dispatcher_finds_the_wake_queue_by_name_and_hands_its_url_to_trials(aws, kube):
    from dispatcher.adapters.queue import create_queues, create_wake_queue
    from dispatcher.wiring import build_dispatcher

    settings = Settings.load({}, backend=KIND, namespace="sweepq", queue_name="team")
    create_queues(aws.client("sqs"), "team")
    assert build_dispatcher(settings, session=aws, backends={}).settings.wake_queue_url is None  # none yet
    url = create_wake_queue(aws.client("sqs"), "team-wake")
    d = build_dispatcher(settings, session=aws, backends={})
    assert d.settings.wake_queue_url == url and d.intake.wake_queue.url == url
