"""Fixtures of the infrastructure tests: the parsed template, a stack deployed into moto's
CloudFormation, and the rendered Kubernetes overlays."""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
from infra_expected import K8S, OVERLAYS, TEMPLATE
from kustomize_lite import render

REGION = "us-east-1"
CODE_BUCKET = "sweepq-artifacts"
CODE_KEY = "sweepq/dispatcher-test.zip"
_UNSUPPORTED = re.compile(r"Tried to parse (\S+) but it's not supported by moto")


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """infra/aws/sweepq.yaml with intrinsic functions in their JSON form (``{"Ref": ...}``)."""
    from cfnlint.decode import decode

    data, errors = decode(str(TEMPLATE))
    assert not errors, errors
    return data


@dataclass
class Stack:
    session: Any
    name: str
    parameters: dict[str, str]
    outputs: dict[str, str]
    resources: dict[str, str]  # logical id -> physical id (of what moto created)
    skipped: set[str] = field(default_factory=set)  # resource types moto's CloudFormation skipped

    def client(self, service: str) -> Any:
        return self.session.client(service, region_name=REGION)

    def function_env(self) -> dict[str, str]:
        config = self.client("lambda").get_function_configuration(FunctionName=self.outputs["DispatcherFunctionName"])
        # Real CloudFormation passes every value as a string; moto keeps Number parameters as ints.
        return {k: str(v) for k, v in config["Environment"]["Variables"].items()}


def _code_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("dispatcher/__init__.py", "")
    return buffer.getvalue()


@pytest.fixture
def deploy(aws) -> Callable[..., Stack]:
    """``deploy(**parameters)`` creates the stack in moto (the ``aws`` fixture) and returns it."""
    s3 = aws.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=CODE_BUCKET)
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=_code_zip())
    counter = iter(range(100))

    def _deploy(**overrides: str) -> Stack:
        parameters = {"ClusterName": "gpu-cluster", "CodeS3Bucket": CODE_BUCKET, "CodeS3Key": CODE_KEY, **overrides}
        name = f"sweepq-{next(counter)}" if overrides else "sweepq"
        cfn = aws.client("cloudformation", region_name=REGION)
        # moto warns (and creates nothing) for resource types its CloudFormation lacks; it parses
        # the template again when describing the stack, so record around every call.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfn.create_stack(
                StackName=name,
                TemplateBody=TEMPLATE.read_text(encoding="utf-8"),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
                Capabilities=["CAPABILITY_IAM"],
            )
            described = cfn.describe_stacks(StackName=name)["Stacks"][0]
            summaries = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
        assert described["StackStatus"] == "CREATE_COMPLETE", described.get("StackStatusReason")
        skipped = {m.group(1) for w in caught if (m := _UNSUPPORTED.search(str(w.message)))}
        resources = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries if r.get("PhysicalResourceId")}
        return Stack(
            session=aws,
            name=name,
            parameters=parameters,
            outputs={o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])},
            resources=resources,
            skipped=skipped,
        )

    return _deploy


@pytest.fixture
def stack(deploy) -> Stack:
    """The stack with its default parameters."""
    return deploy()


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """overlay name -> the objects it renders (pure-Python kustomize)."""
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}


def overlay_path(name: str) -> Path:
    return K8S / "overlays" / name


# ---------------------------------------------------------------------------- Lambda events


@dataclass
class FakeLambdaContext:
    """What the Lambda runtime passes as ``context`` (the attributes handlers read)."""

    function_name: str = "sweepq-dispatcher"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:sweepq-dispatcher"
    memory_limit_in_mb: int = 512
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name: str = "/aws/lambda/sweepq-dispatcher"
    log_stream_name: str = "2026/01/01/[$LATEST]0123456789abcdef"
    timeout_s: float = 50.0

    def get_remaining_time_in_millis(self) -> int:
        return int(self.timeout_s * 1000)


@pytest.fixture
def lambda_context(stack) -> FakeLambdaContext:
    name = stack.outputs["DispatcherFunctionName"]
    return FakeLambdaContext(function_name=name,
                             invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{name}",
                             log_group_name=f"/aws/lambda/{name}")


@pytest.fixture
def scheduled_event(stack) -> dict[str, Any]:
    """The event EventBridge sends for the stack's schedule rule."""
    rule_arn = stack.client("events").describe_rule(Name=stack.resources["TickSchedule"])["Arn"]
    return {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-25T12:00:00Z",
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


@pytest.fixture
def sqs_event(stack) -> Callable[[list[str]], dict[str, Any]]:
    """``sqs_event(bodies)``: sends the bodies to the stack's queue, receives them (real receipt
    handles) and wraps them as the SQS event source mapping would."""

    def _event(bodies: list[str]) -> dict[str, Any]:
        sqs = stack.client("sqs")
        url = stack.outputs["QueueUrl"]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"],
                                       VisibilityTimeout=300)["Messages"]
        assert len(messages) == len(bodies)
        return {"Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": stack.outputs["QueueArn"],
                "awsRegion": REGION,
            }
            for m in messages
        ]}

    return _event
