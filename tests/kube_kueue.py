"""Kueue's behaviour in the Kubernetes emulator (``kube.kueue``), as far as sweepq can see it.

Modelled on Kueue v0.19 (kubernetes-sigs/kueue ``pkg/controller/jobframework``, ``pkg/workload``):

* **webhook** — a job of an integrated framework (default ``batch/job`` and
  ``trainer.kubeflow.org/trainjob``; ``kubeflow.org/pytorchjob`` only when enabled, as in Kueue,
  where it is off by default) that carries ``kueue.x-k8s.io/queue-name`` is created suspended
  (``spec.suspend`` / ``spec.runPolicy.suspend``) — with ``manage_jobs_without_queue_name``
  (Kueue's ``manageJobsWithoutQueueName``) every job of such a framework is, and one without a
  label gets a Workload with no queue, which Kueue reports ``Inadmissible``;
* **job reconciler** — one ``Workload`` per such job (``<kind>-<name>-<hash>``, controller owner
  reference, ``kueue.x-k8s.io/job-uid`` label, ``spec.queueName``, ``spec.priority`` from the
  WorkloadPriorityClass named by ``kueue.x-k8s.io/priority-class`` — an unknown class makes no
  Workload); the job is unsuspended once its Workload is admitted and suspended again on
  eviction (its status gets ``Suspended`` True/False as its operator writes it); a finished job's
  Workload gets ``Finished`` and frees its quota; a deleted job's Workload is garbage-collected;
* **typed Update** — admitting or suspending a TrainJob, Kueue writes the whole object back
  through the Trainer API types it vendors (``trainer_types``, default v0.19's v2.2.1): fields
  those types lack are deleted (``upstream_models.TRAINER_TYPE_GAPS``), as on a real cluster;
* **scheduler** — per LocalQueue a quota the test sets (``jobs`` admitted at once, optional
  ``gpus``), BestEffortFIFO by priority then creation; ``QuotaReserved`` + ``Admitted`` on
  admission, ``QuotaReserved`` False with Kueue's message while waiting, ``Inadmissible`` for an
  unknown LocalQueue; with ``preemption`` a higher-priority Workload evicts the lowest admitted
  one (``Evicted``/``Preempted`` reason ``Preempted``, ``Requeued``).

It runs synchronously after every write through the API and after each helper call, so tests are
deterministic. Helpers (each returns when Kueue's reaction is stored): ``install``, ``set_quota``,
``evict``, ``requeue``, ``deactivate``, ``workload``, ``admitted``, ``waiting``.

The issue 13 scenario (quota for 2 jobs, cap 8, 6 trials) for tick-level tests::

    kube.kueue.install(queues={"team-a": 2})
    # run ticks with sweepq.kueue_queue: team-a, SWEEPQ_MAX_RUNNING=8, 6 trials; then:
    assert len(kube.kueue.admitted()) == 2 and len(kube.kueue.waiting()) == 4
    kube.kueue.evict(kube.kueue.admitted()[0])          # preempted: suspended, same job, requeued
    for job in kube.kueue.admitted(): kube.set_job_phase("job", job, "SUCCEEDED")   # frees quota
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import kmock
from kube_status import condition, now_rfc3339
from upstream_models import KUEUE_TRAINER_TYPES, typed_round_trip

GROUP = "kueue.x-k8s.io"
QUEUE_LABEL = f"{GROUP}/queue-name"
PRIORITY_LABEL = f"{GROUP}/priority-class"
# framework → (group, plural, path of the suspend flag in the job)
FRAMEWORKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "batch/job": ("batch", "jobs", ("spec", "suspend")),
    "trainer.kubeflow.org/trainjob": ("trainer.kubeflow.org", "trainjobs", ("spec", "suspend")),
    "kubeflow.org/pytorchjob": ("kubeflow.org", "pytorchjobs", ("spec", "runPolicy", "suspend")),
}
DEFAULT_FRAMEWORKS = frozenset({"batch/job", "trainer.kubeflow.org/trainjob"})  # Kueue v0.19's defaults
FINISHED = ("Complete", "Succeeded", "Failed")


@dataclass
class Quota:
    jobs: int | None = None  # admitted Workloads at once
    gpus: int | None = None  # nvidia.com/gpu of the admitted Workloads


@dataclass
class KueueConfig:
    queues: dict[str, Quota] = field(default_factory=dict)
    priority_classes: dict[str, int] = field(default_factory=dict)
    frameworks: frozenset[str] = DEFAULT_FRAMEWORKS
    preemption: bool = False  # withinClusterQueue: LowerPriority
    version: str = "v1beta2"  # the Workload API version served
    # Kueue's manageJobsWithoutQueueName: jobs of an integrated framework without a queue label are
    # suspended too and get a Workload with no queue (Inadmissible: "LocalQueue  doesn't exist").
    manage_jobs_without_queue_name: bool = False
    # The Trainer API types Kueue's TrainJob integration is built against: it admits and suspends
    # a TrainJob with a typed full Update, deleting what those types lack (upstream_models.
    # typed_round_trip). Default: Kueue v0.19's, v2.2.1.
    trainer_types: str = KUEUE_TRAINER_TYPES["v0.19"]


def config_from_manifests(objects: list[dict[str, Any]]) -> KueueConfig:
    """The emulator's Kueue for a shipped setup: each LocalQueue gets its ClusterQueue's nominal
    ``nvidia.com/gpu`` quota, the WorkloadPriorityClasses their values (borrowing is not emulated)."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    queues = {}
    for name, local in by_kind.get("LocalQueue", {}).items():
        cluster = by_kind["ClusterQueue"][local["spec"]["clusterQueue"]]
        gpus = [int(resource["nominalQuota"]) for group in cluster["spec"]["resourceGroups"]
                for flavor in group["flavors"] for resource in flavor["resources"] if resource["name"] == "nvidia.com/gpu"]
        queues[name] = Quota(gpus=sum(gpus))
    classes = {name: int(wpc["value"]) for name, wpc in by_kind.get("WorkloadPriorityClass", {}).items()}
    preemption = any(cq["spec"].get("preemption", {}).get("withinClusterQueue") == "LowerPriority"
                     for cq in by_kind.get("ClusterQueue", {}).values())
    return KueueConfig(queues=queues, priority_classes=classes, preemption=preemption)


