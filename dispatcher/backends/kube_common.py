"""Pure building blocks shared by the Kubernetes job kinds: labels, env, resources, pod templates,
the launcher command, and the small status readers (conditions, timestamps).

Purely computational, no side effects, no SDK imports: dicts in, dicts out. The per-kind modules
(``pytorchjob``, ``elasticjob``, ``trainjob``, ``batchjob``, ``template``) compose these into
manifests and phase tables.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Iterable, Mapping, NamedTuple

import yaml

from dispatcher.backends.kube_options import (
    DEFAULT_OPTIONS,
    JobOptions,
    container_security_context,
    pod_security_context,
)
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import (
    LABEL_ATTEMPT,
    LABEL_KUEUE_PRIORITY,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED_BY,
    LABEL_SWEEP_ID,
    LABEL_TRIAL_INDEX,
    MANAGED_BY,
    JobPhase,
    LaunchRequest,
)
from dispatcher.core.launch import LaunchSettings

# Keys sweepq adds on top of the shared ones in dispatcher.core.jobs.
LABEL_TEAM = "sweepq.io/team"
LABEL_KIND = "sweepq.io/kind"  # the backend kind; narrows the ElasticJob pods list
LABEL_JOB_NAME = "sweepq.io/job-name"  # on pods only: which job a pod belongs to
ANNOTATION_GPUS = "sweepq.io/gpus"  # GPUs the job asks for at its max size (counted against caps)
ANNOTATION_TRIAL_ID = "sweepq.io/trial-id"

GPU_RESOURCE = "nvidia.com/gpu"
WANDB_KEY_ENV = "WANDB_API_KEY"
WANDB_SECRET_KEY = "api-key"
OUTPUT_VOLUME = "outputs"  # launch.output_pvc: checkpoints + result.json shared by every attempt
DEFAULT_OUTPUT_DIR = "/outputs"
SHM_VOLUME = "dshm"  # NCCL and DataLoader workers need more than the 64 MiB default /dev/shm
TMP_VOLUME = "tmp"  # the only writable path of the (read-only) root filesystem: HOME, caches, W&B
TMP_DIR = "/tmp"
# A trial without GPUs: CUDA base images set NVIDIA_VISIBLE_DEVICES=all, and on a node whose
# container runtime is NVIDIA's that exposes every GPU of the node to a pod that asked for none
# (past every GPU cap and quota). "void" makes the NVIDIA runtime behave as runc.
NO_GPUS_ENV = ("NVIDIA_VISIBLE_DEVICES", "void")
POD_NAME_ENV = "POD_NAME"  # the pod's own name (downward API): the trainer's metrics key (CONTRACTS C1)

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Progress(NamedTuple):
    """What a kind's status says about one job (the rest of JobStatus comes from metadata)."""

    phase: JobPhase
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None


# --------------------------------------------------------------------------- manifests


def progress_from(obj: Mapping[str, Any], phase: JobPhase, condition: Mapping[str, Any] | None) -> Progress:
    """The common tail of every kind's status reading: failure reason from the deciding condition,
    start time from ``status.startTime``, end from ``status.completionTime`` or the condition's time."""
    status = status_of(obj)
    finished_at = None
    if phase.terminal:
        finished_at = parse_time(status.get("completionTime")) or condition_time(condition)
    return Progress(
        phase=phase,
        reason=condition_reason(condition) if phase is JobPhase.FAILED else "",
        started_at=parse_time(status.get("startTime")),
        finished_at=finished_at,
    )


