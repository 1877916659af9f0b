"""The operator policy's checks of one sweep's launch settings. Pure, purely computational.

Use (intake, then again before each job is rendered — a policy may have changed meanwhile)::

    admission = policy.admit(launch, sender=sender_id,       # the SQS SenderId, never the body's claim
                             default_kind=settings.backend)  # what a sweep naming no kind runs as
    if admission.violations:
        reject / hold the sweep with admission.reason          # names rule, field, value, what is allowed
    launch = admission.launch                                  # what takes effect: store and render this

:func:`check_launch` lists every violation (not only the first). :func:`admit` checks the launch
settings as they take effect and returns them:

* **filled** before the check, where the sweep left sweepq's own default and the policy has a
  value: ``kind`` = ``default_kind`` (a sweep naming no kind runs as the dispatcher's
  ``SWEEPQ_BACKEND``, so that kind is what the ``kinds`` rule judges); ``max_concurrent``,
  ``max_runtime`` and ``resources.memory`` = the policy's limit when unset (a pod without a memory
  limit could take the whole node); ``start_timeout``, ``max_retries``, ``max_restarts`` and
  ``priority`` = the limit (the team's ``max_priority`` for priority) when the sweep has sweepq's
  default and that is above it — a default is not the sender's request: ``limits: {start_timeout:
  15m}`` must not refuse every sweep that says nothing (the body carries every field, so a value
  equal to the default counts as the default); ``wandb_secret`` = the team's own Secret (else the first shared one, else none) when
  the default ``wandb`` is not allowed; ``kueue_queue`` = the first of ``kueue.queues`` when
  ``kueue.required`` and the sweep names none;
* **forced** after it: ``team`` = the verified team, or *none* when the policy has no teams (a
  claimed label must not become a fair-share team of its own); ``kueue_queue`` = the team's own;
  ``image`` = its fully qualified normalised form when the policy restricts images
  (``ubuntu:22.04`` → ``docker.io/library/ubuntu:22.04``: a runtime with short-name search, CRI-O's
  ``unqualified-search-registries``, then pulls exactly the image that was checked, and the
  in-cluster backstop compares the same text).

A :class:`Violation` never carries a secret's value: env *values* are never shown, only names, and a
``wandb_secret`` that looks like a key rather than a Secret name is not shown either.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AbstractSet, Any, Sequence

from pydantic import ValidationError

from dispatcher.core.envnames import reserved_reason
from dispatcher.core.errors import PermanentError
from dispatcher.core.launch import JOB_KINDS, LaunchSettings, shown_name
from dispatcher.core.refs import SHA256_DIGEST, image_allowed, normalise_image_prefix, parse_image, parse_quantity

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.core.policy import Policy


@dataclass(frozen=True)
class Violation:
    """One rule a sweep breaks. ``str()`` is the sentence a researcher reads in ``producer status``."""

    rule: str  # the policy rule, e.g. "service_accounts", "env.reserved", "limits.gpus_per_node"
    field: str  # the launch field, e.g. "service_account", "env.LD_PRELOAD"
    value: str  # what the sweep asked for (a name or a number — never a secret, never an env value)
    allowed: str  # what the policy allows, in words
    why: str = ""

    def __str__(self) -> str:
        why = f": {self.why}" if self.why else ""
        return f"{self.field}: {self.value} is refused by the operator policy ({self.rule}){why} — allowed: {self.allowed}"


@dataclass(frozen=True)
class Admission:
    team: str | None
    launch: LaunchSettings
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def reason(self) -> str:
        return violations_reason(self.violations)

    def raise_for_violations(self) -> LaunchSettings:
        if self.violations:
            raise PolicyViolation(self.violations)
        return self.launch


class PolicyViolation(PermanentError):
    """A sweep the operator policy refuses (intake: REJECTED; render: held) with every reason."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        super().__init__(violations_reason(self.violations))


def violations_reason(violations: list[Violation]) -> str:
    """One line per violation ("" for none): what ``producer status`` shows as the sweep's reason."""
    if not violations:
        return ""
    if len(violations) == 1:
        return str(violations[0])
    return f"{len(violations)} policy violations:\n" + "\n".join(f"  - {v}" for v in violations)


DEFAULT_WANDB_SECRET = LaunchSettings.model_fields["wandb_secret"].default


