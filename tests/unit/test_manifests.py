"""Manifests of the Kubernetes kinds: golden YAML, structural filling, phase tables. Pure, no cluster.

Regenerate the goldens after an intended change with ``SWEEPQ_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.backends import make_backend
from dispatcher.backends.batchjob import build_batchjob, job_progress
from dispatcher.backends.elasticjob import RETIRED, elasticjob_progress
from dispatcher.backends.kube_common import parse_time, render_yaml
from dispatcher.backends.kube_options import JobOptions
from dispatcher.backends.pytorchjob import SIGNAL_EXIT_LAUNCHER, build_pytorchjob, kubeflow_progress
from dispatcher.backends.template import build_from_template, fill_template, resource_of_template, template_progress
from dispatcher.backends.trainjob import build_trainjob, pods_tell_more, trainjob_progress
from dispatcher.core.errors import ConfigError, PermanentError
from dispatcher.core.jobs import JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy, PolicyError, TemplateSpec

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SWEEP_ID = "lr-sweep-abcdefgh"


def make_request(kind: str = "pytorchjob", *, argv: tuple[str, ...] = ("train.py", "--lr=0.1", "--batch-size=64"),
                 launcher: str | None = "torchrun", index: int = 3, attempt: int = 1,
                 request_env: dict[str, str] | None = None, raw_env: dict[str, str] | None = None,
                 **launch: Any) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image="registry.example/sweepq-trainer:1.2", **launch)
    if raw_env is not None:  # what validation refuses, as if stored before the rule existed (defence in depth)
        settings = settings.model_copy(update={"env": raw_env})
    return LaunchRequest(
        sweep_id=SWEEP_ID, trial_index=index, trial_id=f"{SWEEP_ID}-{index}", attempt=attempt,
        job_name=f"{SWEEP_ID}-{index}-a{attempt}", namespace="sweepq", params={"lr": 0.1},
        command=TrialCommand(argv=argv, launcher=launcher), launch=settings,
        env={"SWEEP_ID": SWEEP_ID, "TRIAL_INDEX": str(index), "WANDB_RUN_ID": f"{SWEEP_ID}-{index}"}
        if request_env is None else request_env,
    )


JOBSET_TEMPLATE: dict[str, Any] = {
    "apiVersion": "jobset.x-k8s.io/v1alpha2",
    "kind": "JobSet",
    "metadata": {"name": "{{job_name}}", "labels": {"owner": "team-{{team}}"}},
    "spec": {"replicatedJobs": [{
        "name": "workers",
        "replicas": "{{max_nodes | int}}",
        "template": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "trainer",
                "image": "{{image}}",
                "command": ["torchrun", "--nproc-per-node={{nproc_per_node}}", "{{args}}"],
                "env": [{"name": "TRIAL_ID", "value": "{{trial_id}}"},
                        {"name": "ATTEMPT", "value": "attempt-{{attempt}}"}],
                "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}},
            }],
        }}}},
    }]},
}

TEMPLATE_POLICY = Policy(templates={"jobset": TemplateSpec(manifest=JOBSET_TEMPLATE)})  # templates: operator-owned

PRIORITIES = JobOptions.build(kueue_priority_classes={-100: "sweepq-low", 0: "sweepq-normal", 100: "sweepq-high"})
CASES: dict[str, tuple[Any, LaunchRequest]] = {
    "pytorchjob": (build_pytorchjob, make_request(
        gpus_per_node=8, nodes="1:4", team="vision", kueue_queue="team-vision", max_runtime="6h",
        service_account="trainer", resources={"cpu": "32", "memory": "256Gi"}, env={"HF_HOME": "/cache/hf"})),
    "trainjob": (lambda r: build_trainjob(r, options=PRIORITIES), make_request(
        "trainjob", gpus_per_node=8, nodes=2, kueue_queue="team-nlp", priority=150, max_runtime="2h",
        service_account="sweepq-trainer", output_pvc="sweepq-outputs", resources={"memory": "512Gi"},
        request_env={"SWEEP_ID": SWEEP_ID, "TRIAL_INDEX": "3", "SWEEPQ_OUTPUT_DIR": "/outputs"})),
    "job": (build_batchjob, make_request("job", gpus_per_node=2, max_runtime=3600)),
    "job-cpu": (build_batchjob, make_request("job", argv=("python", "-m", "trainer", "--lr=0.1"), launcher=None,
                                             gpus_per_node=0, wandb_secret=None)),
    "template": (functools.partial(build_from_template, policy=TEMPLATE_POLICY),
                 make_request("template", gpus_per_node=8, nodes=2, team="vision", template="jobset")),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("SWEEPQ_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing — run with SWEEPQ_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} manifest changed — review, then SWEEPQ_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("name", list(CASES))
def test_manifest_matches_golden_yaml(name: str) -> None:
    build, request = CASES[name]
    manifest = build(request)
    rendered = render_yaml(manifest)
    check_golden(name, rendered)
    assert yaml.safe_load(rendered) == manifest  # the YAML says exactly what is created


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])  # the oldest and newest Kubernetes supported
def test_golden_batch_job_is_a_valid_kubernetes_job(version: str) -> None:
    import kubernetes_validate

    for name in ("job", "job-cpu"):
        kubernetes_validate.validate(yaml.safe_load((GOLDEN / f"{name}.yaml").read_text()), version, strict=True)


@pytest.mark.parametrize("name", list(CASES))
def test_every_job_and_pod_template_carries_the_sweepq_labels(name: str) -> None:
    build, request = CASES[name]
    manifest = build(request)
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "sweepq"
    assert (labels["sweepq.io/sweep-id"], labels["sweepq.io/trial-index"], labels["sweepq.io/attempt"]) == \
        (SWEEP_ID, "3", "1")
    assert manifest["metadata"]["name"] == request.job_name
    assert manifest["metadata"]["annotations"]["sweepq.io/gpus"] == str(request.launch.gpus_per_trial)
    pod_label_sets = [pod["metadata"]["labels"] for pod in _pod_templates(manifest)]
    assert pod_label_sets, "no pod template found"
    for pod_labels in pod_label_sets:
        assert pod_labels["sweepq.io/attempt"] == "1" and pod_labels["sweepq.io/job-name"] == request.job_name
        assert not any(key.startswith("kueue.x-k8s.io/") for key in pod_labels)  # Kueue admits the job, not each pod


def _pod_templates(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "TrainJob":
        [patch] = manifest["spec"]["runtimePatches"]
        return [job["template"]["spec"]["template"]
                for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    from dispatcher.backends.kube_common import walk_pod_templates

    return list(walk_pod_templates(manifest["spec"]))


def test_wandb_key_only_through_a_secret_ref_and_gpu_omitted_without_gpus() -> None:
    job = build_batchjob(make_request("job", gpus_per_node=0))
    main = job["spec"]["template"]["spec"]["containers"][0]
    wandb = [e for e in main["env"] if e["name"] == "WANDB_API_KEY"]
    assert wandb == [{"name": "WANDB_API_KEY",
                      "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key", "optional": True}}}]
    assert "resources" not in main
    with pytest.raises(PermanentError, match="WANDB_API_KEY.*Secret"):
        build_batchjob(make_request("job", request_env={"WANDB_API_KEY": "leaked"}))


def test_sweepqs_own_variables_win_over_the_senders_and_pod_name_comes_from_the_downward_api() -> None:
    # GIVEN a sender env that tries to override sweepq's identity variables (defence in depth
    # behind the policy's reserved names)
    request = make_request("job", raw_env={"SWEEP_ID": "victim-sweep", "WANDB_RUN_ID": "victim-3", "HF_HOME": "/hf"})
    # WHEN any kind renders it
    for manifest in (build_batchjob(request), build_pytorchjob(dataclasses.replace(
            request, launch=request.launch.model_copy(update={"kind": "pytorchjob"})))):
        env = _pod_templates(manifest)[0]["spec"]["containers"][0]["env"]
        values = {e["name"]: e.get("value", e.get("valueFrom")) for e in env}
        # THEN sweepq's values stand, the sender's harmless one is kept, POD_NAME is the pod's own name
        assert (values["SWEEP_ID"], values["WANDB_RUN_ID"], values["HF_HOME"]) == (SWEEP_ID, f"{SWEEP_ID}-3", "/hf")
        assert values["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert [e["name"] for e in env].count("POD_NAME") == 1
    trainer_env = build_trainjob(make_request("trainjob", gpus_per_node=0))["spec"]["trainer"]["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in trainer_env
    with pytest.raises(PermanentError, match="env.POD_NAME: set by sweepq"):
        build_batchjob(make_request("job", raw_env={"POD_NAME": "j-worker-0"}))


@pytest.mark.parametrize("kind", ["pytorchjob", "trainjob", "job"])
def test_through_the_real_request_path_a_sweeps_env_cannot_override_sweepqs_variables(kind: str) -> None:
    # GIVEN a sweep whose sweepq.env names sweepq's own variables (a raw SQS body can say anything)
    from dispatcher.core.spec import validate_sweep
    from dispatcher.settings import Settings
    from dispatcher.trials import launch_request

    sweep = validate_sweep({"name": "env", "method": "grid", "program": "train.py",
                            "parameters": {"lr": {"values": [0.1]}}}, source="t.yaml")
    # (validation refuses these names now; the render must still hold if one was stored before the rule)
    launch = LaunchSettings(kind=kind, gpus_per_node=0).model_copy(
        update={"env": {"SWEEP_ID": "victim-abcdefgh", "WANDB_RUN_ID": "victim-0", "HF_HOME": "/hf"}})
    request = launch_request(Settings.load({}, namespace="sweepq"), sweep, "env-abcdefgh", launch, 0, 1)
    # WHEN the backend renders the trial
    manifest = make_backend(kind, namespace="sweepq").dryrun(request).request
    env = manifest["spec"]["trainer"]["env"] if kind == "trainjob" else \
        _pod_templates(manifest)[0]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    # THEN sweepq's identity stands and the harmless variable is passed
    assert (values["SWEEP_ID"], values["WANDB_RUN_ID"], values["HF_HOME"]) == ("env-abcdefgh", "env-abcdefgh-0", "/hf")


def test_commands_per_kind_never_go_through_a_shell() -> None:
    job = build_batchjob(make_request("job", gpus_per_node=4))["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4", "--max-restarts=3"]
    assert job["args"] == ["train.py", "--lr=0.1", "--batch-size=64"]
    ptj = build_pytorchjob(make_request(gpus_per_node=4))["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert ptj["containers"][0]["command"] == ["python", "-c", SIGNAL_EXIT_LAUNCHER, "--nproc-per-node=4"]
    assert ptj["containers"][0]["name"] == "pytorch"
    verbatim = build_pytorchjob(make_request(argv=("python", "train.py"), launcher=None))
    assert verbatim["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"] == \
        ["python", "train.py"]


def _kubelet(text: str, env: dict[str, str]) -> str:
    """The kubelet's expansion of command/args/env values: ``$$`` → ``$``, ``$(NAME)`` → its value if defined."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize("kind", ["pytorchjob", "trainjob", "job"])
