"""Kind ``template`` with operator-owned templates: what the filled manifest always holds, whatever
the template or the sweep says. Pure: manifests are built, not sent (the emulator tests send them)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dispatcher.backends import make_backend
from dispatcher.backends.template import build_from_template
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.podsecurity import restricted_problems
from dispatcher.core.policy import Policy, PolicyError, TemplateSpec

SWEEP = "lr-sweep-abcdefgh"


def batch_job(**container: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}},
            "spec": {"parallelism": "{{max_nodes | int}}", "template": {"spec": {
                "restartPolicy": "Never", "serviceAccountName": "{{service_account}}",
                "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"],
                                "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}, **container}]}}}}


def policy(manifest: dict[str, Any], **extra: Any) -> Policy:
    return Policy.from_data({"templates": {"t": {"manifest": manifest}}, **extra})


def request(**launch: Any) -> LaunchRequest:
    settings = LaunchSettings.model_validate({"kind": "template", "template": "t", "image": "registry.example/t:1",
                                              "service_account": "sweepq-trainer", "gpus_per_node": 2, **launch})
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=3, trial_id=f"{SWEEP}-3", attempt=2, job_name=f"{SWEEP}-3-a2", namespace="sweepq",
        params={"lr": 0.1}, command=TrialCommand(argv=("train.py", "--lr=0.1"), launcher=None), launch=settings,
        env={"SWEEP_ID": SWEEP, "TRIAL_ID": f"{SWEEP}-3", "SWEEPQ_ATTEMPT": "2", "WANDB_RUN_ID": f"{SWEEP}-3"},
    )


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec(manifest)["containers"][0]["env"]}


def test_a_named_template_is_filled_with_sweepqs_labels_env_and_restricted_pods() -> None:
    manifest = build_from_template(request(nodes=1, env={"HF_HOME": "/tmp/hf"}), policy=policy(batch_job()))
    assert manifest["metadata"]["name"] == f"{SWEEP}-3-a2" and manifest["metadata"]["namespace"] == "sweepq"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sweepq"  # ours win over the template's
    assert manifest["metadata"]["annotations"]["sweepq.io/gpus"] == "2"
    spec = pod_spec(manifest)
    assert spec["containers"][0]["command"] == ["python", "train.py", "--lr=0.1"]
    assert spec["serviceAccountName"] == "sweepq-trainer" and spec["automountServiceAccountToken"] is False
    assert restricted_problems(manifest) == []
    env = env_of(manifest)
    assert env["HF_HOME"] == "/tmp/hf" and env["SWEEP_ID"] == SWEEP and env["SWEEPQ_ATTEMPT"] == "2"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["WANDB_API_KEY"] == {"secretKeyRef": {"name": "wandb", "key": "api-key", "optional": True}}


def test_sweepqs_variables_replace_the_templates_and_the_template_beats_the_sender() -> None:
    template = batch_job(env=[{"name": "TRIAL_ID", "value": "spoofed"}, {"name": "SWEEP_ID", "value": "other-sweep"},
                              {"name": "HF_HOME", "value": "/cache"}, {"name": "POD_NAME", "value": "fake"}])
    manifest = build_from_template(request(env={"HF_HOME": "/mine", "OMP_NUM_THREADS": "4"}), policy=policy(template))
    entries = pod_spec(manifest)["containers"][0]["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    env = env_of(manifest)
    assert (env["TRIAL_ID"], env["SWEEP_ID"]) == (f"{SWEEP}-3", SWEEP)
    assert env["HF_HOME"] == "/cache" and env["OMP_NUM_THREADS"] == "4"  # the operator's value, then the sender's
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_the_wandb_key_comes_only_from_a_secret() -> None:
    own_ref = {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "team-key", "key": "k"}}}
    manifest = build_from_template(request(), policy=policy(batch_job(env=[own_ref])))
    assert env_of(manifest)["WANDB_API_KEY"] == {"secretKeyRef": {"name": "team-key", "key": "k"}}
    assert "WANDB_API_KEY" not in env_of(build_from_template(request(wandb_secret=None), policy=policy(batch_job())))
    literal = {"name": "WANDB_API_KEY", "value": "0123456789abcdef"}
    with pytest.raises(PermanentError, match="WANDB_API_KEY: a literal value") as info:
        build_from_template(request(), policy=policy(batch_job(env=[literal])))
    assert "0123456789abcdef" not in str(info.value)


def test_only_templates_of_the_policy_exist() -> None:
    with pytest.raises(PermanentError, match="'nope' is not a template of the operator policy — use one of t"):
        build_from_template(request(template="nope"), policy=policy(batch_job()))
    with pytest.raises(PermanentError, match="the operator has defined no templates"):
        make_backend("template", namespace="sweepq").dryrun(request())  # no policy given: the default, no templates


def test_gpus_the_caps_cannot_see_are_refused() -> None:
    hard_coded = batch_job(resources={"limits": {"nvidia.com/gpu": 8}})
    with pytest.raises(PermanentError, match="asks for 8 GPUs but the sweep declares gpus_per_node × max_nodes = 2"):
        build_from_template(request(), policy=policy(hard_coded))
    assert build_from_template(request(gpus_per_node=8), policy=policy(hard_coded))["metadata"]["annotations"][
        "sweepq.io/gpus"] == "8"
    four = build_from_template(request(gpus_per_node=2, nodes=2), policy=policy(batch_job()))  # parallelism 2 × 2
    assert four["metadata"]["annotations"]["sweepq.io/gpus"] == "4"
    limited = policy(batch_job(), limits={"gpus_per_trial": 2})
    with pytest.raises(PermanentError, match="the operator policy allows at most 2 per trial"):
        build_from_template(request(gpus_per_node=4), policy=limited)


def unchecked(manifest: dict[str, Any]) -> Policy:
    """A policy built around the load-time checks (as a future code path might): the backend must
    refuse on its own what the loader would have refused — defence in depth."""
    return Policy.model_construct(templates={"t": TemplateSpec.model_construct(
        manifest=manifest, description="", teams=None, plural=None, pod_name_pattern=None)})


@pytest.mark.parametrize("mutate, fragment", [
    (lambda m: m["spec"]["template"]["spec"].update(hostPID=True), "spec.hostPID: true"),
    (lambda m: m["spec"]["template"]["spec"].update(volumes=[{"name": "r", "hostPath": {"path": "/"}}]),
     "hostPath volumes are not allowed"),
    (lambda m: m["spec"]["template"]["spec"]["containers"][0].update(securityContext={"privileged": True}),
     "privileged: true"),
    (lambda m: m["spec"]["template"]["spec"].update(serviceAccountName="sweepq-dispatcher"),
     "'sweepq-dispatcher' is the dispatcher's own ServiceAccount"),
])
def test_the_backend_refuses_unsafe_templates_even_past_the_loader(mutate: Any, fragment: str) -> None:
    manifest = copy.deepcopy(batch_job())
    mutate(manifest)
    with pytest.raises(PermanentError, match="load|Pod Security|ServiceAccount") as info:
        build_from_template(request(), policy=unchecked(manifest))
    assert fragment in str(info.value)


def test_a_custom_kinds_plural_from_the_policy_entry_reaches_submit() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "{{image}}", "command": ["{{args}}"]}]}}}}
    p = Policy.from_data({"templates": {"t": {"manifest": widget, "plural": "widgetz"}}})
    backend = make_backend("template", namespace="sweepq", policy=p)
    dryrun = backend.dryrun(request(gpus_per_node=0))
    assert dryrun.request["metadata"]["annotations"]["sweepq.io/plural"] == "widgetz"
    assert backend.resource_of(dryrun.request).plural == "widgetz"
    assert [(r.group, r.plural) for r in backend.resources()] == [("example.com", "widgetz")]


def test_the_backend_follows_a_reloaded_policy() -> None:
    current = {"policy": Policy.default()}
    backend = make_backend("template", namespace="sweepq", policy=lambda: current["policy"])
    assert backend.resources() == []
    with pytest.raises(PermanentError):
        backend.dryrun(request())
    current["policy"] = policy(batch_job())
    assert backend.dryrun(request()).request["kind"] == "Job"
    assert [(r.group, r.plural) for r in backend.resources()] == [("batch", "jobs")]


# -- rev11p: what the loader and the backend check alike ---------------------------------------------

def test_a_template_usable_by_one_team_is_refused_to_another_when_rendered() -> None:
    p = Policy.from_data({"teams": {"a": {"members": ["AIDAA"]}, "b": {"members": ["AIDAB"]}},
                          "templates": {"t": {"manifest": batch_job(), "teams": ["a"]}}})
    assert build_from_template(request(team="a"), policy=p)["kind"] == "Job"
    with pytest.raises(PermanentError, match="reserved for team\\(s\\) a — the sweep's team is b"):
        build_from_template(request(team="b"), policy=p)


def test_the_rendered_service_account_must_be_one_the_sweeps_team_may_use() -> None:
    p = Policy.from_data({"teams": {"a": {"members": ["AIDAA"], "service_accounts": ["a-trainer"]},
                                    "b": {"members": ["AIDAB"]}},
                          "templates": {"t": {"manifest": batch_job()}}})
    assert pod_spec(build_from_template(request(team="a", service_account="a-trainer"), policy=p))[
        "serviceAccountName"] == "a-trainer"
    with pytest.raises(PermanentError, match="'a-trainer' is not a ServiceAccount this sweep's team may use"):
        build_from_template(request(team="b", service_account="a-trainer"), policy=p)
    required = p.model_copy(update={"service_account_required": True})
    unnamed = batch_job()
    del unnamed["spec"]["template"]["spec"]["serviceAccountName"]
    with pytest.raises(PermanentError, match="names no ServiceAccount and the policy requires one"):
        build_from_template(request(team="a"), policy=required.model_copy(update={
            "templates": {"t": TemplateSpec(manifest=unnamed)}}))


@pytest.mark.parametrize("manifest, fragment", [
    (batch_job(), None),
    ({**batch_job(), "spec": {"template": {"spec": {**batch_job()["spec"]["template"]["spec"],
                                                    "serviceAccountName": "other-sa"}}}},
     "serviceAccountName 'other-sa' is none of the ServiceAccounts the template's teams may use"),
    (batch_job(envFrom=[{"secretRef": {"name": "creds-{{kueue_queue}}"}}]), "envFrom[0].secretRef.name: {{kueue_queue}}"),
    ({**batch_job(), "spec": {"template": {"spec": {**batch_job()["spec"]["template"]["spec"], "volumes": [
        {"name": "v", "persistentVolumeClaim": {"claimName": "{{sweep_id}}"}}]}}}}, "claimName: {{sweep_id}}"),
    (batch_job(env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "{{team}}-key", "key": "k"}}}]),
     "secretKeyRef.name: {{team}}"),  # a policy without teams: {{team}} is only the sender's claim
    ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "spec": {"templates": [
        {"name": "main", "container": {"image": "{{image}}", "command": ["{{args}}"]}}]}},
     "manifest.spec.templates[0].container is a container outside a pod template"),
], ids=["ok", "literal-sa", "queue-in-secret-name", "sweep-id-in-pvc", "team-without-teams", "argo"])
def test_what_a_template_may_not_be_is_refused_when_the_policy_loads(manifest: dict[str, Any],
                                                                    fragment: str | None) -> None:
    extra = {"plural": "workflows"} if manifest["kind"] == "Workflow" else {}
    if fragment is None:
        Policy.from_data({"templates": {"t": {"manifest": manifest, **extra}}})
        return
    with pytest.raises(PolicyError) as info:
        Policy.from_data({"templates": {"t": {"manifest": manifest, **extra}}})
    assert fragment in str(info.value)


def test_a_teams_own_secret_may_be_named_from_its_verified_team() -> None:
    manifest = batch_job(env=[{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-{{team}}", "key": "t"}}}])
    p = Policy.from_data({"teams": {"a": {"members": ["AIDAA"]}}, "templates": {"t": {"manifest": manifest}}})
    assert env_of(build_from_template(request(team="a"), policy=p))["HF_TOKEN"]["secretKeyRef"]["name"] == "hf-a"


def test_the_backend_refuses_an_unverified_reference_even_past_the_loader() -> None:
    bad = batch_job(envFrom=[{"secretRef": {"name": "{{kueue_queue}}"}}])
    with pytest.raises(PermanentError, match="secretRef.name: {{kueue_queue}}"):
        build_from_template(request(kueue_queue="victim"), policy=unchecked(bad))


def test_sender_values_reach_the_container_as_literals_not_kubelet_expansions() -> None:
    """The kubelet expands $(VAR) in command, args and env values: an argument or env value
    '$(WANDB_API_KEY)' would become the key. '$$' is the kubelet's literal '$'."""
    req = request(env={"MODE": "$(WANDB_API_KEY)"})
    req = LaunchRequest(**{**req.__dict__, "command": TrialCommand(argv=("train.py", "--x=$(WANDB_API_KEY)"),
                                                                   launcher=None)})
    manifest = build_from_template(req, policy=policy(batch_job()))
    container = pod_spec(manifest)["containers"][0]
    assert container["command"] == ["python", "train.py", "--x=$$(WANDB_API_KEY)"]
    assert env_of(manifest)["MODE"] == "$$(WANDB_API_KEY)"


def test_a_container_without_gpus_cannot_see_the_nodes_gpus() -> None:
    """CUDA base images set NVIDIA_VISIBLE_DEVICES=all; the NVIDIA runtime honours it for a
    container the device plugin gave no GPU."""
    cpu = build_from_template(request(gpus_per_node=0), policy=policy(batch_job(resources={})))
    assert env_of(cpu)["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(build_from_template(request(), policy=policy(batch_job())))
    own = batch_job(resources={}, env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"}])
    assert env_of(build_from_template(request(gpus_per_node=0), policy=policy(own)))["NVIDIA_VISIBLE_DEVICES"] == "none"


def test_the_gpu_annotation_is_never_below_what_the_planner_counted() -> None:
    cpu_template = policy(batch_job(resources={}))
    assert build_from_template(request(gpus_per_node=2), policy=cpu_template)["metadata"]["annotations"][
        "sweepq.io/gpus"] == "2"
