"""The building blocks of the operator policy file (:mod:`dispatcher.core.policy`): teams, quotas,
limits, environment rules, Kueue mapping, templates. Pure pydantic; every model is frozen and
refuses unknown keys."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.core.launch import LIMITS, MAX_DURATION_S, OptionalDuration, OptionalQuantity, parse_duration
from dispatcher.core.refs import parse_quantity

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ENV_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!]+")
FROZEN = ConfigDict(extra="forbid", frozen=True)
MIN_WEIGHT = 0.01
# Extended resources counted as GPUs (fnmatch patterns): the caps and quotas count each unit as one
# GPU — a MIG slice, a time-sliced share, a Neuron core, a TPU chip are each one.
ACCELERATOR_RESOURCES: tuple[str, ...] = (
    "*/gpu", "*/gpu.*", "nvidia.com/mig-*", "gpu.intel.com/i915", "gpu.intel.com/xe", "habana.ai/gaudi",
    "aws.amazon.com/neuron", "aws.amazon.com/neuroncore", "aws.amazon.com/neurondevice", "google.com/tpu",
)


def names(values: list[str], field: str, pattern: re.Pattern[str] = DNS_LABEL) -> list[str]:
    for value in values:
        if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > 253:
            raise ValueError(f"{field}: {value!r} is not a Kubernetes name — use lower-case letters, digits and '-'")
    return values


def not_a_bool(value: Any, info: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{info.field_name}: {value!r} is a boolean, not a number — write a number")
    return value


def patterns(values: list[str], field: str) -> list[str]:
    for value in values:
        if not value.strip():
            raise ValueError(f"{field}: an empty pattern — write a SenderId such as AROAEXAMPLEID:alice or AIDAEXAMPLEID")
    return values


class Quota(BaseModel):
    """A team's share of the cluster at most (the planner enforces it)."""

    model_config = FROZEN
    max_jobs: int | None = Field(default=None, ge=0, le=100_000, description="Non-terminal jobs of the team at once.")
    max_gpus: int | None = Field(default=None, ge=0, le=1_000_000, description="GPUs of those jobs at once.")

    _numbers = field_validator("max_jobs", "max_gpus", mode="before")(not_a_bool)


class PriorityClass(BaseModel):
    model_config = FROZEN
    name: str = Field(description="A Kueue WorkloadPriorityClass.")
    min_priority: int = Field(ge=LIMITS["priority"][0], le=LIMITS["priority"][1])

    _numbers = field_validator("min_priority", mode="before")(not_a_bool)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return names([value], "kueue.priority_classes.name", DNS_SUBDOMAIN)[0]


