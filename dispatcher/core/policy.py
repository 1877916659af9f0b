"""The operator-owned launch policy: what a sweep's sender may launch. Pure pydantic.

A queue sender decides the trial's code; the operator decides its privileges. The policy file
(YAML, setting ``SWEEPQ_POLICY``: a path or ``ssm:<parameter>``, loaded by
:mod:`dispatcher.adapters.policy_source`) lists which images, ServiceAccounts, W&B Secrets, PVCs,
job kinds and environment names a sweep may use, the largest numbers it may ask for, the teams
(members as SQS ``SenderId`` fnmatch patterns, weight, quota, Kueue queue, their own Secrets and
PVCs), the operators, and the templates sweeps may name. No file is :meth:`Policy.default`: safe on
a shared cluster (the README says what it allows).

Checks (:meth:`Policy.check_launch`, :meth:`Policy.admit`, in :mod:`dispatcher.core.policy_checks`)
return :class:`~dispatcher.core.policy_checks.Violation` s naming the rule, the field, the value
and what the policy allows; they run at intake *and* again when a job is rendered, so a stored
sweep that no longer passes after a policy change is held, not launched. Some rules hold whatever
the file says: the dispatcher's own ServiceAccount (:data:`DISPATCHER_SERVICE_ACCOUNTS`) is never
a trial's, sweepq's reserved environment names (:mod:`dispatcher.core.envnames`) are never a
sender's, templates come only from this file, and template pods are Pod Security ``restricted``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from dispatcher.core.errors import ConfigError, NotFound, PermanentError, SpecError
from dispatcher.core.launch import JOB_KINDS, JobKind, LaunchSettings
from dispatcher.core.policy_parts import (
    ACCELERATOR_RESOURCES,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    FROZEN,
    EnvRules,
    KueueRules,
    Limits,
    PriorityClass,
    Quota,
    Team,
    TemplateSpec,
    names,
    patterns,
)
from dispatcher.core.policy_templates import template_pod_problems, template_problems
from dispatcher.core.refs import normalise_image_prefix
from dispatcher.core.yamlsafe import load_yaml

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.core.policy_checks import Admission, Violation

__all__ = [
    "DISPATCHER_SERVICE_ACCOUNTS", "EnvRules", "KueueRules", "Limits", "Policy", "PolicyError", "PriorityClass", "Quota",
    "Team", "TemplateSpec", "policy_json_schema", "template_pod_problems",
]

MAX_POLICY_BYTES = 1024 * 1024
# The dispatcher's own ServiceAccount (infra/k8s/base): its RBAC creates and deletes every job and its
# AWS role reads and deletes every submission. No trial ever runs as it, whatever the file says.
DISPATCHER_SERVICE_ACCOUNTS: frozenset[str] = frozenset({"sweepq-dispatcher"})


class PolicyError(ConfigError):
    """The policy file is invalid. ``problems``: one ``<field path>: <what> — <fix>`` line each."""

    def __init__(self, problems: list[str], *, source: str = "policy") -> None:
        self.problems = list(problems)
        self.source = source
        body = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems))
        super().__init__(f"{source}: {body}")


class Policy(BaseModel):
    """The operator policy. See the module docstring and the README section "Operator policy"."""

    model_config = FROZEN
    version: Literal[1] = Field(default=1, description="Format version of this file.")
    images: list[str] = Field(default_factory=lambda: ["*"], description=(
        "Allowed images: a repository ('ghcr.io/acme/trainer'), everything under a namespace ('ghcr.io/acme/'), a "
        "registry ('111122223333.dkr.ecr.us-east-1.amazonaws.com') or '*'."))
    digests_only: bool = Field(default=False, description="Images must be pinned by @sha256: digest.")
    service_accounts: list[str] = Field(default_factory=lambda: ["sweepq-trainer"],
                                        description="ServiceAccounts every team's trials may run as.")
    service_account_required: bool = Field(
        default=False, description="Refuse sweeps without service_account (they run as the namespace's default).")
    dispatcher_service_accounts: list[str] = Field(
        default_factory=list, description="More names never allowed to trials (sweepq-dispatcher always is).")
    wandb_secrets: list[str] = Field(default_factory=lambda: ["wandb"], description="W&B Secrets every team may use.")
    output_pvcs: list[str] = Field(default_factory=lambda: ["sweepq-outputs"], description="PVCs every team may mount.")
    kinds: list[JobKind] = Field(default_factory=lambda: list(JOB_KINDS), description="Job kinds sweeps may use.")
    limits: Limits = Field(default_factory=Limits)
    env: EnvRules = Field(default_factory=EnvRules)
    teams: dict[str, Team] = Field(default_factory=dict)
    default_team: str | None = Field(
        default=None, description="Team of senders who match no team (null: they are refused once teams exist).")
    operators: list[str] = Field(default_factory=list, description="SenderId patterns of operators: they may "
                                 "cancel, pause and resume any sweep and submit for any team.")
    kueue: KueueRules = Field(default_factory=KueueRules)
    templates: dict[str, TemplateSpec] = Field(default_factory=dict)
    accelerator_resources: list[str] = Field(
        default_factory=lambda: list(ACCELERATOR_RESOURCES), min_length=1, description=(
            "Extended resources a template's GPUs are counted from (fnmatch patterns; each unit is one GPU for the "
            "caps and quotas): add your cluster's if it is not here."))

    # -- validation of the file ----------------------------------------------------------------
    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str]) -> list[str]:
        for prefix in value:
            try:
                normalise_image_prefix(prefix)
            except ValueError as exc:
                raise ValueError(f"images: {prefix!r} — {exc}") from None
        return value

    @field_validator("service_accounts", "dispatcher_service_accounts", "wandb_secrets")
    @classmethod
    def _labels(cls, value: list[str], info: Any) -> list[str]:
        return names(value, info.field_name)

    @field_validator("output_pvcs")
    @classmethod
    def _pvcs(cls, value: list[str]) -> list[str]:
        return names(value, "output_pvcs", DNS_SUBDOMAIN)

    @field_validator("operators")
    @classmethod
    def _operators(cls, value: list[str]) -> list[str]:
        return patterns(value, "operators")

    @field_validator("accelerator_resources")
    @classmethod
    def _accelerators(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"[a-z0-9*?.-]+/[A-Za-z0-9*?._-]+", pattern):
                raise ValueError(f"accelerator_resources: {pattern!r} is not an extended-resource pattern — write "
                                 "e.g. nvidia.com/gpu or nvidia.com/mig-*")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Policy":
        problems: list[str] = []
        forbidden = self.forbidden_service_accounts
        for where, accounts in [("service_accounts", self.service_accounts),
                                *((f"teams.{n}.service_accounts", t.service_accounts) for n, t in self.teams.items())]:
            for account in sorted(set(accounts) & forbidden):
                problems.append(f"{where}: {account!r} is the dispatcher's own ServiceAccount — a trial may never run "
                                "as it; remove it")
        for name in self.teams:
            if not DNS_LABEL.fullmatch(name):
                problems.append(f"teams.{name}: not a DNS-1123 label — name teams with lower-case letters, digits, '-'")
        if self.default_team is not None and self.default_team not in self.teams:
            problems.append(f"default_team: {self.default_team!r} is not one of the teams ({', '.join(self.teams) or 'none'})")
        queues: dict[str, str] = {}
        for name, team in self.teams.items():
            if team.kueue_queue and team.kueue_queue in queues:
                problems.append(f"teams.{name}.kueue_queue: {team.kueue_queue!r} is also team {queues[team.kueue_queue]}'s "
                                "— give each team its own LocalQueue")
            if team.kueue_queue:
                queues[team.kueue_queue] = name
        for where, classes in [("kueue.priority_classes", self.kueue.priority_classes),
                               *((f"teams.{n}.priority_classes", t.priority_classes or []) for n, t in self.teams.items())]:
            minima = [c.min_priority for c in classes]
            if len(set(minima)) != len(minima):
                problems.append(f"{where}: two entries share a min_priority — make them distinct")
        for name, template in self.templates.items():
            problems += template_problems(name, template, self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "Policy":
        """The policy without a file (see the README, "Operator policy")."""
        return cls()

    @classmethod
    def load_yaml(cls, text: str | bytes, *, source: str = "policy") -> "Policy":
        """Parse and validate a policy file. :class:`PolicyError` names every problem and its field."""
        try:
            raw = load_yaml(text, source=source, max_bytes=MAX_POLICY_BYTES)
        except SpecError as exc:
            found = [("the file is empty — write {} for the default policy, start from infra/policy.example.yaml, or "
                      "unset SWEEPQ_POLICY") if "the file is empty" in p else p for p in exc.problems]
            raise PolicyError(found, source=source) from exc
        if raw is None:
            raise PolicyError(["the file holds only null — write {} for the default policy"], source=source)
        return cls.from_data(raw, source=source)

    @classmethod
    def from_data(cls, raw: Any, *, source: str = "policy") -> "Policy":
        if not isinstance(raw, dict):
            raise PolicyError([f"the policy must be a mapping, got {type(raw).__name__} — start from "
                               "infra/policy.example.yaml"], source=source)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise PolicyError(_problems(exc), source=source) from exc

    # -- lookups -------------------------------------------------------------------------------
    @property
    def forbidden_service_accounts(self) -> frozenset[str]:
        return DISPATCHER_SERVICE_ACCOUNTS | frozenset(self.dispatcher_service_accounts)

    @property
    def digest(self) -> str:
        """A short fingerprint of the policy's content (log it; store it with what it admitted)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def service_accounts_of(self, team: str | None) -> set[str]:
        """The ServiceAccounts a trial of ``team`` may run as (shared + the team's own, never the dispatcher's)."""
        own = set(self.teams[team].service_accounts) if team in self.teams else set()
        return (set(self.service_accounts) | own) - self.forbidden_service_accounts

    def team(self, name: str) -> Team:
        """The team ``name`` (weight, quota, kueue_queue, its own Secrets/PVCs/ServiceAccounts)."""
        if name not in self.teams:
            raise NotFound(f"team {name!r} is not in the operator policy — teams: {', '.join(self.teams) or 'none'}")
        return self.teams[name]

    def template(self, name: str) -> TemplateSpec:
        if name not in self.templates:
            known = ", ".join(sorted(self.templates)) or "none — the operator has defined no templates"
            raise PermanentError(f"template: {name!r} is not a template of the operator policy — use one of {known}")
        return self.templates[name]

    def is_operator(self, sender: str) -> bool:
        return bool(sender) and any(fnmatch.fnmatchcase(sender, p) for p in self.operators)

    def teams_of(self, sender: str) -> list[str]:
        """Teams whose members match ``sender``, in file order."""
        if not sender:
            return []
        return [name for name, team in self.teams.items() if any(fnmatch.fnmatchcase(sender, p) for p in team.members)]

    def team_of(self, sender: str, launch: LaunchSettings) -> str | None:
        """The team a sweep of ``sender`` counts against: the team its launch names if the sender is a
        member (or an operator), else the sender's first team, else ``default_team``. ``None`` when
        the policy has no teams, or when the sender may not use the team it named or belongs to
        none (:meth:`check_launch` then says why)."""
        if not self.teams:
            return None
        mine = self.teams_of(sender)
        if launch.team is not None:
            if launch.team in mine or (launch.team in self.teams and self.is_operator(sender)):
                return launch.team
            return None
        return mine[0] if mine else self.default_team

    def may_control(self, sender: str, *, submitter: str) -> bool:
        """Cancel, pause, resume: the sweep's submitter (its stored SenderId) and operators."""
        return bool(sender) and (sender == submitter or self.is_operator(sender))

    def control_refusal(self, sender: str, *, submitter: str, action: str, sweep_id: str) -> str | None:
        """Why ``sender`` may not ``action`` the sweep (the reason stored as ``control_refused``), or ``None``."""
        if self.may_control(sender, submitter=submitter):
            return None
        return (f"{action} of {sweep_id} by {sender or 'an unknown sender'} refused: only its submitter "
                f"({submitter or 'unknown'}) and the policy's operators may {action} it")

    def priority_class(self, priority: int, team: str | None = None) -> str | None:
        """The Kueue WorkloadPriorityClass of a sweep's priority: the entry of ``team``'s
        ``priority_classes`` (else ``kueue.priority_classes``) with the largest ``min_priority`` ≤
        ``priority``; ``None`` when no entry applies (the job then carries no priority-class label)."""
        own = self.teams[team].priority_classes if team in self.teams else None
        classes = own if own is not None else self.kueue.priority_classes
        eligible = [c for c in classes if c.min_priority <= priority]
        return max(eligible, key=lambda c: c.min_priority).name if eligible else None

    def admission_params(self) -> dict[str, Any]:
        """What the in-cluster backstop (a ValidatingAdmissionPolicy's params object) needs to refuse
        trial pods outside this policy even if something bypassed the dispatcher, in the form CEL
        compares strings: a ValidatingAdmissionPolicy sees each image *as written*, and the dispatcher
        writes every image fully qualified and normalised when images are restricted
        (``docker.io/library/ubuntu:22.04``, :func:`dispatcher.core.policy_checks.admit`), so

        * ``anyImage`` — every image is allowed (``images: ["*"]``);
        * ``imageRepositories`` — ``image == r || image.startsWith(r + ':') || image.startsWith(r + '@')``;
        * ``imageNamespaces`` — registries and namespaces, ending in ``/``: ``image.startsWith(n)``;
        * ``imagePrefixes`` — both lists together, as the policy compares them;

        and every ServiceAccount some team may use, and the ones no trial may use. A ConfigMap
        generated from it (:meth:`admission_configmap`) keeps the two in step."""
        accounts = set(self.service_accounts).union(*(t.service_accounts for t in self.teams.values()))
        prefixes = sorted({normalise_image_prefix(p) for p in self.images})
        return {
            "anyImage": "*" in prefixes,
            "imagePrefixes": prefixes,
            "imageRepositories": [p for p in prefixes if p != "*" and not p.endswith("/")],
            "imageNamespaces": [p for p in prefixes if p.endswith("/")],
            "digestsOnly": self.digests_only,
            "serviceAccounts": sorted(accounts - self.forbidden_service_accounts),
            "serviceAccountRequired": self.service_account_required,
            "forbiddenServiceAccounts": sorted(self.forbidden_service_accounts),
        }

    def admission_configmap(self, *, name: str = "sweepq-policy-params", namespace: str = "sweepq") -> dict[str, Any]:
        """:meth:`admission_params` as a ConfigMap (the paramKind a ValidatingAdmissionPolicy binds):
        ConfigMap data are strings, so lists are comma-separated (CEL: ``params.data.x.split(',')``,
        empty for none) and booleans ``"true"``/``"false"``."""
        data = {key: (",".join(value) if isinstance(value, list) else str(value).lower())
                for key, value in self.admission_params().items()}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace,
                "annotations": {"sweepq.io/policy-digest": self.digest}}, "data": data}

    # -- checks (dispatcher.core.policy_checks) ------------------------------------------------
    def check_launch(self, launch: LaunchSettings, *, team: str | None, sender: str,
                     default_kind: str | None = None) -> list["Violation"]:
        from dispatcher.core.policy_checks import check_launch

        return check_launch(self, launch, team=team, sender=sender, default_kind=default_kind)

    def admit(self, launch: LaunchSettings, *, sender: str, default_kind: str | None = None) -> "Admission":
        """Every violation and the launch settings as they take effect; ``default_kind``: the
        dispatcher's ``SWEEPQ_BACKEND`` (what a sweep naming no kind runs as)."""
        from dispatcher.core.policy_checks import admit

        return admit(self, launch, sender=sender, default_kind=default_kind)


def policy_json_schema() -> dict[str, Any]:
    """JSON schema of the policy file (``producer schema`` can print it next to the sweep schema)."""
    schema = Policy.model_json_schema()
    schema["title"] = "sweepq operator policy"
    return schema


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        loc = ".".join(parts)
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            out.append(f"{loc}: unknown key — see infra/policy.example.yaml for the keys a policy has")
            continue
        if err.get("type") == "value_error":  # ours: each line already names its field and the fix
            parent = ".".join(parts[:-1])
            for line in msg.splitlines():
                named = bool(parts) and line.startswith(f"{parts[-1]}:")
                out.append(f"{parent}.{line}" if named and parent else line if named or not loc else f"{loc}: {line}")
            continue
        value = err.get("input")
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        out.append(f"{loc or '(top level)'}: {msg} (got {shown[:80]})")
    return out