@pytest.mark.parametrize("launcher", ["torchrun", None])
def test_dollar_references_from_the_sweep_reach_the_trial_literally(kind: str, launcher: str | None) -> None:
    """Argv elements (torchrun or a full command) and env values from the sweep are written with
    ``$`` doubled: after the kubelet's ``$(VAR)`` expansion the trial sees exactly what the sweep
    said, never the value of WANDB_API_KEY or of another variable."""
    argv = ("train.py", "--note=$(WANDB_API_KEY)", "--cost=$$5", "--plain=$HOME")
    request = make_request(kind, argv=argv if launcher else ("python", *argv), launcher=launcher,
                           gpus_per_node=1, env={"NOTE": "$(SWEEP_ID)-$$"})
    manifest = {"pytorchjob": build_pytorchjob, "trainjob": build_trainjob, "job": build_batchjob}[kind](request)
    if kind == "trainjob":
        container = manifest["spec"]["trainer"]
    else:
        template = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"] if kind == "pytorchjob" \
            else manifest["spec"]["template"]
        [container] = template["spec"]["containers"]
    env = {"WANDB_API_KEY": "secret", "SWEEP_ID": SWEEP_ID, "HOME": "/tmp", "PET_MASTER_ADDR": "node-0",
           "PET_MASTER_PORT": "29400"}
    seen = [_kubelet(part, env) for part in [*container["command"], *container.get("args", [])]]
    assert seen[-3:] == ["--note=$(WANDB_API_KEY)", "--cost=$$5", "--plain=$HOME"], seen
    values = {e["name"]: _kubelet(e["value"], env) for e in container["env"] if "value" in e}
    assert values["NOTE"] == "$(SWEEP_ID)-$$"