def _listing(names: Sequence[str] | AbstractSet[str], none: str = "none") -> str:
    return ", ".join(sorted(names)) if names else none


def _team_names(policy: "Policy", team: str | None, attr: str) -> set[str]:
    names = set(getattr(policy, attr))
    if team is not None and team in policy.teams:
        names |= set(getattr(policy.teams[team], attr))
    return names


def _team_violations(policy: "Policy", launch: LaunchSettings, team: str | None, sender: str) -> list[Violation]:
    if not policy.teams:
        return []
    mine = policy.teams_of(sender)
    who = sender or "an unknown sender"
    if launch.team is not None and launch.team != team:
        if launch.team not in policy.teams:
            return [Violation("teams", "team", repr(launch.team), _listing(set(policy.teams)), "no such team")]
        return [Violation("team.membership", "team", repr(launch.team), _listing(set(mine), "no team"),
                          f"{who} is not a member")]
    if team is None:
        return [Violation("team.required", "team", "(none)", _listing(set(policy.teams)),
                          f"{who} is a member of no team and the policy has no default_team — ask the operator to "
                          "add you to a team")]
    return []


def _kueue_violations(policy: "Policy", launch: LaunchSettings, team: str | None) -> list[Violation]:
    queue = launch.kueue_queue
    own = policy.teams[team].kueue_queue if team in policy.teams else None
    if queue is None:
        if policy.kueue.required and own is None:
            return [Violation("kueue.required", "kueue_queue", "(none)", _listing(policy.kueue.queues or [], "a queue "
                              "no team owns"), "every sweep runs under a Kueue LocalQueue")]
        return []
    if own is not None:
        return [] if queue == own else [Violation("teams.kueue_queue", "kueue_queue", repr(queue), repr(own),
                                                  f"team {team}'s sweeps use its own LocalQueue")]
    owners = {t.kueue_queue: n for n, t in policy.teams.items() if t.kueue_queue}
    if queue in owners:
        return [Violation("teams.kueue_queue", "kueue_queue", repr(queue), "a queue no team owns",
                          f"it is team {owners[queue]}'s LocalQueue")]
    if policy.kueue.queues is not None and queue not in policy.kueue.queues:
        return [Violation("kueue.queues", "kueue_queue", repr(queue), _listing(policy.kueue.queues))]
    return []


def _identity_violations(policy: "Policy", launch: LaunchSettings, team: str | None) -> list[Violation]:
    out = []
    account = launch.service_account
    accounts = _team_names(policy, team, "service_accounts") - policy.forbidden_service_accounts
    if account is None:
        if policy.service_account_required:
            out.append(Violation("service_account_required", "service_account", "(none)", _listing(accounts),
                                 "trials must name their ServiceAccount"))
    elif account in policy.forbidden_service_accounts:
        out.append(Violation("service_accounts.dispatcher", "service_account", repr(account), _listing(accounts),
                             "it is the dispatcher's own ServiceAccount; no trial ever runs as it"))
    elif account not in accounts:
        out.append(Violation("service_accounts", "service_account", repr(account), _listing(accounts)))
    secrets = _team_names(policy, team, "wandb_secrets")
    if launch.wandb_secret is not None and launch.wandb_secret not in secrets:
        out.append(Violation("wandb_secrets", "wandb_secret", shown_name(launch.wandb_secret),
                             _listing(secrets) + " (or null)"))
    pvcs = _team_names(policy, team, "output_pvcs")
    if launch.output_pvc is not None and launch.output_pvc not in pvcs:
        out.append(Violation("output_pvcs", "output_pvc", repr(launch.output_pvc), _listing(pvcs) + " (or none)"))
    return out


def _image_violations(policy: "Policy", launch: LaunchSettings) -> list[Violation]:
    ref = parse_image(launch.image)  # validated by LaunchSettings already
    prefixes = [normalise_image_prefix(p) for p in policy.images]
    out = []
    if not image_allowed(ref, prefixes):
        out.append(Violation("images", "image", repr(launch.image), _listing(prefixes), f"it resolves to {ref.name}"))
    if policy.digests_only and not (ref.digest and SHA256_DIGEST.match(ref.digest)):
        out.append(Violation("digests_only", "image", repr(launch.image), "images pinned as name@sha256:<64 hex>",
                             "the policy accepts digests only"))
    return out


