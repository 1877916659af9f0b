"""The CloudFormation template on its own: cfn-lint, and the settings moto cannot show."""

from __future__ import annotations

from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file

from dispatcher.adapters.queue import DLQ_MAX_RECEIVES
from dispatcher.adapters.store import INDEX
from dispatcher.settings import ENV, Settings
from infra_expected import DISPATCHER_K8S_GROUP, TEMPLATE

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


@pytest.mark.parametrize("parameter", ["DispatcherTimeout", "LeaseSeconds"])
def test_parameter_bounds_keep_the_lease_valid(template, parameter):
    # Settings.check refuses a lease under 30 s; a timeout must leave room for one.
    assert template["Parameters"][parameter]["MinValue"] >= 30


def test_every_lambda_variable_is_a_setting_and_every_setting_is_decided(template):
    env = template["Resources"]["DispatcherFunction"]["Properties"]["Environment"]["Variables"]
    assert set(env) <= set(ENV.values())
    assert set(env) | set(LAMBDA_DEFAULTED) == set(ENV.values())


def test_default_parameters_make_valid_settings(template):
    d = _defaults(template)
    env = {"SWEEPQ_BACKEND": d["Backend"], "SWEEPQ_MAX_RUNNING": d["MaxRunning"], "SWEEPQ_MAX_GPUS": d["MaxGpus"],
           "SWEEPQ_LEASE_SECONDS": str(d["LeaseSeconds"]), "SWEEPQ_INTAKE_BUDGET_S": str(d["IntakeBudgetSeconds"]),
           "SWEEPQ_KINDS": d["Kinds"]}
    settings = Settings.load(env)
    assert (settings.max_running, settings.max_gpus, settings.lease_seconds) == (8, None, 40)
