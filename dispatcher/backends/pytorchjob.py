"""Kind ``pytorchjob`` (the default): a Kubeflow Training Operator ``kubeflow.org/v1`` PyTorchJob
with an ``elasticPolicy`` (c10d rendezvous, ``minReplicas:maxReplicas`` nodes).

Elastic PyTorchJobs run Worker replicas only. The operator injects ``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_RDZV_*`` and ``PET_MAX_RESTARTS`` into the container named
``pytorch``, so the container runs plain ``torchrun <trial argv>``.
"""

from __future__ import annotations

from typing import Any, Mapping

from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    progress_from,
    Progress,
    container,
    job_metadata,
    phase_from_conditions,
    pod_template,
    split_command,
)
from dispatcher.core.jobs import JobPhase, LaunchRequest

KIND = "pytorchjob"
RESOURCE = ResourceRef(
    group="kubeflow.org", version="v1", plural="pytorchjobs", kind="PyTorchJob",
    missing_fix="install the Kubeflow Training Operator or set SWEEPQ_BACKEND=job",
)
CONTAINER_NAME = "pytorch"  # the operator only injects its env into the container of this name
# ExitCode: the operator recreates pods that died from a signal (exit 128+: preemption, OOM kill,
# node loss) and fails the job on an application error (exit 1-127) instead of looping on it.
RESTART_POLICY = "ExitCode"

# PyTorchJob condition (status "True") → phase, checked in this order: a terminal condition wins
# over a stale Running one that some operator versions leave "True".
CONDITION_PHASES: dict[str, JobPhase] = {
    "Succeeded": JobPhase.SUCCEEDED,  # the workers exited 0
    "Failed": JobPhase.FAILED,  # permanent exit code, backoffLimit or activeDeadlineSeconds exceeded
    "Running": JobPhase.RUNNING,  # pods running (elastic: at least minReplicas)
    "Restarting": JobPhase.RUNNING,  # pods recreated after a retryable exit: started, no longer pending
    "Suspended": JobPhase.PENDING,  # held by Kueue or runPolicy.suspend
    "Created": JobPhase.PENDING,  # accepted; pods scheduling / pulling images / in rendezvous
}


def build_pytorchjob(request: LaunchRequest, *, ttl_seconds: int | None = None) -> dict[str, Any]:
    """The PyTorchJob manifest of one trial attempt. Purely computational. ``ttl_seconds``: the
    operator deletes the finished job after that long (keep it well above the tick interval)."""
    launch = request.launch
    command, args = split_command(request, ["torchrun"])
    main = container(request, name=CONTAINER_NAME, command=command, args=args)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "Running", "backoffLimit": launch.max_restarts}
    if launch.max_runtime:
        run_policy["activeDeadlineSeconds"] = launch.max_runtime
    if ttl_seconds:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds
    return {
        "apiVersion": RESOURCE.api_version,
        "kind": RESOURCE.kind,
        "metadata": job_metadata(request, kind=KIND),
        "spec": {
            "runPolicy": run_policy,
            "elasticPolicy": {
                "rdzvBackend": "c10d",
                "minReplicas": launch.min_nodes,
                "maxReplicas": launch.max_nodes,
                "nProcPerNode": launch.workers_per_node,
                "maxRestarts": launch.max_restarts,
            },
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": launch.max_nodes,
                    "restartPolicy": RESTART_POLICY,
                    "template": pod_template(request, kind=KIND, main=main, restart_policy=None),
                },
            },
        },
    }


def kubeflow_progress(obj: Mapping[str, Any]) -> Progress:
    """Phase of a Kubeflow-style job (PyTorchJob, and ElasticJob's own status) from its conditions."""
    found = phase_from_conditions(obj, CONDITION_PHASES)
    phase, condition = found if found else (JobPhase.PENDING, None)
    return progress_from(obj, phase, condition)


class PyTorchJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, ttl_seconds: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_seconds = ttl_seconds

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        return build_pytorchjob(request, ttl_seconds=self.ttl_seconds)

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return kubeflow_progress(obj)
