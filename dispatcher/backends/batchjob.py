"""Kind ``job``: a ``batch/v1`` Job running single-node ``torchrun --standalone``.

``backoffLimit: 0`` — a failed attempt stays failed; retries are the dispatcher's, as a new
attempt with a new job name. ``activeDeadlineSeconds`` enforces ``max_runtime``; torchrun's
``--max-restarts`` restarts crashed workers inside the pod. Valid on Kubernetes 1.29 – 1.37
(``kubernetes-validate --strict`` and the ``kubernetes`` client's models); Kueue's ``batch/job``
integration is on by default (the job is created suspended and unsuspended on admission).
"""

from __future__ import annotations

from typing import Any, Mapping

from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    Progress,
    as_int,
    container,
    job_metadata,
    phase_from_conditions,
    pod_template,
    progress_from,
    split_command,
    status_of,
)
from dispatcher.backends.kube_options import DEFAULT_OPTIONS, JobOptions
from dispatcher.core.jobs import JobPhase, LaunchRequest

KIND = "job"
RESOURCE = ResourceRef(
    group="batch", version="v1", plural="jobs", kind="Job",
    missing_fix="the API server does not serve batch/v1 Jobs — check that the dispatcher talks to a Kubernetes API",
)
CONTAINER_NAME = "trainer"

# Job condition (status "True") → phase, in this order. FailureTarget / SuccessCriteriaMet
# (Kubernetes ≥1.31) announce the end while pods are still terminating and holding their GPUs,
# so they stay RUNNING until the final Failed / Complete condition.
CONDITION_PHASES: dict[str, JobPhase] = {
    "Complete": JobPhase.SUCCEEDED,
    "Failed": JobPhase.FAILED,  # BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy
    "FailureTarget": JobPhase.RUNNING,
    "SuccessCriteriaMet": JobPhase.RUNNING,
    "Suspended": JobPhase.PENDING,  # held by Kueue
}


def torchrun_standalone(nproc_per_node: int, max_restarts: int) -> list[str]:
    return ["torchrun", "--standalone", "--nnodes=1", f"--nproc-per-node={nproc_per_node}",
            f"--max-restarts={max_restarts}"]


def build_batchjob(request: LaunchRequest, *, ttl_seconds: int | None = None,
                   options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The batch/v1 Job manifest of one trial attempt. Purely computational. ``ttl_seconds``: the
    Job controller deletes the finished job after that long (keep it well above the tick interval)."""
    launch = request.launch
    command, args = split_command(request, torchrun_standalone(launch.workers_per_node, launch.max_restarts))
    main = container(request, name=CONTAINER_NAME, command=command, args=args, options=options)
    spec: dict[str, Any] = {"backoffLimit": 0}
    if launch.max_runtime:
        spec["activeDeadlineSeconds"] = launch.max_runtime
    if ttl_seconds:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    spec["template"] = pod_template(request, kind=KIND, main=main, restart_policy="Never", options=options)
    return {"apiVersion": RESOURCE.api_version, "kind": RESOURCE.kind,
            "metadata": job_metadata(request, kind=KIND, options=options), "spec": spec}


def job_progress(obj: Mapping[str, Any]) -> Progress:
    """Phase of a batch/v1 Job: terminal conditions first, then its pod counters
    (``ready`` pods → RUNNING; ``active`` but none ready → PENDING; clusters older than 1.24
    have no ``ready`` counter, then ``active`` counts as running)."""
    status = status_of(obj)
    found = phase_from_conditions(obj, CONDITION_PHASES)
    if found:
        phase, condition = found
    elif "ready" in status:
        phase, condition = (JobPhase.RUNNING if as_int(status.get("ready")) > 0 else JobPhase.PENDING), None
    else:
        phase, condition = (JobPhase.RUNNING if as_int(status.get("active")) > 0 else JobPhase.PENDING), None
    return progress_from(obj, phase, condition)


class BatchJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, ttl_seconds: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_seconds = ttl_seconds

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        return build_batchjob(request, ttl_seconds=self.ttl_seconds, options=self.options)

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return job_progress(obj)
