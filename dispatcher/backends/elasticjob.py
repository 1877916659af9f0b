"""Kind ``elasticjob``: a TorchElastic controller ``elastic.pytorch.org/v1alpha1`` ElasticJob.

The controller (pytorch/elastic ``kubernetes/controllers/pod.go``) *prepends* to every
container's ``args``::

    --rdzv_backend=etcd --rdzv_endpoint=<spec.rdzvEndpoint> --rdzv_id=<job name> --nnodes=<min>:<max>

so the container's ``command`` must be the launcher itself (``torchrun``) and our ``args`` start
with the per-node flags followed by the trial argv. A full user command (no launcher) would get
those flags appended to it, so it is refused. The image needs ``python-etcd`` for the etcd
rendezvous backend, and an etcd service must exist (default ``etcd-service:2379``).

The ElasticJob status is unreliable (it often stays at Created/Running), so the phase comes from
the job's pods: one pods list per tick with the sweepq selector, aggregated per job.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from dispatcher.backends.kube_base import KubeBackend, ResourceRef, first_time, last_time
from dispatcher.backends.kube_common import (
    LABEL_JOB_NAME,
    LABEL_KIND,
    Progress,
    as_int,
    container,
    job_metadata,
    pod_template,
    status_of,
)
from dispatcher.backends.pytorchjob import kubeflow_progress
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import LABEL_MANAGED_BY, MANAGED_BY, SELECTOR, JobPhase, LaunchRequest

KIND = "elasticjob"
RESOURCE = ResourceRef(
    group="elastic.pytorch.org", version="v1alpha1", plural="elasticjobs", kind="ElasticJob",
    missing_fix="install the TorchElastic controller (pytorch/elastic kubernetes/) or use SWEEPQ_BACKEND=pytorchjob",
)
PODS = ResourceRef(group="", version="v1", plural="pods", kind="Pod", missing_fix="the API server serves no pods")
DEFAULT_RDZV_ENDPOINT = "etcd-service:2379"
CONTAINER_NAME = "elasticjob-worker"
RESTART_POLICY = "ExitCode"  # as pytorchjob: recreate pods killed by signals, fail on exit 1-127

# Pod phase → how it counts for its job. A job is RUNNING when at least minReplicas pods run,
# PENDING while fewer do, and ends when no pod is left pending/running: FAILED if any pod failed,
# else SUCCEEDED.
POD_PHASES: dict[str, str] = {
    "Pending": "waiting",  # scheduling, pulling the image
    "Running": "running",  # torchrun up (maybe still in rendezvous)
    "Unknown": "waiting",  # node lost contact; the controller decides
    "Succeeded": "done",
    "Failed": "failed",
}


def build_elasticjob(
    request: LaunchRequest, *, rdzv_endpoint: str = DEFAULT_RDZV_ENDPOINT, ttl_seconds: int | None = None
) -> dict[str, Any]:
    """The ElasticJob manifest of one trial attempt. Purely computational."""
    launch = request.launch
    if request.command.launcher != "torchrun":
        raise PermanentError(
            "command: kind elasticjob runs the trial under torchrun (its controller appends rendezvous "
            "flags to the container args) — start the sweep command with ${interpreter} or use kind pytorchjob"
        )
    args = [f"--nproc-per-node={launch.workers_per_node}", f"--max-restarts={launch.max_restarts}",
            *[str(arg) for arg in request.command.argv]]
    if len(args) == 2:
        raise PermanentError("command: the trial command is empty — set 'command' or 'program' in the sweep file")
    main = container(request, name=CONTAINER_NAME, command=["torchrun"], args=args)
    spec: dict[str, Any] = {
        "rdzvEndpoint": rdzv_endpoint,
        "minReplicas": launch.min_nodes,
        "maxReplicas": launch.max_nodes,
        # ElasticJob inlines the Kubeflow RunPolicy into its spec.
        "cleanPodPolicy": "Running",
        "backoffLimit": launch.max_restarts,
    }
    if launch.max_runtime:
        spec["activeDeadlineSeconds"] = launch.max_runtime
    if ttl_seconds:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    spec["replicaSpecs"] = {
        "Worker": {
            "replicas": launch.max_nodes,
            "restartPolicy": RESTART_POLICY,
            "template": pod_template(request, kind=KIND, main=main, restart_policy=None),
        },
    }
    return {"apiVersion": RESOURCE.api_version, "kind": RESOURCE.kind,
            "metadata": job_metadata(request, kind=KIND), "spec": spec}


def _pod_failure(pod: Mapping[str, Any]) -> str:
    status = status_of(pod)
    for container_status in status.get("containerStatuses") or []:
        terminated = ((container_status or {}).get("state") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        if code not in (None, 0):
            reason = terminated.get("reason") or ""
            return f"{reason} (exit code {code})" if reason and reason != "Error" else f"exit code {code}"
    return str(status.get("reason") or status.get("message") or "pod failed")


def _pod_finish_times(pod: Mapping[str, Any]) -> list[Any]:
    return [(((cs or {}).get("state") or {}).get("terminated") or {}).get("finishedAt")
            for cs in status_of(pod).get("containerStatuses") or []]


def elasticjob_progress(job: Mapping[str, Any], pods: list[Mapping[str, Any]]) -> Progress:
    """Phase of an ElasticJob from its pods; a terminal condition on the job itself is trusted
    when present (pods may already be cleaned up), a non-terminal one is not."""
    own = kubeflow_progress(job)
    if own.phase.terminal:
        return own
    live = [pod for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp")]
    if not live:
        return Progress(JobPhase.PENDING)
    counts: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for pod in live:
        counts[POD_PHASES.get(str(status_of(pod).get("phase")), "waiting")].append(pod)
    started_at = first_time(status_of(pod).get("startTime") for pod in live)
    if counts["running"] or counts["waiting"]:
        min_replicas = max(as_int((job.get("spec") or {}).get("minReplicas")), 1)
        phase = JobPhase.RUNNING if len(counts["running"]) >= min_replicas else JobPhase.PENDING
        return Progress(phase, started_at=started_at)
    finished_at = last_time(t for pod in live for t in _pod_finish_times(pod))
    if counts["failed"]:
        return Progress(JobPhase.FAILED, reason=_pod_failure(counts["failed"][0]),
                        started_at=started_at, finished_at=finished_at)
    return Progress(JobPhase.SUCCEEDED, started_at=started_at, finished_at=finished_at)


class ElasticJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, rdzv_endpoint: str = DEFAULT_RDZV_ENDPOINT, ttl_seconds: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rdzv_endpoint = rdzv_endpoint
        self.ttl_seconds = ttl_seconds

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        return build_elasticjob(request, rdzv_endpoint=self.rdzv_endpoint, ttl_seconds=self.ttl_seconds)

    def observe_context(self, items: list[dict[str, Any]], ref: ResourceRef) -> dict[str, list[dict[str, Any]]]:
        """One pods list for all ElasticJobs of this tick, grouped by job name."""
        try:
            pods = self.client_for(PODS).list(self.namespace, f"{SELECTOR},{LABEL_KIND}={KIND}")
        except Exception as exc:  # noqa: BLE001 - translated below
            raise self._translate(exc, ref=PODS, verb="list") from exc
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in pods:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_KIND) == KIND \
                    and labels.get(LABEL_JOB_NAME):
                by_job[labels[LABEL_JOB_NAME]].append(pod)
        return by_job

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        name = (obj.get("metadata") or {}).get("name", "")
        return elasticjob_progress(obj, (context or {}).get(name, []))