def label_value(value: str, *, field: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise PermanentError(
            f"{field}: {value!r} is not a valid Kubernetes label value — use ≤63 letters, digits, '-', '_', '.'"
            " starting and ending with a letter or digit"
        )
    return value




def job_labels(request: LaunchRequest, *, kind: str, options: JobOptions = DEFAULT_OPTIONS) -> dict[str, str]:
    """Labels of the job object itself (what ``observe`` selects and reads back). A Kueue job also
    gets its queue and, when the operator mapped sweep priorities, its WorkloadPriorityClass."""
    launch = request.launch
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_KIND: kind,
        LABEL_SWEEP_ID: label_value(request.sweep_id, field="sweep_id"),
        LABEL_TRIAL_INDEX: str(request.trial_index),
        LABEL_ATTEMPT: str(request.attempt),
    }
    if launch.team:
        labels[LABEL_TEAM] = launch.team
    if launch.kueue_queue:
        labels[LABEL_KUEUE_QUEUE] = launch.kueue_queue
        priority_class = options.priority_class(launch.priority, launch.team)
        if priority_class:
            labels[LABEL_KUEUE_PRIORITY] = priority_class
    return labels


def pod_labels(request: LaunchRequest, *, kind: str) -> dict[str, str]:
    """Labels of the pods. Never Kueue's labels: Kueue admits the *job*; a queue label on the
    pods would make Kueue's plain-pod integration admit every pod a second time."""
    labels = job_labels(request, kind=kind)
    labels.pop(LABEL_KUEUE_QUEUE, None)
    labels[LABEL_JOB_NAME] = request.job_name
    return labels


