"""Least privilege: the IAM actions and Kubernetes verbs granted are exactly the declared sets,
and the declared IAM set is what the adapters' boto3 calls need."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import boto3
import pytest

from infra_expected import (
    BOOTSTRAP_ONLY_ACTIONS,
    DISPATCHER_IAM_ACTIONS,
    DISPATCHER_K8S_GROUP,
    DISPATCHER_RBAC_RULES,
    LAMBDA_PATH_MODULES,
    NO_PERMISSION_ACTIONS,
    PRODUCER_ONLY_ACTIONS,
    REPO,
    RESEARCHER_IAM_ACTIONS,
    RUNTIME_ONLY_ACTIONS,
    TRAINER_IAM_ACTIONS,
    TRANSACT_ITEM_ACTIONS,
)

# Source file -> the AWS services whose clients it is handed.
AWS_CALLERS = {
    "dispatcher/adapters/store.py": ("dynamodb",),
    "dispatcher/adapters/queue.py": ("sqs",),
    "dispatcher/adapters/eks_token.py": ("eks", "sts"),
}
_METHOD = re.compile(r"\b\w*client\.([a-z_]+)\b")
_PRESIGNED = re.compile(r"generate_presigned_url\(\s*[\"']([a-z_]+)[\"']")


def _statements(document: dict[str, Any] | str) -> list[dict[str, Any]]:
    if isinstance(document, str):  # moto returns inline role policies as the repr of a dict
        document = json.loads(document) if document.lstrip().startswith('{"') else ast.literal_eval(document)
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _grants(iam: Any, role_name: str) -> list[tuple[str, str]]:
    """(action, resource) pairs of every Allow statement attached to or inlined in the role."""
    documents = []
    for attached in iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]:
        version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
        documents.append(iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"])
    for name in iam.list_role_policies(RoleName=role_name)["PolicyNames"]:
        documents.append(iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"])
    return _pairs(documents)


def _policy_grants(iam: Any, arn: str) -> list[tuple[str, str]]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _pairs([iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]])


def _pairs(documents: list[dict[str, Any]]) -> list[tuple[str, str]]:
    pairs = []
    for document in documents:
        for statement in _statements(document):
            assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            # GetAtt LogGroup.Arn ends in ":*" on AWS, not in moto: compare without it.
            pairs += [(a, r.removesuffix(":*")) for a in actions for r in resources]
    return pairs


def _arns(stack) -> dict[str, str]:
    table = f"arn:aws:dynamodb:us-east-1:123456789012:table/{stack.outputs['TableName']}"
    return {
        "table": table,
        "index": f"{table}/index/by_state",
        "queue": stack.outputs["QueueArn"],
        "cluster": "arn:aws:eks:us-east-1:123456789012:cluster/gpu-cluster",
        "logs": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{stack.outputs['DispatcherFunctionName']}",
    }


def test_dispatcher_role_grants_exactly_the_declared_actions_on_its_own_resources(stack):
    iam = stack.client("iam")
    role_name = stack.outputs["DispatcherRoleArn"].rsplit("/", 1)[1]
    grants = _grants(iam, role_name)
    arns = _arns(stack)
    assert {action for action, _ in grants} == set(DISPATCHER_IAM_ACTIONS)
    assert {resource for _, resource in grants} == set(arns.values())
    by_service = {"dynamodb": {arns["table"], arns["index"]}, "sqs": {arns["queue"]}, "eks": {arns["cluster"]},
                  "logs": {arns["logs"]}}
    for action, resource in grants:
        assert resource in by_service[action.split(":")[0]], (action, resource)
    # The index is only queried.
    assert {a for a, r in grants if r == arns["index"]} == {"dynamodb:Query"}


def _code_actions() -> set[str]:
    """IAM actions of the boto3 operations the Lambda path's adapters call."""
    actions: set[str] = set()
    for path, services in AWS_CALLERS.items():
        source = (REPO / path).read_text(encoding="utf-8")
        methods = set(_METHOD.findall(source)) | set(_PRESIGNED.findall(source))
        for service in services:
            mapping = boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping
            actions |= {f"{service}:{mapping[m]}" for m in methods if m in mapping}
    if "dynamodb:TransactWriteItems" in actions:
        actions = (actions - {"dynamodb:TransactWriteItems"}) | TRANSACT_ITEM_ACTIONS
    return actions


