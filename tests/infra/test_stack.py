"""The template deployed into moto's CloudFormation: the resources exist with their settings.

moto's CloudFormation skips five resource types (it warns and creates the rest):
AWS::CloudWatch::Alarm, AWS::EKS::AccessEntry, AWS::EKS::PodIdentityAssociation,
AWS::Lambda::EventInvokeConfig, AWS::SQS::QueuePolicy. Their properties are checked in
test_cfn_template.py. It also ignores the tables' SSE, point-in-time recovery, TTL and resource
policy, and the event source mappings' ScalingConfig (checked there too).
"""

from __future__ import annotations

import json

from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import DLQ_MAX_RECEIVES
from dispatcher.adapters.store import Store
from dispatcher.settings import Settings

MOTO_SKIPS = {"AWS::CloudWatch::Alarm", "AWS::EKS::AccessEntry", "AWS::EKS::PodIdentityAssociation",
              "AWS::Lambda::EventInvokeConfig", "AWS::SQS::QueuePolicy"}


def test_stack_deploys_and_moto_skips_only_the_known_types(stack):
    assert stack.skipped == MOTO_SKIPS
    assert set(stack.outputs) >= {"QueueUrl", "QueueArn", "DeadLetterQueueUrl", "TableName", "ResearcherPolicyArn",
                                  "TrainerPolicyArn", "DispatcherRoleArn", "MetricsTableName", "WakeQueueUrl",
                                  "WakeQueueArn"}


