"""The CloudFormation template on its own: cfn-lint, and the settings moto cannot show."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file
from infra_expected import C6_SETTINGS, DISPATCHER_K8S_GROUP, TEMPLATE

from dispatcher.adapters.queue import DLQ_MAX_RECEIVES
from dispatcher.adapters.store import INDEX
from dispatcher.core import metrics as metrics_contract
from dispatcher.settings import ENV, Settings

LINT_ARGS = ManualArgs(include_checks=["I"], regions=["us-east-1"])
# Settings the Lambda leaves at their defaults, and why (a new setting must be added here or to
# the function's environment).
LAMBDA_DEFAULTED = {
    "SWEEPQ_STATE_DIR": "local backend only",
    "SWEEPQ_LOCAL_SLOTS": "local backend only",
    "SWEEPQ_MAX_LAUNCHES_PER_TICK": "default (200) fits a 50 s tick",
    "SWEEPQ_MAX_GRID_SIZE": "default guards expansion; producer validates the same limit",
    "SWEEPQ_JOB_TTL_S": "default (1 hour): finished jobs are listed by every tick, then garbage-collected",
    "SWEEPQ_WAKE": "default on: trainers send a wake message",
    "SWEEPQ_TEMPLATE_RESOURCES": "kind template only: set it on the function when a team uses templates",
    "SWEEPQ_SCOPE": "default <cluster>/<namespace> (C5): one stack per cluster and trials namespace",
    "SWEEPQ_WAKE_QUEUE_NAME": "the stack sets SWEEPQ_WAKE_QUEUE_URL",
    "SWEEPQ_MAX_WAITING": "default; set it on the function for Kueue quotas",
    "SWEEPQ_TERMINATION_GRACE_S": "default (120 s)",
    "SWEEPQ_SWEEP_FAILURES_TO_HOLD": "default (3 failed ticks hold a sweep)",
}


def _defaults(template):
    return {name: p.get("Default") for name, p in template["Parameters"].items()}


def test_cfn_lint_reports_nothing_including_informational():
    # GIVEN the template WHEN cfn-lint runs with informational checks THEN it finds nothing
    assert [str(m) for m in lint_file(TEMPLATE, LINT_ARGS)] == []


def test_cfn_lint_run_would_catch_a_stateful_resource_without_policies(tmp_path: Path):
    # GIVEN the table without DeletionPolicy THEN the same lint run reports I3011 (the check is live)
    text = TEMPLATE.read_text(encoding="utf-8").replace(
        "    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n", "", 1)
    mutated = tmp_path / "sweepq.yaml"
    mutated.write_text(text, encoding="utf-8")
    assert {m.rule.id for m in lint_file(mutated, LINT_ARGS)} == {"I3011"}


def test_table_settings_that_moto_does_not_apply(template):
    table = template["Resources"]["SweepTable"]
    props = table["Properties"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert [g["IndexName"] for g in props["GlobalSecondaryIndexes"]] == [INDEX]


def test_dlq_alarm_fires_on_the_first_dead_letter(template):
    props = template["Resources"]["DeadLetterAlarm"]["Properties"]
    assert props["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    assert (props["Namespace"], props["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0)
    assert props["TreatMissingData"] == "notBreaching"


def test_access_entry_maps_the_dispatcher_role_to_the_rbac_group(template):
    entry = template["Resources"]["DispatcherAccessEntry"]
    assert entry["Condition"] == "ManageEksAccessOn"
    assert entry["Properties"]["PrincipalArn"] == {"Fn::GetAtt": ["DispatcherRole", "Arn"]}
    assert entry["Properties"]["KubernetesGroups"] == [{"Ref": "EksDispatcherGroup"}]
    assert _defaults(template)["EksDispatcherGroup"] == DISPATCHER_K8S_GROUP


def test_stale_scheduled_ticks_are_dropped_not_retried(template):
    config = template["Resources"]["DispatcherInvokeConfig"]["Properties"]
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 60)


def test_default_timings_nest_lease_inside_timeout_inside_schedule(template):
    d = _defaults(template)
    assert d["ScheduleRate"] == "rate(1 minute)"
    assert d["IntakeBudgetSeconds"] < d["LeaseSeconds"] < d["DispatcherTimeout"] < 60
    # AWS guidance for SQS event sources: visibility timeout >= 6 x function timeout.
    assert d["QueueVisibilityTimeout"] >= 6 * d["DispatcherTimeout"]
    assert d["MaxReceiveCount"] == DLQ_MAX_RECEIVES
    assert template["Parameters"]["MaxReceiveCount"]["MinValue"] >= 5


def test_the_dlq_outlives_every_allowed_queue_retention(template):
    # Standard queues keep a message's first enqueue time when it is dead-lettered.
    dlq = template["Resources"]["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"]
    queue = template["Resources"]["SweepQueue"]["Properties"]["MessageRetentionPeriod"]
    assert queue == {"Ref": "QueueRetentionSeconds"}
    assert template["Parameters"]["QueueRetentionSeconds"]["MaxValue"] + 86400 <= dlq == 1209600


def test_reserved_concurrency_covers_every_event_source_plus_the_schedule(template):
    # A mapping may invoke up to its MaximumConcurrency at once (at least 2, an AWS minimum); if the
    # function's reserved concurrency were lower, SQS would throttle deliveries back onto the queue.
    resources = template["Resources"]
    mappings = [r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings} == {"SweepQueue", "WakeQueue"}
    concurrency = [m["Properties"]["ScalingConfig"]["MaximumConcurrency"] for m in mappings]
    assert all(c >= 2 for c in concurrency)
    reserved = resources["DispatcherFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {"Fn::If": ["EventDrivenOn", sum(concurrency) + 1, 1]}
    assert all(m["Condition"] == "EventDrivenOn" for m in mappings)
    for m in mappings:
        assert m["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("parameter", ["DispatcherTimeout", "LeaseSeconds"])
def test_parameter_bounds_keep_the_lease_valid(template, parameter):
    # Settings.check refuses a lease under 30 s; a timeout must leave room for one.
    assert template["Parameters"][parameter]["MinValue"] >= 30


def test_every_lambda_variable_is_a_setting_and_every_setting_is_decided(template):
    env = template["Resources"]["DispatcherFunction"]["Properties"]["Environment"]["Variables"]
    known = set(ENV.values()) | C6_SETTINGS
    assert set(env) <= known and set(LAMBDA_DEFAULTED) <= known and not set(env) & set(LAMBDA_DEFAULTED)
    assert set(env) | set(LAMBDA_DEFAULTED) >= set(ENV.values())


def test_the_pending_c6_settings_are_not_stale():
    # A C6 setting that dispatcher/settings.py has is no longer pending: drop it from C6_SETTINGS.
    landed = C6_SETTINGS & set(ENV.values())
    assert not landed, f"{sorted(landed)} are settings now: remove them from infra_expected.C6_SETTINGS"


def test_default_parameters_make_valid_settings(template):
    d = _defaults(template)
    env = {"SWEEPQ_BACKEND": d["Backend"], "SWEEPQ_MAX_RUNNING": d["MaxRunning"], "SWEEPQ_MAX_GPUS": d["MaxGpus"],
           "SWEEPQ_LEASE_SECONDS": str(d["LeaseSeconds"]), "SWEEPQ_INTAKE_BUDGET_S": str(d["IntakeBudgetSeconds"]),
           "SWEEPQ_KINDS": d["Kinds"]}
    settings = Settings.load(env)
    assert (settings.max_running, settings.max_gpus, settings.lease_seconds) == (8, None, 40)


def test_metrics_table_settings_that_moto_does_not_apply(template):
    table = template["Resources"]["MetricsTable"]
    props = table["Properties"]
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["KeySchema"] == [{"AttributeName": metrics_contract.KEY, "KeyType": "HASH"}]
    [index] = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == metrics_contract.INDEX and index["Projection"] == {"ProjectionType": "ALL"}


def _statement(document, sid):
    [statement] = [s for s in document["Statement"] if isinstance(s, dict) and s.get("Sid") == sid]
    return statement


def test_trainer_may_write_only_its_own_pods_item_and_only_the_contracts_attributes(template):
    document = template["Resources"]["TrainerPolicy"]["Properties"]["PolicyDocument"]
    metrics = _statement(document, "OwnPodMetrics")
    assert metrics["Effect"] == "Allow" and metrics["Resource"] == {"Fn::GetAtt": ["MetricsTable", "Arn"]}
    assert sorted(metrics["Action"]) == ["dynamodb:PutItem", "dynamodb:UpdateItem"]
    condition = metrics["Condition"]
    # moto cannot evaluate these (test_trainer_privileges.py evaluates the document itself)
    assert condition["ForAllValues:StringEquals"] == {
        "dynamodb:LeadingKeys": ["${aws:PrincipalTag/kubernetes-pod-name}"],
        "dynamodb:Attributes": list(metrics_contract.ATTRIBUTES),
    }
    assert condition["Null"] == {"aws:PrincipalTag/kubernetes-pod-name": "false"}  # IRSA: refused
    assert condition["StringEquals"] == {
        "aws:PrincipalTag/kubernetes-namespace": {"Ref": "Namespace"},
        "aws:PrincipalTag/kubernetes-service-account": {"Ref": "TrainerServiceAccount"},
        "aws:PrincipalTag/eks-cluster-name": {"Ref": "ClusterName"},
    }
    wake = _statement(document, "WakeDispatcher")
    assert (wake["Action"], wake["Resource"]) == ("sqs:SendMessage", {"Fn::GetAtt": ["WakeQueue", "Arn"]})
    assert len(document["Statement"]) == 2
    association = template["Resources"]["TrainerPodIdentityAssociation"]["Properties"]
    assert association["DisableSessionTags"] is False
    assert association["Namespace"] == {"Ref": "Namespace"}


@pytest.mark.parametrize("role", ["TrainerPodRole", "DispatcherPodRole"])
def test_pod_identity_roles_trust_conditions(template, role):
    [trust] = template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert trust["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:eks:${AWS::Region}:${AWS::AccountId}:cluster/${ClusterName}"}
    namespace = "Namespace" if role == "TrainerPodRole" else "DispatcherNamespace"
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"] == {"Ref": namespace}


def test_queues_refuse_plain_http_and_the_trainer_role_on_the_sweep_queue(template):
    policy = template["Resources"]["QueuePolicy"]["Properties"]
    assert policy["Queues"] == [{"Ref": "SweepQueue"}, {"Ref": "DeadLetterQueue"}, {"Ref": "WakeQueue"}]
    tls = _statement(policy["PolicyDocument"], "DenyWithoutTls")
    assert (tls["Effect"], tls["Principal"], tls["Action"]) == ("Deny", "*", "sqs:*")
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == [{"Fn::GetAtt": [q, "Arn"]} for q in ("SweepQueue", "DeadLetterQueue", "WakeQueue")]
    [conditional] = [s for s in policy["PolicyDocument"]["Statement"] if "Fn::If" in s]
    condition, trials, absent = conditional["Fn::If"]
    assert condition == "TrainerPodIdentityOn" and absent == {"Ref": "AWS::NoValue"}
    assert (trials["Effect"], trials["Action"]) == ("Deny", "sqs:*")
    assert trials["Condition"] == {"ArnEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["TrainerPodRole", "Arn"]}}}


def test_the_sweep_table_refuses_the_trainer_role(template):
    condition, policy, absent = template["Resources"]["SweepTable"]["Properties"]["ResourcePolicy"]["Fn::If"]
    assert condition == "TrainerPodIdentityOn" and absent == {"Ref": "AWS::NoValue"}
    [deny] = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Action"]) == ("Deny", "dynamodb:*")
    assert deny["Condition"] == {"ArnEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["TrainerPodRole", "Arn"]}}}
