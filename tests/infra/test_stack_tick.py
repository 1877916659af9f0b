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
from dispatcher.core.message import SubmitMessage, encode_submit


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
    assert sweep is not None and sweep["list_pk"] == "ACTIVE"
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
