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

from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import (
    LABEL_ATTEMPT,
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


def job_labels(request: LaunchRequest, *, kind: str) -> dict[str, str]:
    """Labels of the job object itself (what ``observe`` selects and reads back)."""
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
    return labels


def pod_labels(request: LaunchRequest, *, kind: str) -> dict[str, str]:
    """Labels of the pods. Never the Kueue queue label: Kueue admits the *job*; a queue label on
    the pods would make Kueue's plain-pod integration admit every pod a second time."""
    labels = job_labels(request, kind=kind)
    labels.pop(LABEL_KUEUE_QUEUE, None)
    labels[LABEL_JOB_NAME] = request.job_name
    return labels


def job_metadata(request: LaunchRequest, *, kind: str) -> dict[str, Any]:
    return {
        "name": request.job_name,
        "namespace": request.namespace,
        "labels": job_labels(request, kind=kind),
        "annotations": {
            ANNOTATION_GPUS: str(request.launch.gpus_per_trial),
            ANNOTATION_TRIAL_ID: request.trial_id,
        },
    }


def container_env(request: LaunchRequest) -> list[dict[str, Any]]:
    """Plain env (launch.env, then the request's, sorted by name) + the W&B key from its Secret."""
    merged: dict[str, str] = {**request.launch.env, **request.env}
    for name in merged:
        if not _ENV_NAME.match(name):
            raise PermanentError(f"env.{name}: not a valid environment variable name — use letters, digits and _")
    if WANDB_KEY_ENV in merged:
        raise PermanentError(
            f"env.{WANDB_KEY_ENV}: secrets must not travel through the queue — store the key in the Kubernetes "
            f"Secret named by wandb_secret (key {WANDB_SECRET_KEY!r}) instead"
        )
    env: list[dict[str, Any]] = [{"name": name, "value": str(merged[name])} for name in sorted(merged)]
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


def split_command(request: LaunchRequest, launcher: list[str]) -> tuple[list[str], list[str]]:
    """``(command, args)`` of the trial container: the kind's launcher invocation as the command and
    the trial argv as args when the sweep runs under torchrun; the argv verbatim otherwise."""
    argv = [str(arg) for arg in request.command.argv]
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


def container(
    request: LaunchRequest, *, name: str, command: list[str], args: list[str], with_resources: bool = True
) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": request.launch.image, "command": command}
    if args:
        spec["args"] = args
    spec["env"] = container_env(request)
    resources = node_resources(request.launch)
    if with_resources and resources:
        spec["resources"] = resources
    spec["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if request.launch.output_pvc:
        spec["volumeMounts"].append({"name": OUTPUT_VOLUME, "mountPath": output_mount(request)})
    return spec


def output_mount(request: LaunchRequest) -> str:
    """Where the outputs PVC is mounted: the trial's SWEEPQ_OUTPUT_DIR (default /outputs)."""
    return str({**request.launch.env, **request.env}.get("SWEEPQ_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)


def pod_template(
    request: LaunchRequest, *, kind: str, main: dict[str, Any], restart_policy: str | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if request.launch.service_account:
        spec["serviceAccountName"] = request.launch.service_account
    spec["containers"] = [main]
    spec["volumes"] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}]
    if request.launch.output_pvc:
        spec["volumes"].append({"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": request.launch.output_pvc}})
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
