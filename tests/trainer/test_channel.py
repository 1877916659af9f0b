"""The metrics channel of CONTRACTS C1 against moto: this pod's item, positions, markers, wake triggers."""

from __future__ import annotations

import json
import logging
import math
from decimal import Decimal

import pytest
from trainer_support import create_metrics_table, plain_item

from trainer.channel import (
    ATTRIBUTES,
    WAKE_MIN_INTERVAL_S,
    Channel,
    MetricsReportError,
    MetricsTableWriter,
    Snapshot,
    number,
    send_wake,
)
from trainer.context import TrialContext

TABLE = "sweepq-test-metrics"
POD = "bert-lr-1a2b3c4d-3-a2-worker-0"
JOB = "bert-lr-1a2b3c4d-3-a2"
HISTORY = [{"epoch": 1.0, "global_step": 15.0, "eval/accuracy": 0.61, "eval/loss": 0.9},
           {"epoch": 2.0, "global_step": 30.0, "eval/accuracy": 0.72, "eval/loss": 0.7},
           {"epoch": 3.0, "global_step": 45.0, "eval/accuracy": 0.75, "eval/loss": 0.65}]


def pod_context(attempt: int = 2, pod: str = POD, **env: str) -> TrialContext:
    return TrialContext.from_env({"SWEEP_ID": "bert-lr-1a2b3c4d", "TRIAL_INDEX": "3", "SWEEPQ_ATTEMPT": str(attempt),
                                  "SWEEPQ_JOB_NAME": JOB, "POD_NAME": pod, "SWEEPQ_METRICS_TABLE": TABLE, **env})


def snap(positions: int, status: str = "running", **extra) -> Snapshot:
    history = HISTORY[:positions]
    metrics = dict(history[-1]) if history else {}
    return Snapshot(status=status, metrics=metrics, history=history, world_size=4, **extra)


@pytest.fixture
def dynamodb(aws):
    client = aws.client("dynamodb")
    create_metrics_table(client, TABLE)
    return client


def test_first_write_creates_this_pods_item_with_only_the_contract_attributes(dynamodb):
    writer = MetricsTableWriter(pod_context(), client=dynamodb)
    assert writer.write(snap(2), now=1_800_000_000.9) == "written"
    item = plain_item(dynamodb, TABLE, POD)
    assert set(item) <= set(ATTRIBUTES) and set(item) == set(ATTRIBUTES) - {"final"}
    assert (item["pod"], item["job"], item["trial_id"], item["attempt"], item["world_size"], item["status"],
            item["updated_at"]) == (POD, JOB, "bert-lr-1a2b3c4d-3", 2, 4, "running", 1_800_000_000)
    assert item["history"] == {"0": {k: Decimal(repr(v)) for k, v in HISTORY[0].items()},
                               "1": {k: Decimal(repr(v)) for k, v in HISTORY[1].items()}}
    assert item["metrics"]["eval/accuracy"] == Decimal("0.72")
    # the GSI the dispatcher queries for kinds with unpredictable pod names
    found = dynamodb.query(TableName=TABLE, IndexName="by_job", KeyConditionExpression="job = :j",
                           ExpressionAttributeValues={":j": {"S": JOB}})["Items"]
    assert [entry["pod"]["S"] for entry in found] == [POD]


def test_later_writes_append_positions_and_never_touch_written_ones(dynamodb):
    writer = MetricsTableWriter(pod_context(), client=dynamodb)
    writer.write(snap(1), now=1.0)
    calls = []
    dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", lambda params, **_: calls.append(params))
    assert writer.write(snap(3), now=2.0) == "written"
    (call,) = calls
    assert "#history.#p1 = :p1" in call["UpdateExpression"] and "#history.#p2 = :p2" in call["UpdateExpression"]
    assert ":h" not in call["ExpressionAttributeValues"]  # the whole history is not sent again
    assert set(plain_item(dynamodb, TABLE, POD)["history"]) == {"0", "1", "2"}