def _get(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) or {} if isinstance(obj, dict) else {}
    return obj or None


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


def _true(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _set_condition(obj: dict[str, Any], kind: str, status: str, reason: str, message: str = "") -> None:
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for index, cond in enumerate(conditions):
        if cond.get("type") == kind:
            if cond.get("status") != status or cond.get("reason") != reason:
                conditions[index] = condition(kind, reason, message, status)
            return
    conditions.append(condition(kind, reason, message, status))


def requested_gpus(job: dict[str, Any]) -> int:
    """nvidia.com/gpu the job's pods request at full size (what Kueue counts against quota)."""
    spec = job.get("spec") or {}

    def per_pod(pod_spec: dict[str, Any]) -> int:
        return sum(int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0) or 0)
                   for c in pod_spec.get("containers") or [])

    if job.get("kind") == "TrainJob":
        trainer = spec.get("trainer") or {}
        gpus = int(((trainer.get("resourcesPerNode") or {}).get("limits") or {}).get("nvidia.com/gpu", 0) or 0)
        return gpus * int(trainer.get("numNodes") or 1)
    if job.get("kind") == "PyTorchJob":
        return sum(int(r.get("replicas") or 1) * per_pod((r.get("template") or {}).get("spec") or {})
                   for r in (spec.get("pytorchReplicaSpecs") or {}).values())
    return int(spec.get("parallelism") or 1) * per_pod((spec.get("template") or {}).get("spec") or {})