def test_with_a_read_only_root_filesystem_the_output_dir_is_always_writable() -> None:
    def mounts(**launch: Any) -> dict[str, Any]:
        request = make_request("job", **launch)
        pod = build_batchjob(request)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        return {m["mountPath"]: volumes[m["name"]] for m in pod["containers"][0]["volumeMounts"]}

    assert set(mounts()) == {"/dev/shm", "/tmp"}  # the trainer's default output root is relative: under /tmp
    pvc = mounts(output_pvc="out", request_env={"SWEEPQ_OUTPUT_DIR": "/mnt/out"})
    assert pvc["/mnt/out"]["persistentVolumeClaim"] == {"claimName": "out"}
    # SWEEPQ_OUTPUT_DIR outside /tmp without a PVC: an emptyDir there (the image's /outputs is read-only now)
    assert mounts(request_env={"SWEEPQ_OUTPUT_DIR": "/outputs"})["/outputs"] == {"name": "outputs", "emptyDir": {}}
    assert set(mounts(request_env={"SWEEPQ_OUTPUT_DIR": "/tmp/out"})) == {"/dev/shm", "/tmp"}
    on_tmp = mounts(output_pvc="out", request_env={"SWEEPQ_OUTPUT_DIR": "/tmp"})
    assert set(on_tmp) == {"/dev/shm", "/tmp"} and on_tmp["/tmp"]["name"] == "outputs"  # the PVC is /tmp itself


