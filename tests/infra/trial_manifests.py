"""Trial manifests of every Kubernetes kind, rendered through the backends' public ``dryrun``,
and the pods their controllers create from them — what the admission policy, the
NetworkPolicies and checkov are checked against.

``BACKENDS_RENDER_RESTRICTED_PODS`` says whether the backends on this branch render the
restricted pod securityContext (issue 11 §3, the ``upstream`` branch). Tests that need restricted
trial pods are strict xfails while it is False: the day the backends render them, those tests
XPASS and fail, and this flag must be flipped (then they must pass).
"""

from __future__ import annotations

import copy
from typing import Any

from dispatcher.backends import make_backend
from dispatcher.backends.kube_common import LABEL_KIND
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

BACKENDS_RENDER_RESTRICTED_PODS = True
RESTRICTED_REASON = ("the backends on this branch render trial pods without the restricted securityContext "
                     "(issue 11 §3, upstream's branch); flip BACKENDS_RENDER_RESTRICTED_PODS when it lands")

IMAGE = "111122223333.dkr.ecr.us-east-1.amazonaws.com/sweepq-trainer:0.1.0"
SWEEP_ID = "bert-lr-abcdefgh"
KINDS = ("pytorchjob", "elasticjob", "trainjob", "job")
# A trial index per kind, so that the pods of different kinds never share a name.
KIND_INDEX = {"pytorchjob": 1, "elasticjob": 2, "trainjob": 3, "job": 4}


def request(kind: str, *, index: int = 3, attempt: int = 1, **launch: Any) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image=launch.pop("image", IMAGE), service_account="sweepq-trainer",
                              gpus_per_node=launch.pop("gpus_per_node", 1),
                              nodes=launch.pop("nodes", 1 if kind == "job" else 2), **launch)
    job = f"{SWEEP_ID}-{index}-a{attempt}"
    return LaunchRequest(
        sweep_id=SWEEP_ID, trial_index=index, trial_id=f"{SWEEP_ID}-{index}", attempt=attempt, job_name=job,
        namespace="sweepq", params={"learning_rate": 0.001},
        command=TrialCommand(argv=("-m", "trainer", "--learning_rate=0.001")), launch=settings,
        env={"SWEEP_ID": SWEEP_ID, "TRIAL_INDEX": str(index), "TRIAL_ID": f"{SWEEP_ID}-{index}"},
    )


def render(kind: str, **launch: Any) -> dict[str, Any]:
    """The manifest ``submit`` would create for one trial of ``kind`` (no cluster involved)."""
    backend = make_backend(kind, api_client=None, namespace="sweepq")
    return copy.deepcopy(backend.dryrun(request(kind, **launch)).request)


def _launchable(kind: str) -> bool:
    try:
        render(kind)
    except PermanentError:  # a retired kind: the backend refuses new jobs (ElasticJob on upstream's branch)
        return False
    return True


# Kinds the backends create new jobs of, and those of them whose manifest carries pod templates
# (TrainJob's pods come from its ClusterTrainingRuntime).
LAUNCHABLE = tuple(kind for kind in KINDS if _launchable(kind))
POD_TEMPLATE_KINDS = tuple(kind for kind in ("pytorchjob", "elasticjob", "job") if kind in LAUNCHABLE)


def manifest_of(kind: str, *, index: int | None = None) -> dict[str, Any]:
    """A trial of ``kind``: rendered, or for a retired ElasticJob the shape of one still draining
    (the PyTorchJob's pod template under ``replicaSpecs.Worker``, labelled as the kind)."""
    index = KIND_INDEX[kind] if index is None else index
    if kind in LAUNCHABLE:
        return render(kind, index=index)
    if kind != "elasticjob":
        raise AssertionError(f"{kind} creates no jobs")
    pytorchjob = render("pytorchjob", index=index)
    worker = copy.deepcopy(pytorchjob["spec"]["pytorchReplicaSpecs"]["Worker"])
    worker["template"]["metadata"]["labels"][LABEL_KIND] = "elasticjob"
    metadata = copy.deepcopy(pytorchjob["metadata"])
    metadata["labels"][LABEL_KIND] = "elasticjob"
    return {"apiVersion": "elastic.pytorch.org/v1alpha1", "kind": "ElasticJob", "metadata": metadata,
            "spec": {"minReplicas": 1, "maxReplicas": worker["replicas"],
                     "replicaSpecs": {"Worker": {"replicas": worker["replicas"], "template": worker["template"]}}}}


def pod_templates(manifest: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """``(replica type, replicas, pod template)`` of a manifest of a pod-template kind."""
    spec = manifest["spec"]
    if manifest["kind"] == "Job":
        return [("job", 1, spec["template"])]
    replicas = spec["pytorchReplicaSpecs"] if manifest["kind"] == "PyTorchJob" else spec["replicaSpecs"]
    return [(rtype.lower(), int(r.get("replicas", 1)), r["template"]) for rtype, r in replicas.items()]


def pods(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the kind's controller creates from the manifest, named by its grammar
    (dispatcher/core/metrics.py POD_SUFFIX), with the template's labels and spec."""
    job = manifest["metadata"]["name"]
    out = []
    for rtype, count, template in pod_templates(manifest):
        for i in range(count):
            name = f"{job}-abcde" if rtype == "job" else f"{job}-{rtype}-{i}"
            spec = copy.deepcopy(template["spec"])
            spec.setdefault("serviceAccountName", "default")
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": manifest["metadata"]["namespace"],
                                     "labels": dict(template.get("metadata", {}).get("labels", {}))},
                        "spec": spec})
    return out


def restricted_pod(**spec_overrides: Any) -> dict[str, Any]:
    """A trial pod as the restricted backends render it (what issue 11 §3 asks of every kind):
    the positive control of the admission tests, independent of this branch's backends."""
    container = {
        "name": "pytorch", "image": IMAGE, "command": ["torchrun"], "args": ["-m", "trainer"],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    spec = {
        "serviceAccountName": "sweepq-trainer", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    spec.update(spec_overrides)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{SWEEP_ID}-3-a1-worker-0", "namespace": "sweepq",
                         "labels": {"app.kubernetes.io/managed-by": "sweepq", "sweepq.io/kind": "pytorchjob"}},
            "spec": spec}
