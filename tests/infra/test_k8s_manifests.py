"""infra/k8s: every overlay renders, core kinds pass strict schema validation, the CronJob is
hardened, images are pinned, and the ConfigMap is valid dispatcher settings."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml
from infra_expected import (
    C6_SETTINGS,
    DISPATCHER_NAMESPACE,
    K8S,
    K8S_VERSION,
    OVERLAYS,
    REPO,
    TRAINER_SERVICE_ACCOUNT,
    TRIALS_NAMESPACE,
)
from kubernetes_validate.utils import SchemaNotFoundError
from kustomize_lite import identity, load_documents, render

from dispatcher.core.launch import merge_launch
from dispatcher.settings import ENV, Settings

# CRDs without bundled schemas: they must parse and name themselves, that is all.
CRD_GROUPS = {"kueue.x-k8s.io", "trainer.kubeflow.org"}  # the ClusterTrainingRuntime: checked by tests/upstream_models.py
TEMPLATES = sorted((K8S / "templates").glob("*.yaml"))


def _all(rendered) -> list[dict[str, Any]]:
    return [o for objs in rendered.values() for o in objs]


def _find(objects, kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def test_overlays_exist():
    assert set(OVERLAYS) == {"pytorchjob", "elasticjob", "lambda", "team-a"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pure_python_render_equals_kubectl_kustomize(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; kustomize_lite's output is not cross-checked")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    theirs = {identity(o): o for o in yaml.safe_load_all(out) if o}
    ours = {identity(o): o for o in render(K8S / "overlays" / overlay)}
    assert ours == theirs


def test_every_core_object_passes_strict_schema_validation(rendered):
    objects = _all(rendered) + [doc for path in TEMPLATES for doc in load_documents(path)]
    validated = 0
    for obj in objects:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group in CRD_GROUPS:
            assert obj["kind"] and obj["metadata"]["name"]
            with pytest.raises(SchemaNotFoundError):  # really not a core kind
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        validated += 1
    assert validated >= 20


def test_strict_validation_would_catch_a_misspelt_field(rendered):
    cronjob = _find(rendered["pytorchjob"], "CronJob", "sweepq-dispatcher")
    broken = yaml.safe_load(yaml.safe_dump(cronjob))
    broken["spec"]["concurencyPolicy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_cronjob_ticks_every_minute_one_at_a_time_hardened(rendered):
    cronjob = _find(rendered["pytorchjob"], "CronJob", "sweepq-dispatcher")
    spec = cronjob["spec"]
    assert spec["schedule"] == "* * * * *" and spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < 60
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] + container["args"] == ["dispatcher", "tick", "--output", "json"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/tmp": False, "/etc/sweepq/policy": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]
    # the operator policy's ConfigMap is optional: without it the dispatcher's default policy applies
    assert volumes["policy"]["configMap"] == {"name": "sweepq-policy", "optional": True}
    assert cronjob["metadata"]["namespace"] == DISPATCHER_NAMESPACE
    assert pod["serviceAccountName"] == "sweepq-dispatcher"
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert container["envFrom"] == [{"configMapRef": {"name": "sweepq-dispatcher"}}]
    # A tick killed at the deadline leaves a lease that expires before the next minute's tick.
    config = _find(rendered["pytorchjob"], "ConfigMap", "sweepq-dispatcher")["data"]
    assert int(config["SWEEPQ_INTAKE_BUDGET_S"]) < int(config["SWEEPQ_LEASE_SECONDS"]) < job["activeDeadlineSeconds"] < 60


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_is_valid_dispatcher_settings(rendered, overlay):
    config = _find(rendered[overlay], "ConfigMap", "sweepq-dispatcher")
    data = config["data"]
    assert config["metadata"]["namespace"] == DISPATCHER_NAMESPACE
    assert {k for k in data if k.startswith("SWEEPQ_")} <= set(ENV.values()) | C6_SETTINGS
    settings = Settings.load(data)
    # the jobs go to the trials' namespace, never the dispatcher's own
    assert settings.namespace == TRIALS_NAMESPACE and settings.queue_url is None and settings.cluster_name is None
    assert data["SWEEPQ_METRICS_TABLE"] == f"{data['SWEEPQ_TABLE']}-metrics"
    assert data["SWEEPQ_WAKE_QUEUE_NAME"] == f"{data['SWEEPQ_QUEUE_NAME']}-wake"


def test_overlays_pick_their_backend_and_parts(rendered):
    backend = {o: _find(rendered[o], "ConfigMap", "sweepq-dispatcher")["data"]["SWEEPQ_BACKEND"] for o in OVERLAYS}
    assert backend == {"pytorchjob": "pytorchjob", "elasticjob": "pytorchjob", "lambda": "pytorchjob",
                       "team-a": "trainjob"}  # elasticjob: drain mode (the kind is retired); team-a: Kueue's default
    assert _find(rendered["team-a"], "ConfigMap", "sweepq-dispatcher")["data"]["SWEEPQ_TRAINJOB_RUNTIME"] == \
        _find(rendered["team-a"], "ClusterTrainingRuntime", "sweepq-torch-distributed")["metadata"]["name"]
    assert _find(rendered["lambda"], "CronJob", "sweepq-dispatcher")["spec"]["suspend"] is True
    kinds = {o: {obj["kind"] for obj in rendered[o]} for o in OVERLAYS}
    assert {"Deployment", "Service"} <= kinds["elasticjob"] and "Deployment" not in kinds["pytorchjob"]
    assert {"ClusterQueue", "LocalQueue", "ResourceFlavor", "PersistentVolumeClaim"} <= kinds["team-a"]
    # the cluster-side controls are in every overlay
    for overlay in OVERLAYS:
        assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "NetworkPolicy"} <= kinds[overlay]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_namespaces_enforce_pod_security_restricted(rendered, overlay):
    namespaces = {o["metadata"]["name"]: o["metadata"]["labels"] for o in rendered[overlay] if o["kind"] == "Namespace"}
    assert set(namespaces) == {TRIALS_NAMESPACE, DISPATCHER_NAMESPACE}
    for labels in namespaces.values():
        assert {labels[f"pod-security.kubernetes.io/{mode}"] for mode in ("enforce", "warn", "audit")} == {"restricted"}
    assert namespaces[TRIALS_NAMESPACE]["sweepq.io/trials"] == "true"
    assert "sweepq.io/trials" not in namespaces[DISPATCHER_NAMESPACE]
    # every namespaced object is in one of the two
    assert {o["metadata"]["namespace"] for o in rendered[overlay] if "namespace" in o["metadata"]} <= set(namespaces)


def test_etcd_is_the_rendezvous_endpoint_and_pinned(rendered):
    objects = rendered["elasticjob"]
    service = _find(objects, "Service", "etcd-service")
    deployment = _find(objects, "Deployment", "etcd")
    assert [p["port"] for p in service["spec"]["ports"]] == [2379]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--enable-v2=true" in container["command"]  # python-etcd speaks the v2 API
    endpoint = _find(objects, "ConfigMap", "sweepq-dispatcher")["data"]["SWEEPQ_ETCD_ENDPOINT"]
    assert endpoint == f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_every_image_is_pinned(rendered):
    images = [c["image"] for o in _all(rendered) for c in _containers(o)]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and tag and tag != "latest" and "/" not in tag), image


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def test_kueue_wiring_matches_the_dispatcher_label(rendered):
    from dispatcher.backends.kube_common import LABEL_KUEUE_QUEUE

    assert LABEL_KUEUE_QUEUE == "kueue.x-k8s.io/queue-name"
    objects = rendered["team-a"]
    local = _find(objects, "LocalQueue", "team-a")
    cluster = _find(objects, "ClusterQueue", local["spec"]["clusterQueue"])
    assert local["metadata"]["namespace"] == "sweepq" and "namespace" not in cluster["metadata"]
    [group] = cluster["spec"]["resourceGroups"]
    assert "nvidia.com/gpu" in group["coveredResources"]
    assert {f["name"] for f in group["flavors"]} <= {o["metadata"]["name"] for o in objects if o["kind"] == "ResourceFlavor"}
    # A sweep opts in with sweepq: {kueue_queue: team-a}.
    assert merge_launch({"kueue_queue": local["metadata"]["name"]}).kueue_queue == "team-a"


def test_outputs_volume_is_shared_read_write_many(rendered):
    pvc = _find(rendered["team-a"], "PersistentVolumeClaim", "sweepq-outputs")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert _find(rendered["team-a"], "ConfigMap", "sweepq-dispatcher")["data"]["SWEEPQ_OUTPUT_DIR"].startswith("/")


def test_wandb_secret_template_has_the_name_and_key_the_backends_use_and_no_value():
    from dispatcher.backends.kube_common import WANDB_SECRET_KEY
    from dispatcher.core.launch import LaunchSettings

    [secret] = load_documents(K8S / "templates" / "wandb-secret.yaml")
    assert secret["metadata"]["name"] == LaunchSettings().wandb_secret == "wandb"
    assert secret["stringData"] == {WANDB_SECRET_KEY: ""}
    listed = (REPO / "infra" / "k8s").rglob("kustomization.yaml")
    assert not any("templates" in p.read_text(encoding="utf-8") for p in listed), "never apply the template"


def test_trainer_service_account_is_the_one_documented(rendered):
    account = _find(rendered["pytorchjob"], "ServiceAccount", TRAINER_SERVICE_ACCOUNT)
    assert account["metadata"]["namespace"] == TRIALS_NAMESPACE
    assert account["automountServiceAccountToken"] is False
    # AWS through EKS Pod Identity only (the stack's association): no IRSA role to fall back on
    assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})
    default = [o for o in rendered["pytorchjob"] if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "default"]
    assert [(d["metadata"]["namespace"], d["automountServiceAccountToken"]) for d in default] == [(TRIALS_NAMESPACE, False)]
    assert merge_launch({"service_account": "sweepq-trainer"}).service_account == "sweepq-trainer"


def test_team_defaults_example_is_valid_and_names_the_cluster_objects(rendered):
    from producer.sweepfile import launch_layers

    launch = merge_launch(launch_layers(str(REPO / "infra" / "team-defaults.example.yaml"), env={}))
    objects = rendered["team-a"]
    assert _find(objects, "ServiceAccount", launch.service_account)
    assert _find(objects, "LocalQueue", launch.kueue_queue)
    [secret] = load_documents(K8S / "templates" / "wandb-secret.yaml")
    assert launch.wandb_secret == secret["metadata"]["name"]
    assert ":" in launch.image and not launch.image.endswith(":latest")