def _limit(out: list[Violation], name: str, field_name: str, value: Any, limit: Any, shown: str | None = None) -> None:
    """``name``: a key of ``limits``, or a dotted rule of its own (``teams.max_priority``)."""
    if limit is not None and value is not None and value > limit:
        rule = name if "." in name else f"limits.{name}"
        out.append(Violation(rule, field_name, shown or str(value), f"at most {limit}"))


def _limit_violations(policy: "Policy", launch: LaunchSettings, team: str | None) -> list[Violation]:
    limits = policy.limits
    out: list[Violation] = []
    if team in policy.teams:
        _limit(out, "teams.max_priority", "priority", launch.priority, policy.teams[team].max_priority)
    _limit(out, "gpus_per_node", "gpus_per_node", launch.gpus_per_node, limits.gpus_per_node)
    _limit(out, "nodes", "nodes", launch.max_nodes, limits.nodes, f"max {launch.max_nodes}")
    _limit(out, "gpus_per_trial", "gpus_per_node × max_nodes", launch.gpus_per_trial, limits.gpus_per_trial)
    _limit(out, "priority", "priority", launch.priority, limits.priority)
    _limit(out, "max_concurrent", "max_concurrent", launch.max_concurrent, limits.max_concurrent)
    _limit(out, "max_retries", "max_retries", launch.max_retries, limits.max_retries)
    _limit(out, "max_restarts", "max_restarts", launch.max_restarts, limits.max_restarts)
    _limit(out, "max_runtime", "max_runtime", launch.max_runtime, limits.max_runtime, f"{launch.max_runtime} s")
    _limit(out, "start_timeout", "start_timeout", launch.start_timeout, limits.start_timeout, f"{launch.start_timeout} s")
    for name in ("cpu", "memory"):
        asked, limit = getattr(launch.resources, name), getattr(limits, name)
        if asked is not None and limit is not None and parse_quantity(asked) > parse_quantity(limit):
            out.append(Violation(f"limits.{name}", f"resources.{name}", repr(asked), f"at most {limit!r} per node"))
    return out


def _env_violations(policy: "Policy", launch: LaunchSettings) -> list[Violation]:
    out = []
    for name in sorted(launch.env):
        reason = reserved_reason(name, policy.env.reserved)
        if reason:
            out.append(Violation("env.reserved", f"env.{name}", "set", "names not reserved for sweepq or the platform",
                                 reason))
        elif not any(fnmatch.fnmatchcase(name.upper(), p.upper()) for p in policy.env.allowed):
            out.append(Violation("env.allowed", f"env.{name}", "set", _listing(policy.env.allowed)))
    return out


def _template_violations(policy: "Policy", launch: LaunchSettings, team: str | None) -> list[Violation]:
    if launch.template is None:
        return []
    usable = {n for n, t in policy.templates.items() if t.teams is None or team in (t.teams or [])}
    if launch.template not in policy.templates:
        return [Violation("templates", "template", repr(launch.template), _listing(usable, "no templates"),
                          "templates are operator-owned: sweeps name one of the policy's")]
    if launch.template not in usable:
        return [Violation("templates.teams", "template", repr(launch.template), _listing(usable, "no templates"),
                          f"it is reserved for {_listing(set(policy.templates[launch.template].teams or []))}")]
    return []


def _kind_violations(policy: "Policy", kind: str | None) -> list[Violation]:
    allowed = set(policy.kinds)
    if kind is None:
        if allowed >= set(JOB_KINDS):
            return []
        return [Violation("kinds", "kind", "(none)", _listing(allowed), "the sweep names no kind and the kind it "
                          "would run as (the dispatcher's SWEEPQ_BACKEND) is not known here — name one")]
    return [] if kind in allowed else [Violation("kinds", "kind", repr(kind), _listing(allowed))]


