"""The operator policy file: the default, loading, every load-time error, lookups, the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from dispatcher.core.errors import NotFound, PermanentError
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import DISPATCHER_SERVICE_ACCOUNTS, Policy, PolicyError, policy_json_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "infra" / "policy.example.yaml"
JOB = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
    "restartPolicy": "Never", "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"]}]}}}}


def load(text: str) -> Policy:
    return Policy.load_yaml(text, source="test-policy.yaml")


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load(text)
    assert str(info.value).startswith("test-policy.yaml: ")
    return info.value.problems


# -- the default ----------------------------------------------------------------------------------

def test_the_default_policy_is_what_the_readme_says() -> None:
    p = Policy.default()
    assert p.images == ["*"] and not p.digests_only
    assert p.service_accounts == ["sweepq-trainer"] and not p.service_account_required
    assert p.wandb_secrets == ["wandb"] and p.output_pvcs == ["sweepq-outputs"]
    assert set(p.kinds) == {"pytorchjob", "elasticjob", "trainjob", "job", "local", "template"}
    assert p.templates == {} and p.teams == {} and p.operators == []
    assert p.limits.model_dump() == dict.fromkeys(p.limits.model_dump())  # every limit: sweepq's own maximum
    assert p.env.allowed == ["*"] and p.env.reserved == []
    assert "sweepq-dispatcher" in p.forbidden_service_accounts
    assert load("{}") == p and load("# the defaults\n{}\n") == p
    assert p.digest == Policy.default().digest and len(p.digest) == 16


def test_the_default_policy_admits_a_plain_sweep_and_refuses_the_hostile_launches() -> None:
    p = Policy.default()
    assert p.admit(LaunchSettings(), sender="AIDAALICE").ok
    assert p.admit(LaunchSettings(service_account="sweepq-trainer", output_pvc="sweepq-outputs"), sender="x").ok
    refused = {
        "service_account": LaunchSettings(service_account="sweepq-dispatcher"),
        "wandb_secret": LaunchSettings(wandb_secret="team-b-wandb"),
        "output_pvc": LaunchSettings(output_pvc="team-b-data"),
        "template": LaunchSettings(kind="template", template="anything"),
    }
    for field, launch in refused.items():
        assert [v.field for v in p.admit(launch, sender="AIDAALICE").violations] == [field]


# -- the example file -------------------------------------------------------------------------------

def test_the_two_team_example_loads_and_validates_against_the_published_schema() -> None:
    p = Policy.load_yaml(EXAMPLE.read_bytes(), source=str(EXAMPLE))
    assert list(p.teams) == ["team-a", "team-b"]
    assert p.team("team-a").quota.max_gpus == 48 and p.team("team-b").weight == 1
    assert p.team("team-a").kueue_queue == "team-a"
    assert list(p.templates) == ["jobset-workers"]
    jsonschema.validate(yaml.safe_load(EXAMPLE.read_text()), policy_json_schema())


def test_the_team_defaults_example_passes_the_default_policy() -> None:
    defaults = yaml.safe_load((ROOT / "infra" / "team-defaults.example.yaml").read_text())
    launch = LaunchSettings.model_validate(defaults)
    assert Policy.default().admit(launch, sender="AIDAALICE").ok


def test_the_schema_is_published_like_the_sweep_schema() -> None:
    schema = policy_json_schema()
    assert schema["title"] == "sweepq operator policy"
    assert {"images", "service_accounts", "wandb_secrets", "output_pvcs", "kinds", "limits", "env", "teams",
            "operators", "kueue", "templates"} <= set(schema["properties"])
    json.dumps(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"teams": {"a": {"members": []}}}, schema)


# -- load-time errors: each names the field and the fix ------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ("images: [UPPER/x]", "images: 'UPPER/x' — not an image reference"),
    ("images: ['ubuntu:22.04']", "without :tag"),
    ("service_accounts: [Not_A_Name]", "service_accounts: 'Not_A_Name' is not a Kubernetes name"),
    ("service_accounts: [sweepq-trainer, sweepq-dispatcher]", "'sweepq-dispatcher' is the dispatcher's own"),
    ("dispatcher_service_accounts: [my-dispatcher]\nservice_accounts: [my-dispatcher]", "'my-dispatcher' is the dispatcher"),
    ("teams: {a: {members: [x], service_accounts: [sweepq-dispatcher]}}", "teams.a.service_accounts: 'sweepq-dispatcher'"),
    ("kinds: [pytorchjob, slurm]", "kinds.1"),
    ("limits: {gpus_per_node: 65}", "limits.gpus_per_node"),
    ("limits: {max_runtime: 90d}", "limits.max_runtime: '90d' is over the maximum of 30d"),
    ("limits: {memory: lots}", "limits.memory: 'lots' is not a Kubernetes quantity"),
    ("limits: {gpus_per_node: true}", "limits.gpus_per_node"),
    ("env: {allowed: ['HF HOME']}", "env.allowed: 'HF HOME' is not an environment-name pattern"),
    ("teams: {a: {members: []}}", "teams.a.members"),
    ("teams: {a: {members: ['  ']}}", "teams.a.members: an empty pattern"),
    ("teams: {Team_A: {members: [x]}}", "teams.Team_A: not a DNS-1123 label"),
    ("teams: {a: {members: [x], weight: 0}}", "teams.a.weight"),
    ("teams: {a: {members: [x], kueue_queue: q}, b: {members: [y], kueue_queue: q}}", "teams.b.kueue_queue: 'q' is also team a's"),
    ("teams: {a: {members: [x]}}\ndefault_team: b", "default_team: 'b' is not one of the teams (a)"),
    ("kueue: {priority_classes: [{name: a, min_priority: 0}, {name: b, min_priority: 0}]}", "share a min_priority"),
    ("operators: ['']", "operators: an empty pattern"),
    ("bogus: 1", "bogus: unknown key"),
    ("teams: {a: {members: [x], colour: red}}", "teams.a.colour: unknown key"),
    ("version: 2", "version"),
    ("[1, 2]", "the policy must be a mapping, got list"),
    ("images: [a\n  b: c", "YAML syntax error"),
    ("", "the file is empty — write {} for the default policy"),
    ("# only a comment\n", "the file is empty"),
    ("~", "only null"),
])
def test_an_invalid_policy_names_the_field_and_the_fix(text: str, fragment: str) -> None:
    found = problems(text)
    assert any(fragment in p for p in found), found


def template_policy(manifest: Any, **entry: Any) -> str:
    return yaml.safe_dump({"templates": {"t": {"manifest": manifest, **entry}}})


def pod(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "{{image}}"}], **spec}}}}


@pytest.mark.parametrize("manifest, entry, fragment", [
    (pod(hostPID=True), {}, "templates.t.manifest.pod.spec.hostPID: true"),
    (pod(volumes=[{"name": "r", "hostPath": {"path": "/"}}]), {}, "hostPath volumes are not allowed"),
    ({**pod(), "spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "x", "securityContext": {"privileged": True}}]}}}}, {}, "privileged: true"),
    ({**pod(), "metadata": {"name": "fixed"}}, {}, "templates.t.manifest.metadata.name: sweepq sets it"),
    ({**pod(), "metadata": {"namespace": "kube-system"}}, {}, "metadata.namespace: sweepq sets it"),
    (pod(containers=[{"name": "c", "image": "{{imgae}}"}]), {}, "unknown placeholders ['imgae']"),
    ({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}}, {}, "cannot derive the API plural"),
    ({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}}, {}, "is a core kind"),
    ({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"size": 1}}, {"plural": "widgets"}, "no pod template"),
    (pod(), {"teams": ["nobody"]}, "templates.t.teams: 'nobody' is not one of the teams"),
    (pod(), {"pod_name_pattern": "no-job-here"}, "pod_name_pattern: must contain {job}"),
    (pod(), {"pod_name_pattern": "{job}-(["}, "pod_name_pattern: not a regular expression"),
    ({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": {"replicatedJobs": [{"replicas": "many",
      "template": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}}]}}, {},
     "not a replica count"),
])
def test_a_template_is_checked_when_the_policy_loads(manifest: Any, entry: dict[str, Any], fragment: str) -> None:
    found = problems(template_policy(manifest, **entry))
    assert any(fragment in p for p in found), found


def test_template_names_are_kubernetes_names() -> None:
    found = problems(yaml.safe_dump({"templates": {"My Template": {"manifest": JOB}}}))
    assert any("templates.My Template: not a DNS-1123 label" in p for p in found), found


def test_a_large_policy_file_is_refused_before_parsing() -> None:
    assert any("KiB" in p for p in problems("# " + "x" * (1024 * 1024 + 10)))


# -- lookups ------------------------------------------------------------------------------------

TWO_TEAMS = """
teams:
  vision: {members: ["AROAVISION:*", "AIDAALICE"], weight: 3, quota: {max_jobs: 4, max_gpus: 32}, kueue_queue: vision,
           wandb_secrets: [wandb-vision], output_pvcs: [vision-out]}
  nlp: {members: ["AROANLP:*", "AIDAALICE"]}
