"""Adversarial review (rev11p) of operator templates: what the dispatcher promises about every template
pod ("restricted: filled in where the template says nothing, refused where it contradicts it", "the
GPUs are counted into sweepq.io/gpus, which the caps read", "sweepq's variables win") against
templates an operator plausibly writes. Each test fails on the current code.

Pure: manifests are built by the real ``build_from_template`` / ``Policy`` code, nothing is mocked.
"""

from __future__ import annotations

from typing import Any

from upstream_models import problems as upstream_problems

from dispatcher.backends.template import build_from_template
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy, PolicyError

SWEEP = "lr-sweep-abcdefgh"


def request(**launch: Any) -> LaunchRequest:
    settings = LaunchSettings.model_validate({"kind": "template", "template": "t", "image": "registry.example/t:1",
                                              "service_account": "sweepq-trainer", "gpus_per_node": 2, **launch})
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=3, trial_id=f"{SWEEP}-3", attempt=2, job_name=f"{SWEEP}-3-a2", namespace="sweepq",
        params={"lr": 0.1}, command=TrialCommand(argv=("train.py", "--lr=0.1"), launcher=None), launch=settings,
        env={"SWEEP_ID": SWEEP, "TRIAL_ID": f"{SWEEP}-3", "SWEEPQ_ATTEMPT": "2", "WANDB_RUN_ID": f"{SWEEP}-3"},
    )


def batch_job(resources: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "restartPolicy": "Never", "serviceAccountName": "{{service_account}}",
        "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"], "resources": resources}],
        **pod}}}}


def one_template(manifest: dict[str, Any]) -> Policy:
    return Policy.from_data({"templates": {"t": {"manifest": manifest}}})


def test_mig_gpus_of_a_template_are_counted_as_zero_for_the_caps() -> None:
    """Attack: a template on a MIG cluster (docs/SECURITY.md itself recommends MIG against GPU side
    channels) requests ``nvidia.com/mig-1g.10gb: {{gpus_per_node}}``. Expected: the job's
    ``sweepq.io/gpus`` annotation (what the caps count for running jobs, kube_base.job_status) is the
    2 GPU slices it holds. Actual: ``manifest_gpus`` only counts keys ending in ``/gpu``, so the
    annotation says 0 and every running trial of this template is invisible to SWEEPQ_MAX_GPUS and
    team quotas."""
    manifest = build_from_template(request(gpus_per_node=2), policy=one_template(
        batch_job({"limits": {"nvidia.com/mig-1g.10gb": "{{gpus_per_node}}"}})))
    assert manifest["metadata"]["annotations"]["sweepq.io/gpus"] == "2"


