"""Operator templates filled **structurally**. Pure: dicts in, dicts out.

A template is a manifest the operator keeps in the policy (``templates: {name: {manifest: ...}}``);
a sweep names it (``sweepq.template: <name>``) and never carries one. The parsed manifest is walked
and only string leaves are rewritten: ``{{name}}`` placeholders are replaced in one pass (a value
that itself contains ``{{image}}`` is never expanded again), keys are never touched, and no YAML
text is ever templated — so a parameter value cannot add keys, list items or documents. A list
element that is exactly ``"{{args}}"`` expands into the trial argv. Filled values are strings
(labels, env values and names must be); a string that is exactly ``"{{max_nodes | int}}"`` becomes
an int, for fields such as ``replicas`` or ``numNodes``.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Iterable, Iterator, Mapping

from dispatcher.core.errors import PermanentError

ARGS_PLACEHOLDER = "args"
# Every placeholder a template may use besides {{args}}; the values come from the trial's request.
PLACEHOLDERS: tuple[str, ...] = (
    "job_name", "image", "namespace", "sweep_id", "trial_id", "trial_index", "attempt", "gpus_per_node",
    "nproc_per_node", "min_nodes", "max_nodes", "team", "kueue_queue", "service_account", "wandb_secret",
    "output_pvc",
)
ANNOTATION_PLURAL = "sweepq.io/plural"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(\|\s*int\s*)?\}\}")

# (group, Kind) → plural of the job kinds people template most.
KNOWN_PLURALS: dict[tuple[str, str], str] = {
    ("batch", "Job"): "jobs",
    ("kubeflow.org", "PyTorchJob"): "pytorchjobs",
    ("kubeflow.org", "TFJob"): "tfjobs",
    ("kubeflow.org", "MPIJob"): "mpijobs",
    ("kubeflow.org", "XGBoostJob"): "xgboostjobs",
    ("kubeflow.org", "PaddleJob"): "paddlejobs",
    ("kubeflow.org", "JAXJob"): "jaxjobs",
    ("trainer.kubeflow.org", "TrainJob"): "trainjobs",
    ("elastic.pytorch.org", "ElasticJob"): "elasticjobs",
    ("jobset.x-k8s.io", "JobSet"): "jobsets",
    ("ray.io", "RayJob"): "rayjobs",
    ("batch.volcano.sh", "Job"): "jobs",
    ("leaderworkerset.x-k8s.io", "LeaderWorkerSet"): "leaderworkersets",
    # Not Argo's Workflow: its containers (templates[].container, .script, .sidecars) are no pod
    # templates, so sweepq could neither secure nor count them (stray_containers refuses them).
}

# What a template is filled with when the policy is loaded: every placeholder set, so the filled
# manifest can be checked (pod security, GPUs) before any sweep names the template.
SAMPLE_VALUES: dict[str, str | int] = {
    "job_name": "sample-0123abcd-0-a1", "image": "registry.example/trainer:1", "namespace": "sweepq",
    "sweep_id": "sample-0123abcd", "trial_id": "sample-0123abcd-0", "trial_index": 0, "attempt": 1,
    "gpus_per_node": 1, "nproc_per_node": 1, "min_nodes": 1, "max_nodes": 1, "team": "team",
    "kueue_queue": "queue", "service_account": "sweepq-trainer", "wandb_secret": "wandb", "output_pvc": "outputs",
}


def placeholders_in(node: Any) -> set[str]:
    """Every placeholder name used in ``node``'s string leaves (``args`` included)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found.update(m.group(1) for m in _PLACEHOLDER.finditer(item))
    return found


def _fill_string(text: str, values: Mapping[str, Any], path: str) -> Any:
    def value_of(name: str) -> Any:
        if name == ARGS_PLACEHOLDER:
            raise PermanentError(f"{path}: '{{{{args}}}}' must be a whole list element, e.g. "
                                 "command: [python, train.py, '{{args}}'] — it expands into the trial arguments")
        if name not in values:
            known = ", ".join(sorted([*values, ARGS_PLACEHOLDER]))
            raise PermanentError(f"{path}: unknown placeholder {{{{{name}}}}} — use one of {known}")
        if values[name] is None:
            raise PermanentError(f"{path}: {{{{{name}}}}} is used but {name} is not set — set it in the sweepq "
                                 "block or remove the placeholder")
        return values[name]

    whole = _PLACEHOLDER.fullmatch(text.strip())
    if whole and whole.group(2):
        value = value_of(whole.group(1))
        if not isinstance(value, int) or isinstance(value, bool):
            raise PermanentError(f"{path}: {{{{{whole.group(1)} | int}}}} — {whole.group(1)} is not a number")
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(2):
            raise PermanentError(f"{path}: '| int' makes a number, so {{{{{match.group(1)} | int}}}} must be the "
                                 "whole value — e.g. replicas: '{{max_nodes | int}}'")
        return str(value_of(match.group(1)))

    return _PLACEHOLDER.sub(substitute, text)


def fill_template(node: Any, values: Mapping[str, Any], argv: Iterable[str], *, path: str = "template") -> Any:
    """A filled copy of ``node``; see the module docstring. Purely computational."""
    argv = [str(arg) for arg in argv]
    if isinstance(node, dict):
        filled: dict[Any, Any] = {}
        for key, value in node.items():
            if isinstance(key, str) and _PLACEHOLDER.search(key):
                raise PermanentError(f"{path}.{key}: placeholders are filled in values only, never in keys — "
                                     "move it into a value")
            filled[key] = fill_template(value, values, argv, path=f"{path}.{key}")
        return filled
    if isinstance(node, list):
        items: list[Any] = []
        for index, item in enumerate(node):
            whole = _PLACEHOLDER.fullmatch(item.strip()) if isinstance(item, str) else None
            if whole and whole.group(1) == ARGS_PLACEHOLDER:
                items.extend(argv)
            else:
                items.append(fill_template(item, values, argv, path=f"{path}[{index}]"))
        return items
    if isinstance(node, str):
        return _fill_string(node, values, path)
    return copy.deepcopy(node)