def check_launch(policy: "Policy", launch: LaunchSettings, *, team: str | None, sender: str,
                 default_kind: str | None = None) -> list[Violation]:
    """Every rule of ``policy`` that ``launch`` (sent by ``sender``, counted against ``team`` — see
    :meth:`Policy.team_of`) breaks; empty when it may run. ``default_kind``: the kind a sweep that
    names none runs as (the dispatcher's ``SWEEPQ_BACKEND``). Purely computational."""
    out = _team_violations(policy, launch, team, sender)
    out += _kind_violations(policy, launch.kind or default_kind)
    out += _image_violations(policy, launch)
    out += _identity_violations(policy, launch, team)
    out += _kueue_violations(policy, launch, team)
    out += _limit_violations(policy, launch, team)
    out += _env_violations(policy, launch)
    out += _template_violations(policy, launch, team)
    return out


def _default(name: str) -> Any:
    return LaunchSettings.model_fields[name].default


def _filled(policy: "Policy", launch: LaunchSettings, team: str | None,
            default_kind: str | None) -> dict[str, Any]:
    """The fields :func:`admit` fills before the check (see the module docstring)."""
    limits = policy.limits
    update: dict[str, Any] = {}
    if launch.kind is None and default_kind is not None:
        update["kind"] = default_kind
    for name in ("max_concurrent", "max_runtime"):
        if getattr(launch, name) is None and getattr(limits, name) is not None:
            update[name] = getattr(limits, name)
    # Not gpus_per_node: its default (1 GPU) is a real request; refused, it says what to write.
    caps = {"start_timeout": limits.start_timeout, "max_retries": limits.max_retries,
            "max_restarts": limits.max_restarts,
            "priority": min((p for p in (limits.priority, policy.teams[team].max_priority if team in policy.teams
                                         else None) if p is not None), default=None)}
    for name, cap in caps.items():
        if cap is not None and getattr(launch, name) == _default(name) and _default(name) > cap:
            update[name] = cap
    if launch.resources.memory is None and limits.memory is not None:
        update["resources"] = {**launch.resources.model_dump(), "memory": limits.memory}
    if launch.wandb_secret == DEFAULT_WANDB_SECRET and launch.wandb_secret not in _team_names(policy, team,
                                                                                                "wandb_secrets"):
        own = policy.teams[team].wandb_secrets if team in policy.teams else []
        update["wandb_secret"] = next(iter([*own, *policy.wandb_secrets]), None)
    own_queue = policy.teams[team].kueue_queue if team in policy.teams else None
    if policy.kueue.required and launch.kueue_queue is None and own_queue is None and policy.kueue.queues:
        update["kueue_queue"] = policy.kueue.queues[0]
    return update


def _with(launch: LaunchSettings, update: dict[str, Any]) -> LaunchSettings:
    return LaunchSettings.model_validate({**launch.model_dump(), **update}) if update else launch


def admit(policy: "Policy", launch: LaunchSettings, *, sender: str, default_kind: str | None = None) -> Admission:
    """:func:`check_launch` of the launch settings as they take effect, with the team from
    :meth:`Policy.team_of`; returns those settings (see the module docstring). Purely computational."""
    team = policy.team_of(sender, launch)
    try:
        effective = _with(launch, _filled(policy, launch, team, default_kind))
    except ValidationError as exc:  # e.g. the default kind is 'job' and the sweep asks for 2 nodes
        return Admission(team=team, launch=launch, violations=[Violation(
            "kinds", "kind", repr(launch.kind or default_kind), "settings valid for the kind the sweep runs as",
            _why(exc))])
    violations = check_launch(policy, effective, team=team, sender=sender, default_kind=default_kind)
    forced: dict[str, Any] = {}
    if "*" not in policy.images:  # after the check: its value is the image as the sweep wrote it
        qualified = parse_image(effective.image).qualified
        if qualified != effective.image:
            forced["image"] = qualified
    if not policy.teams:
        if effective.team is not None:
            forced["team"] = None  # no teams: every sender alike, a claimed label is no team
    elif team is not None:
        forced["team"] = team
        own = policy.teams[team].kueue_queue
        if own is not None:
            forced["kueue_queue"] = own
    try:
        return Admission(team=team, launch=_with(effective, forced), violations=violations)
    except ValidationError as exc:  # e.g. an image of 500 characters, longer than the maximum once qualified
        return Admission(team=team, launch=effective, violations=[*violations, Violation(
            "images", "image", f"a {len(effective.image)}-character reference", "a reference valid once fully "
            "qualified", _why(exc))])


def _why(exc: ValidationError) -> str:
    """Our validators' messages (they name the field and never quote an env value)."""
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
