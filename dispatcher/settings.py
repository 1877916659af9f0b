"""Settings: one frozen object built once from arguments > environment > defaults.

Every setting is documented in the README's configuration table; the names are collected here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from dispatcher.core.errors import ConfigError
from dispatcher.core.launch import JOB_KINDS

ENV = {
    "queue_url": "SWEEPQ_QUEUE_URL",
    "queue_name": "SWEEPQ_QUEUE_NAME",
    "table": "SWEEPQ_TABLE",
    "namespace": "SWEEPQ_NAMESPACE",
    "backend": "SWEEPQ_BACKEND",
    "kinds": "SWEEPQ_KINDS",
    "max_running": "SWEEPQ_MAX_RUNNING",
    "max_gpus": "SWEEPQ_MAX_GPUS",
    "max_launches_per_tick": "SWEEPQ_MAX_LAUNCHES_PER_TICK",
    "max_grid_size": "SWEEPQ_MAX_GRID_SIZE",
    "lease_seconds": "SWEEPQ_LEASE_SECONDS",
    "intake_budget_s": "SWEEPQ_INTAKE_BUDGET_S",
    "cluster_name": "SWEEPQ_CLUSTER_NAME",
    "wandb_project": "SWEEPQ_WANDB_PROJECT",
    "output_dir": "SWEEPQ_OUTPUT_DIR",
    "state_dir": "SWEEPQ_STATE_DIR",
    "local_slots": "SWEEPQ_LOCAL_SLOTS",
    "etcd_endpoint": "SWEEPQ_ETCD_ENDPOINT",
    "trainjob_runtime": "SWEEPQ_TRAINJOB_RUNTIME",
    "job_ttl_s": "SWEEPQ_JOB_TTL_S",
    "template_resources": "SWEEPQ_TEMPLATE_RESOURCES",
    "wake": "SWEEPQ_WAKE",
}


@dataclass(frozen=True)
class Settings:
    queue_url: str | None = None
    queue_name: str = "sweepq"
    table: str = "sweepq"
    namespace: str = "sweepq"
    backend: str = "pytorchjob"  # default job kind of sweeps that name none
    kinds: tuple[str, ...] = ()  # kinds observed and allowed; default: (backend,)
    max_running: int | None = 8  # global cap on managed non-terminal jobs
    max_gpus: int | None = None  # global cap on their GPUs
    max_launches_per_tick: int = 200
    max_grid_size: int = 10**7
    lease_seconds: int = 240  # must exceed a tick's duration and stay under the Lambda timeout
    intake_budget_s: float = 20.0
    cluster_name: str | None = None  # EKS cluster: Lambda reaches it with an EKS token
    wandb_project: str | None = None
    output_dir: str | None = None  # trial outputs/checkpoints root inside the job (a shared volume)
    state_dir: str = ".sweepq"  # local backend's jobs/logs directory
    local_slots: int = 2
    etcd_endpoint: str = "etcd-service:2379"
    trainjob_runtime: str = "torch-distributed"
    # finished jobs are garbage-collected by Kubernetes after this (0: never). Every tick lists the
    # finished ones too, so keep it short: an hour leaves ample time for the tick to record them.
    job_ttl_s: int = 3600
    template_resources: tuple[str, ...] = ()  # kind template: "group/version/plural" the tick lists
    wake: bool = True  # trainers send a wake message when they finish

    @property
    def enabled_kinds(self) -> tuple[str, ...]:
        kinds = self.kinds or (self.backend,)
        return tuple(dict.fromkeys(kinds))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Explicit arguments beat environment variables, which beat defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw: Any = overrides.get(f.name)
            if raw is None and ENV[f.name] in env and env[ENV[f.name]] != "":
                raw = env[ENV[f.name]]
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, f.type)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        for kind in (self.backend, *self.kinds):
            if kind not in JOB_KINDS or kind == "template" and kind == self.backend:
                raise ConfigError(
                    f"{ENV['backend'] if kind == self.backend else ENV['kinds']}: {kind!r} is not a job kind — "
                    f"use one of {', '.join(k for k in JOB_KINDS if k != 'template')}"
                )
        if self.lease_seconds < 30:
            raise ConfigError(f"{ENV['lease_seconds']}: {self.lease_seconds} is too short — use at least 30")


def _convert(name: str, raw: Any, annotation: Any) -> Any:
    text = str(annotation)
    env_name = ENV[name]
    try:
        if "tuple" in text:
            items = raw if isinstance(raw, (list, tuple)) else [x.strip() for x in str(raw).split(",")]
            return tuple(x for x in items if x)
        if "bool" in text:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if "int" in text:
            if str(raw).strip().lower() in ("none", "unlimited", "off") and "None" in text:
                return None
            value = int(raw)
            if value < 0:
                raise ValueError(raw)
            return value
        if "float" in text:
            return float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{env_name}: {raw!r} is not a valid {text.replace(' | None', '')} — fix the value") from exc
    return str(raw)