def job_metadata(request: LaunchRequest, *, kind: str, options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    return {
        "name": request.job_name,
        "namespace": request.namespace,
        "labels": job_labels(request, kind=kind, options=options),
        "annotations": {
            ANNOTATION_GPUS: str(request.launch.gpus_per_trial),
            ANNOTATION_TRIAL_ID: request.trial_id,
        },
    }


# torchrun SIGKILLs its workers this long after forwarding SIGTERM (its default: 30 s, whatever the
# pod's grace period): set from the grace period, less a margin for torchrun itself to exit.
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
SHUTDOWN_MARGIN_S = 10


def container_env(request: LaunchRequest, *, grace_s: int | None = None) -> list[dict[str, Any]]:
    """The trial container's env: the sender's ``launch.env`` first, then sweepq's own variables
    (``request.env``) over it — a sender can never override ``SWEEP_ID``, ``WANDB_RUN_ID``, ... —
    sorted by name (with ``NVIDIA_VISIBLE_DEVICES=void`` for a trial without GPUs, see
    :data:`NO_GPUS_ENV`); then ``POD_NAME`` from the downward API and the W&B key from its Secret.
    Names sweepq fills itself (``POD_NAME``, ``WANDB_API_KEY``) are refused in either mapping.
    Values are :func:`kube_literal`: the kubelet would expand ``$(NAME)`` in them from the
    variables before them. ``grace_s``: the pod's grace period, for a torchrun trial's
    :data:`SHUTDOWN_TIMEOUT_ENV` (so a stopping trainer gets its checkpoint time, not torchrun's 30 s)."""
    merged: dict[str, str] = {**request.launch.env, **request.env}
    if grace_s is not None and request.command.launcher == "torchrun":
        merged[SHUTDOWN_TIMEOUT_ENV] = str(max(grace_s - SHUTDOWN_MARGIN_S, 1))
    if not request.launch.gpus_per_node:
        merged[NO_GPUS_ENV[0]] = NO_GPUS_ENV[1]
    for name in merged:
        if not _ENV_NAME.match(name):
            raise PermanentError(f"env.{name}: not a valid environment variable name — use letters, digits and _")
    if WANDB_KEY_ENV in merged:
        raise PermanentError(
            f"env.{WANDB_KEY_ENV}: secrets must not travel through the queue — store the key in the Kubernetes "
            f"Secret named by wandb_secret (key {WANDB_SECRET_KEY!r}) instead"
        )
    if POD_NAME_ENV in merged:
        raise PermanentError(
            f"env.{POD_NAME_ENV}: set by sweepq from the pod's own name (downward API) — remove it from sweepq.env"
        )
    env: list[dict[str, Any]] = [{"name": name, "value": kube_literal(str(merged[name]))} for name in sorted(merged)]
    env.append({"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    if request.launch.wandb_secret:
        env.append({
            "name": WANDB_KEY_ENV,
            "valueFrom": {"secretKeyRef": {"name": request.launch.wandb_secret, "key": WANDB_SECRET_KEY,
                                           "optional": True}},
        })
    return env


def node_resources(launch: LaunchSettings) -> dict[str, dict[str, str]]:
    """requests/limits of one node. Quantities are strings (the API's canonical form)."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if launch.resources.cpu:
        requests["cpu"] = launch.resources.cpu
    if launch.resources.memory:
        requests["memory"] = limits["memory"] = launch.resources.memory
    if launch.gpus_per_node:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(launch.gpus_per_node)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def kube_literal(text: str) -> str:
    """``text`` as a container ``command``/``args`` element or env ``value`` that the kubelet
    passes on unchanged. The kubelet expands ``$(NAME)`` there from the container's env — which
    holds ``WANDB_API_KEY`` — and turns ``$$`` into ``$``; doubling every ``$`` makes the text
    literal (``$(WANDB_API_KEY)`` reaches the trial as those 16 characters, as W&B's agent and the
    local backend pass it). Only sweepq's own references (``$(PET_MASTER_ADDR)``) stay unescaped."""
    return text.replace("$", "$$")


def split_command(request: LaunchRequest, launcher: list[str]) -> tuple[list[str], list[str]]:
    """``(command, args)`` of the trial container: the kind's launcher invocation as the command and
    the trial argv as args when the sweep runs under torchrun; the argv verbatim otherwise. Every
    element from the sweep is :func:`kube_literal`; the launcher is sweepq's and is not."""
    argv = [kube_literal(str(arg)) for arg in request.command.argv]
    if not argv:
        raise PermanentError("command: the trial command is empty — set 'command' or 'program' in the sweep file")
    if request.command.launcher == "torchrun":
        return list(launcher), argv
    if request.command.launcher is None:
        return argv, []
    raise PermanentError(
        f"command.launcher: {request.command.launcher!r} is not supported — use torchrun (${{interpreter}}) "
        "or write the full command"
    )


def _tmp_volume(request: LaunchRequest) -> bool:
    """``/tmp`` is an emptyDir unless the outputs PVC is mounted there itself."""
    return not (request.launch.output_pvc and output_mount(request).rstrip("/") == TMP_DIR)


def _outputs_volume(request: LaunchRequest) -> dict[str, Any] | None:
    """The outputs PVC; without one, an emptyDir where ``SWEEPQ_OUTPUT_DIR`` points outside
    ``/tmp`` (the root filesystem is read-only, so the trainer could not write there otherwise —
    like the container's own layer before, it lasts as long as the pod)."""
    if request.launch.output_pvc:
        return {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": request.launch.output_pvc}}
    path = str({**request.launch.env, **request.env}.get("SWEEPQ_OUTPUT_DIR") or "").rstrip("/")
    if path.startswith("/") and path != TMP_DIR and not path.startswith(f"{TMP_DIR}/") and path != "/dev/shm":
        return {"name": OUTPUT_VOLUME, "emptyDir": {}}
    return None


def volume_mounts(request: LaunchRequest) -> list[dict[str, Any]]:
    mounts = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if _tmp_volume(request):
        mounts.append({"name": TMP_VOLUME, "mountPath": TMP_DIR})
    if _outputs_volume(request):
        mounts.append({"name": OUTPUT_VOLUME, "mountPath": output_mount(request)})
    return mounts


def volumes(request: LaunchRequest) -> list[dict[str, Any]]:
    """``/dev/shm`` as a memory-backed emptyDir (allowed by ``restricted``; NCCL and DataLoader
    workers need more than the runtime's 64 MiB), ``/tmp`` as an emptyDir on the node's disk (the
    root filesystem is read-only: the trainer image keeps HOME, caches and W&B's files there)
    and the outputs volume (:func:`_outputs_volume`). Never a hostPath."""
    found: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if _tmp_volume(request):
        found.append({"name": TMP_VOLUME, "emptyDir": {}})
    outputs = _outputs_volume(request)
    if outputs:
        found.append(outputs)
    return found


def container(
    request: LaunchRequest, *, name: str, command: list[str], args: list[str], with_resources: bool = True,
    options: JobOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": request.launch.image, "command": command}
    if args:
        spec["args"] = args
    spec["env"] = container_env(request, grace_s=options.termination_grace_s)
    resources = node_resources(request.launch)
    if with_resources and resources:
        spec["resources"] = resources
    spec["securityContext"] = container_security_context(options)
    spec["volumeMounts"] = volume_mounts(request)
    return spec


def output_mount(request: LaunchRequest) -> str:
    """Where the outputs PVC is mounted: the trial's SWEEPQ_OUTPUT_DIR (default /outputs)."""
    return str({**request.launch.env, **request.env}.get("SWEEPQ_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)


def pod_template(
    request: LaunchRequest, *, kind: str, main: dict[str, Any], restart_policy: str | None,
    options: JobOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """The trial PodTemplateSpec of the kinds that embed one (PyTorchJob, batch Job)."""
    spec: dict[str, Any] = {}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if request.launch.service_account:
        spec["serviceAccountName"] = request.launch.service_account
    # The trainer never calls the Kubernetes API; IRSA and Pod Identity mount their own tokens.
    spec["automountServiceAccountToken"] = False
    # A job per trial makes many Services in one namespace: without this every new pod gets an
    # env var per Service (and a torchrun argv that can grow past the kernel's limit).
    spec["enableServiceLinks"] = False
    spec["terminationGracePeriodSeconds"] = options.termination_grace_s
    spec["securityContext"] = pod_security_context(options)
    spec["containers"] = [main]
    spec["volumes"] = volumes(request)
    return {"metadata": {"labels": pod_labels(request, kind=kind)}, "spec": spec}


def render_yaml(manifest: Mapping[str, Any]) -> str:
    """The manifest as YAML, keys in build order (what ``--dry-run`` prints and goldens hold)."""
    return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)


# --------------------------------------------------------------------------- status readers


def parse_time(value: Any) -> float | None:
    """RFC 3339 (``2024-05-01T12:00:00Z``) → epoch seconds; anything else → ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_dt.timezone.utc)
    return parsed.timestamp()


def status_of(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, Mapping) else {}


def true_conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{type: condition}`` of the conditions whose status is ``"True"`` (last one wins)."""
    found: dict[str, Mapping[str, Any]] = {}
    conditions = status_of(obj).get("conditions")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, Mapping) and str(condition.get("status")) == "True" and condition.get("type"):
            found[str(condition["type"])] = condition
    return found


def condition_reason(condition: Mapping[str, Any] | None) -> str:
    if not condition:
        return ""
    reason = str(condition.get("reason") or "")
    message = str(condition.get("message") or "")
    text = f"{reason}: {message}" if reason and message else reason or message
    return text[:500]


def condition_time(condition: Mapping[str, Any] | None) -> float | None:
    if not condition:
        return None
    return parse_time(condition.get("lastTransitionTime")) or parse_time(condition.get("lastUpdateTime"))


def phase_from_conditions(
    obj: Mapping[str, Any], table: Mapping[str, JobPhase]
) -> tuple[JobPhase, Mapping[str, Any]] | None:
    """The first ``table`` entry (in table order) whose condition is ``"True"`` on ``obj``."""
    conditions = true_conditions(obj)
    for condition_type, phase in table.items():
        if condition_type in conditions:
            return phase, conditions[condition_type]
    return None


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def walk_pod_templates(obj: Any) -> Iterable[dict[str, Any]]:
    """Every PodTemplateSpec-looking dict (``{..., spec: {containers: [...]}}`` under a key
    ``template``) anywhere in ``obj``: where pod labels go in arbitrary job kinds."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key == "template" and isinstance(value, dict) and isinstance(value.get("spec"), dict) \
                    and isinstance(value["spec"].get("containers"), list):
                yield value
            yield from walk_pod_templates(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from walk_pod_templates(item)
