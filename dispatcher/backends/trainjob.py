"""Kind ``trainjob``: a Kubeflow Trainer v2 ``trainer.kubeflow.org/v1alpha1`` TrainJob that
references a ClusterTrainingRuntime (default ``torch-distributed``).

The runtime's torch policy sets ``PET_NNODES`` / ``PET_NPROC_PER_NODE`` / ``PET_NODE_RANK`` /
``PET_MASTER_*`` in the trainer container (``node``), so the trainer runs ``torchrun <argv>``.
Pod labels and the ServiceAccount go through ``podTemplateOverrides`` on the ``node`` job
(Trainer v2.1 API). A TrainJob has a fixed node count: elastic ranges are refused.
"""

from __future__ import annotations

from typing import Any, Mapping

from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    progress_from,
    Progress,
    as_int,
    container_env,
    job_metadata,
    node_resources,
    phase_from_conditions,
    pod_labels,
    split_command,
    status_of,
)
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import JobPhase, LaunchRequest

KIND = "trainjob"
RESOURCE = ResourceRef(
    group="trainer.kubeflow.org", version="v1alpha1", plural="trainjobs", kind="TrainJob",
    missing_fix="install Kubeflow Trainer v2 (with its ClusterTrainingRuntimes) or set SWEEPQ_BACKEND=pytorchjob",
)
DEFAULT_RUNTIME = "torch-distributed"
TRAINER_JOB = "node"  # the runtime's replicated job that runs the trainer

# TrainJob condition (status "True") → phase, in this order. Without one of these the phase
# comes from jobsStatus: a child job with ready pods means RUNNING.
CONDITION_PHASES: dict[str, JobPhase] = {
    "Complete": JobPhase.SUCCEEDED,
    "Failed": JobPhase.FAILED,  # child job failed, DeadlineExceeded, TrainingRuntimeNotSupported
    "Suspended": JobPhase.PENDING,  # held by Kueue
}


def build_trainjob(request: LaunchRequest, *, runtime: str = DEFAULT_RUNTIME) -> dict[str, Any]:
    """The TrainJob manifest of one trial attempt. Purely computational."""
    launch = request.launch
    if launch.min_nodes != launch.max_nodes:
        raise PermanentError(
            f"nodes: '{launch.min_nodes}:{launch.max_nodes}' — a TrainJob runs a fixed number of nodes; "
            f"write nodes: {launch.max_nodes}, or use kind pytorchjob for elastic training"
        )
    command, args = split_command(request, ["torchrun"])
    trainer: dict[str, Any] = {"image": launch.image, "command": command}
    if args:
        trainer["args"] = args
    trainer["env"] = container_env(request)
    trainer["numNodes"] = launch.max_nodes
    trainer["numProcPerNode"] = launch.workers_per_node
    resources = node_resources(launch)
    if resources:
        trainer["resourcesPerNode"] = resources
    override: dict[str, Any] = {
        "targetJobs": [{"name": TRAINER_JOB}],
        "metadata": {"labels": pod_labels(request, kind=KIND)},
    }
    if launch.service_account:
        override["spec"] = {"serviceAccountName": launch.service_account}
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "apiGroup": RESOURCE.group, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "podTemplateOverrides": [override],
    }
    if launch.max_runtime:
        spec["activeDeadlineSeconds"] = launch.max_runtime
    return {"apiVersion": RESOURCE.api_version, "kind": RESOURCE.kind,
            "metadata": job_metadata(request, kind=KIND), "spec": spec}


def trainjob_progress(obj: Mapping[str, Any]) -> Progress:
    """Phase of a TrainJob: conditions, then ``jobsStatus`` (ready or succeeded child jobs → RUNNING).
    TrainJobs have no start time in their status; the end is the terminal condition's time."""
    found = phase_from_conditions(obj, CONDITION_PHASES)
    if found:
        phase, condition = found
    else:
        jobs = status_of(obj).get("jobsStatus")
        started = any(
            as_int(job.get("ready")) > 0 or as_int(job.get("succeeded")) > 0
            for job in (jobs if isinstance(jobs, list) else []) if isinstance(job, Mapping)
        )
        phase, condition = (JobPhase.RUNNING if started else JobPhase.PENDING), None
    return progress_from(obj, phase, condition)


class TrainJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, runtime: str = DEFAULT_RUNTIME, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        return build_trainjob(request, runtime=self.runtime)

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return trainjob_progress(obj)
