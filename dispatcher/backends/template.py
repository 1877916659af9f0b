"""Kind ``template``: a user-provided manifest (``launch.template``) filled **structurally**.

The parsed manifest is walked and only string leaves are rewritten: ``{{name}}`` placeholders are
replaced in one pass (a value that itself contains ``{{image}}`` is never expanded again), keys are
never touched, and no YAML text is ever templated — so a parameter value cannot add keys, list
items or documents. A list element that is exactly ``"{{args}}"`` expands into the trial argv.
Filled values are strings (labels, env values and names must be); a string that is exactly
``"{{max_nodes | int}}"`` becomes an int, for fields such as ``replicas`` or ``numNodes``.

Placeholders: ``job_name image namespace sweep_id trial_id trial_index attempt gpus_per_node
nproc_per_node min_nodes max_nodes team kueue_queue service_account wandb_secret`` and ``args``.

The template's ``apiVersion``/``kind`` pick the API (any namespaced CRD, through the custom objects
API; ``batch/v1`` Job through BatchV1Api). The plural comes from, in order: the annotation
``sweepq.io/plural`` in the template, the backend's ``plurals`` mapping (``{"Kind.group": plural}``),
the table of well-known job kinds below; otherwise the template is refused.

sweepq sets ``metadata.name``/``namespace``, adds its labels and annotations to the object and its
labels to every pod template it finds (``template: {spec: {containers: [...]}}``).
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any, Callable, Iterable, Mapping

from dispatcher.backends.batchjob import job_progress
from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    progress_from,
    Progress,
    job_metadata,
    phase_from_conditions,
    pod_labels,
    walk_pod_templates,
)
from dispatcher.backends.pytorchjob import kubeflow_progress
from dispatcher.backends.trainjob import trainjob_progress
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import JobPhase, LaunchRequest

log = logging.getLogger(__name__)

KIND = "template"
ANNOTATION_PLURAL = "sweepq.io/plural"
ARGS_PLACEHOLDER = "args"
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
    ("argoproj.io", "Workflow"): "workflows",
}

# Phase readers of the kinds sweepq knows; every other kind goes through GENERIC_CONDITIONS.
PROGRESS_BY_KIND: dict[tuple[str, str], Callable[[Mapping[str, Any]], Progress]] = {
    ("batch", "Job"): job_progress,
    ("kubeflow.org", "PyTorchJob"): kubeflow_progress,
    ("kubeflow.org", "TFJob"): kubeflow_progress,
    ("kubeflow.org", "MPIJob"): kubeflow_progress,
    ("kubeflow.org", "XGBoostJob"): kubeflow_progress,
    ("kubeflow.org", "PaddleJob"): kubeflow_progress,
    ("kubeflow.org", "JAXJob"): kubeflow_progress,
    ("elastic.pytorch.org", "ElasticJob"): kubeflow_progress,  # no pod aggregation for templates
    ("trainer.kubeflow.org", "TrainJob"): trainjob_progress,
}

# Condition (status "True") → phase for any other kind (JobSet, RayJob, operators following the
# Kubernetes conventions), in this order; no known condition means PENDING.
GENERIC_CONDITIONS: dict[str, JobPhase] = {
    "Succeeded": JobPhase.SUCCEEDED,
    "Complete": JobPhase.SUCCEEDED,
    "Completed": JobPhase.SUCCEEDED,
    "Failed": JobPhase.FAILED,
    "Suspended": JobPhase.PENDING,
    "Running": JobPhase.RUNNING,
}


def template_values(request: LaunchRequest) -> dict[str, str | int | None]:
    launch = request.launch
    return {
        "job_name": request.job_name,
        "image": launch.image,
        "namespace": request.namespace,
        "sweep_id": request.sweep_id,
        "trial_id": request.trial_id,
        "trial_index": request.trial_index,
        "attempt": request.attempt,
        "gpus_per_node": launch.gpus_per_node,
        "nproc_per_node": launch.workers_per_node,
        "min_nodes": launch.min_nodes,
        "max_nodes": launch.max_nodes,
        "team": launch.team,
        "kueue_queue": launch.kueue_queue,
        "service_account": launch.service_account,
        "wandb_secret": launch.wandb_secret,
    }


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


def resource_of_template(template: Mapping[str, Any], plurals: Mapping[str, str] | None = None) -> ResourceRef:
    """The API resource a template creates: group/version from apiVersion, plural as documented."""
    api_version, kind = template.get("apiVersion"), template.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise PermanentError("template: needs 'apiVersion' and 'kind' — e.g. apiVersion: batch/v1, kind: Job")
    if "/" not in api_version:
        raise PermanentError(f"template.apiVersion: {api_version!r} is a core kind ({kind}) — sweepq launches "
                             "jobs; wrap the pod in a batch/v1 Job")
    group, version = api_version.split("/", 1)
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    plural = annotations.get(ANNOTATION_PLURAL) or (plurals or {}).get(f"{kind}.{group}") \
        or KNOWN_PLURALS.get((group, kind))
    if not plural:
        raise PermanentError(
            f"template.kind: cannot derive the API plural of {kind} ({api_version}) — add the annotation "
            f"{ANNOTATION_PLURAL}: <plural> to the template's metadata (e.g. '{kind.lower()}s')"
        )
    return ResourceRef(group=group, version=version, plural=str(plural), kind=kind,
                       missing_fix=f"install the operator that serves {kind} ({api_version}) or fix the template's "
                                   "apiVersion/kind")


def build_from_template(request: LaunchRequest, *, plurals: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The manifest of one trial attempt from ``request.launch.template``. Purely computational."""
    template = request.launch.template
    if not isinstance(template, Mapping):
        raise PermanentError("template: kind 'template' needs a manifest in sweepq.template")
    manifest = fill_template(dict(template), template_values(request), request.command.argv)
    resource_of_template(manifest, plurals)  # refuse early what submit could not create
    metadata = manifest.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise PermanentError("template.metadata: must be a mapping")
    for field, wanted in (("name", request.job_name), ("namespace", request.namespace)):
        if metadata.get(field) not in (None, wanted):
            raise PermanentError(f"template.metadata.{field}: {metadata[field]!r} — sweepq sets it; write "
                                 f"'{{{{{'job_name' if field == 'name' else field}}}}}' or leave it out")
        metadata[field] = wanted
    ours = job_metadata(request, kind=KIND)
    metadata["labels"] = {**(metadata.get("labels") or {}), **ours["labels"]}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), **ours["annotations"]}
    for pod in walk_pod_templates(manifest.get("spec")):
        pod_meta = pod.setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **pod_labels(request, kind=KIND)}
    return manifest


