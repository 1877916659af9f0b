"""Kind ``trainjob``: a Kubeflow Trainer v2 ``trainer.kubeflow.org/v1alpha1`` TrainJob that
references a ClusterTrainingRuntime (default ``torch-distributed``; sweepq ships a restricted one,
``infra/k8s/components/trainjob-runtime``: use it).

Supported upstream: **Trainer v2.2 and v2.3** (validated against the v2.3.0 models, PyPI
``kubeflow-trainer-api``, and the v2.3 webhook's rules; every field sweepq renders is also in the
v2.2.0/v2.2.1 schema). Older Trainers are not supported: v2.0/v2.1 prune
``activeDeadlineSeconds`` and know no ``runtimePatches`` (their pods would lose sweepq's labels
and ServiceAccount).

Under Kueue: Kueue's TrainJob integration (on by default) does a typed full ``Update`` of the
TrainJob when it admits or suspends it, through the Trainer API types it was built against —
a field those types lack is deleted from the stored job. Kueue v0.17 – v0.19 are built against
Trainer v2.2.0/v2.2.1, which know every field sweepq renders (which is why the pods' grace period
lives in the runtime, not in the patch: v2.2's ``PodSpecPatch`` has no
``terminationGracePeriodSeconds``); Kueue v0.15/v0.16 (Trainer v2.1.0 types) delete
``runtimePatches`` and ``activeDeadlineSeconds`` on admission — not supported with this kind. The
Kubernetes emulator replays that round trip (``tests/upstream_models.py: TRAINER_TYPE_GAPS``).

What goes where (Trainer v2.3):

* ``spec.trainer`` — image, command/args, env (the only way to set env on the ``node``
  container: the webhook refuses env in a patch of it), ``numNodes``, ``numProcPerNode``,
  ``resourcesPerNode``. The torch runtime sets ``PET_NNODES`` / ``PET_NPROC_PER_NODE`` /
  ``PET_NODE_RANK`` / ``PET_MASTER_ADDR`` / ``PET_MASTER_PORT`` (reserved: sweepq never sets them).
* ``spec.runtimePatches[]`` (manager ``sweepq.io/dispatcher``) → the ``node`` replicated job's pod
  template: sweepq's pod labels, ``serviceAccountName``, the pod and ``node`` container security
  contexts, the ``/dev/shm``, ``/tmp`` and outputs volumes and mounts.
* the runtime (what a TrainJob cannot patch, or Kueue's typed round trip would drop):
  ``automountServiceAccountToken``, ``enableServiceLinks``, ``terminationGracePeriodSeconds``
  (the shipped runtime: 120 s — ``SWEEPQ_TERMINATION_GRACE_S`` does not reach TrainJob pods; edit
  the runtime), ``backoffLimit``, the JobSet's ``ttlSecondsAfterFinished`` (the shipped runtime
  deletes a finished job's JobSet and pods after an hour; the TrainJob object and its status stay).
* ``spec.activeDeadlineSeconds`` — ``max_runtime``, counted from the start (reset on resume
  from Kueue suspension).
* rendezvous and restarts: Trainer's own static rendezvous, from its ``PET_*`` env — node rank 0
  (``PET_NODE_RANK``, the Job completion index) hosts the store at
  ``PET_MASTER_ADDR:PET_MASTER_PORT`` and the others connect, retrying until its DNS name
  resolves. (A c10d rendezvous on that address makes node 0 decide once, by resolving its own
  headless-Service name, whether it hosts the store: if the record is not published yet no node
  hosts it and the job hangs to its timeout.) One node: ``torchrun --standalone
  --max-restarts=N`` — no DNS at all, and torchrun restarts the workers of a failed attempt in
  place. More nodes: ``--max-restarts=0`` — static rendezvous cannot restart one node's workers
  without the others, so a worker failure fails the pod; with sweepq's runtime (``backoffLimit:
  0``) that fails the TrainJob and sweepq's retry (``max_retries``) resumes from the checkpoint;
  upstream's ``torch-distributed`` leaves the Job default (a failed pod is recreated up to 6
  times inside the attempt).

A TrainJob has a fixed node count: elastic ranges are refused.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    Progress,
    as_int,
    container_env,
    job_metadata,
    node_resources,
    phase_from_conditions,
    pod_labels,
    progress_from,
    split_command,
    status_of,
    volume_mounts,
    volumes,
)
from dispatcher.backends.kube_options import (
    DEFAULT_OPTIONS,
    JobOptions,
    container_security_context,
    pod_security_context,
)
from dispatcher.backends.kube_pods import pod_started_at
from dispatcher.backends.kueue import suspended
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import JobPhase, LaunchRequest

log = logging.getLogger(__name__)

KIND = "trainjob"
RESOURCE = ResourceRef(
    group="trainer.kubeflow.org", version="v1alpha1", plural="trainjobs", kind="TrainJob",
    missing_fix="install Kubeflow Trainer v2.2+ (with its ClusterTrainingRuntimes) or set SWEEPQ_BACKEND=pytorchjob",
)
DEFAULT_RUNTIME = "torch-distributed"
TRAINER_JOB = "node"  # the runtime's replicated job that runs the trainer
TRAINER_CONTAINER = "node"  # ... and its trainer container
PATCH_MANAGER = "sweepq.io/dispatcher"  # a domain-prefixed path, as the Trainer webhook requires
MAX_ITEMS = 128  # the v2.3 CRD's maxItems of spec.trainer.command, .args and .env
SHIPPED_RUNTIME_GRACE_S = 120  # terminationGracePeriodSeconds of infra/k8s/components/trainjob-runtime

# TrainJob condition (status "True") → phase, in this order. Without one of these the phase
# comes from jobsStatus: a child job with ready pods means RUNNING.
CONDITION_PHASES: dict[str, JobPhase] = {
    "Complete": JobPhase.SUCCEEDED,
    "Failed": JobPhase.FAILED,  # child job failed, DeadlineExceeded, TrainingRuntimeNotSupported
    "Suspended": JobPhase.PENDING,  # held by Kueue
}


def torchrun_launcher(request: LaunchRequest) -> list[str]:
    """The torchrun invocation of the trainer container (see the module docstring): the rest of
    its configuration is the runtime's ``PET_*`` env."""
    launch = request.launch
    if launch.max_nodes == 1:
        return ["torchrun", "--standalone", f"--max-restarts={launch.max_restarts}"]
    return ["torchrun", "--max-restarts=0"]


