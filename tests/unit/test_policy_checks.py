"""Every rule of the operator policy, against hostile launch settings: each violation names the
rule, the field, the value and what the policy allows — and never a secret or an env value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.core.errors import PermanentError
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy, PolicyError
from dispatcher.core.policy_checks import PolicyViolation, Violation

JOB = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
    "restartPolicy": "Never", "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"]}]}}}}
POLICY = Policy.load_yaml(f"""
images: [ghcr.io/acme/, registry.example/trainer]
service_accounts: [sweepq-trainer]
wandb_secrets: [wandb]
output_pvcs: [shared-outputs]
kinds: [pytorchjob, job, template]
limits: {{gpus_per_node: 8, nodes: 4, gpus_per_trial: 16, priority: 100, max_concurrent: 20, max_retries: 3,
          max_restarts: 5, max_runtime: 1d, start_timeout: 2h, cpu: "32", memory: 256Gi}}
env: {{allowed: ["HF_*", "OMP_NUM_THREADS", "NCCL_*"], reserved: ["NCCL_SOCKET_IFNAME"]}}
teams:
  vision:
    members: ["AROAVISION:*"]
    kueue_queue: vision
    wandb_secrets: [wandb-vision]
    output_pvcs: [vision-outputs]
    service_accounts: [vision-trainer]
  nlp:
    members: ["AROANLP:*"]
    wandb_secrets: [wandb-nlp]
    output_pvcs: [nlp-outputs]
operators: ["AROAOPS:*"]
kueue: {{queues: [shared-queue]}}
templates:
  vision-job: {{manifest: {json.dumps(JOB)}, teams: [vision]}}
  any-job: {{manifest: {json.dumps(JOB)}}}