@pytest.mark.parametrize("kind", ["pytorchjob", "trainjob", "job"])
def test_a_trial_without_gpus_sees_none_of_the_nodes_gpus(kind: str) -> None:
    """CUDA images set NVIDIA_VISIBLE_DEVICES=all: under NVIDIA's runtime a pod asking for no GPU
    would see them all. sweepq sets "void" for 0-GPU trials, over the sender's env."""
    build = {"pytorchjob": build_pytorchjob, "trainjob": build_trainjob, "job": build_batchjob}[kind]

    def env_of(**launch: Any) -> dict[str, str]:
        manifest = build(make_request(kind, **launch))
        if kind == "trainjob":
            entries = manifest["spec"]["trainer"]["env"]
        else:
            template = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"] if kind == "pytorchjob" \
                else manifest["spec"]["template"]
            entries = template["spec"]["containers"][0]["env"]
        return {e["name"]: e.get("value") for e in entries}

    assert env_of(gpus_per_node=0)["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env_of(gpus_per_node=0, raw_env={"NVIDIA_VISIBLE_DEVICES": "all"})["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(gpus_per_node=2)  # the device plugin names the pod's GPUs


def test_pytorchjob_puts_workers_per_node_in_spec_nproc_per_node_not_the_deprecated_elastic_field() -> None:
    spec = build_pytorchjob(make_request(gpus_per_node=4, nodes="2:4", max_restarts=5))["spec"]
    assert spec["nprocPerNode"] == "4" and "nProcPerNode" not in spec["elasticPolicy"]
    assert spec["elasticPolicy"] == {"rdzvBackend": "c10d", "minReplicas": 2, "maxReplicas": 4, "maxRestarts": 5}
    assert build_pytorchjob(make_request(gpus_per_node=0, nproc_per_node=3))["spec"]["nprocPerNode"] == "3"


def test_trainjob_uses_trainers_static_rendezvous_and_restarts_only_where_they_take_effect() -> None:
    single = build_trainjob(make_request("trainjob", gpus_per_node=8, max_restarts=2))["spec"]["trainer"]
    assert single["command"] == ["torchrun", "--standalone", "--max-restarts=2"]  # no DNS, restarts in place
    multi = build_trainjob(make_request("trainjob", gpus_per_node=8, nodes=4, max_restarts=5))["spec"]["trainer"]
    # static rendezvous from the runtime's PET_* (node rank 0 hosts): a worker failure fails the attempt
    assert multi["command"] == ["torchrun", "--max-restarts=0"]
    assert (multi["numNodes"], multi["numProcPerNode"]) == (4, 8)
    assert not {e["name"] for e in multi["env"]} & {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK",
                                                     "PET_MASTER_ADDR", "PET_MASTER_PORT"}


def test_trainjob_patches_the_node_pods_through_runtime_patches_and_refuses_what_its_crd_cannot_hold() -> None:
    manifest = build_trainjob(make_request("trainjob", service_account="sweepq-trainer", output_pvc="out",
                                           max_runtime="90m"), options=JobOptions.build(termination_grace_s=300))
    spec = manifest["spec"]
    assert "podTemplateOverrides" not in spec and spec["activeDeadlineSeconds"] == 5400
    [patch] = spec["runtimePatches"]
    assert patch["manager"] == "sweepq.io/dispatcher"
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]
    assert job["name"] == "node" and pod["metadata"]["labels"]["sweepq.io/job-name"] == f"{SWEEP_ID}-3-a1"
    assert pod["spec"]["serviceAccountName"] == "sweepq-trainer"
    # the grace period is the runtime's: Kueue v0.17-v0.19 round-trip TrainJobs through Trainer
    # v2.2 types, whose PodSpecPatch has no terminationGracePeriodSeconds
    assert "terminationGracePeriodSeconds" not in pod["spec"]
    [node] = pod["spec"]["containers"]
    assert node["name"] == "node" and "env" not in node  # the Trainer webhook refuses env in a node patch
    assert {m["name"]: m["mountPath"] for m in node["volumeMounts"]} == {"dshm": "/dev/shm", "tmp": "/tmp",
                                                                         "outputs": "/outputs"}
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"dshm", "tmp", "outputs"}
    many = tuple(f"--p{i}=1" for i in range(129))
    with pytest.raises(PermanentError, match="at most 128 in spec.trainer.args"):
        build_trainjob(make_request("trainjob", argv=("train.py", *many)))


