"""Least privilege: the IAM actions and Kubernetes verbs granted are exactly the declared sets,
and the declared IAM set is what the adapters' boto3 calls need."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import boto3
from infra_expected import (
    BATCH_API_ACTIONS,
    BOOTSTRAP_ONLY_ACTIONS,
    DISPATCHER_IAM_ACTIONS,
    DISPATCHER_IAM_GRANTS,
    DISPATCHER_K8S_GROUP,
    DISPATCHER_NAMESPACE,
    DISPATCHER_RBAC_RULES,
    DISPATCHER_SERVICE_ACCOUNT,
    LAMBDA_PATH_MODULES,
    NO_PERMISSION_ACTIONS,
    POLICY_PARAMETER_ACTIONS,
    PRODUCER_ONLY_ACTIONS,
    REPO,
    RESEARCHER_IAM_ACTIONS,
    RUNTIME_ONLY_ACTIONS,
    TRAINER_IAM_ACTIONS,
    TRAINER_IAM_GRANTS,
    TRANSACT_ITEM_ACTIONS,
    TRIALS_NAMESPACE,
)

# Source file -> the AWS services whose clients it is handed.
AWS_CALLERS = {
    "dispatcher/adapters/store.py": ("dynamodb",),
    "dispatcher/adapters/queue.py": ("sqs",),
    "dispatcher/adapters/metrics.py": ("dynamodb",),
    "dispatcher/adapters/wake_queue.py": ("sqs",),
    "dispatcher/adapters/eks_token.py": ("eks", "sts"),
}
# The operator policy's SSM source (CONTRACTS C3, another branch): scanned once it exists.
POLICY_SOURCE = "dispatcher/adapters/policy_source.py"
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
    metrics = f"arn:aws:dynamodb:us-east-1:123456789012:table/{stack.outputs['MetricsTableName']}"
    return {
        "table": table,
        "index": f"{table}/index/by_state",
        "metrics": metrics,
        "metrics-index": f"{metrics}/index/by_job",
        "queue": stack.outputs["QueueArn"],
        "wake": stack.outputs["WakeQueueArn"],
        "cluster": "arn:aws:eks:us-east-1:123456789012:cluster/gpu-cluster",
        "logs": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{stack.outputs['DispatcherFunctionName']}",
    }


def _named(grants: list[tuple[str, str]], arns: dict[str, str]) -> set[tuple[str, str]]:
    names = {arn: name for name, arn in arns.items()}
    unknown = {resource for _, resource in grants if resource not in names}
    assert not unknown, f"grants on resources outside the stack: {unknown}"
    return {(action, names[resource]) for action, resource in grants}


def test_dispatcher_role_grants_exactly_the_declared_actions_on_its_own_resources(stack):
    iam = stack.client("iam")
    role_name = stack.outputs["DispatcherRoleArn"].rsplit("/", 1)[1]
    grants = _named(_grants(iam, role_name), _arns(stack))
    assert grants == set(DISPATCHER_IAM_GRANTS)
    # The metrics table is only read, the wake queue only drained; nothing is sent anywhere.
    assert {a for a, r in grants if r in ("metrics", "metrics-index")} == {"dynamodb:BatchGetItem", "dynamodb:Query"}
    assert not {a for a, _ in grants} & {"sqs:SendMessage", "dynamodb:Scan", "dynamodb:CreateTable"}


def test_the_policy_parameter_adds_read_of_that_parameter_only(deploy):
    stack = deploy(PolicyParameterName="/sweepq/policy")
    iam = stack.client("iam")
    grants = set(_grants(iam, stack.outputs["DispatcherRoleArn"].rsplit("/", 1)[1]))
    extra = {(a, r) for a, r in grants if a.startswith("ssm:")}
    assert extra == {("ssm:GetParameter", "arn:aws:ssm:us-east-1:123456789012:parameter/sweepq/policy")}
    assert stack.function_env()["SWEEPQ_POLICY"] == "ssm:/sweepq/policy"


def test_without_a_policy_parameter_the_dispatcher_reads_no_ssm(stack):
    grants = _grants(stack.client("iam"), stack.outputs["DispatcherRoleArn"].rsplit("/", 1)[1])
    assert not [a for a, _ in grants if a.startswith("ssm:")]
    assert "SWEEPQ_POLICY" not in stack.function_env()


def _code_actions() -> set[str]:
    """IAM actions of the boto3 operations the Lambda path's adapters call."""
    actions: set[str] = set()
    callers = dict(AWS_CALLERS)
    if (REPO / POLICY_SOURCE).exists():
        callers[POLICY_SOURCE] = ("ssm",)
    for path, services in callers.items():
        source = (REPO / path).read_text(encoding="utf-8")
        methods = set(_METHOD.findall(source)) | set(_PRESIGNED.findall(source))
        for service in services:
            mapping = boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping
            actions |= {f"{service}:{mapping[m]}" for m in methods if m in mapping}
    if "dynamodb:TransactWriteItems" in actions:
        actions = (actions - {"dynamodb:TransactWriteItems"}) | TRANSACT_ITEM_ACTIONS
    return {BATCH_API_ACTIONS.get(action, action) for action in actions}


