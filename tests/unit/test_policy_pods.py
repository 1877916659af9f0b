"""The pure pieces under the operator policy: Pod Security ``restricted`` on arbitrary manifests,
GPU counting from filled resource requests, image references and quantities, reserved env names."""

from __future__ import annotations

import copy
import re
from decimal import Decimal
from typing import Any

import pytest

from dispatcher.core.envnames import reserved_reason
from dispatcher.core.podsecurity import manifest_gpus, restricted_problems, secure_pods
from dispatcher.core.refs import image_allowed, normalise_image_prefix, parse_image, parse_quantity


def job(pod_spec: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {**spec, "template": {"spec": pod_spec}}}


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "c", "image": "i", **extra}


# -- Pod Security restricted ------------------------------------------------------------------------

def test_secure_pods_fills_the_restricted_settings_a_manifest_leaves_out() -> None:
    manifest = secure_pods(job({"containers": [container()], "initContainers": [container(name="init")]}))
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"] + pod["initContainers"]:
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert restricted_problems(manifest) == []


def test_a_bare_manifest_breaks_restricted_until_secured() -> None:
    problems = restricted_problems(job({"containers": [container()]}))
    assert any("allowPrivilegeEscalation: must be false" in p for p in problems)
    assert any("capabilities.drop: must include ALL" in p for p in problems)
    assert any("runAsNonRoot is not true" in p for p in problems)
    assert any("seccompProfile" in p for p in problems)


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "privileged": ({"containers": [container(securityContext={"privileged": True})]}, "privileged: true"),
    "hostPID": ({"hostPID": True, "containers": [container()]}, "spec.hostPID: true"),
    "hostNetwork": ({"hostNetwork": True, "containers": [container()]}, "spec.hostNetwork: true"),
    "hostIPC": ({"hostIPC": True, "containers": [container()]}, "spec.hostIPC: true"),
    "hostPath": ({"containers": [container()], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
                 "hostPath volumes are not allowed"),
    "nfs volume": ({"containers": [container()], "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]},
                   "nfs volumes are not allowed"),
    "added capability": ({"containers": [container(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})]},
                         "capabilities.add: ['SYS_ADMIN']"),
    "escalation": ({"containers": [container(securityContext={"allowPrivilegeEscalation": True})]},
                   "allowPrivilegeEscalation: must be false"),
    "root user": ({"securityContext": {"runAsUser": 0}, "containers": [container()]}, "runAsUser: 0 is root"),
    "runAsNonRoot false": ({"securityContext": {"runAsNonRoot": False}, "containers": [container()]},
                           "runAsNonRoot: false"),
    "unconfined seccomp": ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [container()]},
                           "seccompProfile.type: 'Unconfined'"),
    "host port": ({"containers": [container(ports=[{"containerPort": 80, "hostPort": 80}])]}, "hostPort: 80"),
    "unsafe sysctl": ({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
                       "containers": [container()]}, "'kernel.msgmax' is not a safe sysctl"),
    "procMount": ({"containers": [container(securityContext={"procMount": "Unmasked"})]}, "procMount: 'Unmasked'"),
    "selinux user": ({"securityContext": {"seLinuxOptions": {"user": "root"}}, "containers": [container()]},
                     "seLinuxOptions"),
    "privileged init container": ({"containers": [container()], "initContainers": [
        container(name="setup", securityContext={"privileged": True})]}, "initContainers[0] ('setup')"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_what_a_manifest_sets_explicitly_against_restricted_is_refused(name: str) -> None:
    pod, fragment = HOSTILE[name]
    problems = restricted_problems(secure_pods(job(copy.deepcopy(pod))))
    assert any(fragment in p for p in problems), problems


def test_problems_name_the_pod_of_a_multi_pod_manifest() -> None:
    manifest = {"kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "template": {"spec": {"containers": [container()]}}},
        "Worker": {"replicas": 2, "template": {"spec": {"hostNetwork": True, "containers": [container()]}}}}}}
    problems = restricted_problems(secure_pods(manifest))
    assert len(problems) == 1 and ".pod[" in problems[0] and "hostNetwork" in problems[0]


# -- GPUs ---------------------------------------------------------------------------------------

def gpus(n: Any, section: str = "limits") -> dict[str, Any]:
    return {"resources": {section: {"nvidia.com/gpu": n}}}


