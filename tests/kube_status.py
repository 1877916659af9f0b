"""What the job operators and the kubelet write, for the Kubernetes emulator (tests/kube_emulator.py).

* :func:`job_status_patch` — the status a PyTorchJob (Training Operator), batch Job (Job
  controller) or TrainJob (Trainer) shows in a phase, in their controllers' shapes;
* :func:`worker_pods` — the pods of an ElasticJob (TorchElastic controller) in a phase;
* :func:`job_pods` and the container-state factories (:func:`oom_killed`, :func:`image_pull_backoff`,
  :func:`unschedulable`, ...) — the pods of any kind's job with the states the kubelet and the
  scheduler report, named as each operator names them and labelled from the job's pod template.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import uuid
from typing import Any, Iterable

from dispatcher.core.jobs import JobPhase


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, str]:
    now = now_rfc3339()
    return {"type": kind, "status": status, "reason": reason or kind, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def job_status_patch(kind: str, phase: JobPhase, *, reason: str = "") -> dict[str, Any]:
    """The status a PyTorchJob / batch Job / TrainJob shows in ``phase`` (their controllers' shapes)."""
    now = now_rfc3339()
    if kind == "pytorchjob":
        created, running = condition("Created", "PyTorchJobCreated"), condition("Running", "PyTorchJobRunning")
        ended = {**running, "status": "False"}
        return {
            JobPhase.PENDING: {"conditions": [created]},
            JobPhase.RUNNING: {"conditions": [created, running], "startTime": now},
            JobPhase.SUCCEEDED: {"conditions": [created, ended, condition("Succeeded", "PyTorchJobSucceeded")],
                                 "startTime": now, "completionTime": now},
            JobPhase.FAILED: {"conditions": [created, ended, condition("Failed", reason or "PyTorchJobFailed",
                                                                       "PyTorchJob failed")],
                              "startTime": now, "completionTime": now},
        }[phase]
    if kind == "job":
        return {
            JobPhase.PENDING: {"active": 1, "ready": 0},
            JobPhase.RUNNING: {"active": 1, "ready": 1, "startTime": now},
            JobPhase.SUCCEEDED: {"active": 0, "ready": 0, "succeeded": 1, "startTime": now, "completionTime": now,
                                 "conditions": [condition("Complete")]},
            JobPhase.FAILED: {"active": 0, "ready": 0, "failed": 1, "startTime": now, "conditions": [
                condition("Failed", reason or "BackoffLimitExceeded", "Job has reached the specified backoff limit")]},
        }[phase]
    if kind == "trainjob":
        def jobs(ready: int, active: int, succeeded: int, failed: int) -> list[dict[str, Any]]:
            return [{"name": "node", "ready": ready, "active": active, "succeeded": succeeded, "failed": failed,
                     "suspended": 0}]
        return {
            JobPhase.PENDING: {"jobsStatus": jobs(0, 1, 0, 0)},
            JobPhase.RUNNING: {"jobsStatus": jobs(1, 1, 0, 0)},
            JobPhase.SUCCEEDED: {"jobsStatus": jobs(0, 0, 1, 0),
                                 "conditions": [condition("Complete", "JobsCompleted", "TrainJob completed")]},
            JobPhase.FAILED: {"jobsStatus": jobs(0, 0, 0, 1),
                              "conditions": [condition("Failed", reason or "JobsFailed", "TrainJob failed")]},
        }[phase]
    raise ValueError(f"no status emulation for kind {kind!r}")


# --------------------------------------------------------------------------- pods


def pod_template_labels(job: dict[str, Any]) -> dict[str, str]:
    """The labels the operator copies onto the job's pods (TrainJob: from sweepq's runtime patch)."""
    spec = job.get("spec") or {}
    if job.get("kind") == "TrainJob":
        for patch in spec.get("runtimePatches") or []:
            for replicated in (((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}).get(
                    "replicatedJobs") or []:
                pod = ((replicated.get("template") or {}).get("spec") or {}).get("template") or {}
                if (pod.get("metadata") or {}).get("labels"):
                    return dict(pod["metadata"]["labels"])
        return {}
    templates = []
    for holder in ((spec.get("pytorchReplicaSpecs") or {}).values() if job.get("kind") == "PyTorchJob" else
                   (spec.get("replicaSpecs") or {}).values() if job.get("kind") == "ElasticJob" else [spec]):
        templates.append((holder or {}).get("template") or {})
    for template in templates:
        if (template.get("metadata") or {}).get("labels"):
            return dict(template["metadata"]["labels"])
    return {}


def _suffix(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:5]


def pod_name(job: dict[str, Any], index: int) -> str:
    """How each operator names the pods of ``job`` (CONTRACTS C1)."""
    name = job["metadata"]["name"]
    kind = job.get("kind")
    if kind in ("PyTorchJob", "ElasticJob"):
        return f"{name}-worker-{index}"
    if kind == "TrainJob":
        return f"{name}-node-0-{index}-{_suffix(f'{name}{index}')}"
    return f"{name}-{_suffix(f'{name}{index}')}"


def job_pods(job: dict[str, Any], statuses: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pod of ``job`` per status in ``statuses``, labelled and owned as the operator makes them."""
    meta = job["metadata"]
    return [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(job, index), "namespace": meta["namespace"], "uid": str(uuid.uuid4()),
                     "creationTimestamp": now_rfc3339(), "labels": pod_template_labels(job),
                     "ownerReferences": [{"apiVersion": job["apiVersion"], "kind": job["kind"], "name": meta["name"],
                                          "uid": meta.get("uid", ""), "controller": True}]},
        "status": copy.deepcopy(status),
    } for index, status in enumerate(statuses)]


def container_status(name: str, *, waiting: tuple[str, str] | None = None, exit_code: int | None = None,
                     reason: str = "", last_exit: tuple[int, str] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": now_rfc3339()}}
    if waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                                "finishedAt": now_rfc3339()}}
    status: dict[str, Any] = {"name": name, "state": state, "ready": "running" in state, "restartCount": 0}
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit[0], "reason": last_exit[1],
                                              "finishedAt": now_rfc3339()}}
        status["restartCount"] = 1
    return status


def oom_killed(container: str) -> dict[str, Any]:
    return {"phase": "Failed", "startTime": now_rfc3339(),
            "containerStatuses": [container_status(container, exit_code=137, reason="OOMKilled")]}


def exited(container: str, code: int) -> dict[str, Any]:
    return {"phase": "Failed" if code else "Succeeded", "startTime": now_rfc3339(),
            "containerStatuses": [container_status(container, exit_code=code)]}


def image_pull_backoff(container: str, image: str) -> dict[str, Any]:
    return {"phase": "Pending", "startTime": now_rfc3339(), "containerStatuses": [container_status(
        container, waiting=("ImagePullBackOff", f'Back-off pulling image "{image}"'))]}


def config_error(container: str, message: str) -> dict[str, Any]:
    return {"phase": "Pending", "startTime": now_rfc3339(),
            "containerStatuses": [container_status(container, waiting=("CreateContainerConfigError", message))]}


def unschedulable(message: str = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.") -> dict[str, Any]:
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": message, "lastTransitionTime": now_rfc3339()}]}


def running(container: str) -> dict[str, Any]:
    return {"phase": "Running", "startTime": now_rfc3339(), "containerStatuses": [container_status(container)]}


def worker_pods(job: dict[str, Any], phase: JobPhase, *, reason: str = "") -> list[dict[str, Any]]:
    """The worker pods the TorchElastic controller would run for ``job`` in ``phase``."""
    worker = job["spec"]["replicaSpecs"]["Worker"]
    pod_phase = {JobPhase.PENDING: "Pending", JobPhase.RUNNING: "Running",
                 JobPhase.SUCCEEDED: "Succeeded", JobPhase.FAILED: "Failed"}[phase]
    status: dict[str, Any] = {"phase": pod_phase}
    if phase is not JobPhase.PENDING:
        status["startTime"] = now_rfc3339()
    if phase.terminal:
        code = 0 if phase is JobPhase.SUCCEEDED else 1
        status["containerStatuses"] = [container_status("worker", exit_code=code,
                                                        reason=reason or ("Completed" if code == 0 else "Error"))]
    return job_pods(job, [status] * int(worker.get("replicas") or 1))
