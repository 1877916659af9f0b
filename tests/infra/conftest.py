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