def runtime_patch(request: LaunchRequest, options: JobOptions) -> dict[str, Any]:
    """sweepq's entry of ``spec.runtimePatches``: the ``node`` job's pod template."""
    pod_spec: dict[str, Any] = {}
    if request.launch.service_account:
        pod_spec["serviceAccountName"] = request.launch.service_account
    pod_spec["securityContext"] = pod_security_context(options)
    pod_spec["containers"] = [{"name": TRAINER_CONTAINER, "securityContext": container_security_context(options),
                               "volumeMounts": volume_mounts(request)}]
    pod_spec["volumes"] = volumes(request)
    pod = {"metadata": {"labels": pod_labels(request, kind=KIND)}, "spec": pod_spec}
    replicated_job = {"name": TRAINER_JOB, "template": {"spec": {"template": pod}}}
    return {"manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated_job]}}}}


def build_trainjob(request: LaunchRequest, *, runtime: str = DEFAULT_RUNTIME,
                   options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The TrainJob manifest of one trial attempt. Purely computational."""
    launch = request.launch
    if launch.min_nodes != launch.max_nodes:
        raise PermanentError(
            f"nodes: '{launch.min_nodes}:{launch.max_nodes}' — a TrainJob runs a fixed number of nodes; "
            f"write nodes: {launch.max_nodes}, or use kind pytorchjob for elastic training"
        )
    command, args = split_command(request, torchrun_launcher(request))
    trainer: dict[str, Any] = {"image": launch.image, "command": command}
    if args:
        trainer["args"] = args
    trainer["env"] = container_env(request)
    for field in ("command", "args", "env"):
        if len(trainer.get(field) or []) > MAX_ITEMS:
            raise PermanentError(
                f"{'command' if field != 'env' else 'env'}: this trial's TrainJob would have {len(trainer[field])} "
                f"{field} entries; Trainer accepts at most {MAX_ITEMS} in spec.trainer.{field} — sweep fewer "
                "parameters (or pass them as one JSON value), or use kind pytorchjob"
            )
    trainer["numNodes"] = launch.max_nodes
    trainer["numProcPerNode"] = launch.workers_per_node
    resources = node_resources(launch)
    if resources:
        trainer["resourcesPerNode"] = resources
    spec: dict[str, Any] = {
        "runtimeRef": {"name": runtime, "apiGroup": RESOURCE.group, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
        "runtimePatches": [runtime_patch(request, options)],
    }
    if launch.max_runtime:
        spec["activeDeadlineSeconds"] = launch.max_runtime
    return {"apiVersion": RESOURCE.api_version, "kind": RESOURCE.kind,
            "metadata": job_metadata(request, kind=KIND, options=options), "spec": spec}


def trainjob_progress(obj: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] | None = None) -> Progress:
    """Phase of a TrainJob: conditions, then ``jobsStatus`` (ready or succeeded child jobs → RUNNING),
    then its ``pods`` when given: JobSet counts a child job ``ready`` only while all its pods are,
    so a running job whose container restarts in place (upstream's runtime: ``restartPolicy:
    OnFailure``) reads ``ready: 0, active: 1`` — a pod whose container has already run means the
    job started (RUNNING, from that time), never that it is still pending. TrainJobs have no start
    time in their status; the end is the terminal condition's time."""
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
        if phase is JobPhase.PENDING and pods:
            ran = first_started(pods)
            if ran is not None:
                return Progress(JobPhase.RUNNING, started_at=ran)
    return progress_from(obj, phase, condition)


def first_started(pods: Sequence[Mapping[str, Any]]) -> float | None:
    times = [t for t in (pod_started_at(pod) for pod in pods) if t is not None]
    return min(times) if times else None


def pods_tell_more(obj: Mapping[str, Any]) -> bool:
    """A TrainJob that reads PENDING although it has pods (``active`` > 0) and is not held by
    Kueue: only its pods say whether it is starting or has started and restarts a container."""
    if phase_from_conditions(obj, CONDITION_PHASES) or suspended(obj):
        return False
    jobs = status_of(obj).get("jobsStatus")
    children = [job for job in (jobs if isinstance(jobs, list) else []) if isinstance(job, Mapping)]
    return not any(as_int(job.get("ready")) > 0 or as_int(job.get("succeeded")) > 0 for job in children) \
        and any(as_int(job.get("active")) > 0 for job in children)


class TrainJobBackend(KubeBackend):
    kind = KIND
    resource = RESOURCE

    def __init__(self, *, runtime: str = DEFAULT_RUNTIME, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        if kwargs.get("termination_grace_s") not in (None, SHIPPED_RUNTIME_GRACE_S):
            log.warning("trainjob: pods take terminationGracePeriodSeconds from ClusterTrainingRuntime %r (the "
                        "shipped one: %d s), not from termination_grace_s=%s (SWEEPQ_TERMINATION_GRACE_S) — set it "
                        "in the runtime", runtime, SHIPPED_RUNTIME_GRACE_S, kwargs["termination_grace_s"])

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        return build_trainjob(request, runtime=self.runtime, options=self.options)

    def observe_context(self, items: list[dict[str, Any]], ref: ResourceRef) -> dict[str, Any]:
        """The pods (one list, shared with the failure causes) when some TrainJob needs them to
        tell a restarting container from a job that never started (:func:`pods_tell_more`)."""
        if not any(pods_tell_more(obj) for obj in items):
            return {}
        return {"pods": self._list_pods()}  # None when unreadable: such jobs stay PENDING this tick

    def pods_of(self, context: Any) -> dict[str, list[dict[str, Any]]] | None:
        return (context or {}).get("pods")

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        pods = self.pods_of(context)
        name = str((obj.get("metadata") or {}).get("name") or "")
        return trainjob_progress(obj, pods.get(name) if pods is not None and pods_tell_more(obj) else None)
