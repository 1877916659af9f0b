"""dispatcher/adapters/wake_queue.py against moto: the wake queue holds triggers only. Wakes are
drained and deleted; any other body on it (a submit or cancel envelope a trial tried to slip
in, garbage) is dropped with a warning and never reaches intake."""

from __future__ import annotations

import collections
import json
import logging

import pytest

from dispatcher.adapters.wake_queue import (
    MAX_WAKE_BODY,
    NotAWake,
    WakeQueue,
    create_wake_queue,
    parse_wake,
    split_event,
)
from dispatcher.core.errors import ConfigError
from dispatcher.core.message import CANCEL_SCHEMA, SUBMIT_SCHEMA

JOB = "bert-lr-abcdefgh-3-a1"
WAKE = json.dumps({"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": "bert-lr-abcdefgh",
                   "job": JOB, "pod": f"{JOB}-worker-0"})
CANCEL = json.dumps({"schema": CANCEL_SCHEMA, "sweep_id": "victim-abcdefgh", "requested_by": "alice"})
SUBMIT = json.dumps({"schema": SUBMIT_SCHEMA, "sweep_id": "x-abcdefgh", "token": "t" * 16, "spec": {},
                     "launch": {}, "submitter": "x", "submitted_at": "now"})


@pytest.fixture
def sqs(aws):
    return aws.client("sqs", region_name="us-east-1")


@pytest.fixture
def calls(sqs):
    counter: collections.Counter[str] = collections.Counter()
    sqs.meta.events.register("before-call.sqs", lambda model, **_: counter.update([model.name]))
    return counter


def test_create_is_idempotent_and_keeps_a_queue_made_with_other_attributes(sqs):
    url = create_wake_queue(sqs, "sweepq-wake")
    assert create_wake_queue(sqs, "sweepq-wake") == url
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["MessageRetentionPeriod"], attrs["SqsManagedSseEnabled"]) == ("3600", "true")
    other = sqs.create_queue(QueueName="made-elsewhere", Attributes={"VisibilityTimeout": "99"})["QueueUrl"]
    assert create_wake_queue(sqs, "made-elsewhere") == other


def test_drain_returns_the_wakes_drops_everything_else_and_deletes_all(sqs, calls, caplog):
    # GIVEN 12 wakes and, from a hostile trial, a cancel, a submit and garbage on the wake queue
    url = create_wake_queue(sqs, "sweepq-wake")
    for _ in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=WAKE)
    for body in (CANCEL, SUBMIT, "not json", "[1]", "x" * (MAX_WAKE_BODY + 1)):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    calls.clear()
    # WHEN the dispatcher drains it
    with caplog.at_level(logging.WARNING, logger="dispatcher.adapters.wake_queue"):
        drained = WakeQueue(sqs, url).drain(max_messages=100)
    # THEN 12 triggers, 5 dropped with a warning each, nothing left, one DeleteMessageBatch per receive
    assert (len(drained.wakes), drained.dropped, drained.not_deleted, drained.received) == (12, 5, 0, 17)
    assert {(w.event, w.job, w.pod) for w in drained.wakes} == {("trial-finished", JOB, f"{JOB}-worker-0")}
    assert len([r for r in caplog.records if "wake-dropped" in r.getMessage()]) == 5
    # the reason is logged, never the body (botocore's own DEBUG wire log is the SDK's, not ours)
    assert not [r for r in caplog.records if r.name.startswith("dispatcher") and "victim" in r.getMessage()]
    assert WakeQueue(sqs, url).depth() == 0
    assert calls["DeleteMessageBatch"] == calls["ReceiveMessage"] - 1 >= 2
    assert "SendMessage" not in calls and "DeleteMessage" not in calls


def test_drain_stops_at_its_bound(sqs):
    url = create_wake_queue(sqs, "sweepq-wake")
    for _ in range(15):
        sqs.send_message(QueueUrl=url, MessageBody=WAKE)
    drained = WakeQueue(sqs, url).drain(max_messages=7)
    assert drained.received == 7
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "0"})
    assert WakeQueue(sqs, url).depth() == 8


def test_draining_a_missing_queue_is_a_config_error(sqs):
    with pytest.raises(ConfigError, match="SWEEPQ_WAKE_QUEUE_URL"):
        WakeQueue(sqs, "https://sqs.us-east-1.amazonaws.com/123456789012/nope").drain()


@pytest.mark.parametrize(
    ("body", "reason"),
    [(CANCEL, "schema 'sweepq.cancel/v1' is not 'sweepq.wake/v1'"), (SUBMIT, "schema 'sweepq.submit/v1'"),
     ("{", "not JSON"), ('"wake"', "JSON str, not an object"), (None, "NoneType, not text"),
     ("{}" + " " * MAX_WAKE_BODY, "over 2048 bytes")],
    ids=["cancel", "submit", "truncated", "string", "none", "huge"],
)
def test_anything_but_a_wake_is_not_a_wake(body, reason):
    with pytest.raises(NotAWake, match=reason):
        parse_wake(body)


def test_a_wakes_fields_that_break_the_contract_are_dropped_not_trusted():
    wake = parse_wake(json.dumps({"schema": "sweepq.wake/v1", "event": 5, "sweep_id": "../etc", "job": "x; rm",
                                  "pod": "", "extra": "ignored"}))
    assert (wake.event, wake.sweep_id, wake.job, wake.pod) == ("", None, None, None)


def _record(body: str, arn: str, message_id: str) -> dict:
    return {"messageId": message_id, "receiptHandle": f"rh-{message_id}", "body": body, "attributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": arn}


def test_split_event_takes_wake_queue_records_as_triggers_and_passes_the_rest_to_intake():
    wake_arn = "arn:aws:sqs:us-east-1:123456789012:sweepq-wake"
    sweep_arn = "arn:aws:sqs:us-east-1:123456789012:sweepq"
    other_account = "arn:aws:sqs:us-east-1:999999999999:sweepq-wake"
    event = {"Records": [_record(WAKE, wake_arn, "w1"), _record(CANCEL, wake_arn, "w2"),
                         _record(SUBMIT, sweep_arn, "s1"), _record(WAKE, other_account, "x1")]}
    rest, drained = split_event(event, wake_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/sweepq-wake")
    # the cancel on the wake queue never reaches intake; the sweep queue's records all do
    assert [r["messageId"] for r in rest["Records"]] == ["s1", "x1"]
    assert [w.message_id for w in drained.wakes] == ["w1"] and drained.dropped == 1
    assert split_event(event, wake_queue_url=None)[0] == event
    scheduled = {"source": "aws.events"}
    assert split_event(scheduled, wake_queue_url="https://q/123456789012/sweepq-wake") == (scheduled, drained.__class__())
