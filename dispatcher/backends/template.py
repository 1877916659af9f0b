"""Kind ``template``: an **operator-owned** manifest from the policy, named by the sweep
(``sweepq: {kind: template, template: <name>}``) and filled structurally for each trial attempt.

A sweep never carries a manifest (``launch.template`` is a name; a dict is refused at validation):
the templates live in the operator policy (:mod:`dispatcher.core.policy`, ``templates:``), like W&B
Launch's admin-owned queue templates that users only fill. Filling is structural
(:mod:`dispatcher.core.templating`): only string leaves, placeholders ``job_name image namespace
sweep_id trial_id trial_index attempt gpus_per_node nproc_per_node min_nodes max_nodes team
kueue_queue service_account wandb_secret output_pvc`` and the list element ``{{args}}``.

Then, on the filled manifest, sweepq's rules win over the template's:

* the template must be usable by the sweep's (verified) team (``teams``), and its pods run as a
  ServiceAccount that team may use (never the dispatcher's; none only when the policy does not
  require one) — checked again here whatever the policy's loader saw;
* ``metadata.name``/``namespace`` are sweepq's; its labels and annotations are added to the object and
  its labels to every pod template (a PodTemplateSpec under any key: ``template``,
  ``submitterPodTemplate``, ``leaderTemplate``…); a container outside a pod template (Argo's
  ``container``) is refused: sweepq could neither secure nor count it;
* every container gets the trial environment (a TrainJob: ``spec.trainer.env``, the only place
  Trainer v2.3 takes it — never its runtime patches): sweepq's variables (``SWEEP_ID``, ``TRIAL_ID``,
  ``SWEEPQ_*``, ``WANDB_RUN_ID``…, ``POD_NAME`` from the downward API) replace the template's
  entries of the same name; the sender's ``env`` is added for names the template does not set;
  ``WANDB_API_KEY`` comes from the sweep's Secret (``secretKeyRef``) unless the template takes it
  from a Secret itself — a literal value is refused; a container that asks for no GPU gets
  ``NVIDIA_VISIBLE_DEVICES=void`` unless the template sets it (CUDA base images set ``all``, which
  the NVIDIA runtime honours for a container the device plugin gave nothing);
* the values sweepq fills in from the sweep — the trial argv (``{{args}}``) and every env value it
  adds — have ``$`` doubled: the kubelet expands ``$(VAR)`` in command, args and env values, so a
  parameter ``$(WANDB_API_KEY)`` would otherwise become the key (``$$`` is a literal ``$``);
* every pod is Pod Security ``restricted``: settings the template leaves out are filled in, a
  template that contradicts them is refused (:mod:`dispatcher.core.podsecurity`);
* the GPUs are counted from the filled resource requests times replicas (every accelerator resource
  of the policy's ``accelerator_resources``: MIG slices, shared GPUs…) and a template asking for
  more than the sweep declares (``gpus_per_node × max_nodes``, what the planner counts) or than the
  policy allows is refused; the ``sweepq.io/gpus`` annotation the caps read is the larger of the
  count and the declared number.

Which API the object goes to: its ``apiVersion``/``kind``; the plural from the policy entry's
``plural``, the annotation ``sweepq.io/plural``, the backend's ``plurals`` mapping
(``{"Kind.group": plural}``) or the table of well-known job kinds.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any, Callable, Iterable, Mapping

from dispatcher.backends.batchjob import job_progress
from dispatcher.backends.kube_base import KubeBackend, ResourceRef
from dispatcher.backends.kube_common import (
    ANNOTATION_GPUS,
    WANDB_KEY_ENV,
    WANDB_SECRET_KEY,
    Progress,
    job_metadata,
    phase_from_conditions,
    pod_labels,
    progress_from,
)
from dispatcher.backends.kube_options import DEFAULT_OPTIONS, JobOptions
from dispatcher.backends.pytorchjob import kubeflow_progress
from dispatcher.backends.trainjob import trainjob_progress
from dispatcher.core.errors import ConfigError, PermanentError
from dispatcher.core.jobs import JobPhase, LaunchRequest
from dispatcher.core.podsecurity import container_gpus, containers_of, manifest_gpus, restricted_problems, secure_pods
from dispatcher.core.policy import Policy, TemplateSpec, template_pod_problems
from dispatcher.core.templating import (
    ANNOTATION_PLURAL,
    ARGS_PLACEHOLDER,
    KNOWN_PLURALS,
    SAMPLE_VALUES,
    fill_template,
    pod_templates,
    template_api,
    unverified_references,
)

log = logging.getLogger(__name__)

KIND = "template"
POD_NAME_ENV = "POD_NAME"
NVIDIA_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
TRAINJOB = ("trainer.kubeflow.org", "TrainJob")
TRAINJOB_MAX_ENV = 128  # the v2.3 CRD's maxItems of spec.trainer.env
__all__ = ["ANNOTATION_PLURAL", "ARGS_PLACEHOLDER", "KNOWN_PLURALS", "TemplateBackend", "build_from_template",
           "fill_template", "parse_resource", "resource_of_template", "template_progress", "template_values"]

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
        "output_pvc": launch.output_pvc,
    }


def resource_of_template(template: Mapping[str, Any], plurals: Mapping[str, str] | None = None,
                         plural: str | None = None) -> ResourceRef:
    """The API resource a template creates (see :func:`dispatcher.core.templating.template_api`)."""
    group, version, kind, found = template_api(template, plurals, plural)
    return ResourceRef(group=group, version=version, plural=found, kind=kind,
                       missing_fix=f"install the operator that serves {kind} ({group}/{version}) or fix the "
                                   "template's apiVersion/kind")


def kubelet_literal(text: str) -> str:
    """``text`` as the kubelet passes it on: it expands ``$(VAR)`` in command, args and env values,
    and ``$$`` is a literal ``$``."""
    return text.replace("$", "$$")


def _trial_env(container: dict[str, Any], request: LaunchRequest, *, where: str,
               gpus: int | None = None) -> list[dict[str, Any]]:
    """The container's env with sweepq's variables winning (see the module docstring). ``gpus``: the
    container's GPUs, when known — 0 hides the node's GPUs from it."""
    existing = [e for e in container.get("env") or [] if isinstance(e, dict)]
    key_entry = next((e for e in existing if e.get("name") == WANDB_KEY_ENV), None)
    if key_entry is not None and "value" in key_entry:
        raise PermanentError(f"{where}.env.{WANDB_KEY_ENV}: a literal value — the key comes from a Secret "
                             "(valueFrom.secretKeyRef) or from the sweep's wandb_secret; remove the value")
    ours: list[dict[str, Any]] = [{"name": n, "value": kubelet_literal(str(v))} for n, v in sorted(request.env.items())
                                  if n not in (WANDB_KEY_ENV, POD_NAME_ENV)]
    ours.append({"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    if key_entry is None and request.launch.wandb_secret:
        ours.append({"name": WANDB_KEY_ENV, "valueFrom": {"secretKeyRef": {
            "name": request.launch.wandb_secret, "key": WANDB_SECRET_KEY, "optional": True}}})
    taken = {e["name"] for e in ours}
    kept = [e for e in existing if e.get("name") not in taken]
    template_names = {e.get("name") for e in kept}
    if gpus == 0 and NVIDIA_DEVICES_ENV not in template_names:
        ours.append({"name": NVIDIA_DEVICES_ENV, "value": "void"})
        taken.add(NVIDIA_DEVICES_ENV)
    sender = [{"name": n, "value": kubelet_literal(v)} for n, v in sorted(request.launch.env.items())
              if n not in template_names and n not in taken]
    return kept + sender + ours


def _entry_for(request: LaunchRequest, policy: Policy) -> TemplateSpec:
    """The policy's template the sweep names, if the sweep's team may use it."""
    name = request.launch.template
    if not name:
        raise PermanentError("template: kind 'template' needs the name of one of the operator policy's templates")
    entry = policy.template(name)
    if entry.teams is not None and request.launch.team not in entry.teams:
        raise PermanentError(f"template {name!r}: reserved for team(s) {', '.join(entry.teams)} — the sweep's team is "
                             f"{request.launch.team or 'none'}; use a template of the policy its team may use")
    refs = unverified_references(entry.manifest, path="manifest", teams=bool(policy.teams))
    if refs:
        raise PermanentError(f"template {name!r}: {'; '.join(refs)} — an object named from a placeholder the policy "
                             "does not verify")
    return entry


def _check_accounts(manifest: dict[str, Any], request: LaunchRequest, policy: Policy, where: str) -> None:
    accounts = policy.service_accounts_of(request.launch.team)
    problems = template_pod_problems(manifest, policy, accounts=accounts, where=where)
    if policy.service_account_required and manifest.get("kind") != "TrainJob":
        problems += [f"{where}: a pod names no ServiceAccount and the policy requires one — set serviceAccountName: "
                     "'{{service_account}}'" for pod in pod_templates(manifest)
                     if not (pod["spec"].get("serviceAccountName") or pod["spec"].get("serviceAccount"))]
    if problems:
        raise PermanentError("; ".join(problems))


def _trainjob_env(manifest: dict[str, Any], request: LaunchRequest, policy: Policy, where: str) -> None:
    trainer = manifest["spec"]["trainer"]  # template_pod_problems refused a TrainJob without one
    try:
        gpus = manifest_gpus(manifest, policy.accelerator_resources) // max(int(trainer.get("numNodes") or 1), 1)
    except ValueError as exc:
        raise PermanentError(f"{where}: {exc}") from exc
    trainer["env"] = _trial_env(trainer, request, where=f"{where}.spec.trainer", gpus=gpus)
    if len(trainer["env"]) > TRAINJOB_MAX_ENV:
        raise PermanentError(f"{where}: spec.trainer.env would have {len(trainer['env'])} entries; Trainer accepts at "
                             f"most {TRAINJOB_MAX_ENV} — set fewer env variables")


def build_from_template(request: LaunchRequest, *, policy: Policy,
                        plurals: Mapping[str, str] | None = None, options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The manifest of one trial attempt from the policy's template ``request.launch.template``.
    ``options``: the backend's (the Kueue priority class of the sweep's priority, and the pods' grace
    period where the template sets none). Purely computational; :class:`PermanentError` says what to fix."""
    entry = _entry_for(request, policy)
    where = f"template {request.launch.template!r}"
    argv = [kubelet_literal(str(arg)) for arg in request.command.argv]
    manifest = fill_template(copy.deepcopy(entry.manifest), template_values(request), argv, path=where)
    ref = resource_of_template(manifest, plurals, entry.plural)
    metadata = manifest.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise PermanentError(f"{where}.metadata: must be a mapping")
    for field, wanted in (("name", request.job_name), ("namespace", request.namespace)):
        if metadata.get(field) not in (None, wanted):
            raise PermanentError(f"{where}.metadata.{field}: {metadata[field]!r} — sweepq sets it; write "
                                 f"'{{{{{'job_name' if field == 'name' else field}}}}}' or leave it out")
        metadata[field] = wanted
    _check_accounts(manifest, request, policy, where)
    ours = job_metadata(request, kind=KIND, options=options)
    metadata["labels"] = {**(metadata.get("labels") or {}), **ours["labels"]}
    annotations = {**(metadata.get("annotations") or {}), **ours["annotations"]}
    if entry.plural:
        annotations[ANNOTATION_PLURAL] = ref.plural  # submit and later ticks find the API again
    trainjob = (ref.group, ref.kind) == TRAINJOB
    if trainjob:
        _trainjob_env(manifest, request, policy, where)
    for pod in pod_templates(manifest.get("spec")):
        pod_meta = pod.setdefault("metadata", {})
        pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **pod_labels(request, kind=KIND)}
        if not trainjob:  # a TrainJob's pods take the grace period from its runtime
            pod["spec"].setdefault("terminationGracePeriodSeconds", options.termination_grace_s)
        for path, container in containers_of(pod["spec"]) if not trainjob else ():
            if path.startswith("containers"):
                try:
                    gpus = container_gpus(container, policy.accelerator_resources)
                except ValueError as exc:
                    raise PermanentError(f"{where}.{path}: {exc}") from exc
                container["env"] = _trial_env(container, request, where=f"{where}.{path}", gpus=gpus)
    problems = restricted_problems(secure_pods(manifest), where=where)
    if problems:
        raise PermanentError(f"{where} breaks Pod Security restricted: " + "; ".join(problems))
    try:
        gpus = manifest_gpus(manifest, policy.accelerator_resources)
    except ValueError as exc:
        raise PermanentError(f"{where}: {exc}") from exc
    declared = request.launch.gpus_per_trial
    if gpus > declared:
        raise PermanentError(
            f"{where}: the filled manifest asks for {gpus} GPUs but the sweep declares gpus_per_node × max_nodes = "
            f"{declared}, which the caps count — set gpus_per_node/nodes to match, or use the template's "
            "{{gpus_per_node}} and {{max_nodes | int}} placeholders")
    limit = policy.limits.gpus_per_trial
    if limit is not None and gpus > limit:
        raise PermanentError(f"{where}: the filled manifest asks for {gpus} GPUs — the operator policy allows at "
                             f"most {limit} per trial")
    annotations[ANNOTATION_GPUS] = str(max(gpus, declared))  # what the planner counted when it launched it
    metadata["annotations"] = annotations
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
    """Templates come from ``policy``: a :class:`Policy`, or a zero-argument callable returning the
    current one (``PolicySource.get``, so a reloaded policy takes effect). Without it the default
    policy applies, which has no templates: every template sweep is refused.

    What ``observe``/``cancel`` list: the resources of every template of the policy, of ``resources``
    (``"plural.group/version"`` strings — keep a removed template's resource there until its sweeps
    have finished) and of every manifest built in this process. ``plurals``: ``{"Kind.group":
    "plural"}`` for kinds outside the built-in table."""

    kind = KIND

    def __init__(self, *, policy: Policy | Callable[[], Policy] | None = None, resources: Iterable[str] = (),
                 plurals: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plurals = dict(plurals or {})
        if policy is None:
            policy = Policy.default()
        self._policy: Callable[[], Policy] = policy if callable(policy) else (lambda: policy)
        self._refs: dict[tuple[str, str, str], ResourceRef] = {}
        for text in resources:
            self._remember(parse_resource(text))

    @property
    def policy(self) -> Policy:
        return self._policy()

    def _remember(self, ref: ResourceRef) -> ResourceRef:
        return self._refs.setdefault((ref.group, ref.version, ref.plural), ref)

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        manifest = build_from_template(request, policy=self.policy, plurals=self.plurals, options=self.options)
        self._remember(resource_of_template(manifest, self.plurals))
        return manifest

    def _entry_resource(self, entry: TemplateSpec) -> ResourceRef:
        # apiVersion and kind are literal in practice; filled with sample values in case they are not
        sample = fill_template(copy.deepcopy({k: entry.manifest.get(k) for k in ("apiVersion", "kind", "metadata")
                                              if k in entry.manifest}), SAMPLE_VALUES, [])
        return resource_of_template(sample, self.plurals, entry.plural)

    def resource_of_name(self, name: str) -> ResourceRef:
        """The resource of the policy's template ``name`` (PermanentError when the policy has none)."""
        return self._entry_resource(self.policy.template(name))

    def list_resource(self, ref: ResourceRef) -> ResourceRef:
        """List ``ref`` from now on (a stored sweep's jobs; kept for this process's lifetime). The
        policy's templates are remembered first: their refs carry the object's real kind."""
        self.resources()
        return self._remember(ref)

    def resources(self) -> list[ResourceRef]:
        try:
            entries = list(self.policy.templates.values())
        except ConfigError as exc:
            # An unreadable policy stops launches (the tick fails closed), never the listing: what the
            # stored sweeps need is registered from their items (observation.prepare_observation).
            log.warning("template backend: the policy cannot be read (%s); listing the known resources only", exc)
            entries = []
        for entry in entries:
            self._remember(self._entry_resource(entry))
        if not self._refs:
            log.debug("template backend: the policy has no templates and no resources= were given — nothing to list")
        return list(self._refs.values())

    def resource_of(self, manifest: Mapping[str, Any]) -> ResourceRef:
        return self._remember(resource_of_template(manifest, self.plurals))

    def observe_context(self, items: list[dict[str, Any]], ref: ResourceRef) -> ResourceRef:
        return ref

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        return template_progress(context, obj)
