"""Kind ``pytorchjob`` (the default): a Kubeflow Training Operator ``kubeflow.org/v1`` PyTorchJob
with an ``elasticPolicy`` (c10d rendezvous, ``minReplicas:maxReplicas`` nodes).

Supported upstream: Training Operator v1.7 – v1.9 (the manifests are validated against the
v1.9.4 models, PyPI ``kubeflow-training``). Workers per node go in ``spec.nprocPerNode`` (a
string): ``elasticPolicy.nProcPerNode`` is deprecated since v1.7 and the v1.9 webhook warns on
every create that uses it.

Elastic PyTorchJobs run Worker replicas only. The operator injects ``PET_NNODES`` (``min:max``),
``PET_RDZV_BACKEND=c10d``, ``PET_RDZV_ENDPOINT=<job>-worker-0:<port>``, ``PET_MAX_RESTARTS`` and
(v1.8+) ``PET_NPROC_PER_NODE`` into the container named ``pytorch``: torchrun's elastic rendezvous
(what TorchElastic ElasticJobs gave the seed projects) without etcd. The workers per node are
also passed as ``--nproc-per-node``: v1.7 sets ``PET_NPROC_PER_NODE`` from ``spec.nprocPerNode``
only for jobs with a Master replica, and torchrun would start one worker per node.

Restarts: ``restartPolicy: ExitCode`` — the operator recreates a pod whose container exited
128+N (killed by signal N: preemption, a node shutting down, eviction, OOM kill) and fails the
job on an application error (1–127) instead of looping on it. torchrun itself exits 1 when the
kubelet SIGTERMs it (it raises ``SignalException``), which would turn every graceful node
shutdown into a failed job; so the container runs torchrun's own ``main`` through
:data:`SIGNAL_EXIT_LAUNCHER` (``python -c``), which exits 128+N on signal N as a shell does.
The image needs ``python`` on its PATH with torch, as for ``torchrun``.

Kueue: its PyTorchJob integration is off by default and deprecated (removal planned for Kueue
v0.20) — with Kueue, prefer kind ``trainjob``.
"""

from __future__ import annotations

from typing import Any, Mapping

from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    Progress,
    container,
    job_metadata,
    phase_from_conditions,
    pod_template,
    progress_from,
    split_command,
)
from dispatcher.backends.kube_options import DEFAULT_OPTIONS, JobOptions
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
# torchrun (torch.distributed.run.main), exiting 128+N when a signal N stops it (torchrun alone
# exits 1, which restartPolicy ExitCode treats as a permanent application error).
SIGNAL_EXIT_LAUNCHER = (
    "import sys\n"
    "from torch.distributed.elastic.multiprocessing.api import SignalException\n"
    "from torch.distributed.run import main\n"
    "try:\n"
    "    main()\n"
    "except SignalException as stop:\n"
    "    sys.exit(128 + int(stop.sigval))\n"
)


def torchrun_launcher(workers_per_node: int) -> list[str]:
    """``python -c SIGNAL_EXIT_LAUNCHER --nproc-per-node=N``: torchrun's CLI, the rest from the
    operator's ``PET_*`` env (see the module docstring)."""
    return ["python", "-c", SIGNAL_EXIT_LAUNCHER, f"--nproc-per-node={workers_per_node}"]

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


def build_pytorchjob(request: LaunchRequest, *, ttl_seconds: int | None = None,
                     options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The PyTorchJob manifest of one trial attempt. Purely computational. ``ttl_seconds``: the
    operator deletes the finished job after that long (keep it well above the tick interval)."""
    launch = request.launch
    command, args = split_command(request, torchrun_launcher(launch.workers_per_node))
    main = container(request, name=CONTAINER_NAME, command=command, args=args, options=options)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "Running", "backoffLimit": launch.max_restarts}
    if launch.max_runtime:
        run_policy["activeDeadlineSeconds"] = launch.max_runtime
    if ttl_seconds:
        run_policy["ttlSecondsAfterFinished"] = ttl_seconds
    return {
        "apiVersion": RESOURCE.api_version,
        "kind": RESOURCE.kind,
        "metadata": job_metadata(request, kind=KIND, options=options),
        "spec": {
            "runPolicy": run_policy,
            "elasticPolicy": {
                "rdzvBackend": "c10d",
                "minReplicas": launch.min_nodes,
                "maxReplicas": launch.max_nodes,
                "maxRestarts": launch.max_restarts,
            },
            "nprocPerNode": str(launch.workers_per_node),
            "pytorchReplicaSpecs": {
                "Worker": {
                    "replicas": launch.max_nodes,
                    "restartPolicy": RESTART_POLICY,
                    "template": pod_template(request, kind=KIND, main=main, restart_policy=None, options=options),
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
        return build_pytorchjob(request, ttl_seconds=self.ttl_seconds, options=self.options)

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return kubeflow_progress(obj)
