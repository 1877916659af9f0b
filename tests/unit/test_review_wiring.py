"""Review (rev13) of issue 13: what a *deployed* dispatcher renders. The Lambda and the CronJob build
their backends only through ``dispatcher.wiring.build_backends(Settings.load())``; the tests take the
same path and render a trial (``dryrun``, no cluster call)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.settings import Settings
from dispatcher.wiring import build_backends

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "rev-sweep-abcdefgh"


def request(kind: str, **launch: object) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image="trainer:1", gpus_per_node=1, **launch)
    return LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                         namespace="sweepq", params={"lr": 0.1}, command=TrialCommand(argv=("train.py", "--lr=0.1")),
                         launch=settings, env={"SWEEP_ID": SWEEP})


def deployed_backend(kind: str, **env: str):
    settings = Settings.load(env={"SWEEPQ_BACKEND": kind, **env})
    return build_backends(settings, api_client=object())[kind]


@pytest.mark.parametrize("kind", ["trainjob", "job", "pytorchjob"])
def test_review_the_policys_kueue_priority_classes_never_reach_a_deployed_dispatcher(kind) -> None:
    """Attack: the operator maps priorities the documented way — ``kueue.priority_classes`` in the
    policy file (``SWEEPQ_POLICY=infra/policy.example.yaml``: priority ≥ 50 → ``sweepq-high``; README
    "Operator policy") — and a team submits a Kueue sweep of priority 100.

    Expected: the job carries ``kueue.x-k8s.io/priority-class: sweepq-high`` (issue 13: "jobs carry the
    queue label and kueue.x-k8s.io/priority-class mapped from sweepq's priority (operator-defined
    mapping)").
    Actual: no label. The only mapping the backends read is the constructor option
    ``kueue_priority_classes``; ``wiring.backend_options`` never passes it, no setting carries it,
    and ``Policy.priority_class`` is called nowhere — so every Kueue job of a deployed dispatcher runs
    at Kueue's default priority and ``withinClusterQueue: LowerPriority`` preemption never applies.
    """
    backend = deployed_backend(kind, SWEEPQ_POLICY=str(ROOT / "infra" / "policy.example.yaml"))
    labels = backend.dryrun(request(kind, kueue_queue="team-a", priority=100)).request["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels.get("kueue.x-k8s.io/priority-class") == "sweepq-high", labels


def test_review_sweepq_termination_grace_s_is_ignored_by_a_deployed_dispatcher() -> None:
    """Attack: the operator sets ``SWEEPQ_TERMINATION_GRACE_S=600`` (README "Job kinds", DEPLOY.md §
    Pod Security, CONTRACTS C6) because a checkpoint write takes minutes.

    Expected: every trial pod gets ``terminationGracePeriodSeconds: 600``.
    Actual: 120 — ``Settings`` has no such field and ``wiring.backend_options`` never passes
    ``termination_grace_s``: a Kueue preemption or cancel SIGKILLs the trainer 120 s after SIGTERM.
    """
    backend = deployed_backend("job", SWEEPQ_TERMINATION_GRACE_S="600")
    pod = backend.dryrun(request("job")).request["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 600