operators: ["AROAOPS:*"]
kueue:
  priority_classes: [{name: low, min_priority: -1000}, {name: normal, min_priority: 0}, {name: urgent, min_priority: 500}]
templates:
  job: {manifest: %s, teams: [nlp]}
""" % json.dumps(JOB)


def test_team_of_the_named_team_if_a_member_else_the_first_of_the_sender() -> None:
    p = load(TWO_TEAMS)
    assert p.teams_of("AIDAALICE") == ["vision", "nlp"]
    assert p.team_of("AIDAALICE", LaunchSettings()) == "vision"
    assert p.team_of("AIDAALICE", LaunchSettings(team="nlp")) == "nlp"
    assert p.team_of("AROANLP:bob", LaunchSettings(team="vision")) is None  # not his team
    assert p.team_of("AROANLP:bob", LaunchSettings()) == "nlp"
    assert p.team_of("AIDASTRANGER", LaunchSettings()) is None
    assert p.team_of("AROAOPS:carol", LaunchSettings(team="vision")) == "vision"  # operators pick any team
    assert p.team_of("AROAOPS:carol", LaunchSettings(team="ghost")) is None
    assert p.team_of("", LaunchSettings()) is None
    assert Policy.default().team_of("AIDAALICE", LaunchSettings(team="anything")) is None  # no teams: no quota


def test_default_team_catches_senders_in_no_team() -> None:
    p = load(TWO_TEAMS + "default_team: nlp\n")
    assert p.team_of("AIDASTRANGER", LaunchSettings()) == "nlp"
    assert p.team_of("AIDASTRANGER", LaunchSettings(team="vision")) is None


def test_team_and_template_lookups_say_what_exists() -> None:
    p = load(TWO_TEAMS)
    assert p.team("vision").quota.max_jobs == 4 and p.team("vision").weight == 3
    with pytest.raises(NotFound, match="teams: vision, nlp"):
        p.team("ghost")
    assert p.template("job").teams == ["nlp"]
    with pytest.raises(PermanentError, match="use one of job"):
        p.template("jbo")
    with pytest.raises(PermanentError, match="the operator has defined no templates"):
        Policy.default().template("job")


def test_operators_and_control_authorisation() -> None:
    p = load(TWO_TEAMS)
    assert p.is_operator("AROAOPS:carol") and not p.is_operator("AROAOPSX:carol") and not p.is_operator("")
    assert p.may_control("AIDAALICE", submitter="AIDAALICE")
    assert p.may_control("AROAOPS:carol", submitter="AIDAALICE")
    assert not p.may_control("AROANLP:bob", submitter="AIDAALICE")
    assert not p.may_control("", submitter="")  # an unknown sender never matches an unknown submitter
    assert p.control_refusal("AIDAALICE", submitter="AIDAALICE", action="cancel", sweep_id="s-1") is None
    reason = p.control_refusal("AROANLP:bob", submitter="AIDAALICE", action="cancel", sweep_id="s-1")
    assert reason == ("cancel of s-1 by AROANLP:bob refused: only its submitter (AIDAALICE) and the policy's operators "
                      "may cancel it")


def test_sender_patterns_are_fnmatch_and_case_sensitive() -> None:
    p = load("operators: ['AROAOPS:ops-?', 'AIDA[AB]X']")
    assert p.is_operator("AROAOPS:ops-1") and not p.is_operator("AROAOPS:ops-12")
    assert p.is_operator("AIDABX") and not p.is_operator("AIDACX") and not p.is_operator("aroaops:ops-1")


def test_priority_classes_map_each_priority_to_the_highest_threshold_below_it() -> None:
    p = load(TWO_TEAMS)
    assert [p.priority_class(x) for x in (-1000, -1, 0, 499, 500, 1000)] == \
        ["low", "low", "normal", "normal", "urgent", "urgent"]
    assert load("kueue: {priority_classes: [{name: normal, min_priority: 0}]}").priority_class(-5) is None
    assert Policy.default().priority_class(0) is None


def test_the_digest_changes_with_the_content() -> None:
    assert load(TWO_TEAMS).digest != Policy.default().digest
    assert load(TWO_TEAMS).digest == load(TWO_TEAMS).digest
    assert re.fullmatch(r"[0-9a-f]{16}", load(TWO_TEAMS).digest)


def test_the_dispatchers_account_is_forbidden_even_in_a_policy_built_without_validation() -> None:
    p = Policy.model_construct(service_accounts=["sweepq-dispatcher"], dispatcher_service_accounts=[])
    assert DISPATCHER_SERVICE_ACCOUNTS <= p.forbidden_service_accounts


def test_a_templates_pod_name_pattern_decides_whose_metrics_are_trusted() -> None:
    p = Policy.load_yaml(EXAMPLE.read_bytes())
    workers = p.template("jobset-workers")
    job = "bert-lr-abcdefgh-3-a1"
    assert workers.pod_belongs_to(job, f"{job}-workers-0-1-x7k2p")
    assert not workers.pod_belongs_to(job, f"{job}-workers-0-1-x7k2p-extra")  # whole name only
    assert not workers.pod_belongs_to(job, "bert-lr-abcdefgh-3-a10-workers-0-1-x7k2p")  # another job's pod
    assert not workers.pod_belongs_to("bert.lr", "bertXlr-workers-0-1-x7k2p")  # the job name is literal, not a regex
    assert not load(template_policy(JOB)).template("t").pod_belongs_to(job, f"{job}-abcde")  # no pattern: never


def test_the_readme_two_team_example_loads_and_its_quoted_refusal_is_what_it_says() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Operator policy"):]
    block = re.search(r"\*\*Two teams\*\*.*?```yaml\n(.*?)```", section, re.DOTALL).group(1)
    p = load(block)
    quoted = re.search(r"reads, in `producer status`:\n\n```\n(.*?)\n```", section, re.DOTALL).group(1)
    launch = LaunchSettings(image="111122223333.dkr.ecr.us-east-1.amazonaws.com/sweepq-trainer:1",
                            wandb_secret="wandb-team-a")
    assert p.admit(launch, sender="AROAEXAMPLETEAMBROLE:bob").reason == quoted


def test_the_backstop_params_mirror_the_policy() -> None:
    assert Policy.default().admission_params() == {
        "anyImage": True, "imagePrefixes": ["*"], "imageRepositories": [], "imageNamespaces": [],
        "digestsOnly": False, "serviceAccounts": ["sweepq-trainer"],
        "serviceAccountRequired": False, "forbiddenServiceAccounts": ["sweepq-dispatcher"]}
    p = load(TWO_TEAMS + "images: [ubuntu, ghcr.io/acme/]\nservice_accounts: []\n"
             "dispatcher_service_accounts: [my-dispatcher]\n")
    p = p.model_copy(update={"teams": {**p.teams, "vision": p.teams["vision"].model_copy(
        update={"service_accounts": ["vision-trainer"]})}})
    params = p.admission_params()
    assert params["imagePrefixes"] == ["docker.io/library/ubuntu", "ghcr.io/acme/"]
    # what a ValidatingAdmissionPolicy compares with the image as written (admit writes it qualified)
    assert (params["anyImage"], params["imageRepositories"], params["imageNamespaces"]) == (
        False, ["docker.io/library/ubuntu"], ["ghcr.io/acme/"])
    data = p.admission_configmap()["data"]
    assert data["imageRepositories"] == "docker.io/library/ubuntu" and data["anyImage"] == "false"
    assert data["forbiddenServiceAccounts"] == "my-dispatcher,sweepq-dispatcher"
    assert all(isinstance(v, str) for v in data.values())  # ConfigMap data are strings
    assert params["serviceAccounts"] == ["vision-trainer"]
    assert params["forbiddenServiceAccounts"] == ["my-dispatcher", "sweepq-dispatcher"]


def test_a_team_may_map_priorities_to_its_own_priority_classes() -> None:
    p = load(TWO_TEAMS.replace("nlp: {members: [\"AROANLP:*\", \"AIDAALICE\"]}",
                               "nlp: {members: [\"AROANLP:*\", \"AIDAALICE\"], priority_classes: "
                               "[{name: nlp-batch, min_priority: -1000}]}"))
    assert p.priority_class(600, "nlp") == "nlp-batch"
    assert p.priority_class(600, "vision") == "urgent" and p.priority_class(600) == "urgent"
    found = problems(TWO_TEAMS.replace("nlp: {members: [\"AROANLP:*\", \"AIDAALICE\"]}",
                                       "nlp: {members: [x], priority_classes: [{name: a, min_priority: 1}, "
                                       "{name: b, min_priority: 1}]}"))
    assert any("teams.nlp.priority_classes: two entries share a min_priority" in f for f in found), found