@pytest.mark.parametrize("manifest, expected", [
    (job({"containers": [container(**gpus(4))]}), 4),
    (job({"containers": [container(**gpus("2")), container(name="side", **gpus(1, "requests"))]}, parallelism=3), 9),
    (job({"containers": [container(**gpus(1))], "initContainers": [container(name="i", **gpus(2))]}), 2),
    (job({"containers": [container(resources={"limits": {"amd.com/gpu": 2, "cpu": "4"}})]}), 2),
    ({"kind": "JobSet", "spec": {"replicatedJobs": [
        {"name": "w", "replicas": 2, "template": {"spec": {"parallelism": 4, "template": {"spec": {
            "containers": [container(**gpus(8))]}}}}},
        {"name": "driver", "replicas": 1, "template": {"spec": {"template": {"spec": {"containers": [container()]}}}}},
    ]}}, 64),
    ({"kind": "PyTorchJob", "spec": {"elasticPolicy": {"minReplicas": 1, "maxReplicas": 4}, "pytorchReplicaSpecs": {
        "Worker": {"replicas": 1, "template": {"spec": {"containers": [container(**gpus(8))]}}}}}}, 32),
    ({"kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1, "template": {"spec": {"containers": [container(**gpus(2))]}}},
        "Worker": {"replicas": 3, "template": {"spec": {"containers": [container(**gpus(2))]}}}}}}, 8),
    ({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {"trainer": {
        "numNodes": 2, "resourcesPerNode": {"limits": {"nvidia.com/gpu": 8}}}}}, 16),
    (job({"containers": [container()]}), 0),
], ids=["job", "parallelism-and-sidecar", "init-container", "amd", "jobset", "pytorchjob-elastic",
        "pytorchjob-master-worker", "trainjob", "cpu"])
def test_gpus_are_counted_from_the_filled_requests_times_replicas(manifest: dict[str, Any], expected: int) -> None:
    assert manifest_gpus(manifest) == expected


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": spec}


@pytest.mark.parametrize("manifest, expected", [
    (job({"containers": [container(resources={"limits": {"nvidia.com/mig-1g.10gb": 2}})]}), 2),
    (job({"containers": [container(resources={"limits": {"nvidia.com/gpu.shared": 1}})]}, parallelism=2), 2),
    (job({"containers": [container(resources={"limits": {"aws.amazon.com/neuroncore": 2, "habana.ai/gaudi": 1}})]}), 3),
    # a sidecar (restartPolicy: Always) runs next to the containers: 2 + 2; an ordinary init container
    # runs before them, next to the sidecars declared before it: max(2 + 3, 2 + 2)
    (job({"containers": [container(**gpus(2))], "initContainers": [
        container(name="side", restartPolicy="Always", **gpus(2)), container(name="init", **gpus(3))]}), 5),
    (job({"containers": [container(**gpus(2))], "initContainers": [
        container(name="side", restartPolicy="Always", **gpus(2))]}), 4),
    ({"kind": "RayJob", "spec": {"rayClusterSpec": {
        "headGroupSpec": {"template": pod({"containers": [container()]})},
        "workerGroupSpecs": [{"replicas": 1, "minReplicas": 1, "maxReplicas": 4, "numOfHosts": 2,
                              "template": pod({"containers": [container(**gpus(8))]})}]},
        "submitterPodTemplate": pod({"containers": [container(**gpus(1))]})}}, 4 * 2 * 8 + 1),
    ({"kind": "LeaderWorkerSet", "spec": {"replicas": 2, "leaderWorkerTemplate": {
        "size": 4, "leaderTemplate": pod({"containers": [container(**gpus(1))]}),
        "workerTemplate": pod({"containers": [container(**gpus(8))]})}}}, 2 * (1 + 3 * 8)),
    ({"kind": "LeaderWorkerSet", "spec": {"leaderWorkerTemplate": {
        "size": 2, "workerTemplate": pod({"containers": [container(**gpus(4))]})}}}, 8),
], ids=["mig", "time-sliced", "neuron-and-gaudi", "sidecar-then-init", "sidecar", "rayjob-autoscaling",
        "leaderworkerset", "leaderworkerset-without-leader-template"])
def test_every_accelerator_and_every_shape_is_counted(manifest: dict[str, Any], expected: int) -> None:
    """rev11p #1, #11 and the review's GPU-counting gaps."""
    assert manifest_gpus(manifest) == expected


def test_a_policy_can_name_more_accelerators() -> None:
    manifest = job({"containers": [container(resources={"limits": {"example.com/npu": 2}})]})
    assert manifest_gpus(manifest) == 0
    assert manifest_gpus(manifest, ["example.com/npu"]) == 2


