"""Reporting: the trial's DynamoDB item (moto), the SQS wake message (moto), result.json, W&B gating."""

from __future__ import annotations

import json
import logging
import math
import re
from decimal import Decimal
from pathlib import Path

import pytest

from trainer.report import TrialTableReporter, send_wake, trial_key, write_json_atomic
from trainer.tracking import Tracker

TABLE = "sweepq-test"
METRICS = {"eval/loss": 0.5, "eval/accuracy": 0.8, "eval/f1": 0.79, "test/loss": 0.55, "test/accuracy": 0.78,
           "test/f1": 0.77, "train/loss": 0.6, "epoch": 2.0, "global_step": 30.0, "samples_per_s": 512.25,
           "best/eval/accuracy": 0.81}


@pytest.fixture
def table(aws):
    """The dispatcher's single-table layout with one trial item (sweep s-1, index 3) at attempt 2."""
    client = aws.client("dynamodb")
    client.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    client.put_item(TableName=TABLE, Item={**trial_key("s-1", 3), "attempt": {"N": "2"}, "state": {"S": "RUNNING"}})
    return client


def _item(client):
    import boto3.dynamodb.types

    raw = client.get_item(TableName=TABLE, Key=trial_key("s-1", 3), ConsistentRead=True)["Item"]
    deserializer = boto3.dynamodb.types.TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in raw.items()}


def test_trial_key_is_zero_padded():
    assert trial_key("bert-lr-1a2b3c4d", 7) == {"pk": {"S": "SWEEP#bert-lr-1a2b3c4d"},
                                                "sk": {"S": "TRIAL#0000000007"}}


def test_current_attempt_writes_metrics_as_numbers(table, trial_context):
    reporter = TrialTableReporter(trial_context("s-1", 3, attempt=2, SWEEPQ_TABLE=TABLE), client=table)
    assert reporter.report(METRICS, now=1_800_000_000.7, final=True) is True
    item = _item(table)
    assert item["metrics"] == {key: Decimal(repr(value)) for key, value in METRICS.items()}
    assert (item["metrics_at"], item["metrics_attempt"], item["state"]) == (1_800_000_000, 2, "RUNNING")


def test_stale_attempt_is_logged_not_raised(table, trial_context, caplog):
    # GIVEN the dispatcher has moved the trial on to attempt 3
    table.update_item(TableName=TABLE, Key=trial_key("s-1", 3), UpdateExpression="SET attempt = :a",
                      ExpressionAttributeValues={":a": {"N": "3"}})
    reporter = TrialTableReporter(trial_context("s-1", 3, attempt=2, SWEEPQ_TABLE=TABLE), client=table)
    # WHEN attempt 2 reports, THEN nothing is written and a warning says why
    with caplog.at_level(logging.WARNING):
        assert reporter.report(METRICS, now=1.0, final=True) is False
    assert "metrics" not in _item(table)
    assert "attempt is no longer 2" in caplog.text


def test_missing_item_is_not_created(table, trial_context):
    reporter = TrialTableReporter(trial_context("s-1", 4, attempt=1, SWEEPQ_TABLE=TABLE), client=table)
    assert reporter.report(METRICS, now=1.0, final=True) is False
    assert "Item" not in table.get_item(TableName=TABLE, Key=trial_key("s-1", 4))


def test_other_errors_warn_during_training_and_raise_at_the_end(aws, trial_context):
    from botocore.exceptions import ClientError

    reporter = TrialTableReporter(trial_context("s-1", 3, SWEEPQ_TABLE="no-such-table"),
                                  client=aws.client("dynamodb"))
    assert reporter.report(METRICS, now=1.0, final=False) is False
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        reporter.report(METRICS, now=1.0, final=True)


def test_non_finite_metrics_are_left_out(table, trial_context):
    reporter = TrialTableReporter(trial_context("s-1", 3, attempt=2, SWEEPQ_TABLE=TABLE), client=table)
    reporter.report({"eval/loss": math.nan, "eval/accuracy": 0.5}, now=1.0, final=False)
    assert _item(table)["metrics"] == {"eval/accuracy": Decimal("0.5")}


def test_reporter_needs_the_dispatcher_environment(context):
    with pytest.raises(ValueError, match="SWEEPQ_TABLE"):
        TrialTableReporter(context)


def test_wake_message_body(aws, trial_context):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="wake")["QueueUrl"]
    assert send_wake(trial_context("s-1", 3, attempt=2, SWEEPQ_QUEUE_URL=url), ok=True, client=sqs) is True
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(message["Body"]) == {"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": "s-1",
                                           "trial_id": "s-1-3", "trial_index": 3, "attempt": 2, "ok": True}


def test_wake_to_a_fifo_queue_carries_group_and_deduplication(aws, trial_context):
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="wake.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    assert send_wake(trial_context("s-1", 3, SWEEPQ_QUEUE_URL=url), ok=False, client=sqs) is True
    (message,) = sqs.receive_message(QueueUrl=url, AttributeNames=["MessageGroupId"])["Messages"]
    assert message["Attributes"]["MessageGroupId"] == "s-1" and json.loads(message["Body"])["ok"] is False


def test_wake_failure_only_warns(aws, trial_context, caplog):
    context = trial_context("s-1", 3, SWEEPQ_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/none")
    with caplog.at_level(logging.WARNING):
        assert send_wake(context, ok=True, client=aws.client("sqs")) is False
    assert "wake message" in caplog.text and "not sent" in caplog.text


def test_no_queue_url_sends_nothing(context):
    assert send_wake(context, ok=True, client=object()) is False


def test_result_json_writes_nan_as_null(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"metrics": {"eval/loss": math.nan, "eval/accuracy": 0.5}, "history": [math.inf]})
    assert json.loads(path.read_text()) == {"metrics": {"eval/loss": None, "eval/accuracy": 0.5}, "history": [None]}


def test_tracker_is_inert_on_other_ranks_and_when_disabled(tmp_path):
    for is_main, environ in ((False, {"WANDB_MODE": "offline"}), (True, {"WANDB_MODE": "disabled"})):
        tracker = Tracker.start(is_main=is_main, run_id="s-1-3", group="s-1", project=None, config={},
                                run_dir=tmp_path, environ=environ)
        assert tracker.run is None
        tracker.log({"train/loss": 1.0}, global_step=1)
        tracker.finish(ok=True)
    assert not (tmp_path / "wandb").exists()


def test_trainer_never_sets_the_wandb_key():
    """The seed overwrote the injected key in code; nothing in trainer/ may assign or pass one."""
    source = "\n".join(p.read_text() for p in Path(__file__).resolve().parents[2].joinpath("trainer").glob("*.py"))
    assert not re.search(r"WANDB_API_KEY\"?\]?\s*=[^=]|setdefault\(\"WANDB_API_KEY|putenv|wandb\.login\(", source)
