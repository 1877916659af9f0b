"""The operator policy's checks of its templates (:mod:`dispatcher.core.policy`, ``templates:``),
shared by the policy's loader (a template is filled with sample values and checked when the policy
loads) and the template backend (checked again, with the sweep's values and team, when each job is
rendered). Pure: dicts in, problem lists out."""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from dispatcher.core.errors import PermanentError
from dispatcher.core.podsecurity import manifest_gpus, restricted_problems, secure_pods
from dispatcher.core.policy_parts import DNS_LABEL, TemplateSpec
from dispatcher.core.templating import (
    ARGS_PLACEHOLDER,
    PLACEHOLDERS,
    SAMPLE_VALUES,
    fill_template,
    placeholders_in,
    pod_templates,
    stray_containers,
    template_api,
    unverified_references,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.core.policy import Policy

__all__ = ["template_pod_problems", "template_problems"]


def template_problems(name: str, template: TemplateSpec, policy: "Policy") -> list[str]:
    """What is wrong with a template as an operator wrote it, found by filling it with sample values.
    The backend checks the same again when it renders a job (:mod:`dispatcher.backends.template`)."""
    at = f"templates.{name}"
    if not DNS_LABEL.fullmatch(name):
        return [f"{at}: not a DNS-1123 label — name templates with lower-case letters, digits and '-'"]
    problems = [f"{at}.teams: {t!r} is not one of the teams" for t in template.teams or [] if t not in policy.teams]
    used = placeholders_in(template.manifest)
    unknown = used - set(PLACEHOLDERS) - {ARGS_PLACEHOLDER}
    if unknown:
        problems.append(f"{at}.manifest: unknown placeholders {sorted(unknown)} — use {', '.join(PLACEHOLDERS)}, args")
    problems += [f"{at}.{ref} names an object from a placeholder the policy does not verify — the sender would choose "
                 "it; use {{wandb_secret}}, {{output_pvc}}, {{service_account}}, {{team}} (with teams) or a literal "
                 "name" for ref in unverified_references(template.manifest, path="manifest", teams=bool(policy.teams))]
    metadata = template.manifest.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    for field, wanted in (("name", "{{job_name}}"), ("namespace", "{{namespace}}")):
        if metadata.get(field) not in (None, wanted):
            problems.append(f"{at}.manifest.metadata.{field}: sweepq sets it — write '{wanted}' or leave it out")
    if template.pod_name_pattern is not None:
        if "{job}" not in template.pod_name_pattern:
            problems.append(f"{at}.pod_name_pattern: must contain {{job}} (the job name)")
        else:
            try:
                re.compile(template.pod_name_pattern.replace("{job}", "job"))
            except re.error as exc:
                problems.append(f"{at}.pod_name_pattern: not a regular expression ({exc})")
    if problems:
        return problems
    try:
        filled = fill_template(copy.deepcopy(template.manifest), SAMPLE_VALUES, ["--x=1"], path=f"{at}.manifest")
        template_api(filled, plural=template.plural)
        problems += template_pod_problems(filled, policy, accounts=None, where=f"{at}.manifest")
        problems += _literal_account_problems(template, policy, where=f"{at}.manifest")
        problems += restricted_problems(secure_pods(filled), where=f"{at}.manifest")
        manifest_gpus(filled, policy.accelerator_resources)
    except (PermanentError, ValueError) as exc:
        problems.append(f"{at}.manifest: {exc}")
    return problems


def _literal_account_problems(template: TemplateSpec, policy: "Policy", *, where: str) -> list[str]:
    """A ServiceAccount the template writes literally must be one its teams may use (placeholders are
    checked when a job is rendered, with the sweep's verified team)."""
    allowed: set[str] = set()
    for team in (template.teams if template.teams is not None else [None, *policy.teams]):
        allowed |= policy.service_accounts_of(team)
    problems = []
    for pod in pod_templates(template.manifest):
        for field in ("serviceAccountName", "serviceAccount"):
            account = pod["spec"].get(field)
            if isinstance(account, str) and "{{" not in account and account not in allowed \
                    and account not in policy.forbidden_service_accounts:
                problems.append(f"{where}: {field} {account!r} is none of the ServiceAccounts the template's teams may "
                                f"use ({', '.join(sorted(allowed)) or 'none'}) — add it to service_accounts or write "
                                "'{{service_account}}'")
    return problems


def template_pod_problems(manifest: dict[str, Any], policy: "Policy", *, accounts: set[str] | None,
                          where: str) -> list[str]:
    """What keeps a filled template's pods from being the policy's: no pod template sweepq can find,
    containers outside pod templates (neither securable nor countable), the dispatcher's
    ServiceAccount, one outside ``accounts`` (``None``: not checked), a TrainJob whose env would go
    where Trainer refuses it. Shared by the policy's load-time check and the backend's render-time
    check."""
    problems = [f"{where}: {path} is a container outside a pod template ({{metadata, spec: {{containers: [...]}}}}) "
                "— sweepq can neither secure nor count it; this kind cannot be a template"
                for path in stray_containers(manifest, path="manifest")]
    pods = list(pod_templates(manifest))
    trainjob = manifest.get("kind") == "TrainJob"
    if trainjob:
        if not isinstance((manifest.get("spec") or {}).get("trainer"), dict):
            problems.append(f"{where}.spec.trainer: missing — a TrainJob template sets the trainer (image, command "
                            "with '{{args}}', numNodes, resourcesPerNode); sweepq puts the trial env in trainer.env")
        for i, pod in enumerate(pods):
            if any(isinstance(c, dict) and c.get("env") for c in pod["spec"].get("containers") or []):
                problems.append(f"{where}.spec.runtimePatches (pod {i}): env in a patched container — Trainer refuses "
                                "it for the trainer's container; write it in spec.trainer.env")
    elif not pods:
        problems.append(f"{where}: no pod template (template: {{spec: {{containers: [...]}}}}) — sweepq labels, "
                        "secures and counts the GPUs of its pods, so it needs to find them")
    for pod in pods:
        for field in ("serviceAccountName", "serviceAccount"):
            account = pod["spec"].get(field)
            if account is None:
                continue
            if account in policy.forbidden_service_accounts:
                problems.append(f"{where}: {field} {account!r} is the dispatcher's own ServiceAccount — no trial ever "
                                "runs as it; use '{{service_account}}'")
            elif accounts is not None and account not in accounts:
                problems.append(f"{where}: {field} {account!r} is not a ServiceAccount this sweep's team may use "
                                f"({', '.join(sorted(accounts)) or 'none'})")
    return problems