def test_elasticjob_is_retired_with_a_migration_note_that_names_pytorchjob() -> None:
    backend = make_backend("elasticjob", namespace="sweepq", rdzv_endpoint="etcd:2379", ttl_seconds=60)
    with pytest.raises(PermanentError, match="kind: 'elasticjob' is retired .*apiextensions.k8s.io/v1beta1.*kind: "
                                             "pytorchjob with the same nodes: 'MIN:MAX'") as retired:
        backend.dryrun(make_request("elasticjob", gpus_per_node=4, nodes="2:4"))
    assert str(retired.value) == RETIRED


def test_trainjob_refuses_elastic_ranges_and_ttl_is_opt_in() -> None:
    with pytest.raises(PermanentError, match="fixed number of nodes.*nodes: 4"):
        build_trainjob(make_request("trainjob", nodes="1:4"))
    assert build_batchjob(make_request("job"), ttl_seconds=86400)["spec"]["ttlSecondsAfterFinished"] == 86400
    assert build_pytorchjob(make_request(), ttl_seconds=60)["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == 60


NASTY = ["; rm -rf /", "$(id)", "`reboot`", "\n  privileged: true", "{{image}}", "a: b\n- c", "--- !!python/object"]


def _shape(node: Any, path: str = "") -> set[str]:
    """Every key path and list index of ``node`` with the type of what sits there."""
    if isinstance(node, dict):
        return {f"{path}/{k}:dict" for k in node} | {p for k, v in node.items() for p in _shape(v, f"{path}/{k}")}
    if isinstance(node, list):
        return {f"{path}[{i}]:{type(v).__name__}" for i, v in enumerate(node)} | \
            {p for i, v in enumerate(node) for p in _shape(v, f"{path}[{i}]")}
    return {f"{path}={type(node).__name__}"}


@pytest.mark.parametrize("name", list(CASES))
def test_parameter_values_cannot_change_the_manifest_structure(name: str) -> None:
    build, request = CASES[name]
    benign_argv = tuple(f"--p{i}=x" for i in range(len(NASTY)))
    nasty_argv = tuple(f"--p{i}={value}" for i, value in enumerate(NASTY))
    runs = {}
    for label, argv in (("benign", benign_argv), ("nasty", nasty_argv)):
        req = dataclasses.replace(request, command=TrialCommand(argv=argv, launcher=request.command.launcher),
                                  env={**request.env, "NOTE": argv[-1]})
        runs[label] = build(req)
        assert yaml.safe_load(render_yaml(runs[label])) == runs[label]
    assert _shape(runs["nasty"]) == _shape(runs["benign"])
    assert render_yaml(runs["nasty"]).count("{{image}}") >= 1  # literal, never expanded


def test_template_is_filled_structurally_in_string_leaves_only() -> None:
    values = {"job_name": "j", "image": "img", "attempt": 2}
    template = {"metadata": {"name": "{{job_name}}"}, "spec": {"n": "{{attempt|int}}", "x": "a-{{ attempt }}",
                                                               "env": "{{attempt}}",
                                                               "cmd": ["run", "{{args}}", "--end"], "k": 5}}
    filled = fill_template(template, values, ["--lr={{image}}", "$(id)"])
    assert filled == {"metadata": {"name": "j"}, "spec": {"n": 2, "x": "a-2", "env": "2",
                                                          "cmd": ["run", "--lr={{image}}", "$(id)", "--end"], "k": 5}}
    with pytest.raises(PermanentError, match="must be the whole value"):
        fill_template({"x": "a-{{attempt | int}}"}, values, [])
    with pytest.raises(PermanentError, match="image is not a number"):
        fill_template({"x": "{{image | int}}"}, values, [])
    with pytest.raises(PermanentError, match="whole list element"):
        fill_template({"command": "python {{args}}"}, values, [])
    with pytest.raises(PermanentError, match="unknown placeholder {{imgae}}"):
        fill_template({"image": "{{imgae}}"}, values, [])
    with pytest.raises(PermanentError, match="never in keys"):
        fill_template({"{{job_name}}": 1}, values, [])


def test_template_resource_needs_a_known_or_declared_plural() -> None:
    assert resource_of_template(JOBSET_TEMPLATE).plural == "jobsets"
    custom = {"apiVersion": "example.com/v1", "kind": "Widget"}
    with pytest.raises(PermanentError, match="sweepq.io/plural"):
        resource_of_template(custom)
    assert resource_of_template({**custom, "metadata": {"annotations": {"sweepq.io/plural": "widgetz"}}}).plural == \
        "widgetz"
    assert resource_of_template(custom, {"Widget.example.com": "widgets"}).plural == "widgets"
    with pytest.raises(PermanentError, match="core kind"):
        resource_of_template({"apiVersion": "v1", "kind": "Pod"})
    with pytest.raises(PolicyError, match="metadata.name: sweepq sets it"):
        Policy.from_data({"templates": {"t": {"manifest": {**JOBSET_TEMPLATE, "metadata": {"name": "fixed"}}}}})
    with pytest.raises(PermanentError, match="team is not set"):
        build_from_template(make_request("template", template="jobset"), policy=TEMPLATE_POLICY)


def _cond(kind: str, status: str = "True", **extra: str) -> dict[str, str]:
    return {"type": kind, "status": status, "lastTransitionTime": "2026-01-01T00:10:00Z", **extra}


@pytest.mark.parametrize("status, phase", [
    ({}, JobPhase.PENDING),
    ({"conditions": [_cond("Created")]}, JobPhase.PENDING),
    ({"conditions": [_cond("Created"), _cond("Running")]}, JobPhase.RUNNING),
    ({"conditions": [_cond("Running"), _cond("Restarting")]}, JobPhase.RUNNING),
    ({"conditions": [_cond("Running"), _cond("Succeeded")]}, JobPhase.SUCCEEDED),
    ({"conditions": [_cond("Running"), _cond("Failed", reason="OOM", message="worker 0")]}, JobPhase.FAILED),
    ({"conditions": [_cond("Running", "False"), _cond("Suspended")]}, JobPhase.PENDING),
], ids=["empty", "created", "running", "restarting", "succeeded", "failed-over-stale-running", "suspended"])
def test_pytorchjob_phase_table(status: dict[str, Any], phase: JobPhase) -> None:
    progress = kubeflow_progress({"status": {"startTime": "2026-01-01T00:00:00Z", **status}})
    assert progress.phase is phase
    assert (progress.reason == "OOM: worker 0") == (phase is JobPhase.FAILED)
    assert progress.started_at == 1767225600.0
    assert (progress.finished_at == 1767226200.0) == phase.terminal


@pytest.mark.parametrize("status, phase", [
    ({"active": 1, "ready": 0}, JobPhase.PENDING),
    ({"active": 1, "ready": 1}, JobPhase.RUNNING),
    ({"active": 1}, JobPhase.RUNNING),  # clusters without the ready counter
    ({"conditions": [_cond("FailureTarget")], "active": 1}, JobPhase.RUNNING),
    ({"conditions": [_cond("Complete")]}, JobPhase.SUCCEEDED),
    ({"conditions": [_cond("Failed", reason="DeadlineExceeded")]}, JobPhase.FAILED),
], ids=["pending", "running", "running-no-ready", "failure-target", "complete", "failed"])
def test_batch_job_phase_table(status: dict[str, Any], phase: JobPhase) -> None:
    assert job_progress({"status": status}).phase is phase


@pytest.mark.parametrize("status, phase", [
    ({}, JobPhase.PENDING),
    ({"jobsStatus": [{"name": "node", "ready": 0, "active": 1}]}, JobPhase.PENDING),
    ({"jobsStatus": [{"name": "node", "ready": 1, "active": 1}]}, JobPhase.RUNNING),
    ({"conditions": [_cond("Suspended")]}, JobPhase.PENDING),
    ({"conditions": [_cond("Complete")]}, JobPhase.SUCCEEDED),
    ({"conditions": [_cond("Failed", reason="DeadlineExceeded")]}, JobPhase.FAILED),
], ids=["empty", "pending", "running", "suspended", "complete", "failed"])
def test_trainjob_phase_table(status: dict[str, Any], phase: JobPhase) -> None:
    assert trainjob_progress({"status": status}).phase is phase


T_RAN = "2026-01-01T10:00:00Z"


@pytest.mark.parametrize("container, phase", [
    ({"name": "node", "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
      "lastState": {"terminated": {"exitCode": 1, "startedAt": T_RAN}}}, JobPhase.RUNNING),
    ({"name": "node", "restartCount": 1, "state": {"running": {"startedAt": "2026-01-01T11:00:00Z"}}, "ready": False,
      "lastState": {"terminated": {"exitCode": 137, "startedAt": T_RAN}}}, JobPhase.RUNNING),
    ({"name": "node", "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}, JobPhase.PENDING),
    ({"name": "node", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}, JobPhase.PENDING),
], ids=["crash-restarting", "restarted-not-ready", "image-pull", "creating"])
def test_a_started_trainjob_whose_container_restarts_stays_running(container: dict[str, Any], phase: JobPhase) -> None:
    """JobSet's ready counter drops to 0 while one pod restarts its container: the pods tell a job
    that already ran (RUNNING, from when it first ran) from one that never started."""
    obj = {"status": {"jobsStatus": [{"name": "node", "ready": 0, "active": 2}]}}
    pods = [{"status": {"phase": "Running", "startTime": T_RAN, "containerStatuses": [container]}},
            {"status": {"phase": "Pending", "containerStatuses": [
                {"name": "node", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}]
    assert pods_tell_more(obj)
    progress = trainjob_progress(obj, pods)
    assert progress.phase is phase
    assert (progress.started_at == parse_time(T_RAN)) == (phase is JobPhase.RUNNING)
    assert trainjob_progress(obj).phase is JobPhase.PENDING  # without the pods: the counters alone
    held = {"spec": {"suspend": True}, **obj}
    assert not pods_tell_more(held)  # Kueue holds it: no pods to read


def _pod(phase: str, exit_code: int | None = None, reason: str = "Error") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "startTime": "2026-01-01T00:00:00Z"}
    if exit_code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {"exitCode": exit_code, "reason": reason,
                                                                 "finishedAt": "2026-01-01T01:00:00Z"}}}]
    return {"metadata": {"name": "p"}, "status": status}


@pytest.mark.parametrize("pods, phase, reason", [
    ([], JobPhase.PENDING, ""),
    ([_pod("Running"), _pod("Pending")], JobPhase.PENDING, ""),  # minReplicas 2 not reached
    ([_pod("Running"), _pod("Running"), _pod("Pending")], JobPhase.RUNNING, ""),
    ([_pod("Succeeded", 0), _pod("Succeeded", 0)], JobPhase.SUCCEEDED, ""),
    ([_pod("Succeeded", 0), _pod("Failed", 137, "OOMKilled")], JobPhase.FAILED, "OOMKilled (exit code 137)"),
    ([_pod("Failed", 1)], JobPhase.FAILED, "exit code 1"),
], ids=["no-pods", "below-min", "running", "succeeded", "oom", "exit-1"])
def test_elasticjob_phase_from_pods(pods: list[dict[str, Any]], phase: JobPhase, reason: str) -> None:
    job = {"spec": {"minReplicas": 2}, "status": {"conditions": [_cond("Created"), _cond("Running")]}}
    progress = elasticjob_progress(job, pods)
    assert (progress.phase, progress.reason) == (phase, reason)
    assert (progress.finished_at == 1767229200.0) == phase.terminal


def test_elasticjob_trusts_a_terminal_condition_when_pods_are_gone_and_generic_kinds_use_conditions() -> None:
    assert elasticjob_progress({"status": {"conditions": [_cond("Succeeded")]}}, []).phase is JobPhase.SUCCEEDED
    jobset = resource_of_template(JOBSET_TEMPLATE)
    assert template_progress(jobset, {"status": {"conditions": [_cond("Completed")]}}).phase is JobPhase.SUCCEEDED
    assert template_progress(jobset, {"status": {"conditions": [_cond("Failed", reason="x")]}}).reason == "x"
    assert template_progress(jobset, {}).phase is JobPhase.PENDING


def test_make_backend_registry() -> None:
    assert make_backend("trainjob", namespace="sweepq", runtime="torch-gpu").runtime == "torch-gpu"
    graced = make_backend("pytorchjob", namespace="sweepq", termination_grace_s=600)
    assert graced.dryrun(make_request())  # options reach the manifest:
    assert _pod_templates(graced.dryrun(make_request()).request)[0]["spec"]["terminationGracePeriodSeconds"] == 600
    with pytest.raises(ConfigError, match="termination_grace_s: -1"):
        make_backend("job", namespace="sweepq", termination_grace_s=-1)
    with pytest.raises(ConfigError, match="unknown kind 'slurm'"):
        make_backend("slurm", namespace="sweepq")
    dryrun = make_backend("job", namespace="sweepq").dryrun(make_request("job"))
    assert dryrun.kind == "job" and str(dryrun) == render_yaml(dryrun.request)
    with pytest.raises(PermanentError, match="namespace"):
        make_backend("job", namespace="other").dryrun(make_request("job"))