@pytest.mark.parametrize("manifest, fragment", [
    (job({"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "a100"}], "containers": [container()]}),
     "spec.resourceClaims: DRA resource claims cannot be counted"),
    (job({"containers": [container(resources={"claims": [{"name": "gpu"}]})]}), "resources.claims"),
    ({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {"trainer": {"numNodes": 2}}},
     "spec.trainer.resourcesPerNode: missing — the runtime's default is invisible"),
    ({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {"trainer": {
        "resourcesPerNode": {"limits": {"nvidia.com/gpu": 8}}}}}, "spec.trainer.numNodes: missing"),
], ids=["dra-pod-claims", "dra-container-claims", "trainjob-without-resources", "trainjob-without-nodes"])
def test_what_cannot_be_counted_is_refused_not_zero(manifest: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        manifest_gpus(manifest)


def test_pod_templates_under_any_key_are_secured() -> None:
    ray = {"kind": "RayJob", "spec": {"submitterPodTemplate": pod({"hostNetwork": True, "containers": [container()]}),
                                      "rayClusterSpec": {"headGroupSpec": {"template": pod({"containers": [container()]})}}}}
    problems = restricted_problems(secure_pods(ray))
    assert len(problems) == 1 and "hostNetwork" in problems[0]
    assert ray["spec"]["submitterPodTemplate"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_a_trainjobs_runtime_patches_get_no_field_the_patch_api_lacks() -> None:
    patch = {"manager": "x.io/y", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": pod({"containers": [{"name": "node"}]})}}}]}}}}
    manifest = secure_pods({"kind": "TrainJob", "spec": {"runtimePatches": [patch]}})
    spec = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert "automountServiceAccountToken" not in spec and spec["securityContext"]["runAsNonRoot"] is True


def test_an_unreadable_replica_count_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match="not a replica count"):
        manifest_gpus({"kind": "JobSet", "spec": {"replicatedJobs": [{"replicas": "two", "template": {"spec": {
            "template": {"spec": {"containers": [container(**gpus(1))]}}}}}]}})
    with pytest.raises(ValueError, match="not a GPU count"):
        manifest_gpus(job({"containers": [container(**gpus("lots"))]}))


# -- image references and quantities -------------------------------------------------------------

@pytest.mark.parametrize("text, name", [
    ("ubuntu", "docker.io/library/ubuntu"),
    ("ubuntu:22.04", "docker.io/library/ubuntu"),
    ("docker.io/library/ubuntu", "docker.io/library/ubuntu"),
    ("index.docker.io/acme/x:1", "docker.io/acme/x"),
    ("acme/trainer:1", "docker.io/acme/trainer"),
    ("localhost:5000/x", "localhost:5000/x"),
    ("111122223333.dkr.ecr.us-east-1.amazonaws.com/sweepq-trainer:0.1.0",
     "111122223333.dkr.ecr.us-east-1.amazonaws.com/sweepq-trainer"),
    ("ghcr.io/acme/x@sha256:" + "a" * 64, "ghcr.io/acme/x"),
])
def test_images_are_normalised_like_the_runtime_resolves_them(text: str, name: str) -> None:
    assert parse_image(text).name == name


@pytest.mark.parametrize("text, qualified", [
    ("docker.io/ubuntu:22.04", "docker.io/library/ubuntu:22.04"),  # rev11p #13: library/ with the registry written
    ("INDEX.DOCKER.IO/acme/x:1", "docker.io/acme/x:1"),  # lower-cased before the alias
    ("Registry.Example:5000/x", "registry.example:5000/x"),
    ("ubuntu@sha256:" + "a" * 64, "docker.io/library/ubuntu@sha256:" + "a" * 64),
])
def test_the_qualified_form_is_the_normalised_reference_written_out(text: str, qualified: str) -> None:
    assert parse_image(text).qualified == qualified
    assert parse_image(qualified).qualified == qualified


@pytest.mark.parametrize("prefix, normalised", [
    ("docker.io/ubuntu", "docker.io/library/ubuntu"), ("ubuntu", "docker.io/library/ubuntu"),
    ("docker.io/acme/", "docker.io/acme/"), ("acme/", "docker.io/acme/"), ("library/", "docker.io/library/"),
    ("INDEX.DOCKER.IO", "docker.io/"), ("Ghcr.IO/acme/", "ghcr.io/acme/"),
])
def test_policy_entries_are_normalised_the_same_way(prefix: str, normalised: str) -> None:
    assert normalise_image_prefix(prefix) == normalised


@pytest.mark.parametrize("text", ["ghcr.io/acme/x\n", "ghcr.io/acme/x:1\n", "x@sha256:" + "a" * 64 + "\n"])
def test_a_trailing_newline_is_no_image(text: str) -> None:
    with pytest.raises(ValueError):
        parse_image(text)


@pytest.mark.parametrize("text", ["", "A B", "UPPER/x", "ghcr.io/Acme/x", "x:", "-m", "x" * 600, "a//b"])
def test_what_is_no_image_reference_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_image(text)


def test_image_prefixes_match_whole_components_only() -> None:
    allowed = [normalise_image_prefix(p) for p in ("ghcr.io/acme/", "ubuntu", "registry.local:5000")]
    assert allowed == ["ghcr.io/acme/", "docker.io/library/ubuntu", "registry.local:5000/"]
    ok = ["ghcr.io/acme/trainer:1", "docker.io/library/ubuntu:22.04", "ubuntu", "registry.local:5000/a/b:c"]
    refused = ["ghcr.io/acme-evil/trainer:1", "ghcr.io/acmex", "ubuntu-evil", "docker.io/ubuntu/x", "registry.local/a"]
    assert all(image_allowed(parse_image(i), allowed) for i in ok)
    assert not any(image_allowed(parse_image(i), allowed) for i in refused)
    assert image_allowed(parse_image("anything.io/x"), ["*"])
    with pytest.raises(ValueError, match="without :tag"):
        normalise_image_prefix("ubuntu:22.04")


@pytest.mark.parametrize("text, value", [("8", 8), ("500m", Decimal("0.5")), ("64Gi", 64 * 2**30), ("1e9", 10**9),
                                         (2, 2), ("1.5", Decimal("1.5")), ("512M", 512 * 10**6)])
def test_quantities(text: Any, value: Any) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["-1", "lots", "1e99999", True, None, "1 Gi", "1" * 40, "8\n", " 8"])
def test_what_is_no_quantity_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


# -- reserved env names --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "SWEEPQ_OUTPUT_DIR", "SWEEP_ID", "TRIAL_ID", "POD_NAME", "WANDB_BASE_URL", "wandb_base_url", "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "KUBERNETES_SERVICE_HOST", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH",
    "PYTHONSTARTUP", "PATH", "BASH_ENV", "NODE_OPTIONS", "NCCL_NET_PLUGIN", "PET_RDZV_ENDPOINT", "MASTER_ADDR", "RANK",
    "NVIDIA_VISIBLE_DEVICES", "HTTPS_PROXY", "http_proxy", "REQUESTS_CA_BUNDLE", "HF_TOKEN", "MY_API_KEY", "DB_PASSWORD",
    # rev11p: code in a pinned command, endpoints, secrets without _ around the word
    "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "PERL5LIB", "PERLLIB", "RUBYLIB", "NODE_PATH", "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS", "CLASSPATH", "LUA_INIT", "GCONV_PATH", "GLIBC_TUNABLES", "GIT_SSH_COMMAND", "GIT_CONFIG_COUNT",
    "OMPI_MCA_plm_rsh_agent", "FI_PROVIDER_PATH", "UCX_MODULE_DIR", "HF_ENDPOINT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_URL", "MLFLOW_TRACKING_URI", "OPENAI_BASE_URL", "OPENAI_API_BASE", "S3_ENDPOINT_URL", "MINIO_ENDPOINT",
    "PGPASSWORD", "DBPASSWORD", "APIKEY", "MY_SECRETS", "API_KEYS", "DB_PASS", "HF-TOKEN", "OPENAI API KEY",
])
def test_reserved_and_secret_looking_names(name: str) -> None:
    assert reserved_reason(name)


@pytest.mark.parametrize("name", ["HF_HOME", "OMP_NUM_THREADS", "NCCL_DEBUG", "TOKENIZERS_PARALLELISM", "MY_FLAG",
                                  "CUDA_LAUNCH_BLOCKING", "TORCH_COMPILE_DEBUG", "MAX_TOKENS", "KEYBOARD_LAYOUT",
                                  "BYPASS_CACHE", "HF_DATASETS_CACHE"])
def test_ordinary_names_are_not_reserved(name: str) -> None:
    assert reserved_reason(name) is None


def test_the_policy_can_reserve_more() -> None:
    assert reserved_reason("NCCL_SOCKET_IFNAME", ["NCCL_*"]) == "reserved by the operator policy (NCCL_*)"
    assert reserved_reason("nccl_socket_ifname", ["NCCL_*"])
    assert reserved_reason("HF_HOME", ["NCCL_*"]) is None