def test_declared_actions_are_what_the_adapters_call():
    called = _code_actions()
    # the scan sees the calls, the new adapters' included
    assert {"dynamodb:GetItem", "eks:DescribeCluster", "dynamodb:BatchGetItem", "sqs:DeleteMessage"} <= called
    needed = called - BOOTSTRAP_ONLY_ACTIONS - NO_PERMISSION_ACTIONS - PRODUCER_ONLY_ACTIONS
    granted = set(DISPATCHER_IAM_ACTIONS) | POLICY_PARAMETER_ACTIONS
    assert needed - granted == set(), "the code calls actions the role lacks"
    assert granted - needed <= RUNTIME_ONLY_ACTIONS | POLICY_PARAMETER_ACTIONS, "the role grants actions the code never calls"
    assert "dynamodb:Scan" not in called and "sqs:SendMessage" not in granted


def test_the_lambda_path_never_sends_to_the_queue():
    # Queue.send is producer-only (PRODUCER_ONLY_ACTIONS): the tick and the handler must not use it.
    for path in LAMBDA_PATH_MODULES:
        assert not re.search(r"\.send\(", (REPO / path).read_text(encoding="utf-8")), path


def test_researchers_policy_grants_exactly_its_actions(stack):
    arns = _arns(stack)
    grants = _policy_grants(stack.client("iam"), stack.outputs["ResearcherPolicyArn"])
    assert {a for a, _ in grants} == RESEARCHER_IAM_ACTIONS
    assert {r for _, r in grants} == {arns["table"], arns["index"], arns["queue"]}
    assert all(a.startswith("sqs:") == (r == arns["queue"]) for a, r in grants)


def test_trainer_policy_grants_its_pod_metrics_and_the_wake_queue_only(stack):
    # Nothing on the sweep table or the sweep queue: a trial cannot touch META/SPEC/LEASE items,
    # other trials' state, submissions or cancels (test_trainer_privileges.py makes those calls).
    grants = _named(_policy_grants(stack.client("iam"), stack.outputs["TrainerPolicyArn"]), _arns(stack))
    assert grants == set(TRAINER_IAM_GRANTS)


def test_trainer_calls_are_within_the_trainer_policy():
    # The trainer's boto3 calls, in any of its modules (the C1 writer is trainer/channel.py): it uses
    # update_item on the metrics table and send_message on the wake queue; anything else would be refused.
    source = "\n".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "trainer").glob("*.py")))
    calls = set(re.findall(r"\b_?client\.([a-z_]+)\(", source))
    names = {"update_item": "dynamodb:UpdateItem", "put_item": "dynamodb:PutItem", "send_message": "sqs:SendMessage"}
    assert calls and calls <= set(names), f"the trainer calls {sorted(calls - set(names))}, which TrainerPolicy refuses"
    assert {names[c] for c in calls} <= TRAINER_IAM_ACTIONS


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
    bindings = _objects(rendered, "RoleBinding", "sweepq-dispatcher")
    assert len(bindings) == len(rendered)
    for binding in bindings:
        assert binding["metadata"]["namespace"] == TRIALS_NAMESPACE
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "sweepq-dispatcher"}
        subjects = {(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]}
        # The CronJob's account lives in the dispatcher's own namespace: no trial pod can run as it.
        assert subjects == {("ServiceAccount", DISPATCHER_SERVICE_ACCOUNT, DISPATCHER_NAMESPACE),
                            ("Group", DISPATCHER_K8S_GROUP, None)}


def test_the_dispatcher_account_exists_only_in_its_own_namespace(rendered):
    for objects in rendered.values():
        accounts = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"}
        assert (DISPATCHER_NAMESPACE, DISPATCHER_SERVICE_ACCOUNT) in accounts
        assert (TRIALS_NAMESPACE, DISPATCHER_SERVICE_ACCOUNT) not in accounts
        # and nothing of the dispatcher's is in the trials' namespace but its Role and binding
        for o in objects:
            if o["metadata"].get("namespace") == TRIALS_NAMESPACE and "dispatcher" in o["metadata"]["name"]:
                assert o["kind"] in ("Role", "RoleBinding"), o["kind"]


def test_no_role_in_the_dispatchers_namespace_and_no_cluster_rights(rendered):
    for objects in rendered.values():
        assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")
                    and o["metadata"]["namespace"] != TRIALS_NAMESPACE]