class KueueSim:
    """Kueue over the emulator's object store. Every method runs on the server's event loop with
    the store's lock held (see ``SweepqKubeEmulator``)."""

    def __init__(self, objects: Any, publish: Callable[[Any, str, dict[str, Any]], Any], config: KueueConfig) -> None:
        self._objects = objects
        self._publish = publish
        self.config = config
        self.events: list[str] = []  # what Kueue would report as Events (e.g. an unknown priority class)
        self._held: set[str] = set()  # Workloads evicted with requeue=False (waiting for a backoff)

    @property
    def workload_resource(self) -> Any:
        return kmock.resource(GROUP, self.config.version, "workloads")

    # ---- the webhook

    def framework_of(self, resource: Any) -> tuple[str, ...] | None:
        for name in self.config.frameworks:
            group, plural, path = FRAMEWORKS[name]
            if (resource.group, resource.plural) == (group, plural):
                return path
        return None

    def _managed(self, obj: dict[str, Any]) -> bool:
        return bool(((obj.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL)) \
            or self.config.manage_jobs_without_queue_name

    def mutate(self, resource: Any, obj: dict[str, Any]) -> None:
        path = self.framework_of(resource)
        if path and self._managed(obj):
            _set(obj, path, True)

    # ---- the controllers

    def _jobs(self) -> list[tuple[Any, Any, tuple[str, ...]]]:
        found = []
        for key, stored in self._objects.items():
            path = self.framework_of(key[0])
            if path and not stored.deleted and self._managed(stored.raw):
                found.append((key, stored, path))
        return found

    def _workloads(self) -> dict[str, Any]:
        """{owner uid: stored workload}"""
        found = {}
        for key, stored in self._objects.items():
            if key[0] == self.workload_resource and not stored.deleted:
                found[stored.raw["metadata"]["labels"][f"{GROUP}/job-uid"]] = stored
        return found

    async def _write(self, key: Any, stored: Any, new: dict[str, Any]) -> None:
        new["metadata"]["resourceVersion"] = str(int(new["metadata"].get("resourceVersion") or 0) + 1)
        stored.create(new)
        await self._publish(key[0], "MODIFIED", copy.deepcopy(new))

    async def reconcile(self) -> None:
        workloads = self._workloads()
        jobs = self._jobs()
        for key, stored, _ in jobs:  # a Workload per job
            job = stored.raw
            if job["metadata"].get("uid") not in workloads:
                created = await self._create_workload(key, job)
                if created is not None:
                    workloads[job["metadata"]["uid"]] = created
        for _key, stored, _path in jobs:  # finished jobs free their quota
            workload = workloads.get(stored.raw["metadata"].get("uid"))
            if workload is not None and any(_true(stored.raw, kind) for kind in FINISHED) \
                    and not _true(workload.raw, "Finished"):
                new = copy.deepcopy(workload.raw)
                _set_condition(new, "Finished", "True", "Succeeded" if not _true(stored.raw, "Failed") else "Failed")
                await self._write(next(k for k, v in self._objects.items() if v is workload), workload, new)
        await self._schedule(workloads)
        for key, stored, path in jobs:  # jobs follow their Workloads
            workload = workloads.get(stored.raw["metadata"].get("uid"))
            if workload is None or _true(workload.raw, "Finished"):
                continue
            admitted = bool(_true(workload.raw, "Admitted"))
            if bool(_get(stored.raw, path)) == admitted:  # suspended while not admitted and vice versa
                await self._suspend_job(key, stored, path, suspend=not admitted)

    async def _create_workload(self, key: Any, job: dict[str, Any]) -> Any:
        labels = job["metadata"].get("labels") or {}
        priority_class = labels.get(PRIORITY_LABEL)
        if priority_class and priority_class not in self.config.priority_classes:
            self.events.append(f"{job['metadata']['name']}: WorkloadPriorityClass {priority_class!r} not found")
            return None
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        digest = hashlib.sha256(f"{name}{uid}{job['kind']}".encode()).hexdigest()[:5]
        workload_name = f"{job['kind'].lower()}-{name}"[:57] + f"-{digest}"
        spec: dict[str, Any] = {"queueName": labels.get(QUEUE_LABEL, ""), "active": True,
                                "priority": self.config.priority_classes.get(priority_class, 0),
                                "podSets": [{"name": "main", "count": 1}]}
        if priority_class:
            spec["priorityClassRef"] = {"group": GROUP, "kind": "WorkloadPriorityClass", "name": priority_class}
        workload = {
            "apiVersion": f"{GROUP}/{self.config.version}", "kind": "Workload",
            "metadata": {"name": workload_name, "namespace": key[1], "uid": f"wl-{digest}-{uid[:8]}",
                         "resourceVersion": "1", "creationTimestamp": now_rfc3339(),
                         "labels": {f"{GROUP}/job-uid": uid},
                         "ownerReferences": [{"apiVersion": job["apiVersion"], "kind": job["kind"], "name": name,
                                              "uid": uid, "controller": True, "blockOwnerDeletion": True}]},
            "spec": spec, "status": {"conditions": []},
        }
        workload_key = (self.workload_resource, key[1], workload_name)
        self._objects[workload_key] = workload
        await self._publish(self.workload_resource, "ADDED", copy.deepcopy(workload))
        return self._objects[workload_key]

    def _order(self, workload: Any) -> tuple[int, str]:
        return -int(workload.raw["spec"].get("priority") or 0), str(workload.raw["metadata"]["creationTimestamp"])

    def _gpus_of(self, workload: Any) -> int:
        uid = workload.raw["metadata"]["labels"][f"{GROUP}/job-uid"]
        return next((requested_gpus(stored.raw) for _, stored, _ in self._jobs()
                     if stored.raw["metadata"].get("uid") == uid), 0)

    async def _schedule(self, workloads: dict[str, Any]) -> None:
        live = [w for w in workloads.values() if not _true(w.raw, "Finished")]
        for queue_name in sorted({w.raw["spec"]["queueName"] for w in live}):
            in_queue = sorted([w for w in live if w.raw["spec"]["queueName"] == queue_name], key=self._order)
            quota = self.config.queues.get(queue_name)
            for workload in in_queue:
                if _true(workload.raw, "QuotaReserved") or workload.raw["metadata"]["name"] in self._held \
                        or workload.raw["spec"].get("active") is False:
                    continue
                if quota is None:
                    await self._status(workload, "QuotaReserved", "False", "Inadmissible",
                                       f"LocalQueue {queue_name} doesn't exist")
                    continue
                admitted = [w for w in in_queue if _true(w.raw, "QuotaReserved")]
                if not self._fits(quota, admitted, workload) and self.config.preemption:
                    victims = [w for w in admitted if self._order(w) > self._order(workload)]
                    if victims:
                        await self._evict(max(victims, key=self._order), "Preempted",
                                          "Preempted to accommodate a higher priority Workload", requeue=True)
                        admitted = [w for w in in_queue if _true(w.raw, "QuotaReserved")]
                if self._fits(quota, admitted, workload):
                    new = copy.deepcopy(workload.raw)
                    _set_condition(new, "QuotaReserved", "True", "QuotaReserved", f"Quota reserved in ClusterQueue {queue_name}")
                    _set_condition(new, "Admitted", "True", "Admitted", "The workload is admitted")
                    for kind in ("Evicted", "Preempted"):
                        if _true(new, kind):
                            _set_condition(new, kind, "False", "QuotaReserved", "Previously: evicted")
                    new["status"]["admission"] = {"clusterQueue": queue_name,
                                                  "podSetAssignments": [{"name": "main", "count": 1}]}
                    await self._write(self._key_of(workload), workload, new)
                else:
                    needed = self._gpus_of(workload)
                    await self._status(workload, "QuotaReserved", "False", "Pending",
                                       f"couldn't assign flavors to pod set main: insufficient unused quota in "
                                       f"ClusterQueue {queue_name} ({len(admitted)} admitted"
                                       + (f", {needed} nvidia.com/gpu requested" if needed else "") + ")")

    def _fits(self, quota: Quota, admitted: list[Any], workload: Any) -> bool:
        if quota.jobs is not None and len(admitted) >= quota.jobs:
            return False
        if quota.gpus is not None and sum(self._gpus_of(w) for w in admitted) + self._gpus_of(workload) > quota.gpus:
            return False
        return True

    def _key_of(self, stored: Any) -> Any:
        return next(key for key, value in self._objects.items() if value is stored)

    async def _status(self, workload: Any, kind: str, status: str, reason: str, message: str) -> None:
        new = copy.deepcopy(workload.raw)
        _set_condition(new, kind, status, reason, message)
        if new != workload.raw:
            await self._write(self._key_of(workload), workload, new)

    async def _evict(self, workload: Any, reason: str, message: str, *, requeue: bool) -> None:
        """Evicted → (the job reconciler) job suspended → quota released, Requeued."""
        new = copy.deepcopy(workload.raw)
        _set_condition(new, "Evicted", "True", reason, message)
        if reason == "Preempted":
            _set_condition(new, "Preempted", "True", "InClusterQueue", message)
        _set_condition(new, "QuotaReserved", "False", "Pending", message)
        _set_condition(new, "Admitted", "False", "NoReservation", "The workload has no reservation")
        _set_condition(new, "Requeued", "True" if requeue else "False", reason, message)
        new["status"].pop("admission", None)
        if not requeue:
            self._held.add(new["metadata"]["name"])
        await self._write(self._key_of(workload), workload, new)

    async def _suspend_job(self, key: Any, stored: Any, path: tuple[str, ...], *, suspend: bool) -> None:
        new = copy.deepcopy(stored.raw)
        if new.get("kind") == "TrainJob":  # Kueue's typed client.Update of the whole object
            lost = typed_round_trip(new, self.config.trainer_types)
            if lost:
                self.events.append(f"{new['metadata']['name']}: Kueue's Update through Trainer "
                                   f"{self.config.trainer_types} types deleted {', '.join(lost)}")
        _set(new, path, suspend)
        reason = {"Job": "JobSuspended" if suspend else "JobResumed",
                  "PyTorchJob": "PyTorchJobSuspended" if suspend else "PyTorchJobResumed"}.get(
                      new["kind"], "Suspended" if suspend else "Resumed")
        _set_condition(new, "Suspended", "True" if suspend else "False", reason,
                       "Job suspended" if suspend else "Job resumed")
        if suspend:  # the operator stops the pods: nothing is running or ready any more
            status = new["status"]
            status.pop("startTime", None)
            for cond in status.get("conditions") or []:
                if cond.get("type") == "Running":
                    cond.update(status="False", reason="Suspended")
            for counter in ("active", "ready"):
                if counter in status:
                    status[counter] = 0
            for child in status.get("jobsStatus") or []:
                child.update(ready=0, active=0)
        await self._write(key, stored, new)

    # ---- test controls (by job name)

    def workload_of(self, job_name: str) -> Any:
        for _, stored, _ in self._jobs():
            if stored.raw["metadata"]["name"] == job_name:
                workload = self._workloads().get(stored.raw["metadata"]["uid"])
                if workload is not None:
                    return workload
        raise LookupError(f"no Workload for job {job_name!r}")

    async def evict(self, job_name: str, reason: str, *, requeue: bool) -> None:
        await self._evict(self.workload_of(job_name), reason, f"Evicted by the test ({reason})", requeue=requeue)
        await self.reconcile()

    async def requeue(self, job_name: str) -> None:
        workload = self.workload_of(job_name)
        self._held.discard(workload.raw["metadata"]["name"])
        await self._status(workload, "Requeued", "True", "BackoffFinished", "The workload backoff was finished")
        await self.reconcile()

    async def deactivate(self, job_name: str) -> None:
        workload = self.workload_of(job_name)
        new = copy.deepcopy(workload.raw)
        new["spec"]["active"] = False
        _set_condition(new, "Evicted", "True", "Deactivated", "The workload is deactivated due to exceeding the "
                                                               "maximum number of re-queuing retries")
        _set_condition(new, "QuotaReserved", "False", "Pending", "deactivated")
        _set_condition(new, "Admitted", "False", "NoReservation", "deactivated")
        await self._write(self._key_of(workload), workload, new)
        await self.reconcile()

    def job_names(self, *, admitted: bool) -> list[str]:
        names = []
        workloads = self._workloads()
        for _, stored, _ in sorted(self._jobs(), key=lambda j: j[1].raw["metadata"]["name"]):
            workload = workloads.get(stored.raw["metadata"]["uid"])
            if workload is None or _true(workload.raw, "Finished"):
                continue
            if bool(_true(workload.raw, "Admitted")) == admitted:
                names.append(stored.raw["metadata"]["name"])
        return names
