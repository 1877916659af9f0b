"""Launch settings: *how* the trials of a sweep run (image, job kind, GPUs, caps, retries).

They come from three places, later ones winning field by field:

1. team defaults (the dispatcher's / producer's environment, see ``dispatcher.settings``),
2. the ``sweepq:`` extension block of the sweep file,
3. ``producer submit`` command-line flags.

A plain W&B sweep file without a ``sweepq:`` block is valid: every field has a default.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JobKind = Literal["pytorchjob", "elasticjob", "trainjob", "job", "local", "template"]
JOB_KINDS: tuple[str, ...] = ("pytorchjob", "elasticjob", "trainjob", "job", "local", "template")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Secrets never travel through SQS or DynamoDB: they reach the pod through a secretKeyRef.
SECRET_ENV = re.compile(r"(^|_)(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)
REDACTED = "<redacted>"


def parse_duration(value: Any, *, field: str) -> int | None:
    """``"90m"`` / ``"2h"`` / ``3600`` → seconds. ``None`` stays ``None`` (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field}: {value!r} is not a duration — write seconds (3600) or '90m', '2h', '1d'")
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{field}: {value!r} is not a duration — write seconds (3600) or '90m', '2h', '1d'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # inf, nan and numbers beyond float range (a JSON body carries 1e999 or 400 digits, YAML .inf)
    # are no durations; unchecked, int(inf) below raised OverflowError out of validation.
    if not math.isfinite(seconds):
        raise ValueError(f"{field}: {value!r:.20} is not a duration — write seconds (3600) or '90m', '2h', '1d'")
    if seconds <= 0:
        raise ValueError(f"{field}: {value!r} must be positive — omit it for no limit")
    return int(seconds)


class Resources(BaseModel):
    """Per-node CPU and memory requests (limits equal requests for memory)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cpu: str | None = Field(default=None, description="CPU request per node, e.g. '8'.")
    memory: str | None = Field(default=None, description="Memory request and limit per node, e.g. '32Gi'.")


class LaunchSettings(BaseModel):
    """How each trial of a sweep is launched. Serialised into the SQS body and the sweep item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: JobKind | None = Field(default=None, description="Job kind the trials run as; default: the dispatcher's SWEEPQ_BACKEND.")
    image: str = Field(default="sweepq-trainer:latest", description="Container image of the trial.")
    gpus_per_node: int = Field(default=1, ge=0, le=64, description="nvidia.com/gpu requested per node.")
    nproc_per_node: int | None = Field(
        default=None, ge=1, le=64, description="torchrun workers per node; default = gpus_per_node (or 1 on CPU)."
    )
    min_nodes: int = Field(default=1, ge=1, le=1024, description="Elastic minimum number of nodes.")
    max_nodes: int = Field(default=1, ge=1, le=1024, description="Elastic maximum number of nodes.")
    max_concurrent: int | None = Field(default=None, ge=1, description="Trials of this sweep running at once.")
    max_retries: int = Field(default=2, ge=0, le=20, description="Extra attempts for a failed or lost trial.")
    max_restarts: int = Field(default=3, ge=0, le=100, description="torchrun elastic restarts inside one attempt.")
    max_failed_trials: int | None = Field(
        default=None, ge=1, description="Circuit breaker: fail the sweep after this many FAILED trials."
    )
    max_runtime: int | None = Field(default=None, description="Per-attempt wall-clock limit in seconds ('2h').")
    start_timeout: int = Field(default=1800, description="An attempt still Pending after this (seconds) is retried.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher launches first.")
    team: str | None = Field(default=None, max_length=63, description="Team label; also the Kueue queue if set.")
    kueue_queue: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue name.")
    resources: Resources = Field(default_factory=Resources)
    env: dict[str, str] = Field(default_factory=dict, description="Extra non-secret environment for the trial.")
    wandb_secret: str | None = Field(
        default="wandb", description="Kubernetes Secret holding WANDB_API_KEY (key 'api-key'); null for none."
    )
    service_account: str | None = Field(default=None, description="ServiceAccount the trial pods run as.")
    output_pvc: str | None = Field(
        default=None, max_length=253,
        description="PersistentVolumeClaim (ReadWriteMany) mounted at SWEEPQ_OUTPUT_DIR for checkpoints and results.",
    )
    template: dict[str, Any] | None = Field(
        default=None, description="For kind 'template': the manifest with {{placeholders}}, filled structurally."
    )

    @field_validator("max_runtime", "start_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> int | None:
        return parse_duration(value, field=info.field_name)

    @field_validator("env")
    @classmethod
    def _no_secrets_in_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env.{name}: not a valid environment variable name — use letters, digits and _")
            if SECRET_ENV.search(name):
                raise ValueError(
                    f"env.{name}: looks like a secret; secrets must not travel through the queue — "
                    "store it in a Kubernetes Secret (see wandb_secret) instead"
                )
        return env

    @field_validator("team", "kueue_queue", "service_account", "wandb_secret", "output_pvc")
    @classmethod
    def _dns_label(cls, value: str | None, info: Any) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value):
            raise ValueError(
                f"{info.field_name}: {value!r} is not a DNS-1123 label — use lower-case letters, digits and '-'"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "LaunchSettings":
        if self.max_nodes < self.min_nodes:
            raise ValueError(
                f"nodes: max_nodes {self.max_nodes} < min_nodes {self.min_nodes} — write nodes: "
                f"'{self.max_nodes}:{self.min_nodes}' (MIN:MAX)"
            )
        if self.kind == "template" and not self.template:
            raise ValueError("template: kind 'template' needs a manifest in sweepq.template — or pick another kind")
        if self.kind != "template" and self.template:
            raise ValueError(f"template: only used with kind 'template' (kind is {self.kind!r}) — remove it")
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
            text = str(nodes)
            match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", text)
            if isinstance(nodes, bool) or not match:
                raise ValueError(f"nodes: {nodes!r} is not N or MIN:MAX — write e.g. nodes: 2 or nodes: '1:4'")
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


def redact_secret_env(value: Any) -> Any:
    """``value`` with the values of secret-looking variables (:data:`SECRET_ENV`) of every ``env``
    mapping replaced by ``<redacted>``, at any depth. What a REJECTED sweep stores of a body that
    carried a secret the validator refused: the name stays (the reason names it), the value is
    not copied from the queue into DynamoDB, where every researcher can read it."""
    if isinstance(value, list):
        return [redact_secret_env(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "env" and isinstance(item, dict):
            out[key] = {name: REDACTED if isinstance(name, str) and SECRET_ENV.search(name) else v for name, v in item.items()}
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