def test_every_update_names_only_allowed_attributes(dynamodb):
    # The trainer's IAM policy limits dynamodb:Attributes to the contract's list (plus position keys).
    calls = []
    dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", lambda params, **_: calls.append(params))
    writer = MetricsTableWriter(pod_context(), client=dynamodb)
    for snapshot in (snap(0), snap(1), snap(3, status="finished", final={"test/accuracy": 0.7})):
        writer.write(snapshot, now=3.0)
    MetricsTableWriter(pod_context(), client=dynamodb).write(snap(1, status="stopped"), now=4.0)  # a marker
    assert len(calls) == 5
    for call in calls:
        names = set(call["ExpressionAttributeNames"].values())
        assert names - set(ATTRIBUTES) <= {str(p) for p in range(len(HISTORY))}
        assert call["Key"] == {"pod": {"S": POD}}


def test_a_restarted_process_behind_the_item_never_moves_it_backwards(dynamodb):
    # GIVEN the pod's first process reported 3 positions before it crashed
    MetricsTableWriter(pod_context(), client=dynamodb).write(snap(3), now=1.0)
    # WHEN its restart resumes from a checkpoint with 2 positions and reports them
    restarted = MetricsTableWriter(pod_context(), client=dynamodb)
    assert restarted.write(snap(2), now=2.0) == "behind"
    # THEN the item still has all 3 positions and the later metrics
    item = plain_item(dynamodb, TABLE, POD)
    assert set(item["history"]) == {"0", "1", "2"} and item["metrics"]["eval/accuracy"] == Decimal("0.75")
    # AND once it has caught up (position 2 evaluated again), it writes again
    assert restarted.write(snap(3), now=3.0) == "written"
    assert plain_item(dynamodb, TABLE, POD)["updated_at"] == 3


def test_a_stop_marker_is_recorded_even_when_the_process_is_behind(dynamodb):
    MetricsTableWriter(pod_context(), client=dynamodb).write(snap(3), now=1.0)
    assert MetricsTableWriter(pod_context(), client=dynamodb).write(snap(2, status="stopped"), now=5.0) == "marked"
    item = plain_item(dynamodb, TABLE, POD)
    assert (item["status"], item["updated_at"], len(item["history"])) == ("stopped", 5, 3)


def test_an_item_of_another_attempt_is_left_alone(dynamodb, caplog):
    MetricsTableWriter(pod_context(attempt=3), client=dynamodb).write(snap(1), now=1.0)
    stale = MetricsTableWriter(pod_context(attempt=2), client=dynamodb)
    assert stale.write(snap(2), now=2.0) == "behind"
    with caplog.at_level(logging.WARNING):
        assert stale.write(snap(2, status="failed"), now=3.0) == "stale"
    item = plain_item(dynamodb, TABLE, POD)
    assert (item["attempt"], item["status"], len(item["history"])) == (3, "running", 1)
    assert "another attempt than 2" in caplog.text


def test_non_finite_numbers_are_null_and_tiny_ones_zero():
    assert number(math.nan) == {"NULL": True} and number(-math.inf) == {"NULL": True}
    assert number(1e-200) == {"N": "0"} and number(0.25) == {"N": "0.25"} and number(3) == {"N": "3.0"}


def test_writer_needs_pod_name_and_table():
    with pytest.raises(ValueError, match="POD_NAME and SWEEPQ_METRICS_TABLE"):
        MetricsTableWriter(TrialContext.from_env({"SWEEPQ_METRICS_TABLE": TABLE}))


@pytest.mark.parametrize("env, fragment", [
    ({"POD_NAME": "Not_A_Pod"}, "POD_NAME='Not_A_Pod' is not a Kubernetes pod name"),
    ({"SWEEPQ_METRICS_TABLE": "x"}, "SWEEPQ_METRICS_TABLE='x' is not a DynamoDB table name"),
])
def test_bad_channel_environment_names_the_variable(env, fragment):
    from trainer.config import ConfigError

    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        TrialContext.from_env(env)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wake_queue(aws):
    sqs = aws.client("sqs")
    return sqs, sqs.create_queue(QueueName="sweepq-wake")["QueueUrl"]


