"""The contract between the dispatcher and the job backends (torchx-style).

Every backend (``pytorchjob``, ``elasticjob``, ``trainjob``, ``job``, ``template``, ``local``)
implements :class:`Backend`:

* ``dryrun(request) -> DryRun`` — pure: builds the exact object that would be created.
  ``str(dryrun)`` prints it (YAML for Kubernetes kinds). ``producer submit --dry-run`` uses it.
* ``submit(dryrun) -> str`` — creates it; an existing object with the same deterministic name
  means "already launched" and is **success** (returns the name, never raises for 409).
* ``observe() -> dict[str, JobStatus]`` — every job this dispatcher manages, in one list call
  per kind (label selector ``app.kubernetes.io/managed-by=sweepq``), keyed by job name. A
  bounded number of extra reads per tick, never one per job: Kueue Workloads (one list, only
  when a listed job carries a queue label or is suspended) for :class:`Admission`, and pods (one list, only when
  a job failed or has been pending a while) for ``detail``.
* ``cancel(name)`` — idempotent: a job that is already gone is fine.

The types here are plain frozen dataclasses so the core can plan with them without importing
any SDK.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

from dispatcher.core.launch import LaunchSettings

# Label keys: module constants, shared by every Kubernetes kind and by the local backend.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "sweepq"
LABEL_SWEEP_ID = "sweepq.io/sweep-id"
LABEL_TRIAL_INDEX = "sweepq.io/trial-index"
LABEL_ATTEMPT = "sweepq.io/attempt"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"  # names a WorkloadPriorityClass
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


class JobPhase(str, enum.Enum):
    """What a backend can tell about one job. Terminal phases never change again."""

    PENDING = "PENDING"  # created, not all workers running yet (scheduling, image pull, rendezvous)
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


class Admission(str, enum.Enum):
    """Where a job stands with Kueue (``None`` on a :class:`JobStatus`: Kueue does not manage it).

    A job waiting for quota is suspended: it has no pods and holds no GPUs, and nothing about it
    is late — ``start_timeout`` counts from admission. An evicted or preempted job is suspended
    again by Kueue and resumes (same job, same attempt, from its checkpoint) when re-admitted.
    An INADMISSIBLE job is suspended too, but its wait cannot end by itself as the cluster stands
    (``JobStatus.detail`` says why and what to fix): the tick should report it and may give it
    up rather than wait for quota that will never come."""

    QUEUED = "QUEUED"  # waiting for quota (or for admission checks); phase stays PENDING
    ADMITTED = "ADMITTED"  # quota reserved and admitted: Kueue unsuspended it
    EVICTED = "EVICTED"  # preempted or evicted, suspended again; will be re-admitted
    # Kueue cannot admit it as things stand: unknown LocalQueue / inactive ClusterQueue
    # ("Inadmissible"), a request larger than the queue's maximum capacity, no Workload made for
    # it (a WorkloadPriorityClass that does not exist, the kind's integration off), or suspended
    # by Kueue (manageJobsWithoutQueueName) without a queue label. Phase stays PENDING.
    INADMISSIBLE = "INADMISSIBLE"

    @property
    def holds_quota(self) -> bool:
        return self is Admission.ADMITTED

    @property
    def waiting(self) -> bool:
        """Not admitted (yet, or again): suspended, no pods, no GPUs held."""
        return self is not Admission.ADMITTED


@dataclass(frozen=True)
class TrialCommand:
    """The argv of a trial *after* the launcher.

    ``launcher`` is ``"torchrun"`` when the sweep's command starts with ``${interpreter}`` (or the
    command is W&B's default): the backend then prepends its own torchrun invocation, e.g.
    ``torchrun --nnodes=1:4 --nproc-per-node=8 ...`` followed by ``argv``
    (``["train.py", "--lr=0.1"]`` or ``["-m", "trainer", "--lr=0.1"]``).
    ``launcher`` is ``None`` when the user wrote a full command: ``argv`` is run verbatim.
    Never passed through a shell.
    """

    argv: tuple[str, ...]
    launcher: str | None = "torchrun"


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a backend needs to create the job of one trial attempt."""

    sweep_id: str
    trial_index: int
    trial_id: str  # stable across attempts: W&B run id, checkpoint key
    attempt: int  # 1-based
    job_name: str  # deterministic, DNS-1123, unique per (sweep, trial, attempt)
    namespace: str
    params: Mapping[str, Any]  # nested like the sweep file
    command: TrialCommand
    launch: LaunchSettings
    env: Mapping[str, str] = field(default_factory=dict)  # SWEEP_ID, TRIAL_ID, WANDB_* ... (no secrets)


@dataclass(frozen=True)
class DryRun:
    """What ``submit`` will create. ``request`` is the backend-specific object (a manifest dict,
    or for the local backend the argv/env/cwd). ``rendered`` is its human-readable form."""

    job_name: str
    kind: str
    request: Any
    rendered: str

    def __str__(self) -> str:
        return self.rendered


@dataclass(frozen=True)
class JobStatus:
    """One observed job. ``gpus`` is what it holds or asks for (counted against caps)."""

    name: str
    kind: str
    sweep_id: str
    trial_index: int
    attempt: int
    phase: JobPhase
    gpus: int = 0
    created_at: float | None = None  # epoch seconds
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""  # the job's own failure reason, e.g. "BackoffLimitExceeded: Job has reached ..."
    admission: Admission | None = None  # Kueue's view; None = not queued through Kueue
    admitted_at: float | None = None  # epoch seconds of the (latest) admission
    # Pod-level cause for a failed job or one pending a while, e.g. "pod j-worker-0: OOMKilled
    # (container pytorch, exit code 137)", "... ImagePullBackOff: ...", "Unschedulable: 0/4 nodes
    # are available: 4 Insufficient nvidia.com/gpu"; Kueue's reason for a job it keeps waiting.
    detail: str = ""
    # The job's ``sweepq.io/team`` label (the team its sweep counted for when it was created). The
    # planner counts a job of a sweep it is not given (cancelled, failed, finished — its pods still
    # terminating) against this team's quota; None: the cluster caps only.
    team: str | None = None


@runtime_checkable
class Backend(Protocol):
    kind: str

    def dryrun(self, request: LaunchRequest) -> DryRun: ...

    def submit(self, dryrun: DryRun) -> str: ...

    def observe(self) -> dict[str, JobStatus]: ...

    def cancel(self, name: str) -> None: ...