def template_api(manifest: Mapping[str, Any], plurals: Mapping[str, str] | None = None,
                 plural: str | None = None) -> tuple[str, str, str, str]:
    """``(group, version, kind, plural)`` of the object a template creates. The plural comes from,
    in order: ``plural`` (the policy's template entry), the annotation ``sweepq.io/plural``,
    ``plurals`` (``{"Kind.group": plural}``), the table of well-known job kinds; otherwise refused."""
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise PermanentError("template: needs 'apiVersion' and 'kind' — e.g. apiVersion: batch/v1, kind: Job")
    if "/" not in api_version:
        raise PermanentError(f"template.apiVersion: {api_version!r} is a core kind ({kind}) — sweepq launches "
                             "jobs; wrap the pod in a batch/v1 Job")
    group, version = api_version.split("/", 1)
    metadata = manifest.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    annotations = metadata.get("annotations")
    annotations = annotations if isinstance(annotations, Mapping) else {}
    found = plural or annotations.get(ANNOTATION_PLURAL) or (plurals or {}).get(f"{kind}.{group}") \
        or KNOWN_PLURALS.get((group, kind))
    if not found:
        raise PermanentError(
            f"template.kind: cannot derive the API plural of {kind} ({api_version}) — add 'plural: <plural>' to "
            f"the policy's template entry or the annotation {ANNOTATION_PLURAL} (e.g. '{kind.lower()}s')"
        )
    return group, version, kind, str(found)


def pod_templates(manifest: Any) -> Iterator[dict[str, Any]]:
    """Every PodTemplateSpec in ``manifest`` — a dict whose ``spec`` holds a ``containers`` list —
    *whatever key holds it*: ``template`` (Job, Kubeflow replica specs, JobSet, Ray groups),
    ``submitterPodTemplate`` (RayJob), ``leaderTemplate``/``workerTemplate`` (LeaderWorkerSet),
    and any future one. These are where pod labels and security settings go and whose GPUs count;
    :func:`stray_containers` finds containers outside them, which sweepq refuses."""
    stack = [manifest]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            spec = node.get("spec")
            if isinstance(spec, dict) and isinstance(spec.get("containers"), list):
                yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


# Keys of container lists outside a pod spec (Argo: templates[].sidecars, .initContainers) and of
# single containers (Argo: templates[].container, .script).
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers", "sidecars")
_SINGLE_CONTAINERS = ("container", "script")


def stray_containers(manifest: Any, *, path: str = "manifest") -> list[str]:
    """Paths of containers in ``manifest`` that are not in a pod template's ``spec`` (see
    :func:`pod_templates`): a kind that runs them there could be neither secured nor counted."""
    specs = {id(pod["spec"]) for pod in pod_templates(manifest)}
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(manifest, path)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, list):
            stack.extend((item, f"{at}[{i}]") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            if id(node) not in specs and key in _CONTAINER_LISTS and isinstance(value, list) and value:
                found.append(f"{at}.{key}")
            elif key in _SINGLE_CONTAINERS and isinstance(value, dict) and "image" in value:
                found.append(f"{at}.{key}")
            stack.append((value, f"{at}.{key}"))
    return sorted(found)


# Fields whose value names an object the pod reads or runs as (Secret, ConfigMap, PVC,
# ServiceAccount). Only placeholders whose value the policy verified may fill them.
REFERENCE_FIELDS = frozenset({
    "secretName", "claimName", "serviceAccountName", "serviceAccount",
})
REFERENCE_PARENTS = frozenset({
    "secretKeyRef", "configMapKeyRef", "secretRef", "configMapRef", "configMap", "secret", "imagePullSecrets",
    "nodePublishSecretRef",
})
# Placeholders whose value the policy checked (or sweepq derived): the Secret, PVC and ServiceAccount
# of the sweep, the job's name and namespace — and its team, when the policy has teams (without
# them a team is only the sender's claim, which admit drops).
VERIFIED_PLACEHOLDERS = frozenset({"wandb_secret", "output_pvc", "service_account", "job_name", "namespace"})


def unverified_references(node: Any, *, path: str = "manifest", teams: bool) -> list[str]:
    """``<path>: {{placeholder}}`` for every object reference (a Secret's, ConfigMap's, PVC's or
    ServiceAccount's name) filled from a placeholder the policy does not verify — ``{{kueue_queue}}``,
    ``{{sweep_id}}``, ``{{image}}``, ``{{team}}`` under a policy without teams…: the sender would
    choose which Secret the pod reads. ``teams``: whether the policy has teams."""
    verified = VERIFIED_PLACEHOLDERS | ({"team"} if teams else set())
    found: list[str] = []
    stack: list[tuple[Any, str, str]] = [(node, path, "")]
    while stack:
        item, at, parent = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str) and (key in REFERENCE_FIELDS or (key == "name" and parent in REFERENCE_PARENTS)):
                    found += [f"{at}.{key}: {{{{{m.group(1)}}}}}" for m in _PLACEHOLDER.finditer(value)
                              if m.group(1) not in verified]
                stack.append((value, f"{at}.{key}", str(key)))
        elif isinstance(item, list):
            stack.extend((value, f"{at}[{i}]", parent) for i, value in enumerate(item))
    return sorted(found)
