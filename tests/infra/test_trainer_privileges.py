"""A trial's AWS credentials can write its own pod's metrics and send wake triggers, and nothing
that steers the dispatcher: no META/SPEC/LEASE/TRIAL writes, no other trial's metrics, no
submissions or cancels. The forbidden calls are made with the trainer's policy and refused.

Two layers, because moto evaluates only part of IAM:

* **moto's own enforcement** (``INITIAL_NO_AUTH_ACTION_COUNT``): an IAM user holding exactly the
  stack's TrainerPolicy makes real calls. moto checks actions, and resources for SQS — so the
  sweep queue, the DLQ and every DynamoDB action the policy lacks are refused by moto itself.
  It cannot evaluate ``dynamodb:LeadingKeys``, ``dynamodb:Attributes`` or ``aws:PrincipalTag``
  conditions, it authorises every DynamoDB call against resource ``*`` (so it refuses even the
  trainer's allowed write: shown below, so the day moto learns this the test says so), and it
  ignores resource policies.
* **the policy documents themselves** (``iam_eval``): the deployed TrainerPolicy plus the stack's
  queue and table resource policies, evaluated with IAM's rules against the request context of
  the exact boto3 parameters of each call — through a hook on a real client, so allowed writes
  land in moto and refused ones never leave the client.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from iam_eval import dynamodb_request, evaluate, resolve, sqs_request

from dispatcher.core import metrics as contract

JOB = "bert-lr-abcdefgh-3-a2"
POD = f"{JOB}-worker-0"
OTHER_POD = "victim-abcdefgh-0-a1-worker-0"


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def world(deploy, template):
    """The deployed stack, its resolved policy documents, and the session of one trial pod."""
    stack = deploy()
    iam = stack.client("iam")
    trainer_role = iam.get_role(RoleName=stack.resources["TrainerPodRole"])["Role"]["Arn"]
    dispatcher_role = stack.outputs["DispatcherRoleArn"]

    def document(arn: str) -> dict[str, Any]:
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        return json.loads(doc) if isinstance(doc, str) else doc

    sqs = stack.client("sqs")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=stack.outputs["DeadLetterQueueUrl"],
                                       AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    arns = {"SweepQueue": stack.outputs["QueueArn"], "DeadLetterQueue": dlq_arn,
            "WakeQueue": stack.outputs["WakeQueueArn"], "TrainerPodRole": trainer_role}
    resources = template["Resources"]
    conditions = {"TrainerPodIdentityOn": True}
    refs = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
            "TableName": stack.outputs["TableName"]}
    queue_policy = resolve(resources["QueuePolicy"]["Properties"]["PolicyDocument"], refs=refs, arns=arns,
                           conditions=conditions)
    table_policy = resolve(resources["SweepTable"]["Properties"]["ResourcePolicy"], refs=refs, arns=arns,
                           conditions=conditions)["PolicyDocument"]
    table = stack.outputs["TableName"]
    metrics = stack.outputs["MetricsTableName"]
    region_account = "arn:aws:dynamodb:us-east-1:123456789012:table"
    return {
        "stack": stack,
        "trainer": [document(stack.outputs["TrainerPolicyArn"]), queue_policy, table_policy],
        "dispatcher": [document(stack.outputs["DispatcherPolicyArn"]), queue_policy, table_policy],
        "trainer_role": trainer_role,
        "dispatcher_role": dispatcher_role,
        "table": table,
        "metrics": metrics,
        "table_arns": {table: f"{region_account}/{table}", metrics: f"{region_account}/{metrics}"},
        "hash_keys": {table: "pk", metrics: contract.KEY},
        "queue_arns": {stack.outputs["QueueUrl"]: stack.outputs["QueueArn"],
                       stack.outputs["WakeQueueUrl"]: stack.outputs["WakeQueueArn"],
                       stack.outputs["DeadLetterQueueUrl"]: dlq_arn},
    }


def pod_session(world, *, pod: str = POD, namespace: str = "sweepq", service_account: str = "sweepq-trainer",
                cluster: str = "gpu-cluster", tags: bool = True) -> dict[str, Any]:
    """The principal context of a trial pod's Pod Identity session (``tags=False``: an IRSA
    session, which carries no session tags)."""
    context: dict[str, Any] = {"aws:PrincipalArn": world["trainer_role"]}
    if tags:
        context.update({"aws:PrincipalTag/kubernetes-pod-name": pod, "aws:PrincipalTag/kubernetes-namespace": namespace,
                        "aws:PrincipalTag/kubernetes-service-account": service_account,
                        "aws:PrincipalTag/eks-cluster-name": cluster,
                        "aws:PrincipalTag/kubernetes-pod-uid": "0b3e-uid"})
    return context


def decide(world, operation: str, params: dict[str, Any], *, principal=None, as_dispatcher=False,
           secure=True) -> str:
    documents = world["dispatcher" if as_dispatcher else "trainer"]
    principal = principal if principal is not None else (
        {"aws:PrincipalArn": world["dispatcher_role"]} if as_dispatcher else pod_session(world))
    if "QueueUrl" in params:
        request = sqs_request(operation, params, queue_arns=world["queue_arns"], principal=principal, secure=secure)
    else:
        request = dynamodb_request(operation, params, table_arns=world["table_arns"], hash_keys=world["hash_keys"],
                                   principal=principal)
    return evaluate(documents, request)


def metrics_item(pod: str = POD, **extra) -> dict[str, Any]:
    """The item of CONTRACTS C1 as the trainer writes it (PutItem)."""
    item = {"pod": {"S": pod}, "job": {"S": JOB}, "trial_id": {"S": "bert-lr-abcdefgh-3"}, "attempt": {"N": "2"},
            "world_size": {"N": "8"}, "metrics": {"M": {"eval/accuracy": {"N": "0.9"}}},
            "history": {"M": {"0": {"M": {"eval/accuracy": {"N": "0.9"}}}}}, "status": {"S": "running"},
            "final": {"NULL": True}, "updated_at": {"N": "1767225600"}}
    item.update(extra)
    return item


def history_update(world, pod: str = POD, *, also: str = "") -> dict[str, Any]:
    """The trainer's per-evaluation UpdateItem: one history position, the latest metrics."""
    return {"TableName": world["metrics"], "Key": {"pod": {"S": pod}},
            "UpdateExpression": "SET #h.#p = :v, #m = :m, updated_at = :t" + also,
            "ConditionExpression": "attempt = :a",
            "ExpressionAttributeNames": {"#h": "history", "#p": "3", "#m": "metrics"},
            "ExpressionAttributeValues": {":v": {"M": {}}, ":m": {"M": {}}, ":t": {"N": "1"}, ":a": {"N": "2"},
                                          **({":o": {"S": "x"}} if also else {})}}


