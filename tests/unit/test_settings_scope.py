"""Settings: the dispatcher scope (CONTRACTS C5) and the fields of C6."""

from __future__ import annotations

import pytest

from dispatcher.core.errors import ConfigError
from dispatcher.settings import ENV, Settings


def test_the_scope_defaults_to_cluster_and_namespace():
    assert Settings.load({}).scope == "local/sweepq"
    assert Settings.load({"SWEEPQ_CLUSTER_NAME": "gpu", "SWEEPQ_NAMESPACE": "team-a"}).scope == "gpu/team-a"
    assert Settings.load({"SWEEPQ_SCOPE": "prod:team-a"}, namespace="team-a").scope == "prod:team-a"
    assert Settings(namespace="x").scope == "local/x"  # also when constructed directly


def test_a_bad_scope_names_the_setting_and_the_fix():
    with pytest.raises(ConfigError, match="SWEEPQ_SCOPE: 'team a' is not a scope — use 1-128"):
        Settings.load({"SWEEPQ_SCOPE": "team a"})


def test_the_c6_fields_have_their_names_and_defaults():
    s = Settings.load({})
    assert (s.metrics_table, s.wake_queue_name, s.wake_queue_url) == ("sweepq-metrics", "sweepq-wake", None)
    assert (s.max_waiting, s.termination_grace_s, s.policy, s.sweep_failures_to_hold) == (None, 120, None, 3)
    env = {"SWEEPQ_TABLE": "t", "SWEEPQ_QUEUE_NAME": "q", "SWEEPQ_MAX_WAITING": "16", "SWEEPQ_POLICY": "/etc/p.yaml",
           "SWEEPQ_TERMINATION_GRACE_S": "300", "SWEEPQ_WAKE_QUEUE_URL": "https://sqs/w"}
    s = Settings.load(env)
    assert (s.metrics_table, s.wake_queue_name, s.max_waiting, s.policy, s.termination_grace_s, s.wake_queue_url) == \
        ("t-metrics", "q-wake", 16, "/etc/p.yaml", 300, "https://sqs/w")
    for name in ("scope", "policy", "metrics_table", "wake_queue_url", "wake_queue_name", "max_waiting",
                 "termination_grace_s"):
        assert ENV[name] == "SWEEPQ_" + name.upper()


def test_template_resources_are_checked_at_start_up():
    ok = Settings.load({}, kinds="pytorchjob,template", template_resources="jobsets.jobset.x-k8s.io/v1alpha2")
    assert ok.template_resources == ("jobsets.jobset.x-k8s.io/v1alpha2",)
    with pytest.raises(ConfigError, match="SWEEPQ_TEMPLATE_RESOURCES: 'jobsets' is not plural.group/version"):
        Settings.load({}, kinds="pytorchjob,template", template_resources="jobsets")