def test_a_sidecar_containers_gpus_are_added_not_maxed() -> None:
    """Attack: a template whose pod has a sidecar (an init container with ``restartPolicy: Always``,
    running for the pod's whole life) asking for GPUs next to the main container. Kubernetes (and
    Kueue's TotalRequests) count sidecars *on top of* the containers: 2 + 2 = 4 GPUs, more than the
    sweep declares (gpus_per_node 2 × 1 node), which must be refused. Actual: ``pod_gpus`` treats the
    sidecar as a regular init container (max instead of sum): the job is built with
    ``sweepq.io/gpus: 2`` and holds 4."""
    sidecar = {"name": "side", "image": "{{image}}", "restartPolicy": "Always", "command": ["sleep", "infinity"],
               "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}}
    policy = one_template(batch_job({"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}, initContainers=[sidecar]))
    try:
        manifest = build_from_template(request(gpus_per_node=2), policy=policy)
    except Exception as exc:  # refusing it (4 > declared 2) is the right outcome
        assert "4 GPUs" in str(exc)
        return
    assert manifest["metadata"]["annotations"]["sweepq.io/gpus"] == "4"


def test_a_rayjob_submitter_pod_is_neither_secured_nor_checked() -> None:
    """Attack: RayJob is in KNOWN_PLURALS, so it is an offered template kind. Its
    ``spec.submitterPodTemplate`` is a PodTemplateSpec under a key other than ``template``, so
    ``pod_templates`` never sees it. Expected (README/SECURITY.md: every template pod is restricted,
    a template that contradicts it is refused): the policy with ``hostNetwork`` + ``privileged`` in the
    submitter pod does not load, or the build refuses it. Actual: both pass, the manifest is created
    as written (no runAsNonRoot filled in either)."""
    ray = {"apiVersion": "ray.io/v1", "kind": "RayJob", "spec": {
        "entrypoint": "python train.py",
        "rayClusterSpec": {"headGroupSpec": {"template": {"spec": {"containers": [
            {"name": "head", "image": "{{image}}"}]}}}},
        "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "hostNetwork": True, "containers": [
            {"name": "submit", "image": "{{image}}", "securityContext": {"privileged": True}}]}}}}
    try:
        policy = one_template(ray)
        manifest = build_from_template(request(gpus_per_node=0), policy=policy)
    except Exception as exc:
        assert "hostNetwork" in str(exc) or "privileged" in str(exc)
        return
    submitter = manifest["spec"]["submitterPodTemplate"]["spec"]
    assert submitter.get("hostNetwork") is not True
    assert submitter["containers"][0]["securityContext"].get("privileged") is not True


def test_a_trainjob_template_gets_no_trial_environment() -> None:
    """Attack/defect: TrainJob is an offered template kind (KNOWN_PLURALS, PROGRESS_BY_KIND, and
    ``_template_problems`` exempts it from needing a pod template). Its trainer container's env lives
    in ``spec.trainer.env`` (Trainer v2.3: the only place; the webhook refuses env in a patch of the
    ``node`` container). Expected (template.py docstring: "every container gets the trial
    environment: SWEEP_ID, TRIAL_ID, SWEEPQ_*, POD_NAME, WANDB_API_KEY from the Secret"): those are in
    ``spec.trainer.env``. Actual: nothing is added — the trainer runs without its trial identity,
    POD_NAME (metrics key, CONTRACTS C1) or W&B key."""
    tj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {
        "runtimeRef": {"name": "sweepq-torch", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": {"image": "{{image}}", "command": ["torchrun", "{{args}}"], "numNodes": "{{max_nodes | int}}",
                    "resourcesPerNode": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}}}}
    manifest = build_from_template(request(), policy=one_template(tj))
    env = {e["name"] for e in manifest["spec"]["trainer"].get("env") or []}
    assert {"SWEEP_ID", "TRIAL_ID", "POD_NAME", "WANDB_API_KEY"} <= env


def test_a_trainjob_template_with_a_runtime_patch_is_made_invalid_upstream() -> None:
    """Defect: the same TrainJob template, with the runtime patch an operator needs to make its pods
    restricted (as sweepq's own trainjob kind does). ``build_from_template`` finds the patch's pod
    template and writes the trial env into the ``node`` container of the patch. Expected: a TrainJob
    valid against Trainer v2.3. Actual: the v2.3 webhook rule "must not have envs for the node
    container" (tests/upstream_models.py) refuses every job of this template, and ``secure_pods`` adds
    ``automountServiceAccountToken`` to the patch's pod spec, a field the v2.3 patch API does not have
    (the API server prunes it)."""
    patch = {"manager": "acme.io/ops", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": {"spec": {
            "serviceAccountName": "{{service_account}}",
            "containers": [{"name": "node", "securityContext": {"allowPrivilegeEscalation": False}}]}}}}}]}}}}
    tj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {
        "runtimeRef": {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
        "trainer": {"image": "{{image}}", "command": ["torchrun", "{{args}}"], "numNodes": "{{max_nodes | int}}",
                    "resourcesPerNode": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}},
        "runtimePatches": [patch]}}
    manifest = build_from_template(request(), policy=one_template(tj))
    assert upstream_problems(manifest) == []


def test_a_template_running_as_the_dispatchers_service_account_loads() -> None:
    """Defect: README "A template is checked when the policy loads (filled with sample values), so a
    broken one never waits for the first sweep to name it", and Policy's docstring "the dispatcher's
    own ServiceAccount is never a trial's". Expected: a policy whose template hard-codes
    ``serviceAccountName: sweepq-dispatcher`` is refused at load (as ``service_accounts:
    [sweepq-dispatcher]`` is). Actual: it loads; only the first render of a sweep refuses it."""
    manifest = batch_job({})
    manifest["spec"]["template"]["spec"]["serviceAccountName"] = "sweepq-dispatcher"
    try:
        Policy.from_data({"templates": {"t": {"manifest": manifest}}})
    except PolicyError as exc:
        assert "sweepq-dispatcher" in str(exc)
        return
    raise AssertionError("a template running as the dispatcher's ServiceAccount loaded without a problem")
