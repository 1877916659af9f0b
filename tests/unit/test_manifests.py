"""Manifests of the Kubernetes kinds: golden YAML, structural filling, phase tables. Pure, no cluster.

Regenerate the goldens after an intended change with ``SWEEPQ_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.backends import make_backend
from dispatcher.backends.batchjob import build_batchjob, job_progress
from dispatcher.backends.elasticjob import build_elasticjob, elasticjob_progress
from dispatcher.backends.kube_common import render_yaml
from dispatcher.backends.pytorchjob import build_pytorchjob, kubeflow_progress
from dispatcher.backends.template import build_from_template, fill_template, resource_of_template, template_progress
from dispatcher.backends.trainjob import build_trainjob, trainjob_progress
from dispatcher.core.errors import ConfigError, PermanentError
from dispatcher.core.jobs import LaunchRequest, TrialCommand, JobPhase
from dispatcher.core.launch import LaunchSettings

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SWEEP_ID = "lr-sweep-abcdefgh"


def make_request(kind: str = "pytorchjob", *, argv: tuple[str, ...] = ("train.py", "--lr=0.1", "--batch-size=64"),
                 launcher: str | None = "torchrun", index: int = 3, attempt: int = 1,
                 request_env: dict[str, str] | None = None, **launch: Any) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image="registry.example/sweepq-trainer:1.2", **launch)
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

CASES: dict[str, tuple[Any, LaunchRequest]] = {
    "pytorchjob": (build_pytorchjob, make_request(
        gpus_per_node=8, nodes="1:4", team="vision", kueue_queue="team-vision", max_runtime="6h",
        service_account="trainer", resources={"cpu": "32", "memory": "256Gi"}, env={"HF_HOME": "/cache/hf"})),
    "elasticjob": (build_elasticjob, make_request("elasticjob", gpus_per_node=4, nodes="2:4", max_restarts=5)),
    "trainjob": (build_trainjob, make_request("trainjob", gpus_per_node=8, nodes=2, kueue_queue="team-nlp",
                                              resources={"memory": "512Gi"})),
    "job": (build_batchjob, make_request("job", gpus_per_node=2, max_runtime=3600)),
    "job-cpu": (build_batchjob, make_request("job", argv=("python", "-m", "trainer", "--lr=0.1"), launcher=None,
                                             gpus_per_node=0, wandb_secret=None)),
    "template": (build_from_template, make_request("template", gpus_per_node=8, nodes=2, team="vision",
                                                   template=JOBSET_TEMPLATE)),
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


def test_golden_batch_job_is_a_valid_kubernetes_job() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for name in ("job", "job-cpu"):
        kubernetes_validate.validate(yaml.safe_load((GOLDEN / f"{name}.yaml").read_text()), "1.30", strict=True)


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
        assert "kueue.x-k8s.io/queue-name" not in pod_labels  # Kueue admits the job, not each pod


def _pod_templates(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "TrainJob":
        return manifest["spec"]["podTemplateOverrides"]
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


def test_commands_per_kind_never_go_through_a_shell() -> None:
    job = build_batchjob(make_request("job", gpus_per_node=4))["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["torchrun", "--standalone", "--nnodes=1", "--nproc-per-node=4", "--max-restarts=3"]
    assert job["args"] == ["train.py", "--lr=0.1", "--batch-size=64"]
    ptj = build_pytorchjob(make_request())["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert ptj["containers"][0]["command"] == ["torchrun"] and ptj["containers"][0]["name"] == "pytorch"
    verbatim = build_pytorchjob(make_request(argv=("python", "train.py"), launcher=None))
    assert verbatim["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["command"] == \
        ["python", "train.py"]
    with pytest.raises(PermanentError, match="elasticjob runs the trial under torchrun"):
        build_elasticjob(make_request("elasticjob", launcher=None))


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
    with pytest.raises(PermanentError, match="metadata.name"):
        build_from_template(make_request("template", template={**JOBSET_TEMPLATE, "metadata": {"name": "fixed"}}))
    with pytest.raises(PermanentError, match="team is not set"):
        build_from_template(make_request("template", template=JOBSET_TEMPLATE))


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
    backend = make_backend("elasticjob", namespace="sweepq", rdzv_endpoint="etcd:2379")
    assert backend.kind == "elasticjob" and backend.rdzv_endpoint == "etcd:2379"
    assert make_backend("trainjob", namespace="sweepq", runtime="torch-gpu").runtime == "torch-gpu"
    with pytest.raises(ConfigError, match="unknown kind 'slurm'"):
        make_backend("slurm", namespace="sweepq")
    dryrun = make_backend("job", namespace="sweepq").dryrun(make_request("job"))
    assert dryrun.kind == "job" and str(dryrun) == render_yaml(dryrun.request)
    with pytest.raises(PermanentError, match="namespace"):
        make_backend("job", namespace="other").dryrun(make_request("job"))