def _events(sqs, url):
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_channel_writes_then_wakes_with_the_contract_body(dynamodb, wake_queue):
    sqs, url = wake_queue
    context = pod_context(SWEEPQ_WAKE_QUEUE_URL=url)
    channel = Channel.for_process(context, local_rank=0, is_main=True, clock=Clock(), dynamodb_client=dynamodb,
                                  sqs_client=sqs)
    channel.publish(snap(3, status="finished", final={"test/accuracy": 0.7}, wake="trial-finished"))
    assert channel.flush(30, raise_errors=True) is True
    channel.close()
    assert plain_item(dynamodb, TABLE, POD)["final"] == {"test/accuracy": Decimal("0.7")}
    assert _events(sqs, url) == [{"schema": "sweepq.wake/v1", "event": "trial-finished",
                                  "sweep_id": "bert-lr-1a2b3c4d", "job": JOB, "pod": POD}]


def test_progress_wakes_are_rate_limited_terminal_ones_never(dynamodb, wake_queue):
    sqs, url = wake_queue
    clock = Clock()
    channel = Channel.for_process(pod_context(SWEEPQ_WAKE_QUEUE_URL=url), local_rank=0, is_main=True, clock=clock,
                                  dynamodb_client=dynamodb, sqs_client=sqs)
    for positions, advance in ((1, 0.0), (2, WAKE_MIN_INTERVAL_S / 2), (3, WAKE_MIN_INTERVAL_S)):
        clock.now += advance
        channel.publish(snap(positions, wake="trial-progress"))
        channel.flush(30)
    channel.publish(snap(3, status="stopped", wake="trial-stopped"))
    channel.close()
    assert [body["event"] for body in _events(sqs, url)] == ["trial-progress", "trial-progress", "trial-stopped"]


def test_only_local_rank_0_writes_and_only_global_rank_0_wakes(wake_queue):
    _, url = wake_queue
    context = pod_context(SWEEPQ_WAKE_QUEUE_URL=url)
    assert Channel.for_process(context, local_rank=1, is_main=False, clock=Clock()) is None
    second_pod = Channel.for_process(context, local_rank=0, is_main=False, clock=Clock())
    assert second_pod.writer is not None and second_pod.wakes is False
    standalone = TrialContext.from_env({})
    assert Channel.for_process(standalone, local_rank=0, is_main=True, clock=Clock()) is None


def test_a_failed_progress_write_only_warns_a_failed_final_write_raises(aws, caplog):
    client = aws.client("dynamodb")  # no table: every write fails
    channel = Channel.for_process(pod_context(), local_rank=0, is_main=True, clock=Clock(), dynamodb_client=client)
    with caplog.at_level(logging.WARNING):
        channel.publish(snap(1))
        assert channel.flush(30) is False
    assert "metrics write (running)" in caplog.text
    channel.publish(snap(1, status="finished", final={"test/accuracy": 0.5}))
    with pytest.raises(MetricsReportError, match="final metrics write"):
        channel.flush(30, raise_errors=True)


def test_wake_to_a_fifo_queue_and_failures_only_warn(aws, caplog):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="wake.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    assert send_wake(pod_context(SWEEPQ_WAKE_QUEUE_URL=url), "trial-failed", client=sqs) is True
    (message,) = sqs.receive_message(QueueUrl=url, AttributeNames=["MessageGroupId"])["Messages"]
    assert message["Attributes"]["MessageGroupId"] == "bert-lr-1a2b3c4d"
    missing = pod_context(SWEEPQ_WAKE_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/none")
    with caplog.at_level(logging.WARNING):
        assert send_wake(missing, "trial-finished", client=sqs) is False
    assert "not sent" in caplog.text
    assert send_wake(TrialContext.from_env({}), "trial-finished", client=object()) is False
