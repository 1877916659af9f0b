"""Every manifest sweepq renders, for every kind and launch-setting combination, against upstream's
own models (tests/upstream_models.py: unknown fields = failure) and the Pod Security Standards
``restricted`` profile (tests/pod_security.py). Pure: no cluster.

GIVEN a launch setting combination, WHEN each Kubernetes kind renders trial 3's manifest, THEN
upstream's models keep every field with the value sent, the webhooks' rules hold, and every pod
the manifest makes is restricted, gracefully stoppable and names itself in POD_NAME.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_emulator import upstream_torch_runtime
from pod_security import restricted_violations, strategic_merge, trial_pods
from upstream_models import UpstreamInvalid, check, problems

from dispatcher.backends.batchjob import build_batchjob
from dispatcher.backends.kube_options import JobOptions
from dispatcher.backends.pytorchjob import build_pytorchjob
from dispatcher.backends.trainjob import SHIPPED_RUNTIME_GRACE_S, build_trainjob
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_RUNTIME = yaml.safe_load((ROOT / "infra/k8s/components/trainjob-runtime/runtime.yaml").read_text())
SWEEP = "lr-sweep-abcdefgh"
OPTIONS = JobOptions.build(termination_grace_s=300, kueue_priority_classes={0: "sweepq-normal", 100: "sweepq-high"})

# launch setting combinations (issue 13: single node, elastic range, GPUs, resources, output PVC,
# queue label, max_runtime; and service account, no W&B secret, a full command, sender env)
SETTINGS: dict[str, dict[str, Any]] = {
    "single-node-cpu": {"gpus_per_node": 0},
    "single-node-gpus": {"gpus_per_node": 8},
    "elastic-range": {"gpus_per_node": 4, "nodes": "2:4", "max_restarts": 5},
    "fixed-multi-node": {"gpus_per_node": 8, "nodes": 4},
    "resources": {"gpus_per_node": 2, "resources": {"cpu": "16", "memory": "128Gi"}},
    "output-pvc": {"output_pvc": "sweepq-outputs", "env": {"HF_HOME": "/outputs/hf"}},
    "queue-label": {"kueue_queue": "team-a", "team": "vision", "priority": 100},
    "max-runtime": {"max_runtime": "90m"},
    "service-account": {"service_account": "sweepq-trainer", "wandb_secret": None},
    "nproc-override": {"gpus_per_node": 8, "nproc_per_node": 4},
    "everything": {"gpus_per_node": 8, "nodes": 2, "resources": {"cpu": "32", "memory": "256Gi"},
                   "output_pvc": "sweepq-outputs", "kueue_queue": "team-a", "priority": -5, "max_runtime": "6h",
                   "service_account": "sweepq-trainer", "max_restarts": 0},
}
BUILDERS = {"pytorchjob": build_pytorchjob, "trainjob": build_trainjob, "job": build_batchjob}


def request(kind: str, settings: dict[str, Any], *, full_command: bool = False) -> LaunchRequest:
    launch = LaunchSettings.model_validate({"kind": kind, "image": "registry.example/sweepq-trainer:1.2", **settings})
    argv = ("python", "-m", "trainer", "--lr=0.1") if full_command else ("-m", "trainer", "--lr=0.1")
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=3, trial_id=f"{SWEEP}-3", attempt=2, job_name=f"{SWEEP}-3-a2", namespace="sweepq",
        params={"lr": 0.1}, command=TrialCommand(argv=argv, launcher=None if full_command else "torchrun"),
        launch=launch, env={"SWEEP_ID": SWEEP, "TRIAL_ID": f"{SWEEP}-3", "SWEEPQ_ATTEMPT": "2",
                            **({"SWEEPQ_OUTPUT_DIR": "/outputs"} if settings.get("output_pvc") else {})})


def cases() -> list[Any]:
    found = []
    for kind in BUILDERS:
        for name, settings in SETTINGS.items():
            if kind == "job" and ("nodes" in settings):
                continue  # kind job runs on one node: refused by LaunchSettings
            if kind == "trainjob" and ":" in str(settings.get("nodes", "")):
                continue  # a TrainJob has a fixed node count: refused by the builder (tested below)
            found.append(pytest.param(kind, settings, False, id=f"{kind}-{name}"))
        found.append(pytest.param(kind, {"gpus_per_node": 1}, True, id=f"{kind}-full-command"))
    return found


def render(kind: str, settings: dict[str, Any], full_command: bool) -> dict[str, Any]:
    return BUILDERS[kind](request(kind, settings, full_command=full_command), options=OPTIONS)


@pytest.mark.parametrize("kind, settings, full_command", cases())
def test_every_manifest_is_valid_against_upstreams_own_models(kind: str, settings: dict[str, Any],
                                                              full_command: bool) -> None:
    manifest = render(kind, settings, full_command)
    for runtime in ((upstream_torch_runtime(), SHIPPED_RUNTIME) if kind == "trainjob" else (None,)):
        assert problems(manifest, runtime=runtime) == []


@pytest.mark.parametrize("kind, settings, full_command", cases())
def test_every_trial_pod_is_restricted_graceful_and_knows_its_name(kind: str, settings: dict[str, Any],
                                                                   full_command: bool) -> None:
    manifest = render(kind, settings, full_command)
    runtimes = (upstream_torch_runtime(), SHIPPED_RUNTIME) if kind == "trainjob" else (None,)
    for runtime in runtimes:
        pods = trial_pods(manifest, runtime=runtime)
        assert pods
        for pod in pods:
            assert restricted_violations(pod) == []
            spec = pod["spec"]
            # TrainJob pods take the runtime's grace period (Kueue v0.17-v0.19's typed round trip drops a
            # patched one): the shipped runtime's 120 s; upstream's sets none (Kubernetes' 30 s)
            grace = 300 if kind != "trainjob" else 120 if runtime is SHIPPED_RUNTIME else None
            assert spec.get("terminationGracePeriodSeconds") == grace
            assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["fsGroup"] == 10001
            assert {v["name"]: v.get("emptyDir") for v in spec["volumes"]}["dshm"] == {"medium": "Memory"}
            [main] = [c for c in spec["containers"] if c["name"] in ("pytorch", "trainer", "node")]
            # a read-only root filesystem; /tmp (HOME and caches of the trainer image) is an emptyDir
            assert main["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
            assert {"name": "tmp", "emptyDir": {}} in spec["volumes"]
            assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in main["env"]
            if settings.get("service_account"):
                assert spec["serviceAccountName"] == "sweepq-trainer"
            if settings.get("output_pvc"):
                assert {"name": "outputs", "mountPath": "/outputs"} in main["volumeMounts"]
                assert {"name": "outputs", "persistentVolumeClaim": {"claimName": "sweepq-outputs"}} in spec["volumes"]
            if kind != "trainjob" or runtime is SHIPPED_RUNTIME:
                assert spec["automountServiceAccountToken"] is False
    labels = manifest["metadata"]["labels"]
    if settings.get("kueue_queue"):
        assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
        # Policy.priority_class: below the lowest threshold (0) no class, Kueue's default priority
        expected = "sweepq-high" if settings["priority"] >= 100 else "sweepq-normal" if settings["priority"] >= 0 else None
        assert labels.get("kueue.x-k8s.io/priority-class") == expected
    else:
        assert not any(key.startswith("kueue.x-k8s.io/") for key in labels)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_max_runtime_is_enforced_by_the_cluster_on_every_kind(kind: str) -> None:
    manifest = render(kind, {"max_runtime": "90m"}, False)
    deadline = {"pytorchjob": manifest["spec"].get("runPolicy", {}).get("activeDeadlineSeconds"),
                "trainjob": manifest["spec"].get("activeDeadlineSeconds"),
                "job": manifest["spec"].get("activeDeadlineSeconds")}[kind]
    assert deadline == 5400


@pytest.mark.parametrize("mangle, expected", [
    (lambda m: m["spec"].update(podTemplateOverrides=[{"targetJobs": [{"name": "node"}]}]),
     "spec.podTemplateOverrides: unknown field"),  # the Trainer v2.1 API, pruned by v2.2+
    (lambda m: m["spec"]["trainer"].update(numProcPerNode="auto"), "numProcPerNode"),
    (lambda m: m["spec"]["runtimePatches"][0].update(manager="sweepq"), "must be a domain-prefixed path"),
    (lambda m: m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
     .update(name="launcher"), "replicated job 'launcher' that doesn't exist in the runtime"),
    (lambda m: m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
     ["template"]["spec"]["template"]["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}]),
     "must not have envs for the node container"),
    (lambda m: m["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "3"}), "reserved envs"),
    (lambda m: m["spec"]["trainer"]["resourcesPerNode"]["limits"].update({"memory": "lots"}), "not a resource quantity"),
], ids=["pod-template-overrides", "nproc-string", "manager", "unknown-job", "node-env", "pet-env", "quantity"])
def test_the_trainjob_checks_catch_what_trainer_v2_3_would_prune_or_refuse(mangle: Any, expected: str) -> None:
    manifest = copy.deepcopy(render("trainjob", {"gpus_per_node": 8, "resources": {"memory": "8Gi"}}, False))
    mangle(manifest)
    with pytest.raises(UpstreamInvalid, match=expected):
        check(manifest)


@pytest.mark.parametrize("kind, mangle, expected", [
    ("pytorchjob", lambda m: m["spec"]["elasticPolicy"].update(nProcPerNode=8), "nProcPerNode: deprecated"),
    ("pytorchjob", lambda m: m["spec"].update(nprocPerNode=8), "nprocPerNode: expected str"),
    ("pytorchjob", lambda m: m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
     .update(name="main"), "container with name pytorch"),
    ("pytorchjob", lambda m: m["spec"]["runPolicy"].update(suspendd=True), "runPolicy.suspendd: unknown field"),
    ("job", lambda m: m["spec"]["template"]["spec"].update(restartPolicy="Always"), "Never or OnFailure"),
    ("job", lambda m: m["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "cache", "mountPath": "/cache"}), "'cache' names no volume"),
    ("job", lambda m: m["spec"]["template"]["spec"]["containers"][0].update(securityContex={}),
     "securityContex: unknown field"),
], ids=["deprecated-nproc", "nproc-int", "container-name", "run-policy-typo", "restart-policy", "mount", "typo"])
def test_the_v1_and_core_checks_catch_what_the_operator_or_api_server_would_prune_or_refuse(
        kind: str, mangle: Any, expected: str) -> None:
    manifest = copy.deepcopy(render(kind, {"gpus_per_node": 8}, False))
    mangle(manifest)
    with pytest.raises(UpstreamInvalid, match=expected):
        check(manifest)


def test_restricted_checker_refuses_what_pod_security_admission_refuses() -> None:
    pod = trial_pods(render("job", {"gpus_per_node": 1}, False))[0]
    assert restricted_violations(pod) == []
    hostile = copy.deepcopy(pod)
    hostile["spec"].update(hostPID=True, volumes=[*hostile["spec"]["volumes"], {"name": "root", "hostPath": {"path": "/"}}])
    container = hostile["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    hostile["spec"]["securityContext"] = {"runAsUser": 0}
    found = restricted_violations(hostile)
    for expected in ("hostPID", "hostPath volume 'root'", "privileged", "allowPrivilegeEscalation",
                     "capabilities.drop does not include ALL", "capabilities.add ['SYS_ADMIN']", "pod runAsUser=0",
                     "runAsNonRoot != true", "seccompProfile None"):
        assert any(expected in problem for problem in found), (expected, found)


def test_the_shipped_trainjob_runtime_is_valid_restricted_and_sets_what_patches_cannot() -> None:
    check(SHIPPED_RUNTIME)
    [job] = SHIPPED_RUNTIME["spec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]
    assert restricted_violations(pod) == []
    assert (pod["spec"]["automountServiceAccountToken"], pod["spec"]["enableServiceLinks"]) == (False, False)
    assert job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    assert job["template"]["spec"]["backoffLimit"] == 0  # one attempt per job: sweepq retries
    # the grace period lives here (a patched one does not survive Kueue v0.17-v0.19), and the
    # finished JobSets are cleaned up (Trainer keeps the finished TrainJob's status without them)
    assert pod["spec"]["terminationGracePeriodSeconds"] == SHIPPED_RUNTIME_GRACE_S == 120
    assert SHIPPED_RUNTIME["spec"]["template"]["spec"]["ttlSecondsAfterFinished"] == 3600


def test_strategic_merge_merges_by_key_like_the_api() -> None:
    base = {"containers": [{"name": "node", "env": [{"name": "A", "value": "1"}]}], "volumes": [{"name": "x"}]}
    patch = {"containers": [{"name": "node", "env": [{"name": "B", "value": "2"}]}, {"name": "side"}],
             "volumes": [{"name": "x", "emptyDir": {}}]}
    assert strategic_merge(base, patch) == {
        "containers": [{"name": "node", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                       {"name": "side"}],
        "volumes": [{"name": "x", "emptyDir": {}}]}