def test_declared_actions_are_what_the_adapters_call():
    called = _code_actions()
    assert "dynamodb:GetItem" in called and "eks:DescribeCluster" in called  # the scan sees the calls
    needed = called - BOOTSTRAP_ONLY_ACTIONS - NO_PERMISSION_ACTIONS - PRODUCER_ONLY_ACTIONS
    granted = set(DISPATCHER_IAM_ACTIONS)
    assert needed - granted == set(), "the code calls actions the role lacks"
    assert granted - needed <= RUNTIME_ONLY_ACTIONS, "the role grants actions the code never calls"
    assert "dynamodb:Scan" not in called and "sqs:SendMessage" not in granted


def test_the_lambda_path_never_sends_to_the_queue():
    # Queue.send is producer-only (PRODUCER_ONLY_ACTIONS): the tick and the handler must not use it.
    for path in LAMBDA_PATH_MODULES:
        assert not re.search(r"\.send\(", (REPO / path).read_text(encoding="utf-8")), path


@pytest.mark.parametrize(
    ("output", "expected", "resources"),
    [
        ("ResearcherPolicyArn", RESEARCHER_IAM_ACTIONS, {"table", "index", "queue"}),
        ("TrainerPolicyArn", TRAINER_IAM_ACTIONS, {"table", "queue"}),
    ],
    ids=["researchers", "trainer-pods"],
)
def test_team_policies_grant_exactly_their_actions(stack, output, expected, resources):
    arns = _arns(stack)
    grants = _policy_grants(stack.client("iam"), stack.outputs[output])
    assert {a for a, _ in grants} == expected
    assert {r for _, r in grants} == {arns[name] for name in resources}
    assert all(a.startswith("sqs:") == (r == arns["queue"]) for a, r in grants)


def test_trainer_policy_covers_the_trainer_calls():
    source = (REPO / "trainer" / "report.py").read_text(encoding="utf-8")
    calls = set(re.findall(r"\bclient\.(update_item|send_message|put_item|get_item|query)\(", source))
    calls |= set(re.findall(r"\._client\.(update_item|send_message|put_item|get_item|query)\(", source))
    assert {"dynamodb:UpdateItem" if c == "update_item" else "sqs:SendMessage" if c == "send_message" else c
            for c in calls} == set(TRAINER_IAM_ACTIONS)


def _objects(rendered, kind: str, name: str) -> list[dict[str, Any]]:
    return [o for objs in rendered.values() for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]


def test_rbac_verbs_are_exactly_the_minimum(rendered):
    roles = _objects(rendered, "Role", "sweepq-dispatcher")
    assert len(roles) == len(rendered)  # every overlay has it, unchanged
    for role in roles:
        rules: dict[tuple[str, str], frozenset[str]] = {}
        for rule in role["rules"]:
            assert "resourceNames" not in rule and "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    key = (group, resource)
                    assert key not in rules, f"{key} granted twice"
                    rules[key] = frozenset(rule["verbs"])
        assert rules == DISPATCHER_RBAC_RULES
    assert not [o for objs in rendered.values() for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_role_is_bound_to_the_cronjob_account_and_the_access_entry_group(rendered):
    for binding in _objects(rendered, "RoleBinding", "sweepq-dispatcher"):
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sweepq-dispatcher"}
        subjects = {(s["kind"], s["name"]) for s in binding["subjects"]}
        assert subjects == {("ServiceAccount", "sweepq-dispatcher"), ("Group", DISPATCHER_K8S_GROUP)}