# ---------------------------------------------------------------------------- the policy documents


def test_the_contract_writes_of_a_pod_on_its_own_item_are_allowed(world):
    assert decide(world, "PutItem", {"TableName": world["metrics"], "Item": metrics_item()}) == "Allow"
    assert decide(world, "UpdateItem", history_update(world)) == "Allow"
    wake = {"QueueUrl": world["stack"].outputs["WakeQueueUrl"], "MessageBody": "{}"}
    assert decide(world, "SendMessage", wake) == "Allow"


@pytest.mark.parametrize(
    ("case", "operation", "make", "principal"),
    [
        ("another pod's metrics item", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item(OTHER_POD)}, None),
        ("another pod's item by update", "UpdateItem", lambda w: history_update(w, OTHER_POD), None),
        ("an attribute outside the contract (put)", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item(expires_at={"N": "1"})}, None),
        ("an attribute outside the contract (update)", "UpdateItem",
         lambda w: history_update(w, also=", #o = :o") | {"ExpressionAttributeNames": {
             **history_update(w)["ExpressionAttributeNames"], "#o": "owner"}}, None),
        ("an IRSA session (no pod-name tag)", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item()}, {"tags": False}),
        ("a pod of another namespace", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item()}, {"namespace": "team-b"}),
        ("a pod of another ServiceAccount", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item()}, {"service_account": "default"}),
        ("a pod of another cluster", "PutItem",
         lambda w: {"TableName": w["metrics"], "Item": metrics_item()}, {"cluster": "other"}),
        ("deleting its own metrics item", "DeleteItem",
         lambda w: {"TableName": w["metrics"], "Key": {"pod": {"S": POD}}}, None),
        ("reading other trials' metrics", "GetItem",
         lambda w: {"TableName": w["metrics"], "Key": {"pod": {"S": OTHER_POD}}}, None),
        ("parking the LEASE far in the future", "UpdateItem",
         lambda w: {"TableName": w["table"], "Key": {"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}},
                    "UpdateExpression": "SET expires_at = :t", "ExpressionAttributeValues": {":t": {"N": "9e9"}}}, None),
        ("rewriting a sweep's launch settings (META)", "UpdateItem",
         lambda w: {"TableName": w["table"], "Key": {"pk": {"S": "SWEEP#victim-abcdefgh"}, "sk": {"S": "META"}},
                    "UpdateExpression": "SET launch = :l", "ExpressionAttributeValues": {":l": {"S": "{}"}}}, None),
        ("replacing a sweep's SPEC", "PutItem",
         lambda w: {"TableName": w["table"], "Item": {"pk": {"S": "SWEEP#victim-abcdefgh"}, "sk": {"S": "SPEC"}}}, None),
        ("writing another trial's state", "UpdateItem",
         lambda w: {"TableName": w["table"], "Key": {"pk": {"S": "SWEEP#victim-abcdefgh"},
                                                     "sk": {"S": "TRIAL#0000000000"}},
                    "UpdateExpression": "SET #m = :m", "ExpressionAttributeNames": {"#m": "metrics"},
                    "ExpressionAttributeValues": {":m": {"M": {}}}}, None),
        ("submitting or cancelling a sweep", "SendMessage",
         lambda w: {"QueueUrl": w["stack"].outputs["QueueUrl"], "MessageBody": "{}"}, None),
        ("dropping a body into the DLQ", "SendMessage",
         lambda w: {"QueueUrl": w["stack"].outputs["DeadLetterQueueUrl"], "MessageBody": "{}"}, None),
        ("draining the wake queue", "ReceiveMessage",
         lambda w: {"QueueUrl": w["stack"].outputs["WakeQueueUrl"]}, None),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
def test_what_a_trial_must_not_do_is_refused(world, case, operation, make, principal):
    session = pod_session(world, **principal) if principal else None
    assert decide(world, operation, make(world), principal=session) in ("Deny", "ImplicitDeny"), case


def test_the_sweep_table_and_queue_refuse_the_trainer_role_explicitly(world):
    # Even if someone attached a broad policy to the trainer role, the resources' own policies
    # deny it: explicit Deny, not just no Allow.
    broad = {"Statement": [{"Effect": "Allow", "Action": ["dynamodb:*", "sqs:*"], "Resource": "*"}]}
    documents = [broad, *world["trainer"][1:]]
    lease = {"TableName": world["table"], "Key": {"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}}}
    request = dynamodb_request("DeleteItem", lease, table_arns=world["table_arns"], hash_keys=world["hash_keys"],
                               principal=pod_session(world))
    assert evaluate(documents, request) == "Deny"
    send = sqs_request("SendMessage", {"QueueUrl": world["stack"].outputs["QueueUrl"]},
                       queue_arns=world["queue_arns"], principal=pod_session(world))
    assert evaluate(documents, send) == "Deny"
    wake = sqs_request("SendMessage", {"QueueUrl": world["stack"].outputs["WakeQueueUrl"]},
                       queue_arns=world["queue_arns"], principal=pod_session(world))
    assert evaluate(documents, wake) == "Allow"


def test_every_queue_refuses_plain_http_even_to_the_dispatcher(world):
    for url in world["queue_arns"]:
        receive = {"QueueUrl": url}
        if url == world["stack"].outputs["DeadLetterQueueUrl"]:
            continue  # the dispatcher does not read the DLQ at all
        assert decide(world, "ReceiveMessage", receive, as_dispatcher=True) == "Allow"
        assert decide(world, "ReceiveMessage", receive, as_dispatcher=True, secure=False) == "Deny"
    wake = {"QueueUrl": world["stack"].outputs["WakeQueueUrl"]}
    assert decide(world, "SendMessage", wake, secure=False) == "Deny"


def test_the_dispatcher_reads_metrics_but_never_writes_them(world):
    metrics = world["metrics"]
    assert decide(world, "PutItem", {"TableName": metrics, "Item": metrics_item()}, as_dispatcher=True) == "ImplicitDeny"
    assert decide(world, "GetItem", {"TableName": metrics, "Key": {"pod": {"S": POD}}},
                  as_dispatcher=True) == "ImplicitDeny"  # it reads with BatchGetItem (+ the index)


# ---------------------------------------------------------------------------- real calls through the hook


@pytest.fixture
def trial_clients(world):
    """boto3 clients of a trial pod whose every call is first authorised by the policy documents
    (AccessDenied raised before the request leaves, as AWS would answer)."""
    session = boto3.session.Session(region_name="us-east-1")
    principal = pod_session(world)

    def authorise(model, params, **_):
        if decide(world, model.name, dict(params), principal=principal) != "Allow":
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": f"{model.name} refused by IAM"}},
                              model.name)

    session.events.register("provide-client-params.dynamodb", authorise)
    session.events.register("provide-client-params.sqs", authorise)
    return session.client("dynamodb"), session.client("sqs")


def test_through_real_calls_the_own_item_lands_and_forbidden_writes_never_do(world, trial_clients):
    ddb, sqs = trial_clients
    stack = world["stack"]
    admin = stack.client("dynamodb")
    admin.put_item(TableName=world["table"], Item={"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"},
                                                   "owner": {"S": "d1"}, "expires_at": {"N": "100"}})
    # GIVEN a trial pod's clients WHEN it writes its own item, its history, and a wake
    ddb.put_item(TableName=world["metrics"], Item=metrics_item())
    ddb.update_item(**history_update(world))
    sqs.send_message(QueueUrl=stack.outputs["WakeQueueUrl"], MessageBody='{"schema": "sweepq.wake/v1"}')
    # AND tries to park the lease, forge another pod's metrics and cancel a sweep
    for call in (
        lambda: ddb.update_item(TableName=world["table"], Key={"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}},
                                UpdateExpression="SET expires_at = :t", ExpressionAttributeValues={":t": {"N": "9e9"}}),
        lambda: ddb.put_item(TableName=world["metrics"], Item=metrics_item(OTHER_POD)),
        lambda: sqs.send_message(QueueUrl=stack.outputs["QueueUrl"], MessageBody="cancel"),
    ):
        with pytest.raises(ClientError, match="AccessDenied"):
            call()
    # THEN its own writes are in moto, and nothing else changed
    item = admin.get_item(TableName=world["metrics"], Key={"pod": {"S": POD}})["Item"]
    assert set(item) <= set(contract.ATTRIBUTES) and "3" in item["history"]["M"]
    assert "Item" not in admin.get_item(TableName=world["metrics"], Key={"pod": {"S": OTHER_POD}})
    lease = admin.get_item(TableName=world["table"], Key={"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}})["Item"]
    assert lease["expires_at"] == {"N": "100"}
    assert stack.client("sqs").get_queue_attributes(QueueUrl=stack.outputs["QueueUrl"], AttributeNames=[
        "ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "0"


# ---------------------------------------------------------------------------- moto's own enforcement


@pytest.fixture
def moto_trial(world, monkeypatch):
    """Clients of an IAM user holding exactly TrainerPolicy, with moto's IAM enforcement on."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    stack = world["stack"]
    iam = stack.client("iam")
    iam.create_user(UserName="trial")
    iam.attach_user_policy(UserName="trial", PolicyArn=stack.outputs["TrainerPolicyArn"])
    key = iam.create_access_key(UserName="trial")["AccessKey"]
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)
    session = boto3.session.Session(aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                                    region_name="us-east-1")
    return session.client("dynamodb"), session.client("sqs")


def _refused(call) -> bool:
    """True when IAM refused the call. (moto answers JSON-protocol services with an XML error
    body, which botocore reports as code "403" with the XML as the message.)"""
    try:
        call()
    except ClientError as exc:
        error = exc.response["Error"]
        return (error.get("Code") in ("AccessDenied", "AccessDeniedException", "403")
                and exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
                and "is not authorized to perform" in error.get("Message", ""))
    return False


def test_moto_refuses_the_sweep_queue_the_dlq_and_every_missing_dynamodb_action(world, moto_trial):
    ddb, sqs = moto_trial
    out = world["stack"].outputs
    table = world["table"]
    # allowed by moto (resource-checked for SQS): the wake queue
    sqs.send_message(QueueUrl=out["WakeQueueUrl"], MessageBody='{"schema": "sweepq.wake/v1"}')
    refused = {
        "send to the sweep queue": lambda: sqs.send_message(QueueUrl=out["QueueUrl"], MessageBody="x"),
        "send to the DLQ": lambda: sqs.send_message(QueueUrl=out["DeadLetterQueueUrl"], MessageBody="x"),
        "receive submissions": lambda: sqs.receive_message(QueueUrl=out["QueueUrl"]),
        "receive wakes": lambda: sqs.receive_message(QueueUrl=out["WakeQueueUrl"]),
        "purge the queue": lambda: sqs.purge_queue(QueueUrl=out["QueueUrl"]),
        "change the redrive": lambda: sqs.set_queue_attributes(QueueUrl=out["QueueUrl"], Attributes={"DelaySeconds": "1"}),
        "read a sweep": lambda: ddb.get_item(TableName=table, Key={"pk": {"S": "SWEEP#x"}, "sk": {"S": "META"}}),
        "list sweeps": lambda: ddb.query(TableName=table, KeyConditionExpression="pk = :p",
                                         ExpressionAttributeValues={":p": {"S": "SWEEP#x"}}),
        "scan the table": lambda: ddb.scan(TableName=table),
        "delete the lease": lambda: ddb.delete_item(TableName=table, Key={"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}}),
        "batch-write trials": lambda: ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": {
            "pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}}}}]}),
        "transact on the table": lambda: ddb.transact_write_items(TransactItems=[{"Delete": {
            "TableName": table, "Key": {"pk": {"S": "LEASE"}, "sk": {"S": "dispatcher"}}}}]),
        "read other trials' metrics": lambda: ddb.scan(TableName=world["metrics"]),
        "drop the metrics table": lambda: ddb.delete_table(TableName=world["metrics"]),
    }
    assert [name for name, call in refused.items() if not _refused(call)] == []


def test_moto_cannot_scope_dynamodb_writes_so_the_documents_are_evaluated_instead(world, moto_trial):
    # moto authorises DynamoDB calls against resource "*": it refuses even the trainer's own,
    # allowed PutItem (the documents allow it: test_the_contract_writes_of_a_pod_...). If this
    # starts passing through, moto learned DynamoDB resources: move the scoping checks onto it.
    ddb, _ = moto_trial
    assert _refused(lambda: ddb.put_item(TableName=world["metrics"], Item=metrics_item()))