def test_queue_is_encrypted_long_polled_and_redrives_to_the_dlq(stack):
    sqs = stack.client("sqs")
    assert stack.outputs["QueueUrl"] == sqs.get_queue_url(QueueName="sweepq")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=stack.outputs["QueueUrl"], AttributeNames=["All"])["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=stack.outputs["DeadLetterQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert attrs["QueueArn"] == stack.outputs["QueueArn"]
    assert attrs["SqsManagedSseEnabled"] == dlq["SqsManagedSseEnabled"] == "true"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == DLQ_MAX_RECEIVES >= 5
    timeout = stack.client("lambda").get_function_configuration(FunctionName=stack.outputs["DispatcherFunctionName"])["Timeout"]
    assert int(attrs["VisibilityTimeout"]) > timeout
    # A dead-lettered message keeps its first enqueue time: the DLQ must keep messages longer.
    assert int(attrs["MessageRetentionPeriod"]) == 7 * 86400 < int(dlq["MessageRetentionPeriod"]) == 14 * 86400


def test_wake_queue_is_apart_encrypted_short_lived_and_never_dead_letters(stack):
    sqs = stack.client("sqs")
    assert stack.outputs["WakeQueueUrl"] == sqs.get_queue_url(QueueName="sweepq-wake")["QueueUrl"] != stack.outputs["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=stack.outputs["WakeQueueUrl"], AttributeNames=["All"])["Attributes"]
    assert attrs["QueueArn"] == stack.outputs["WakeQueueArn"]
    assert attrs["SqsManagedSseEnabled"] == "true" and attrs["MessageRetentionPeriod"] == "3600"
    assert "RedrivePolicy" not in attrs  # every body is consumed as a trigger: nothing to dead-letter
    timeout = stack.client("lambda").get_function_configuration(FunctionName=stack.outputs["DispatcherFunctionName"])["Timeout"]
    assert int(attrs["VisibilityTimeout"]) >= 6 * timeout  # an event source needs >= the function timeout


def test_metrics_table_is_the_one_metrics_store_create_table_makes(stack):
    ddb = stack.client("dynamodb")
    MetricsStore("reference-metrics", ddb).create_table()
    ours = ddb.describe_table(TableName=stack.outputs["MetricsTableName"])["Table"]
    ref = ddb.describe_table(TableName="reference-metrics")["Table"]
    assert stack.outputs["MetricsTableName"] == f"{stack.outputs['TableName']}-metrics"

    def shape(table):
        return (table["KeySchema"], sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
                [(g["IndexName"], g["KeySchema"], g["Projection"]) for g in table["GlobalSecondaryIndexes"]],
                table["BillingModeSummary"]["BillingMode"])

    assert shape(ours) == shape(ref)
    # the stack's table is what the dispatcher's reader accepts (its schema check passes)
    assert MetricsStore(stack.outputs["MetricsTableName"], ddb).create_table() is False


def test_table_is_the_one_store_create_table_makes(stack):
    ddb = stack.client("dynamodb")
    Store("reference", ddb).create_table()
    ours = ddb.describe_table(TableName=stack.outputs["TableName"])["Table"]
    ref = ddb.describe_table(TableName="reference")["Table"]

    def shape(table):
        return (
            table["KeySchema"],
            sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
            [(g["IndexName"], g["KeySchema"], g["Projection"]) for g in table["GlobalSecondaryIndexes"]],
            table["BillingModeSummary"]["BillingMode"],
        )

    assert shape(ours) == shape(ref)


def test_lambda_runs_one_tick_at_a_time_within_its_lease(stack):
    lam = stack.client("lambda")
    function = lam.get_function(FunctionName=stack.outputs["DispatcherFunctionName"])
    config = function["Configuration"]
    assert (config["Runtime"], config["Handler"]) == ("python3.12", "dispatcher.lambda_handler.handler")
    assert config["Role"] == stack.outputs["DispatcherRoleArn"]
    # 2 per event source mapping (MaximumConcurrency's minimum) + 1 for the schedule; the lease
    # serialises the ticks themselves.
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 5
    env = stack.function_env()
    assert env["SWEEPQ_QUEUE_URL"] == stack.outputs["QueueUrl"]
    assert env["SWEEPQ_TABLE"] == stack.outputs["TableName"]
    assert env["SWEEPQ_METRICS_TABLE"] == stack.outputs["MetricsTableName"]
    assert env["SWEEPQ_WAKE_QUEUE_URL"] == stack.outputs["WakeQueueUrl"]
    assert env["SWEEPQ_CLUSTER_NAME"] == "gpu-cluster" and env["SWEEPQ_NAMESPACE"] == "sweepq"
    settings = Settings.load(env)
    assert settings.intake_budget_s < settings.lease_seconds < config["Timeout"] < 60


def test_schedule_invokes_the_dispatcher_every_minute(stack):
    events = stack.client("events")
    rule = events.describe_rule(Name=stack.resources["TickSchedule"])
    assert rule["ScheduleExpression"] == "rate(1 minute)" and rule["State"] == "ENABLED"
    function_arn = stack.client("lambda").get_function_configuration(
        FunctionName=stack.outputs["DispatcherFunctionName"])["FunctionArn"]
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=rule["Name"])["Targets"]] == [function_arn]
    policy = json.loads(stack.client("lambda").get_policy(FunctionName=stack.outputs["DispatcherFunctionName"])["Policy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == rule["Arn"]


def test_both_queues_are_event_sources_reporting_failures_per_message(stack):
    mappings = stack.client("lambda").list_event_source_mappings(
        FunctionName=stack.outputs["DispatcherFunctionName"])["EventSourceMappings"]
    assert sorted(m["EventSourceArn"] for m in mappings) == sorted([stack.outputs["QueueArn"], stack.outputs["WakeQueueArn"]])
    for mapping in mappings:
        assert mapping["BatchSize"] == 10
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def _trust(iam, role_name: str) -> dict:
    [statement] = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]["Statement"]
    return statement


def test_the_trainer_pod_role_trusts_only_this_cluster_namespace_and_account(stack):
    # GIVEN the default stack (trainer through Pod Identity, dispatcher as the Lambda)
    iam = stack.client("iam")
    assert "DispatcherPodRole" not in stack.resources
    trust = _trust(iam, stack.resources["TrainerPodRole"])
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012", "aws:RequestTag/eks-cluster-name": "gpu-cluster",
                         "aws:RequestTag/kubernetes-namespace": "sweepq",
                         "aws:RequestTag/kubernetes-service-account": "sweepq-trainer"},
        "ArnEquals": {"aws:SourceArn": "arn:aws:eks:us-east-1:123456789012:cluster/gpu-cluster"},
    }
    attached = iam.list_attached_role_policies(RoleName=stack.resources["TrainerPodRole"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [stack.outputs["TrainerPolicyArn"]]


def test_optional_parts_follow_their_parameters(deploy):
    # GIVEN no event source, no access entry, the dispatcher on Pod Identity, the trainer on IRSA
    stack = deploy(EventDriven="false", ManageEksAccess="false", DispatcherPodIdentity="true",
                   TrainerPodIdentity="false")
    # THEN no mapping (and concurrency 1), no access entry, only the dispatcher's pod role
    lam = stack.client("lambda")
    name = stack.outputs["DispatcherFunctionName"]
    assert lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"] == []
    assert lam.get_function(FunctionName=name)["Concurrency"]["ReservedConcurrentExecutions"] == 1
    assert stack.skipped == MOTO_SKIPS - {"AWS::EKS::AccessEntry"}
    assert "TrainerPodRole" not in stack.resources
    iam = stack.client("iam")
    trust = _trust(iam, stack.resources["DispatcherPodRole"])
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"] == "sweepq-system"
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == "sweepq-dispatcher"
    assert trust["Condition"]["ArnEquals"] == {"aws:SourceArn": "arn:aws:eks:us-east-1:123456789012:cluster/gpu-cluster"}
    attached = iam.list_attached_role_policies(RoleName=stack.resources["DispatcherPodRole"])["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [stack.outputs["DispatcherPolicyArn"]]
