"""Launch settings: *how* the trials of a sweep run (image, job kind, GPUs, caps, retries).

They come from three places, later ones winning field by field:

1. team defaults (the dispatcher's / producer's environment, see ``dispatcher.settings``),
2. the ``sweepq:`` extension block of the sweep file,
3. ``producer submit`` command-line flags.

A plain W&B sweep file without a ``sweepq:`` block is valid: every field has a default.

The settings travel in an SQS body anyone with ``sqs:SendMessage`` can write by hand, so every
field is bounded here, whatever the operator policy (:mod:`dispatcher.core.policy`) adds on top:
counts and sizes have a hard maximum (:data:`LIMITS`), durations at most :data:`MAX_DURATION_S`
(30 days), booleans are never numbers (``gpus_per_node: true`` is refused, not 1), environment
names reserved for sweepq and the platform are refused (:mod:`dispatcher.core.envnames`), and
``template`` is the *name* of an operator-owned template — a manifest inside a message is refused.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from dispatcher.core.envnames import SECRET_ENV, env_name_problem, reserved_reason
from dispatcher.core.refs import parse_image, parse_quantity

__all__ = [
    "Duration", "OptionalDuration", "OptionalQuantity", "JOB_KINDS", "JobKind", "LIMITS", "LaunchSettings", "MAX_DURATION_S", "REDACTED", "REFUSED_MANIFEST", "Resources",
    "SECRET_ENV",
    "merge_launch", "parse_duration", "redact_secret_env", "shown_name",
]

JobKind = Literal["pytorchjob", "elasticjob", "trainjob", "job", "local", "template"]
JOB_KINDS: tuple[JobKind, ...] = ("pytorchjob", "elasticjob", "trainjob", "job", "local", "template")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
WANDB_SWEEP_ID = re.compile(r"[a-z0-9]{8}")  # what W&B's server assigns (e.g. "f2ffjhx1")
# A W&B entity or project as trials get it (WANDB_ENTITY / WANDB_PROJECT): a plain name — no '/', no
# '$(...)' (the kubelet would expand it from the env, which holds WANDB_API_KEY), no spaces or controls.
WANDB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REDACTED = "<redacted>"
MAX_DURATION_S = 30 * 86400  # max_runtime, start_timeout: one attempt never needs more than 30 days
# Hard maxima of the counts, whatever the policy: (ge, le). The policy's limits can only be lower.
LIMITS: dict[str, tuple[int, int]] = {
    "gpus_per_node": (0, 64),
    "nproc_per_node": (1, 64),
    "min_nodes": (1, 1024),
    "max_nodes": (1, 1024),
    "max_concurrent": (1, 10_000),
    "max_retries": (0, 20),
    "max_restarts": (0, 100),
    "max_failed_trials": (1, 1_000_000),
    "priority": (-1000, 1000),
}
MAX_ENV_VARS = 100
MAX_ENV_VALUE = 32 * 1024


_DURATION_SCHEMA = [{"type": "integer", "minimum": 1, "maximum": MAX_DURATION_S},
                    {"type": "string", "pattern": _DURATION.pattern}]
# What the JSON schema says of a duration / quantity: what the validators accept, not what they store.
Duration = Annotated[int, WithJsonSchema({"anyOf": _DURATION_SCHEMA})]
OptionalDuration = Annotated[int | None, WithJsonSchema({"anyOf": [*_DURATION_SCHEMA, {"type": "null"}]})]
OptionalQuantity = Annotated[str | None, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 0},
                                                                  {"type": "null"}]})]


# A run of 24+ letters and digits holding 4+ digits: a W&B key (40 hex), not a Kubernetes name.
_KEY_LIKE = re.compile(r"[a-z0-9]{24,}")


def shown_name(value: str) -> str:
    """``repr(value)`` of a name a sweep asked for (a Secret, a template), or only its length when it
    cannot be a name and may be something pasted where a name belongs — a key (a run of 24+
    letters and digits with 4+ digits), a manifest as JSON text (longer than a name, or with braces
    or quotes). Reasons are stored and shown to every researcher."""
    if len(value) > 63 or any(c in value for c in "{}[]\"'") or any(
            sum(c.isdigit() for c in run) >= 4 for run in _KEY_LIKE.findall(value.lower())):
        return f"<a {len(value)}-character value, not shown: a name goes here>"
    return repr(value)


def _fmt_duration(seconds: int) -> str:
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds}s"


def parse_duration(value: Any, *, field: str) -> int | None:
    """``"90m"`` / ``"2h"`` / ``3600`` → whole seconds (rounded up). ``None`` stays ``None`` (no
    limit). At most :data:`MAX_DURATION_S`."""
    if value is None:
        return None
    hint = "write seconds (3600) or '90m', '2h', '1d'"
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a duration — {hint}")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        match = _DURATION.match(str(value)) if len(str(value)) <= 32 else None
        if not match:
            raise ValueError(f"{field}: {str(value)[:40]!r} is not a duration — {hint}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # inf, nan and numbers beyond float range (a JSON body carries 1e999 or 400 digits, YAML .inf)
    # are no durations; unchecked, int(inf) below raised OverflowError out of validation.
    if not math.isfinite(seconds):
        raise ValueError(f"{field}: {value!r:.20} is not a duration — {hint}")
    if seconds <= 0:
        raise ValueError(f"{field}: {value!r:.20} must be positive — omit it for no limit")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{field}: {value!r:.20} is over the maximum of {_fmt_duration(MAX_DURATION_S)} — "
                         f"write at most {_fmt_duration(MAX_DURATION_S)} (checkpoint and resume longer training)")
    return math.ceil(seconds)


def _bounded(field: str, default: int | None, description: str) -> Any:
    ge, le = LIMITS[field]
    return Field(default=default, ge=ge, le=le, description=f"{description} ({ge}..{le}).")


class Resources(BaseModel):
    """Per-node CPU and memory requests (limits equal requests for memory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu: OptionalQuantity = Field(default=None, description="CPU request per node, a Kubernetes quantity, e.g. '8'.")
    memory: OptionalQuantity = Field(default=None, description="Memory request and limit per node, e.g. '32Gi'.")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        try:
            if parse_quantity(value) <= 0:
                raise ValueError("not positive")
        except ValueError:
            example = "'8' or '500m'" if info.field_name == "cpu" else "'32Gi' or '512Mi'"
            raise ValueError(f"resources.{info.field_name}: {str(value)[:40]!r} is not a positive Kubernetes "
                             f"quantity — write e.g. {example}") from None
        return str(value)


class LaunchSettings(BaseModel):
    """How each trial of a sweep is launched. Serialised into the SQS body and the sweep item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKind | None = Field(default=None, description="Job kind the trials run as; default: the dispatcher's SWEEPQ_BACKEND.")
    image: str = Field(default="sweepq-trainer:latest", description="Container image of the trial.")
    gpus_per_node: int = _bounded("gpus_per_node", 1, "nvidia.com/gpu requested per node")
    nproc_per_node: int | None = _bounded(
        "nproc_per_node", None, "torchrun workers per node; default = gpus_per_node (or 1 on CPU)")
    min_nodes: int = _bounded("min_nodes", 1, "Elastic minimum number of nodes")
    max_nodes: int = _bounded("max_nodes", 1, "Elastic maximum number of nodes")
    max_concurrent: int | None = _bounded("max_concurrent", None, "Trials of this sweep running at once")
    max_retries: int = _bounded("max_retries", 2, "Extra attempts for a failed or lost trial")
    max_restarts: int = _bounded("max_restarts", 3, "torchrun elastic restarts inside one attempt")
    max_failed_trials: int | None = _bounded(
        "max_failed_trials", None, "Circuit breaker: fail the sweep after this many FAILED trials")
    max_runtime: OptionalDuration = Field(default=None, description="Per-attempt wall-clock limit in seconds ('2h'), at most 30d.")
    start_timeout: Duration = Field(default=1800, description="An attempt still Pending after this (seconds) is retried; at most 30d.")
    priority: int = _bounded("priority", 0, "Higher launches first")
    team: str | None = Field(default=None, max_length=63, description="Team; checked against the operator policy's teams.")
    kueue_queue: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue name.")
    resources: Resources = Field(default_factory=Resources)
    env: dict[str, str] = Field(
        default_factory=dict,
        description=f"Extra non-secret environment for the trial (at most {MAX_ENV_VARS}); names reserved for "
                    "sweepq and the platform (SWEEPQ_*, SWEEP_ID, TRIAL_*, WANDB_*, AWS_*, LD_*, PYTHON*, ...) are refused.")
    wandb_secret: str | None = Field(
        default="wandb", description="Kubernetes Secret holding WANDB_API_KEY (key 'api-key'); null for none.")
    service_account: str | None = Field(default=None, description="ServiceAccount the trial pods run as.")
    output_pvc: str | None = Field(
        default=None, max_length=253,
        description="PersistentVolumeClaim (ReadWriteMany) mounted at SWEEPQ_OUTPUT_DIR for checkpoints and results.",
    )
    template: str | None = Field(
        default=None, max_length=63,
        description="For kind 'template': the name of an operator-owned template of the policy (never a manifest).")
    wandb_sweep_id: str | None = Field(
        default=None, description="The W&B sweep the trials' runs attach to (WANDB_SWEEP_ID); producer submit sets it "
                                  "when it registers the sweep with W&B.")
    wandb_entity: str | None = Field(
        default=None, description="The W&B entity of wandb_sweep_id (WANDB_ENTITY); only with wandb_sweep_id.")
    wandb_project: str | None = Field(
        default=None, description="The W&B project of wandb_sweep_id (WANDB_PROJECT); only with wandb_sweep_id.")

    @field_validator(*LIMITS, mode="before")
    @classmethod
    def _not_a_bool(cls, value: Any, info: Any) -> Any:
        # pydantic's lax mode reads true as 1: `gpus_per_node: true` must not mean one GPU.
        if isinstance(value, bool):
            raise ValueError(f"{info.field_name}: {value!r} is a boolean, not a number — write a whole number")
        return value

    @field_validator("max_runtime", "start_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> int | None:
        return parse_duration(value, field=info.field_name)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        try:
            parse_image(value)
        except ValueError as exc:
            raise ValueError(f"image: {value[:80]!r} is {exc}") from None
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, env: Any) -> Any:
        """Numbers become strings (``OMP_NUM_THREADS: 4``); anything else that is not a string is
        refused without echoing it (a pasted secret must not reach the REJECTED reason) — and so is
        an ``env`` that is no mapping (``"KEY=VALUE"``, a docker-style list): pydantic's own error
        would quote it."""
        if not isinstance(env, dict):
            raise ValueError(f"env: a {type(env).__name__}, not a mapping — write env: {{NAME: value}} "
                             "(the value is not shown here)")
        if len(env) > MAX_ENV_VARS:
            raise ValueError(f"env: {len(env)} variables, the maximum is {MAX_ENV_VARS} — pass configuration as "
                             "hyperparameters or in a file instead")
        out: dict[Any, Any] = {}
        for name, value in env.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError(f"env.{str(name)[:64]}: the value is a {type(value).__name__}, not a string — "
                                 "quote it")
            if len(value) > MAX_ENV_VALUE:
                raise ValueError(f"env.{str(name)[:64]}: the value is {len(value):,} characters, the maximum is "
                                 f"{MAX_ENV_VALUE:,} — pass large configuration in a file")
            out[name] = value
        return out

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            problem = env_name_problem(name) or reserved_reason(name)
            if problem:
                fix = "" if "secret" in problem else " — remove it; no sweep may set it"
                raise ValueError(f"env.{name[:64]}: {problem}{fix}")
        return env

    @field_validator("team", "kueue_queue", "service_account", "wandb_secret", "template")
    @classmethod
    def _dns_label(cls, value: str | None, info: Any) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS_LABEL.fullmatch(value)):
            # A wandb_secret that is no name is often the key itself; a template that is no name is a
            # manifest (JSON text): neither is quoted.
            shown = shown_name(value) if info.field_name in ("wandb_secret", "template") else repr(value[:80])
            raise ValueError(
                f"{info.field_name}: {shown} is not a DNS-1123 label — use lower-case letters, digits and '-'"
                + (" (the name of a Kubernetes Secret holding the key, never the key)"
                   if info.field_name == "wandb_secret" else
                   " (the name of one of the operator policy's templates, never a manifest)"
                   if info.field_name == "template" else "")
            )
        return value

    @field_validator("output_pvc")
    @classmethod
    def _dns_subdomain(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_SUBDOMAIN.fullmatch(value):
            raise ValueError(f"output_pvc: {value[:80]!r} is not a DNS-1123 label or subdomain (a PersistentVolumeClaim "
                             "name) — use lower-case letters, digits, '-' and '.'")
        return value

    @field_validator("template", mode="before")
    @classmethod
    def _template_is_a_name(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("template: a manifest inside a message is refused — templates are operator-owned; "
                             "name one of the operator policy's templates (sweepq.template: <name>)")
        return value

    @field_validator("wandb_sweep_id")
    @classmethod
    def _wandb_sweep_id(cls, value: str | None) -> str | None:
        if value is not None and not WANDB_SWEEP_ID.fullmatch(value):
            raise ValueError(f"wandb_sweep_id: {value[:40]!r} is not a W&B sweep id (8 lower-case letters and "
                             "digits, e.g. 'f2ffjhx1') — pass the id W&B printed, without entity/project")
        return value

    @field_validator("wandb_entity", "wandb_project")
    @classmethod
    def _wandb_name(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not WANDB_NAME.fullmatch(value):
            raise ValueError(f"{info.field_name}: {value[:40]!r} is not a plain W&B name — use letters, digits, "
                             "'_', '-' and '.' (at most 128), as W&B's URL shows it")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "LaunchSettings":
        if self.max_nodes < self.min_nodes:
            raise ValueError(
                f"nodes: max_nodes {self.max_nodes} < min_nodes {self.min_nodes} — write nodes: "
                f"'{self.max_nodes}:{self.min_nodes}' (MIN:MAX)"
            )
        if self.kind == "template" and not self.template:
            raise ValueError("template: kind 'template' needs the name of one of the operator policy's templates in "
                             "sweepq.template — or pick another kind")
        if self.kind != "template" and self.template:
            raise ValueError(f"template: only used with kind 'template' (kind is {self.kind!r}) — remove it")
        if self.wandb_sweep_id is None and (self.wandb_entity or self.wandb_project):
            raise ValueError("wandb_entity/wandb_project: only with wandb_sweep_id (where W&B filed that sweep) — set "
                             "the trials' W&B project with the file's project: and entity: keys")
        if self.kind in ("job", "local") and self.max_nodes > 1:
            raise ValueError(f"nodes: kind {self.kind!r} runs on one node — use kind pytorchjob for multi-node")
        return self

    @model_validator(mode="before")
    @classmethod
    def _nodes_shorthand(cls, data: Any) -> Any:
        """Accept ``nodes: 2`` or ``nodes: "1:4"`` (torchrun's ``--nnodes`` syntax)."""
        if isinstance(data, dict) and "nodes" in data:
            data = dict(data)
            nodes = data.pop("nodes")
            text = str(nodes) if isinstance(nodes, (str, int)) else ""
            match = re.fullmatch(r"\s*(\d{1,6})\s*(?::\s*(\d{1,6})\s*)?", text)
            if isinstance(nodes, bool) or not match:
                raise ValueError(f"nodes: {str(nodes)[:40]!r} is not N or MIN:MAX — write e.g. nodes: 2 or nodes: '1:4'")
            data["min_nodes"] = int(match.group(1))
            data["max_nodes"] = int(match.group(2) or match.group(1))
        return data

    @property
    def workers_per_node(self) -> int:
        return self.nproc_per_node or max(self.gpus_per_node, 1)

    @property
    def gpus_per_trial(self) -> int:
        """GPUs one trial holds at most (counted against ``SWEEPQ_MAX_GPUS``)."""
        return self.gpus_per_node * self.max_nodes


REFUSED_MANIFEST = "<an inline manifest: refused, not stored>"
# Keys under which a refused body's values are not the sender's launch settings: W&B parameters
# (a parameter may be called "env" or "template"; parameter values are stored as they are).
_NOT_LAUNCH_KEYS = frozenset({"parameters"})


def _env_names_only(env: Any) -> Any:
    """An ``env`` of any shape as a REJECTED record stores it: the names, never a value."""
    if isinstance(env, dict):
        return {str(name)[:128]: REDACTED for name in env}
    if isinstance(env, list):
        return [{"name": str(item["name"])[:128], "value": REDACTED}
                if isinstance(item, dict) and isinstance(item.get("name"), str) else REDACTED for item in env]
    return REDACTED


def redact_secret_env(value: Any) -> Any:
    """``value`` (a refused body's ``launch`` or ``spec``) as a REJECTED sweep may store it. At any
    depth (outside W&B ``parameters``), every ``env`` — a mapping, a Kubernetes list of ``{name,
    value}``, a ``"KEY=VALUE"`` string, a docker-style list — keeps only its names (every value is
    ``<redacted>``: a secret's name need not look like one, ``HF-TOKEN``), and a ``template`` that is
    not a template name (a manifest as a mapping, a list, JSON text) is not stored at all
    (:data:`REFUSED_MANIFEST`). Nothing of a refused body that could hold a secret is copied from
    the queue into DynamoDB, where every researcher can read it."""
    if isinstance(value, list):
        return [redact_secret_env(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if key == "env":
            out[key] = _env_names_only(item)
        elif key == "template" and item is not None and not (isinstance(item, str) and len(item) <= 63
                                                             and _DNS_LABEL.fullmatch(item)):
            out[key] = REFUSED_MANIFEST
        elif key in _NOT_LAUNCH_KEYS:
            out[key] = item
        else:
            out[key] = redact_secret_env(item)
    return out


def merge_launch(*layers: dict[str, Any] | None) -> LaunchSettings:
    """Merge raw layers (defaults, file block, CLI flags), later ones win field by field."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        for key, value in layer.items():
            if value is None and key not in ("wandb_secret",):
                continue
            if key == "nodes":
                merged.pop("min_nodes", None)
                merged.pop("max_nodes", None)
            if key in ("min_nodes", "max_nodes"):
                merged.pop("nodes", None)
            merged[key] = value
    return LaunchSettings.model_validate(merged)
