"""The template deployed into moto's CloudFormation: the resources exist with their settings.

moto's CloudFormation skips three resource types (it warns and creates the rest):
AWS::CloudWatch::Alarm, AWS::EKS::AccessEntry, AWS::Lambda::EventInvokeConfig; with PodIdentity
also AWS::EKS::PodIdentityAssociation. Their properties are checked in test_cfn_template.py.
It also ignores the table's SSE, point-in-time recovery and TTL (checked there too).
"""

from __future__ import annotations

import json

from dispatcher.adapters.queue import DLQ_MAX_RECEIVES
from dispatcher.adapters.store import Store
from dispatcher.settings import Settings

MOTO_SKIPS = {"AWS::CloudWatch::Alarm", "AWS::EKS::AccessEntry", "AWS::Lambda::EventInvokeConfig"}


def test_stack_deploys_and_moto_skips_only_the_known_types(stack):
    assert stack.skipped == MOTO_SKIPS
    assert set(stack.outputs) >= {"QueueUrl", "QueueArn", "DeadLetterQueueUrl", "TableName", "ResearcherPolicyArn",
                                  "TrainerPolicyArn", "DispatcherRoleArn"}


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
    assert int(redrive["maxReceiveCount"]) == DLQ_MAX_RECEIVES
    timeout = stack.client("lambda").get_function_configuration(FunctionName=stack.outputs["DispatcherFunctionName"])["Timeout"]
    assert int(attrs["VisibilityTimeout"]) > timeout


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
    assert function["Concurrency"]["ReservedConcurrentExecutions"] == 1
    env = stack.function_env()
    assert env["SWEEPQ_QUEUE_URL"] == stack.outputs["QueueUrl"]
    assert env["SWEEPQ_TABLE"] == stack.outputs["TableName"]
    assert env["SWEEPQ_CLUSTER_NAME"] == "gpu-cluster"
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


def test_queue_event_source_reports_failures_per_message(stack):
    [mapping] = stack.client("lambda").list_event_source_mappings(
        FunctionName=stack.outputs["DispatcherFunctionName"])["EventSourceMappings"]
    assert mapping["EventSourceArn"] == stack.outputs["QueueArn"]
    assert mapping["BatchSize"] == 10
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_optional_parts_follow_their_parameters(deploy):
    # GIVEN no event source, no access entry, Pod Identity on
    stack = deploy(EventDriven="false", ManageEksAccess="false", PodIdentity="true")
    # THEN no mapping, no access entry; the pod roles exist (moto skips the associations)
    assert stack.client("lambda").list_event_source_mappings(
        FunctionName=stack.outputs["DispatcherFunctionName"])["EventSourceMappings"] == []
    assert stack.skipped == MOTO_SKIPS - {"AWS::EKS::AccessEntry"} | {"AWS::EKS::PodIdentityAssociation"}
    iam = stack.client("iam")
    for logical, policy_output in (("DispatcherPodRole", "DispatcherPolicyArn"), ("TrainerPodRole", "TrainerPolicyArn")):
        role = iam.get_role(RoleName=stack.resources[logical])["Role"]
        [trust] = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert sorted(trust["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
        attached = iam.list_attached_role_policies(RoleName=role["RoleName"])["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [stack.outputs[policy_output]]
