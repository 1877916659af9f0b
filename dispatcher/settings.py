"""Settings: one frozen object built once from arguments > environment > defaults.

Every setting is documented in the README's configuration table; the names are collected here.

Derived defaults (filled in ``__post_init__``, so a directly constructed ``Settings`` has them too):

* ``scope`` — the dispatcher's identity, ``<SWEEPQ_CLUSTER_NAME or "local">/<SWEEPQ_NAMESPACE>``.
  Recorded on every sweep this deployment accepts; the tick lease and the active-sweep index are
  per scope, so deployments of different scopes can share one table without touching each
  other's sweeps (see the README, "One tick, and why it is exactly-once").
* ``metrics_table`` — ``<SWEEPQ_TABLE>-metrics``; ``wake_queue_name`` — ``<SWEEPQ_QUEUE_NAME>-wake``.
"""

from __future__ import annotations

import os
import re
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
    "scope": "SWEEPQ_SCOPE",
    "max_running": "SWEEPQ_MAX_RUNNING",
    "max_gpus": "SWEEPQ_MAX_GPUS",
    "max_waiting": "SWEEPQ_MAX_WAITING",
    "max_launches_per_tick": "SWEEPQ_MAX_LAUNCHES_PER_TICK",
    "max_grid_size": "SWEEPQ_MAX_GRID_SIZE",
    "lease_seconds": "SWEEPQ_LEASE_SECONDS",
    "intake_budget_s": "SWEEPQ_INTAKE_BUDGET_S",
    "sweep_failures_to_hold": "SWEEPQ_SWEEP_FAILURES_TO_HOLD",
    "cluster_name": "SWEEPQ_CLUSTER_NAME",
    "policy": "SWEEPQ_POLICY",
    "metrics_table": "SWEEPQ_METRICS_TABLE",
    "wake_queue_url": "SWEEPQ_WAKE_QUEUE_URL",
    "wake_queue_name": "SWEEPQ_WAKE_QUEUE_NAME",
    "wandb_project": "SWEEPQ_WANDB_PROJECT",
    "output_dir": "SWEEPQ_OUTPUT_DIR",
    "state_dir": "SWEEPQ_STATE_DIR",
    "local_slots": "SWEEPQ_LOCAL_SLOTS",
    "etcd_endpoint": "SWEEPQ_ETCD_ENDPOINT",
    "trainjob_runtime": "SWEEPQ_TRAINJOB_RUNTIME",
    "job_ttl_s": "SWEEPQ_JOB_TTL_S",
    "termination_grace_s": "SWEEPQ_TERMINATION_GRACE_S",
    "template_resources": "SWEEPQ_TEMPLATE_RESOURCES",
    "wake": "SWEEPQ_WAKE",
}

_SCOPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_RESOURCE = re.compile(r"^[a-z0-9-]+\.[a-z0-9.-]+/[a-z0-9]+$")  # plural.group/version


MIN_JOB_TTL_S = 600  # ten minutes: many ticks of any schedule; a tick that lags more is an incident

@dataclass(frozen=True)
class Settings:
    queue_url: str | None = None
    queue_name: str = "sweepq"
    table: str = "sweepq"
    namespace: str = "sweepq"
    backend: str = "pytorchjob"  # default job kind of sweeps that name none
    kinds: tuple[str, ...] = ()  # kinds observed and allowed; default: (backend,)
    scope: str | None = None  # this deployment's identity; default <cluster or local>/<namespace>
    max_running: int | None = 8  # global cap on managed non-terminal jobs
    max_gpus: int | None = None  # global cap on their GPUs
    max_waiting: int | None = None  # cap on jobs waiting for quota (Kueue); wired by the planner
    max_launches_per_tick: int = 200
    max_grid_size: int = 10**7
    lease_seconds: int = 240  # must exceed a tick's duration and stay under the Lambda timeout
    intake_budget_s: float = 20.0
    sweep_failures_to_hold: int = 3  # consecutive failed ticks of one sweep before it is held (ERROR)
    cluster_name: str | None = None  # EKS cluster: Lambda reaches it with an EKS token
    policy: str | None = None  # operator policy file (YAML path or ssm:<name>); none = the safe default
    metrics_table: str | None = None  # where trials write their metrics; default <table>-metrics
    wake_queue_url: str | None = None  # trials' "trial finished" triggers; else looked up by name
    wake_queue_name: str | None = None  # default <queue_name>-wake
    wandb_project: str | None = None
    output_dir: str | None = None  # trial outputs/checkpoints root inside the job (a shared volume)
    state_dir: str = ".sweepq"  # local backend's jobs/logs directory
    local_slots: int = 2
    etcd_endpoint: str = "etcd-service:2379"
    trainjob_runtime: str = "torch-distributed"
    # finished jobs are garbage-collected by Kubernetes after this (0: never). Every tick lists the
    # finished ones too, so keep it short: an hour leaves ample time for the tick to record them.
    job_ttl_s: int = 3600  # at least MIN_JOB_TTL_S (or 0)
    termination_grace_s: int = 120  # pods' terminationGracePeriodSeconds (checkpoint on SIGTERM)
    template_resources: tuple[str, ...] = ()  # kind template: more "plural.group/version" to list (beyond the policy's)
    wake: bool = True  # trainers send a wake message when they finish

    def __post_init__(self) -> None:
        if self.scope is None:
            object.__setattr__(self, "scope", f"{self.cluster_name or 'local'}/{self.namespace}")
        if self.metrics_table is None:
            object.__setattr__(self, "metrics_table", f"{self.table}-metrics")
        if self.wake_queue_name is None:
            object.__setattr__(self, "wake_queue_name", f"{self.queue_name}-wake")

    @property
    def enabled_kinds(self) -> tuple[str, ...]:
        kinds = self.kinds or (self.backend,)
        return tuple(dict.fromkeys(kinds))

    @property
    def dispatcher_scope(self) -> str:
        """``scope`` as a plain ``str`` (always set after ``__post_init__``)."""
        return str(self.scope)

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
        if 0 < self.job_ttl_s < MIN_JOB_TTL_S:
            # a job Kubernetes deletes before a tick lists it is not observed: a finished one loses its
            # outcome, one deleted before its first listing is created again as the same attempt
            raise ConfigError(f"{ENV['job_ttl_s']}: {self.job_ttl_s} s is too short — finished jobs must stay "
                              f"until a tick records them: use at least {MIN_JOB_TTL_S} (or 0: never deleted)")
        if not _SCOPE.match(self.dispatcher_scope):
            raise ConfigError(
                f"{ENV['scope']}: {self.dispatcher_scope[:80]!r} is not a scope — use 1-128 letters, digits and "
                "'._:/-', e.g. gpu-cluster/team-a (the default is <SWEEPQ_CLUSTER_NAME or local>/<SWEEPQ_NAMESPACE>)"
            )
        if self.sweep_failures_to_hold < 1:
            raise ConfigError(f"{ENV['sweep_failures_to_hold']}: must be at least 1")
        for text in self.template_resources:
            if not _RESOURCE.match(text):
                raise ConfigError(f"{ENV['template_resources']}: {text!r} is not plural.group/version — e.g. "
                                  "jobsets.jobset.x-k8s.io/v1alpha2")
        # Kind 'template' needs no SWEEPQ_TEMPLATE_RESOURCES: the template backend lists the resource
        # of every template of the operator policy, and each template sweep records its resource at
        # intake (observation.prepare_observation), so a fresh process never misses its jobs.


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
