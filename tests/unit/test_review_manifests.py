"""Review (rev13) of issue 13, backend side: what a real cluster does with the rendered manifests.

Pure: no cluster. The tests play the upstream component that would act on the manifest (the
kubelet's ``$(VAR)`` expansion, Kueue's webhook/labels) with its documented rules.
"""

from __future__ import annotations

from typing import Any, Mapping

import pytest

from dispatcher.backends.batchjob import build_batchjob
from dispatcher.backends.pytorchjob import build_pytorchjob
from dispatcher.backends.trainjob import build_trainjob
from dispatcher.core.command import render_command
from dispatcher.core.jobs import LaunchRequest
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.spec import load_sweep

SWEEP = "rev-sweep-abcdefgh"
SECRET = "wandb-secret-value-0123456789abcdef"

# A sweep file anyone with sqs:SendMessage can write: plain W&B command, one categorical value.
SWEEP_FILE = """
method: grid
program: train.py
parameters:
  lr: {values: [0.1]}
  note: {values: ["$(WANDB_API_KEY)"]}
"""


def kubelet_expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR_NAME)`` expansion of container command/args (k8s.io/kubernetes
    third_party/forked/golang/expansion: ``$$`` → ``$``, ``$(NAME)`` → the variable's value when
    the container defines it, otherwise left verbatim)."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def resolved_env(container_env: list[dict[str, Any]]) -> dict[str, str]:
    """The env as the kubelet resolves it: the W&B Secret's key read through secretKeyRef."""
    env = {}
    for entry in container_env:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in (entry.get("valueFrom") or {}):
            env[entry["name"]] = SECRET
        else:
            env[entry["name"]] = "pod-0"
    return env


def main_container(manifest: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    if manifest["kind"] == "TrainJob":
        trainer = manifest["spec"]["trainer"]
        return [*trainer["command"], *trainer.get("args", [])], trainer["env"]
    spec = manifest["spec"]
    template = spec["pytorchReplicaSpecs"]["Worker"]["template"] if manifest["kind"] == "PyTorchJob" \
        else spec["template"]
    [container] = template["spec"]["containers"]
    return [*container["command"], *container.get("args", [])], container["env"]


@pytest.mark.parametrize("kind, build", [("pytorchjob", build_pytorchjob), ("trainjob", build_trainjob),
                                         ("job", build_batchjob)])
def test_review_a_parameter_value_cannot_make_the_kubelet_paste_the_wandb_key_into_argv(kind, build) -> None:
    """Attack: a sweep's parameter value ``$(WANDB_API_KEY)`` (untrusted sweep file, plain W&B command).

    Expected: the trial receives the literal argument ``--note=$(WANDB_API_KEY)`` (sweepq escapes
    ``$`` as ``$$`` in every argument it does not mean as a reference), as W&B's agent would pass it.
    Actual: the argument goes unescaped into the container's args; the kubelet expands ``$(VAR)``
    references in command/args from the container env, which holds ``WANDB_API_KEY`` from the
    team's Secret — the key lands in the trainer's argv (W&B records argv in the run's metadata,
    visible to the whole project; ``ps``/``/proc/*/cmdline`` on the node).
    """
    sweep = load_sweep(SWEEP_FILE)
    params = sweep.trial(0)
    launch = LaunchSettings(kind=kind, image="trainer:1", gpus_per_node=1)
    request = LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1,
                            job_name=f"{SWEEP}-0-a1", namespace="sweepq", params=params,
                            command=render_command(sweep, params), launch=launch, env={"SWEEP_ID": SWEEP})
    argv, env = main_container(build(request))
    expanded = [kubelet_expand(arg, resolved_env(env)) for arg in argv]
    assert not any(SECRET in arg for arg in expanded), expanded
    assert "--note=$(WANDB_API_KEY)" in expanded


def template_backend(**options: Any) -> Any:
    from dispatcher.backends import make_backend
    from dispatcher.core.policy import Policy

    template = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"],
                                                  "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}}]}}}}
    return make_backend("template", namespace="sweepq", policy=Policy.from_data({"templates": {"t": {"manifest": template}}}),
                        **options)


def template_request(**launch: Any) -> LaunchRequest:
    from dispatcher.core.jobs import TrialCommand

    settings = LaunchSettings(kind="template", template="t", image="registry.example/t:1", gpus_per_node=1, **launch)
    return LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                         namespace="sweepq", params={"lr": 0.1},
                         command=TrialCommand(argv=("train.py", "--lr=0.1"), launcher=None), launch=settings,
                         env={"SWEEP_ID": SWEEP})


def test_review_template_pods_ignore_the_termination_grace_period() -> None:
    """Attack: kind ``template`` with ``SWEEPQ_TERMINATION_GRACE_S=600`` (backend option
    ``termination_grace_s``; JobOptions: "terminationGracePeriodSeconds of every trial pod: on a cancel,
    timeout or preemption the trainer gets SIGTERM and this long to checkpoint").

    Expected: the template's pods (which do not set it) get ``terminationGracePeriodSeconds: 600``.
    Actual: ``build_from_template`` never reads ``self.options``: the pods keep Kubernetes' 30 s default,
    so a Kueue preemption or a cancel SIGKILLs the trainer mid-checkpoint.
    """
    backend = template_backend(termination_grace_s=600)
    pod = backend.dryrun(template_request()).request["spec"]["template"]["spec"]
    assert pod.get("terminationGracePeriodSeconds") == 600, pod


def test_review_template_jobs_get_no_kueue_priority_class() -> None:
    """Attack: a Kueue sweep of kind ``template`` (an operator's batch/v1 Job template), priority 200,
    dispatcher configured with ``kueue_priority_classes`` (issue 13: "jobs carry the queue label and
    kueue.x-k8s.io/priority-class mapped from sweepq's priority").

    Expected: ``kueue.x-k8s.io/priority-class: sweepq-high`` on the job, as every other kind renders it.
    Actual: ``build_from_template`` calls ``job_metadata(request, kind=KIND)`` without the backend's
    options, so template jobs carry the queue label but never a priority class: Kueue admits (and
    preempts) them at the default priority whatever the sweep's priority.
    """
    backend = template_backend(kueue_priority_classes={0: "sweepq-normal", 100: "sweepq-high"})
    labels = backend.dryrun(template_request(kueue_queue="team-a", priority=200)).request["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels.get("kueue.x-k8s.io/priority-class") == "sweepq-high", labels