class Team(BaseModel):
    """One team: who belongs to it and what it may use on top of the policy's shared lists."""

    model_config = FROZEN
    members: list[str] = Field(min_length=1, description="SQS SenderId fnmatch patterns (AIDA…, AROA…:session).")
    weight: float = Field(default=1.0, ge=MIN_WEIGHT, le=1000, description=(
        f"Fair-share weight among teams ({MIN_WEIGHT}..1000: a share is usage / weight, so a weight near 0 would "
        "make one team's share dwarf every other's)."))
    quota: Quota = Field(default_factory=Quota)
    kueue_queue: str | None = Field(default=None, description="The team's Kueue LocalQueue: its sweeps always use it, "
                                                              "whatever they name.")
    max_priority: int | None = Field(
        default=None, ge=LIMITS["priority"][0], le=LIMITS["priority"][1],
        description="The highest priority the team's sweeps may ask for (below limits.priority: keeps the team out of "
                    "the priority classes that preempt others).")
    wandb_secrets: list[str] = Field(default_factory=list, description="W&B Secrets only this team may use.")
    output_pvcs: list[str] = Field(default_factory=list, description="PVCs only this team may mount.")
    service_accounts: list[str] = Field(default_factory=list, description="ServiceAccounts only this team may use.")
    priority_classes: list[PriorityClass] | None = Field(
        default=None, description="The team's own priority → WorkloadPriorityClass mapping (null: kueue.priority_classes).")

    _numbers = field_validator("weight", "max_priority", mode="before")(not_a_bool)

    @field_validator("members")
    @classmethod
    def _members(cls, value: list[str]) -> list[str]:
        return patterns(value, "members")

    @field_validator("wandb_secrets", "output_pvcs", "service_accounts")
    @classmethod
    def _team_names(cls, value: list[str], info: Any) -> list[str]:
        return names(value, info.field_name, DNS_SUBDOMAIN if info.field_name == "output_pvcs" else DNS_LABEL)

    @field_validator("kueue_queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return None if value is None else names([value], "kueue_queue")[0]


class Limits(BaseModel):
    """The largest value a sweep may ask for (``None``: sweepq's own maximum). ``max_concurrent``
    and ``max_runtime`` also apply to sweeps that leave them unset."""

    model_config = FROZEN
    gpus_per_node: int | None = Field(default=None, ge=0, le=LIMITS["gpus_per_node"][1])
    nodes: int | None = Field(default=None, ge=1, le=LIMITS["max_nodes"][1], description="max_nodes of a trial.")
    gpus_per_trial: int | None = Field(default=None, ge=0, le=64 * 1024, description="gpus_per_node × max_nodes.")
    priority: int | None = Field(default=None, ge=LIMITS["priority"][0], le=LIMITS["priority"][1])
    max_concurrent: int | None = Field(default=None, ge=1, le=LIMITS["max_concurrent"][1])
    max_retries: int | None = Field(default=None, ge=0, le=LIMITS["max_retries"][1])
    max_restarts: int | None = Field(default=None, ge=0, le=LIMITS["max_restarts"][1])
    max_runtime: OptionalDuration = Field(default=None, description=f"Seconds or '2h', '7d' (≤ {MAX_DURATION_S // 86400}d).")
    start_timeout: OptionalDuration = Field(default=None, description="Seconds or '30m'.")
    cpu: OptionalQuantity = Field(default=None, description="resources.cpu per node, a quantity ('64').")
    memory: OptionalQuantity = Field(default=None, description="resources.memory per node, a quantity ('512Gi').")

    _numbers = field_validator("gpus_per_node", "nodes", "gpus_per_trial", "priority", "max_concurrent", "max_retries",
                               "max_restarts", mode="before")(not_a_bool)

    @field_validator("max_runtime", "start_timeout", mode="before")
    @classmethod
    def _durations(cls, value: Any, info: Any) -> int | None:
        return parse_duration(value, field=info.field_name)

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantities(cls, value: Any, info: Any) -> str | None:
        if value is None:
            return None
        try:
            parse_quantity(value)
        except ValueError as exc:
            raise ValueError(f"{info.field_name}: {str(value)[:40]!r} is {exc}") from None
        return str(value)


class EnvRules(BaseModel):
    model_config = FROZEN
    allowed: list[str] = Field(default_factory=lambda: ["*"],
                               description="fnmatch patterns of the names a sender may set (reserved names never).")
    reserved: list[str] = Field(default_factory=list, description="More reserved patterns, e.g. NCCL_*.")

    @field_validator("allowed", "reserved")
    @classmethod
    def _env_patterns(cls, value: list[str], info: Any) -> list[str]:
        for pattern in value:
            if not _ENV_PATTERN.fullmatch(pattern):
                raise ValueError(f"env.{info.field_name}: {pattern!r} is not an environment-name pattern — use "
                                 "letters, digits, _ and * (e.g. HF_*)")
        return value


class KueueRules(BaseModel):
    model_config = FROZEN
    queues: list[str] | None = Field(
        default=None, description="LocalQueues a sweep of a team without its own queue may name (null: any queue "
                                  "no team owns).")
    required: bool = Field(
        default=False, description="Every sweep runs under a Kueue LocalQueue (its team's own, else the one it names "
                                   "of queues, else the first of queues): nothing bypasses Kueue's quotas.")
    priority_classes: list[PriorityClass] = Field(
        default_factory=list, description="sweepq priority → WorkloadPriorityClass: the entry with the largest "
                                          "min_priority ≤ the sweep's priority.")

    @field_validator("queues")
    @classmethod
    def _queues(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else names(value, "kueue.queues")


class TemplateSpec(BaseModel):
    """One operator template: a manifest with ``{{placeholders}}`` (:mod:`dispatcher.core.templating`)."""

    model_config = FROZEN
    manifest: dict[str, Any] = Field(description="The job object, filled structurally for each trial attempt.")
    description: str = Field(default="", max_length=1000)
    teams: list[str] | None = Field(default=None, description="Teams that may use it (null: everyone).")
    plural: str | None = Field(default=None, description="API plural of the kind, when sweepq cannot derive it.")
    pod_name_pattern: str | None = Field(
        default=None, description="Regex of the pod names of one job, '{job}' standing for the job name: lets "
                                  "the dispatcher trust metrics written by those pods.")

    def pod_belongs_to(self, job: str, pod: str) -> bool:
        """Whether ``pod`` is a pod of ``job`` by ``pod_name_pattern`` (C1's metrics trust for kind
        ``template``): the pattern must match the whole name, the job name is matched literally.
        Without a pattern no pod is trusted."""
        if not self.pod_name_pattern or "{job}" not in self.pod_name_pattern:
            return False
        pattern = "".join(re.escape(job) if part == "{job}" else part
                          for part in re.split(r"(\{job\})", self.pod_name_pattern))
        return re.fullmatch(pattern, pod) is not None
