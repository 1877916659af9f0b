"""One real dispatcher tick against the stack's own queue and table.

``dispatcher.lambda_handler.handler(event, context)`` is called in-process (moto's lambda.invoke
needs Docker) with the environment the stack gives the function. The one substitution: moto
cannot serve an EKS API endpoint, so SWEEPQ_CLUSTER_NAME is cleared and KUBECONFIG points the
dispatcher at the Kubernetes API emulator (kmock over HTTP) instead.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import dispatcher.lambda_handler as lambda_handler
from dispatcher.adapters.store import Store
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.message import SubmitMessage, encode_cancel, encode_submit
from dispatcher.settings import Settings


def submit_body(name: str) -> tuple[str, str]:
    token = uuid.uuid4().hex
    spec = {
        "name": name,
        "method": "grid",
        "program": "train.py",
        "metric": {"name": "eval/accuracy", "goal": "maximize"},
        "parameters": {"learning_rate": {"values": [0.1, 0.01]}, "batch_size": {"values": [16, 32]}},
    }
    msg = SubmitMessage(sweep_id=sweep_id_for(name, token), token=token, spec=spec,
                        launch={"image": "sweepq-trainer:0.1.0"}, submitter="researcher",
                        submitted_at="2026-11-25T12:00:00.000Z", source="sweep.yaml")
    return msg.sweep_id, encode_submit(msg)


@pytest.fixture
def function_env(stack, kube, tmp_path: Path, monkeypatch) -> dict[str, str]:
    """The deployed function's environment, pointed at the Kubernetes emulator."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": kube.url}}],
        "users": [{"name": "dispatcher", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "dispatcher"}}],
    }), encoding="utf-8")
    env = stack.function_env()
    assert env["SWEEPQ_CLUSTER_NAME"]  # the stack sets it; the emulator stands in for the cluster
    env["SWEEPQ_CLUSTER_NAME"] = ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(lambda_handler, "_DISPATCHER", None)  # a cold start with this environment
    return env


def test_scheduled_tick_takes_a_sweep_from_the_stack_queue_and_launches_its_trials(
        stack, function_env, kube, scheduled_event, lambda_context):
    # GIVEN a sweep of 4 trials on the stack's queue
    sqs = stack.client("sqs")
    sweep_id, body = submit_body("stack-tick")
    sqs.send_message(QueueUrl=stack.outputs["QueueUrl"], MessageBody=body)

    # WHEN EventBridge's scheduled event invokes the handler
    response = lambda_handler.handler(scheduled_event, lambda_context)

    # THEN the sweep is stored in the stack's table, its message deleted, its trials launched
    report = response["report"]
    assert report["errors"] == []
    assert (report["accepted"], report["launched"], report["lease"]) == (1, 4, "held")
    assert "batchItemFailures" not in response
    sweep = Store(stack.outputs["TableName"], stack.client("dynamodb")).get_sweep(sweep_id)
    # active in this deployment's own partition (the stack's cluster/namespace scope)
    assert sweep is not None and sweep["list_pk"] == f"ACTIVE#{Settings.load(function_env).dispatcher_scope}"
    jobs = kube.list_objects("pytorchjob", namespace=function_env["SWEEPQ_NAMESPACE"])
    assert len(jobs) == 4
    attrs = sqs.get_queue_attributes(QueueUrl=stack.outputs["QueueUrl"],
                                     AttributeNames=["ApproximateNumberOfMessages",
                                                     "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert attrs == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_queue_batch_reports_only_the_poison_message_as_failed(
        stack, function_env, kube, sqs_event, lambda_context):
    # GIVEN a batch from the event source mapping: one sweep and one body that is not a sweepq message
    sweep_id, body = submit_body("stack-batch")
    event = sqs_event([body, "not json at all"])
    poison = next(r["messageId"] for r in event["Records"] if r["body"] == "not json at all")

    # WHEN the handler processes it
    response = lambda_handler.handler(event, lambda_context)

    # THEN only the poison message is reported failed (SQS redelivers it, then dead-letters it)
    assert response["batchItemFailures"] == [{"itemIdentifier": poison}]
    assert response["report"]["accepted"] == 1
    assert Store(stack.outputs["TableName"], stack.client("dynamodb")).get_sweep(sweep_id) is not None
    assert len(kube.list_objects("pytorchjob", namespace=function_env["SWEEPQ_NAMESPACE"])) == 4


def test_wake_queue_batch_tops_up_and_a_cancel_slipped_onto_it_is_never_performed(
        stack, function_env, kube, scheduled_event, lambda_context):
    # GIVEN a running sweep (accepted and launched by a scheduled tick)
    sqs = stack.client("sqs")
    sweep_id, body = submit_body("stack-wake")
    sqs.send_message(QueueUrl=stack.outputs["QueueUrl"], MessageBody=body)
    assert lambda_handler.handler(scheduled_event, lambda_context)["report"]["launched"] == 4
    # AND on the wake queue: a trainer's wake, and a trial's forged cancel of that sweep
    wake_url = stack.outputs["WakeQueueUrl"]
    assert function_env["SWEEPQ_WAKE_QUEUE_URL"] == wake_url
    job = f"{sweep_id}-0-a1"
    sqs.send_message(QueueUrl=wake_url, MessageBody=json.dumps(
        {"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": sweep_id, "job": job,
         "pod": f"{job}-worker-0"}))
    sqs.send_message(QueueUrl=wake_url, MessageBody=encode_cancel(sweep_id=sweep_id, requested_by="a trial"))
    messages = sqs.receive_message(QueueUrl=wake_url, MaxNumberOfMessages=10, VisibilityTimeout=300)["Messages"]
    assert len(messages) == 2
    event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                          "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                          "eventSourceARN": stack.outputs["WakeQueueArn"], "awsRegion": "us-east-1"}
                         for m in messages]}

    # WHEN the wake queue's event source invokes the handler with that batch
    response = lambda_handler.handler(event, lambda_context)

    # THEN both records are consumed (none reported failed), each counts only as a trigger (a wake
    # queue's body is never parsed), and the cancel never reached intake: the sweep is still active
    assert response["batchItemFailures"] == []
    report = response["report"]
    assert (report["wakes"], report["cancel_requests"], report["errors"]) == (2, 0, [])
    sweep = Store(stack.outputs["TableName"], stack.client("dynamodb")).get_sweep(sweep_id)
    assert sweep["list_pk"] == f"ACTIVE#{Settings.load(function_env).dispatcher_scope}"
    assert not sweep.get("cancel_requested")
    assert len(kube.list_objects("pytorchjob", namespace=function_env["SWEEPQ_NAMESPACE"])) == 4
