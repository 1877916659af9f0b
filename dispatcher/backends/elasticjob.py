"""Kind ``elasticjob`` — **retired**: no new ElasticJobs; those already running are observed and
cancelled until they are gone.

Why: the TorchElastic controller's CRD (``elastic.pytorch.org/v1alpha1``, pytorch/elastic
``kubernetes/``) is an ``apiextensions.k8s.io/v1beta1`` CRD, an API Kubernetes removed in 1.22,
so it cannot be installed on any cluster sweepq supports (1.29+); its ``replicaSpecs`` schema is
not structural, the controller is unmaintained, and its rendezvous needs etcd's v2 API (removed
in etcd 3.6) through ``python-etcd``. Kueue has no ElasticJob integration either. Shipping our
own ``apiextensions.k8s.io/v1`` CRD would keep a dead controller alive; instead the same thing —
torchrun's elastic rendezvous over ``nodes: "MIN:MAX"`` — is what kind ``pytorchjob`` does
(c10d rendezvous on worker 0, no etcd), and kind ``trainjob`` runs fixed-size jobs under Kueue.

:meth:`ElasticJobBackend.dryrun` raises :data:`RETIRED` (a ``PermanentError``), so intake stores
a new ``elasticjob`` sweep as REJECTED with that migration note and ``producer submit --dry-run``
prints it; ``observe`` and ``cancel`` keep working for the sweeps that already run ElasticJobs.

Observing (what the controller writes): the ElasticJob's own status is unreliable (it often stays
at Created/Running), so the phase comes from the job's pods, one pods list per tick for all of
them, aggregated per job; a terminal condition on the job itself is trusted when present.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from dispatcher.backends.kube_base import PODS, KubeBackend, ResourceRef, first_time, last_time
from dispatcher.backends.kube_common import LABEL_JOB_NAME, LABEL_KIND, Progress, as_int, status_of
from dispatcher.backends.kube_pods import pod_failure
from dispatcher.backends.pytorchjob import kubeflow_progress
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import LABEL_MANAGED_BY, MANAGED_BY, SELECTOR, DryRun, JobPhase, LaunchRequest

KIND = "elasticjob"
RESOURCE = ResourceRef(
    group="elastic.pytorch.org", version="v1alpha1", plural="elasticjobs", kind="ElasticJob",
    missing_fix="nothing to drain: kind elasticjob is retired — remove it from SWEEPQ_KINDS",
)
RETIRED = (
    "kind: 'elasticjob' is retired — the TorchElastic ElasticJob CRD is apiextensions.k8s.io/v1beta1, "
    "removed in Kubernetes 1.22, so it cannot be installed on a supported cluster (1.29+), and its controller "
    "is unmaintained. Use kind: pytorchjob with the same nodes: 'MIN:MAX' (a Kubeflow PyTorchJob runs the same "
    "torchrun elastic rendezvous, c10d, without etcd), or kind: trainjob for a fixed node count under Kueue. "
    "ElasticJobs already running are still observed and can be cancelled."
)

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
        return Progress(JobPhase.FAILED, reason=pod_failure(counts["failed"][0]),
                        started_at=started_at, finished_at=finished_at)
    return Progress(JobPhase.SUCCEEDED, started_at=started_at, finished_at=finished_at)


class ElasticJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, rdzv_endpoint: str | None = None, ttl_seconds: int | None = None, **kwargs: Any) -> None:
        """``rdzv_endpoint`` / ``ttl_seconds``: accepted from the existing wiring, unused — this
        kind no longer creates jobs."""
        super().__init__(**kwargs)
        self.rdzv_endpoint = rdzv_endpoint

    def dryrun(self, request: LaunchRequest) -> DryRun:
        raise PermanentError(RETIRED)

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        raise PermanentError(RETIRED)

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

    def pods_of(self, context: Any) -> dict[str, list[dict[str, Any]]] | None:
        return context  # the pods are already listed for the phase: no second list for details

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        name = (obj.get("metadata") or {}).get("name", "")
        return elasticjob_progress(obj, (context or {}).get(name, []))
