"""Kueue, read side: each Kueue job's admission state from its ``Workload``.

Kueue (v0.19; integrations ``batch/job`` and ``trainer.kubeflow.org/trainjob`` on by default,
``kubeflow.org/pytorchjob`` off by default and deprecated) creates a job that carries
``kueue.x-k8s.io/queue-name`` *suspended* (its mutating webhook) and a ``Workload`` owned by it
(``ownerReferences``, controller). Quota admission reserves quota (``QuotaReserved``), then admits
(``Admitted``) and unsuspends the job. An eviction or preemption sets ``Evicted`` (reason
``Preempted``, ``PodsReadyTimeout``, ...), suspends the job again — its pods go, the job object
stays, with the same name and attempt — clears ``QuotaReserved``/``Admitted`` and ``Requeued``;
the next quota reservation resets ``Evicted``. A Workload deactivated by Kueue (``spec.active:
false``, e.g. ``RequeuingLimitExceeded``) will never be admitted again.

Kueue can also suspend a job that carries no queue label (``manageJobsWithoutQueueName``, with
or without a default LocalQueue): sweepq never creates a suspended job, so a suspended job of
ours is Kueue's, labelled or not, and its admission is read the same way.

:func:`admission_of` (pure) maps one job (+ its Workload, when read) to what sweepq needs:

| job / Workload                                                 | admission    | phase     |
| -------------------------------------------------------------- | ------------ | --------- |
| no queue label, not suspended                                   | ``None``     | the job's |
| ``spec.active: false`` (deactivated)                            | EVICTED      | FAILED    |
| ``Evicted`` True                                                | EVICTED      | PENDING   |
| ``Admitted`` True                                               | ADMITTED     | the job's |
| ``QuotaReserved`` False, reason ``Inadmissible`` (unknown        | INADMISSIBLE | PENDING   |
| LocalQueue, inactive ClusterQueue, namespace not admitted), or   |              |           |
| a request over the queue's maximum capacity                     |              |           |
| no ``Admitted`` (waiting for quota / admission checks)          | QUEUED       | PENDING   |
| no Workload, job suspended, younger than ``NO_WORKLOAD_AFTER_S`` | QUEUED       | PENDING   |
| no Workload, job suspended, older (missing WorkloadPriority-    | INADMISSIBLE | PENDING   |
| Class, integration off, no queue label under                    |              |           |
| manageJobsWithoutQueueName)                                     |              |           |
| no Workload, labelled job running (Kueue does not manage it)    | ``None``     | the job's |

:class:`WorkloadReader` lists the namespace's Workloads **once** per observe, only when a listed
job carries a queue label or is suspended. It prefers ``kueue.x-k8s.io/v1beta2`` (served since
Kueue v0.15, the storage version since v0.16) and falls back to ``v1beta1`` (served, deprecated,
by every Kueue up to v0.19), remembering the version that answered. When Workloads cannot be read (403, Kueue missing, 5xx) the admission
comes from the job's ``suspend`` alone (QUEUED while suspended, ADMITTED once not) — degraded
(EVICTED and INADMISSIBLE read as QUEUED, no ``admitted_at``), never blocking the tick.

Workloads are matched to jobs by their controller owner reference: the owner's *kind* is the
kind of the resource sweepq listed (``ResourceRef.kind``), never the listed object's ``kind``
field — a real API server leaves ``kind``/``apiVersion`` out of the items of a built-in kind's
list (a ``JobList``'s items; kubernetes/kubernetes#3030).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from dispatcher.backends.kube_common import condition_reason, condition_time, status_of, true_conditions
from dispatcher.core.jobs import LABEL_KUEUE_PRIORITY, LABEL_KUEUE_QUEUE, Admission, JobPhase

log = logging.getLogger(__name__)

GROUP = "kueue.x-k8s.io"
VERSIONS = ("v1beta2", "v1beta1")  # preferred first
PLURAL = "workloads"
# The mapping (operator policy ``kueue.priority_classes``, or the ``kueue_priority_classes``
# backend option) for the WorkloadPriorityClasses shipped in infra/k8s/components/kueue:
# priority < 0 → low, 0..99 → normal, ≥ 100 → high. Not a default: a job naming a class the
# cluster lacks gets no Workload (INADMISSIBLE after NO_WORKLOAD_AFTER_S), so the operator opts in.
SHIPPED_PRIORITY_CLASSES = {-1000: "sweepq-low", 0: "sweepq-normal", 100: "sweepq-high"}
# Kueue makes a job's Workload within seconds of its creation; a suspended job with none after
# this long will not get one (a WorkloadPriorityClass that does not exist, the integration off).
NO_WORKLOAD_AFTER_S = 120.0
INADMISSIBLE_REASON = "Inadmissible"  # QuotaReserved False: LocalQueue/ClusterQueue missing or inactive


@dataclass(frozen=True)
class AdmissionView:
    admission: Admission | None
    admitted_at: float | None = None
    detail: str = ""  # why it waits (Kueue's message) or that Kueue does not manage it
    failed: str = ""  # non-empty: the attempt cannot go on (Workload deactivated)
    failed_at: float | None = None


def queue_of(job: Mapping[str, Any]) -> str | None:
    labels = (job.get("metadata") or {}).get("labels") or {}
    queue = labels.get(LABEL_KUEUE_QUEUE) if isinstance(labels, Mapping) else None
    return str(queue) if queue else None


def suspended(job: Mapping[str, Any]) -> bool:
    """``spec.suspend`` (batch Job, TrainJob, JobSet) or ``spec.runPolicy.suspend`` (Kubeflow v1 jobs)."""
    spec = job.get("spec") or {}
    run_policy = spec.get("runPolicy") or {}
    return bool(spec.get("suspend")) or bool(run_policy.get("suspend") if isinstance(run_policy, Mapping) else False)


def workloads_by_owner(workloads: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """``{(owner kind, owner name): workload}`` over the controller owner references, the newest
    Workload winning (Kueue recreates one whose spec went out of sync with its job)."""
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for workload in sorted(workloads, key=lambda w: str((w.get("metadata") or {}).get("creationTimestamp") or "")):
        for ref in (workload.get("metadata") or {}).get("ownerReferences") or []:
            if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") and ref.get("name"):
                found[(str(ref["kind"]), str(ref["name"]))] = workload
    return found


def _owned_by(workload: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    uid = (job.get("metadata") or {}).get("uid")
    refs = (workload.get("metadata") or {}).get("ownerReferences") or []
    return not uid or any(isinstance(ref, Mapping) and ref.get("uid") == uid for ref in refs)


def admission_of(job: Mapping[str, Any], workload: Mapping[str, Any] | None, *,
                 workloads_read: bool = True, age_s: float | None = None) -> AdmissionView:
    """The admission of one job (see the module table). ``workload``: the Workload owned by it
    (``None``: none found); ``workloads_read``: whether Workloads could be listed at all;
    ``age_s``: seconds since the job was created (``None``: unknown). Purely computational."""
    queue = queue_of(job)
    held = suspended(job)
    if queue is None and not held:
        return AdmissionView(None)
    if workload is not None and not _owned_by(workload, job):
        workload = None  # a Workload of an earlier job of the same name
    if workload is None:
        return _without_workload(job, queue, held, workloads_read=workloads_read, age_s=age_s)
    conditions = true_conditions(workload)
    spec = workload.get("spec") or {}
    where = f"LocalQueue {queue}" if queue else "no LocalQueue"
    if spec.get("active") is False:
        evicted = conditions.get("Evicted")
        why = condition_reason(evicted) or "deactivated"
        return AdmissionView(Admission.EVICTED, detail=f"Kueue deactivated the Workload ({why})",
                             failed=f"Kueue deactivated its Workload and will not admit it again ({why})",
                             failed_at=condition_time(evicted))
    if "Evicted" in conditions:
        return AdmissionView(Admission.EVICTED, detail=f"evicted by Kueue ({condition_reason(conditions['Evicted'])}); "
                                                        "resumes from its checkpoint when re-admitted")
    if "Admitted" in conditions:
        return AdmissionView(Admission.ADMITTED, admitted_at=condition_time(conditions["Admitted"]))
    reason, waiting = _quota_condition(workload)
    if reason == INADMISSIBLE_REASON or _never_fits(waiting):
        fix = "fix the queue or the request" if queue else \
            "set kueue_queue in the sweep or the team's policy (Kueue's manageJobsWithoutQueueName holds jobs without one)"
        return AdmissionView(Admission.INADMISSIBLE, detail=f"Kueue cannot admit it ({where}): {waiting or reason} — "
                                                             f"{fix}; it will not start as is")
    return AdmissionView(Admission.QUEUED, detail=f"waiting for Kueue quota ({where})"
                                                  + (f": {waiting}" if waiting else ""))


def _without_workload(job: Mapping[str, Any], queue: str | None, held: bool, *, workloads_read: bool,
                      age_s: float | None) -> AdmissionView:
    if not held:  # labelled (else admission_of returned), running
        if not workloads_read:
            return AdmissionView(Admission.ADMITTED)
        return AdmissionView(None, detail=f"labelled for Kueue queue {queue!r} but Kueue manages no Workload for it "
                                          "— enable Kueue's integration for this kind (integrations.frameworks)")
    if not workloads_read or age_s is None or age_s < NO_WORKLOAD_AFTER_S:
        return AdmissionView(Admission.QUEUED, detail=f"waiting for Kueue (LocalQueue {queue})" if queue
                             else "suspended, waiting for Kueue")
    waited = f"suspended {int(age_s)} s and Kueue made no Workload for it"
    if queue is None:
        return AdmissionView(Admission.INADMISSIBLE, detail=(
            f"{waited}: Kueue (manageJobsWithoutQueueName) holds jobs without a queue label — set kueue_queue "
            "in the sweep or the team's policy"))
    labels = (job.get("metadata") or {}).get("labels") or {}
    priority_class = labels.get(LABEL_KUEUE_PRIORITY) if isinstance(labels, Mapping) else None
    check = (f"that WorkloadPriorityClass {priority_class!r} exists (kubectl get workloadpriorityclasses) and "
             if priority_class else "")
    return AdmissionView(Admission.INADMISSIBLE, detail=(
        f"{waited} (LocalQueue {queue}): check {check}that Kueue's integration for this kind is enabled "
        "(integrations.frameworks); the job's events say more"))


def _quota_condition(workload: Mapping[str, Any]) -> tuple[str, str]:
    """``(reason, message)`` of ``QuotaReserved`` False — Kueue's reason for not reserving quota yet
    (``Pending``: waits for quota; ``Inadmissible``: cannot be queued as the cluster stands)."""
    for condition in status_of(workload).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "QuotaReserved" \
                and str(condition.get("status")) == "False":
            message = " ".join(str(condition.get("message") or "").split())[:300]
            return str(condition.get("reason") or ""), message
    return "", ""


def _never_fits(message: str) -> bool:
    """Kueue's flavor assigner says the request exceeds the queue's maximum capacity (nominal
    quota plus what it may borrow) and no flavor could fit it later ("insufficient unused quota")."""
    return "> maximum capacity" in message and "unused quota" not in message


def apply_admission(phase: JobPhase, view: AdmissionView) -> tuple[JobPhase, str]:
    """``(phase, reason)`` after Kueue: a job that waits or was evicted is PENDING whatever its
    stale conditions say (evicted pods are gone); a deactivated Workload fails the attempt."""
    if view.failed and not phase.terminal:
        return JobPhase.FAILED, view.failed
    if view.admission is not None and view.admission.waiting and not phase.terminal:
        return JobPhase.PENDING, ""
    return phase, ""


class WorkloadReader:
    """One Workload list per call, over ``list_workloads(version) -> items`` (raises the client's
    errors). Remembers which API version answered."""

    def __init__(self, list_workloads: Callable[[str], list[dict[str, Any]]]) -> None:
        self._list = list_workloads
        self.version: str | None = None

    def read(self) -> list[dict[str, Any]] | None:
        """The Workloads, or ``None`` when they cannot be read (logged; callers degrade)."""
        versions = (self.version,) if self.version else VERSIONS
        for version in versions:
            try:
                items = self._list(version)
            except Exception as exc:  # noqa: BLE001 - any failure degrades to suspend-only admission
                if getattr(exc, "status", None) == 404 and version != versions[-1]:
                    continue
                if getattr(exc, "status", None) == 404:
                    self.version = None
                log.warning("Kueue Workloads unreadable (%s %s): admission from the jobs' suspend only — "
                            "grant list on workloads.kueue.x-k8s.io, or check that Kueue is installed",
                            getattr(exc, "status", "") or type(exc).__name__, getattr(exc, "reason", "") or exc)
                return None
            self.version = version
            return items
        return None