def template_progress(ref: ResourceRef, obj: Mapping[str, Any]) -> Progress:
    reader = PROGRESS_BY_KIND.get((ref.group, ref.kind))
    if reader is not None:
        return reader(obj)
    found = phase_from_conditions(obj, GENERIC_CONDITIONS)
    if not found:
        return Progress(JobPhase.PENDING)
    phase, condition = found
    return progress_from(obj, phase, condition)


def parse_resource(text: str, kind: str = "") -> ResourceRef:
    """``"jobsets.jobset.x-k8s.io/v1alpha2"`` (plural.group/version) → ResourceRef."""
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9.-]+)/([a-z0-9]+)", text.strip())
    if not match:
        raise PermanentError(f"template resource: {text!r} is not plural.group/version — e.g. "
                             "jobsets.jobset.x-k8s.io/v1alpha2")
    plural, group, version = match.groups()
    return ResourceRef(group=group, version=version, plural=plural, kind=kind or plural,
                       missing_fix=f"install the operator that serves {plural}.{group}/{version}")


class TemplateBackend(KubeBackend):
    """What ``observe``/``cancel`` list: the resources of ``templates`` (the templates of the active
    sweeps) and of ``resources`` (``"plural.group/version"`` strings), plus every template seen by
    ``dryrun`` in this process — the dispatcher is a fresh process each tick, so pass one of the
    two. ``plurals``: ``{"Kind.group": "plural"}`` for kinds outside the built-in table."""

    kind = KIND

    def __init__(self, *, templates: Iterable[Mapping[str, Any]] = (), resources: Iterable[str] = (),
                 plurals: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plurals = dict(plurals or {})
        self._refs: dict[tuple[str, str, str], ResourceRef] = {}
        for template in templates:
            self._remember(resource_of_template(template, self.plurals))
        for text in resources:
            self._remember(parse_resource(text))

    def _remember(self, ref: ResourceRef) -> ResourceRef:
        return self._refs.setdefault((ref.group, ref.version, ref.plural), ref)

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        manifest = build_from_template(request, plurals=self.plurals)
        self._remember(resource_of_template(manifest, self.plurals))
        return manifest

    def resources(self) -> list[ResourceRef]:
        if not self._refs:
            log.warning("template backend: no template resources known — its jobs are not observed; pass "
                        "templates= (of the active sweeps) or resources= ('plural.group/version')")
        return list(self._refs.values())

    def resource_of(self, manifest: Mapping[str, Any]) -> ResourceRef:
        return self._remember(resource_of_template(manifest, self.plurals))

    def observe_context(self, items: list[dict[str, Any]], ref: ResourceRef) -> ResourceRef:
        return ref

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return template_progress(context, obj)