""")
VISION = "AROAVISION:alice"
NLP = "AROANLP:bob"
OK = {"image": "ghcr.io/acme/trainer:1", "kind": "pytorchjob"}


def admit(sender: str = VISION, default_kind: Any = None, **launch: Any):
    return POLICY.admit(LaunchSettings.model_validate({**OK, **launch}), sender=sender, default_kind=default_kind)


def only(sender: str = VISION, **launch: Any) -> Violation:
    violations = admit(sender, **launch).violations
    assert len(violations) == 1, violations
    return violations[0]


def test_a_sweep_within_the_policy_is_admitted_with_its_team_and_queue() -> None:
    admission = admit(gpus_per_node=8, nodes="1:2", wandb_secret="wandb-vision", output_pvc="vision-outputs",
                      service_account="vision-trainer", env={"HF_HOME": "/tmp/hf"})
    assert admission.ok and admission.reason == "" and admission.team == "vision"
    assert admission.launch.team == "vision" and admission.launch.kueue_queue == "vision"
    assert admission.launch.max_concurrent == 20 and admission.launch.max_runtime == 86400  # limits fill the unset
    assert admission.raise_for_violations() is admission.launch


def test_limits_never_lower_what_a_sweep_asked_within_them() -> None:
    launch = admit(max_concurrent=2, max_runtime="1h").launch
    assert (launch.max_concurrent, launch.max_runtime) == (2, 3600)


# -- identity: ServiceAccounts, Secrets, PVCs -------------------------------------------------------

@pytest.mark.parametrize("sender, launch, rule, field, allowed", [
    (VISION, {"service_account": "sweepq-dispatcher"}, "service_accounts.dispatcher", "service_account",
     "sweepq-trainer, vision-trainer"),
    (NLP, {"service_account": "vision-trainer"}, "service_accounts", "service_account", "sweepq-trainer"),
    (VISION, {"service_account": "default-admin"}, "service_accounts", "service_account", "sweepq-trainer, vision-trainer"),
    (NLP, {"wandb_secret": "wandb-vision"}, "wandb_secrets", "wandb_secret", "wandb, wandb-nlp (or null)"),
    (VISION, {"wandb_secret": "wandb-nlp"}, "wandb_secrets", "wandb_secret", "wandb, wandb-vision (or null)"),
    (NLP, {"output_pvc": "vision-outputs"}, "output_pvcs", "output_pvc", "nlp-outputs, shared-outputs (or none)"),
], ids=["dispatcher-sa", "other-teams-sa", "unknown-sa", "other-teams-secret", "other-teams-secret-2", "other-teams-pvc"])
def test_identity_rules(sender: str, launch: dict[str, Any], rule: str, field: str, allowed: str) -> None:
    v = only(sender, **launch)
    assert (v.rule, v.field, v.allowed) == (rule, field, allowed)
    assert str(v).startswith(f"{field}: {v.value} is refused by the operator policy ({rule})")
    assert str(v).endswith(f"— allowed: {allowed}")


def test_the_dispatchers_account_is_refused_even_to_operators_and_names_why() -> None:
    v = only("AROAOPS:carol", team="vision", service_account="sweepq-dispatcher")
    assert "it is the dispatcher's own ServiceAccount; no trial ever runs as it" in str(v)


def test_a_required_service_account() -> None:
    strict = POLICY.model_copy(update={"service_account_required": True})
    v = strict.admit(LaunchSettings(**OK), sender=VISION).violations
    assert [(x.rule, x.value) for x in v] == [("service_account_required", "(none)")]
    assert admit().ok  # unset: the namespace's default ServiceAccount, which has no rights


def test_no_wandb_secret_and_no_pvc_are_always_allowed() -> None:
    assert admit(wandb_secret=None).ok and admit(output_pvc=None).ok


# -- images, kinds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("image", ["docker.io/attacker/miner:1", "ghcr.io/acme-evil/x:1", "registry.example/trainer-x:1",
                                   "ubuntu", "ghcr.io/acmex:1"])
def test_images_outside_the_allowed_prefixes_are_refused(image: str) -> None:
    v = only(image=image)
    assert (v.rule, v.field, v.value) == ("images", "image", repr(image))
    assert v.allowed == "ghcr.io/acme/, registry.example/trainer" and "it resolves to" in v.why


@pytest.mark.parametrize("image", ["ghcr.io/acme/trainer:1", "ghcr.io/acme/team/x", "registry.example/trainer:2"])
def test_images_inside_are_admitted(image: str) -> None:
    assert admit(image=image).ok


def test_digests_only() -> None:
    pinned = POLICY.model_copy(update={"digests_only": True})
    tagged = LaunchSettings(**{**OK, "image": "ghcr.io/acme/trainer:1"})
    assert [v.rule for v in pinned.admit(tagged, sender=VISION).violations] == ["digests_only"]
    digest = LaunchSettings(**{**OK, "image": "ghcr.io/acme/trainer@sha256:" + "0" * 64})
    assert pinned.admit(digest, sender=VISION).ok


def test_kinds() -> None:
    v = only(kind="elasticjob")
    assert (v.rule, v.value, v.allowed) == ("kinds", "'elasticjob'", "job, pytorchjob, template")
    # A sweep naming no kind runs as the dispatcher's SWEEPQ_BACKEND: that kind is what the rule judges
    # (rev11p: SWEEPQ_KINDS did not stop it — the backend may be enabled and still not offered).
    assert [(v.rule, v.value) for v in admit(kind=None).violations] == [("kinds", "(none)")]
    assert admit(kind=None, default_kind="elasticjob").violations[0].value == "'elasticjob'"
    admission = POLICY.admit(LaunchSettings.model_validate({**OK, "kind": None}), sender=VISION,
                             default_kind="pytorchjob")
    assert admission.ok and admission.launch.kind == "pytorchjob"


# -- teams and Kueue --------------------------------------------------------------------------------

def test_a_sender_in_no_team_is_refused_once_teams_exist() -> None:
    v = only("AIDASTRANGER")
    assert (v.rule, v.field) == ("team.required", "team")
    assert "AIDASTRANGER is a member of no team" in str(v) and "nlp, vision" in str(v)
    assert only("").why.startswith("an unknown sender is a member of no team")


def test_a_sender_cannot_claim_another_team() -> None:
    v = only(NLP, team="vision")
    assert (v.rule, v.value, v.allowed) == ("team.membership", "'vision'", "nlp")
    assert "AROANLP:bob is not a member" in str(v)
    assert only(NLP, team="ghost").rule == "teams"


def test_operators_may_submit_for_any_team_but_must_name_one() -> None:
    assert admit("AROAOPS:carol", team="nlp").team == "nlp"
    assert only("AROAOPS:carol").rule == "team.required"


@pytest.mark.parametrize("sender, queue, rule", [
    (VISION, "nlp-queue", "teams.kueue_queue"),  # a team with a queue uses it
    (NLP, "vision", "teams.kueue_queue"),  # another team's queue
    (NLP, "elsewhere", "kueue.queues"),  # not on the shared list
])
def test_kueue_queues(sender: str, queue: str, rule: str) -> None:
    v = only(sender, kueue_queue=queue)
    assert (v.rule, v.field, v.value) == (rule, "kueue_queue", repr(queue))


def test_a_team_without_its_own_queue_uses_the_shared_ones() -> None:
    admission = admit(NLP, kueue_queue="shared-queue")
    assert admission.ok and admission.launch.kueue_queue == "shared-queue"
    assert admit(VISION, kueue_queue="vision").ok


# -- limits -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("launch, rule, value, allowed", [
    ({"gpus_per_node": 16}, "limits.gpus_per_node", "16", "at most 8"),
    ({"gpus_per_node": 1, "nodes": "1:8"}, "limits.nodes", "max 8", "at most 4"),
    ({"gpus_per_node": 8, "nodes": 3}, "limits.gpus_per_trial", "24", "at most 16"),
    ({"priority": 1000}, "limits.priority", "1000", "at most 100"),
    ({"max_concurrent": 500}, "limits.max_concurrent", "500", "at most 20"),
    ({"max_retries": 10}, "limits.max_retries", "10", "at most 3"),
    ({"max_restarts": 50}, "limits.max_restarts", "50", "at most 5"),
    ({"max_runtime": "7d"}, "limits.max_runtime", "604800 s", "at most 86400"),
    ({"start_timeout": "1d"}, "limits.start_timeout", "86400 s", "at most 7200"),
    ({"resources": {"cpu": "64"}}, "limits.cpu", "'64'", "at most '32' per node"),
    ({"resources": {"memory": "1Ti"}}, "limits.memory", "'1Ti'", "at most '256Gi' per node"),
])
def test_each_limit(launch: dict[str, Any], rule: str, value: str, allowed: str) -> None:
    v = only(**launch)
    assert (v.rule, v.value, v.allowed) == (rule, value, allowed)


def test_within_the_limits_exactly() -> None:
    assert admit(gpus_per_node=8, nodes=2, priority=100, max_concurrent=20, max_retries=3, max_restarts=5,
                 max_runtime="1d", start_timeout="2h", resources={"cpu": "32000m", "memory": "256Gi"}).ok


# -- env --------------------------------------------------------------------------------------------

def test_env_allow_list_and_extra_reserved_names_never_show_values() -> None:
    secretish = "do-not-echo-this-value-8c1f"
    violations = admit(env={"HF_HOME": "/tmp", "NCCL_SOCKET_IFNAME": secretish, "MY_FLAG": secretish}).violations
    assert [(v.rule, v.field, v.value) for v in violations] == [
        ("env.allowed", "env.MY_FLAG", "set"), ("env.reserved", "env.NCCL_SOCKET_IFNAME", "set")]
    assert "reserved by the operator policy (NCCL_SOCKET_IFNAME)" in str(violations[1])
    assert secretish not in admit(env={"MY_FLAG": secretish}).reason


def test_built_in_reserved_names_are_checked_again_on_settings_built_without_validation() -> None:
    # defence in depth: a LaunchSettings made with model_construct (a stored item read by a future
    # reader that skipped validation) still cannot carry LD_PRELOAD past the policy
    launch = LaunchSettings.model_construct(**{**LaunchSettings(**OK).__dict__, "env": {"LD_PRELOAD": "/x.so"}})
    v = POLICY.check_launch(launch, team="vision", sender=VISION)
    assert [(x.rule, x.field) for x in v] == [("env.reserved", "env.LD_PRELOAD")]
    assert "/x.so" not in str(v[0])


# -- templates --------------------------------------------------------------------------------------

def test_templates_by_name_only_and_per_team() -> None:
    assert admit(kind="template", template="vision-job").ok
    assert admit(NLP, kind="template", template="any-job").ok
    v = only(NLP, kind="template", template="vision-job")
    assert (v.rule, v.allowed) == ("templates.teams", "any-job") and "reserved for vision" in v.why
    v = only(kind="template", template="nope")
    assert (v.rule, v.value, v.allowed) == ("templates", "'nope'", "any-job, vision-job")


# -- many at once, and as an error ------------------------------------------------------------------

def test_every_violation_is_reported_not_only_the_first() -> None:
    admission = admit(NLP, team="vision", image="docker.io/evil/x", service_account="sweepq-dispatcher",
                      wandb_secret="wandb-vision", output_pvc="vision-outputs", gpus_per_node=64, priority=1000,
                      env={"MY_FLAG": "1"})
    rules = [v.rule for v in admission.violations]
    assert rules == ["team.membership", "images", "service_accounts.dispatcher", "wandb_secrets", "output_pvcs",
                     "limits.gpus_per_node", "limits.gpus_per_trial", "limits.priority", "env.allowed"]
    assert admission.reason.startswith("9 policy violations:\n  - team: 'vision' is refused")
    with pytest.raises(PolicyViolation) as info:
        admission.raise_for_violations()
    assert isinstance(info.value, PermanentError) and info.value.violations == admission.violations
    assert str(info.value) == admission.reason


def test_a_stored_sweep_is_checked_again_against_a_changed_policy() -> None:
    """Render time: what was admitted yesterday is held today if the operator tightened the policy."""
    stored = admit(gpus_per_node=8, nodes=2, wandb_secret="wandb-vision").launch
    assert POLICY.check_launch(stored, team="vision", sender=VISION) == []
    tighter = Policy.load_yaml(json.dumps({**POLICY.model_dump(mode="json"), "limits": {"gpus_per_trial": 8},
                                           "teams": {**POLICY.model_dump(mode="json")["teams"],
                                                     "vision": {"members": ["AROAVISION:*"], "kueue_queue": "vision"}}}))
    again = tighter.admit(stored, sender=VISION)
    assert [(v.rule, v.field) for v in again.violations] == [("wandb_secrets", "wandb_secret"),
                                                            ("limits.gpus_per_trial", "gpus_per_node × max_nodes")]
    removed = tighter.model_copy(update={"teams": {"nlp": tighter.teams["nlp"]}})
    assert [v.rule for v in removed.admit(stored, sender=VISION).violations][0] == "teams"


def test_violations_are_plain_values() -> None:
    v = Violation("kinds", "kind", "'x'", "job")
    assert str(v) == "kind: 'x' is refused by the operator policy (kinds) — allowed: job"
    assert v == Violation("kinds", "kind", "'x'", "job") and hash(v)


# -- what admit fills and forces (rev11p #5, #6, #7, #17 and the review's concerns) ------------------

def test_images_are_handed_to_pods_fully_qualified_when_the_policy_restricts_them() -> None:
    """CRI-O may resolve a short name through its unqualified-search-registries (another registry's
    'ubuntu'): the pod gets the reference the policy checked, written out."""
    p = Policy.from_data({"images": ["ubuntu", "ghcr.io/acme/"]})
    launch = p.admit(LaunchSettings(kind="job", image="ubuntu:22.04"), sender=VISION).launch
    assert launch.image == "docker.io/library/ubuntu:22.04"
    assert p.admit(LaunchSettings(kind="job", image="ghcr.io/acme/x:1"), sender=VISION).launch.image == "ghcr.io/acme/x:1"
    v = p.admit(LaunchSettings(kind="job", image="quay.io/ubuntu:22.04"), sender=VISION).violations
    assert [(x.rule, x.value) for x in v] == [("images", "'quay.io/ubuntu:22.04'")]  # as written, not rewritten
    assert Policy.default().admit(LaunchSettings(kind="job", image="ubuntu"), sender=VISION).launch.image == "ubuntu"
    long = Policy.from_data({"images": ["docker.io/library/"]}).admit(LaunchSettings(kind="job", image="a" * 505),
                                                                      sender=VISION)
    assert [v.rule for v in long.violations] == ["images"]  # too long once qualified: a violation, not an error


def test_a_memory_limit_is_given_to_sweeps_that_ask_for_none_and_kept_for_those_that_ask() -> None:
    assert admit().launch.resources.memory == "256Gi"
    assert admit(resources={"memory": "8Gi"}).launch.resources.memory == "8Gi"
    assert admit().launch.resources.cpu is None  # a cpu request is no cap: a pod without one only gets idle CPU


def test_sweepqs_defaults_above_a_limit_become_the_limit_and_requests_above_it_are_refused() -> None:
    p = Policy.from_data({"limits": {"start_timeout": "15m", "max_retries": 1, "max_restarts": 0, "priority": -5}})
    launch = p.admit(LaunchSettings(kind="job"), sender=VISION)
    assert launch.ok, launch.reason
    assert (launch.launch.start_timeout, launch.launch.max_retries, launch.launch.max_restarts,
            launch.launch.priority) == (900, 1, 0, -5)
    refused = p.admit(LaunchSettings(kind="job", start_timeout="1h", max_retries=2 + 1), sender=VISION).violations
    assert [v.rule for v in refused] == ["limits.max_retries", "limits.start_timeout"]
    cpu_only = Policy.from_data({"limits": {"gpus_per_node": 0}})
    assert [v.rule for v in cpu_only.admit(LaunchSettings(kind="job"), sender=VISION).violations] == [
        "limits.gpus_per_node"]  # a default GPU is a real request: refused, never silently dropped


def test_the_default_wandb_secret_becomes_the_teams_own_when_the_policy_does_not_share_it() -> None:
    p = POLICY.model_copy(update={"wandb_secrets": []})
    assert p.admit(LaunchSettings(**OK), sender=VISION).launch.wandb_secret == "wandb-vision"
    assert p.admit(LaunchSettings(**OK), sender=NLP).launch.wandb_secret == "wandb-nlp"
    no_secrets = Policy.from_data({"wandb_secrets": []})
    assert no_secrets.admit(LaunchSettings(kind="job"), sender=VISION).launch.wandb_secret is None
    v = p.admit(LaunchSettings(**OK, wandb_secret="wandb-nlp"), sender=VISION).violations  # asked for: refused
    assert [x.rule for x in v] == ["wandb_secrets"]


def test_a_claimed_team_is_dropped_when_the_policy_has_no_teams() -> None:
    admission = Policy.default().admit(LaunchSettings(kind="job", team="t1"), sender=VISION)
    assert admission.ok and admission.team is None and admission.launch.team is None


def test_a_default_kind_that_the_sweeps_settings_do_not_fit_is_a_violation_not_an_error() -> None:
    p = Policy.default()
    admission = p.admit(LaunchSettings(nodes=2), sender=VISION, default_kind="job")
    assert [(v.rule, v.field) for v in admission.violations] == [("kinds", "kind")]
    assert "runs on one node" in admission.reason


def test_kueue_required_fills_the_shared_queue_or_refuses() -> None:
    p = POLICY.model_copy(update={"kueue": POLICY.kueue.model_copy(update={"required": True})})
    assert p.admit(LaunchSettings(**OK), sender=NLP).launch.kueue_queue == "shared-queue"
    assert p.admit(LaunchSettings(**OK), sender=VISION).launch.kueue_queue == "vision"  # the team's own
    no_queues = p.model_copy(update={"kueue": p.kueue.model_copy(update={"queues": None})})
    v = no_queues.admit(LaunchSettings(**OK), sender=NLP).violations
    assert [(x.rule, x.field, x.value) for x in v] == [("kueue.required", "kueue_queue", "(none)")]
    assert no_queues.admit(LaunchSettings(**OK, kueue_queue="any-queue"), sender=NLP).ok


def test_a_team_may_be_kept_below_the_priorities_of_the_policy() -> None:
    p = Policy.load_yaml("limits: {priority: 100}\nteams: {low: {members: ['AIDALOW'], max_priority: -10}}\n")
    v = p.admit(LaunchSettings(kind="job", priority=50), sender="AIDALOW").violations
    assert [(x.rule, x.value, x.allowed) for x in v] == [("teams.max_priority", "50", "at most -10")]
    assert p.admit(LaunchSettings(kind="job"), sender="AIDALOW").launch.priority == -10  # the default, lowered


@pytest.mark.parametrize("weight", [0, 0.001, -1])
def test_a_team_weight_near_zero_is_refused(weight: float) -> None:
    with pytest.raises(PolicyError, match="teams.t.weight"):
        Policy.load_yaml(f"teams: {{t: {{members: ['AIDAX'], weight: {weight}}}}}\n")
