"""Review (rev13) of issue 13: the shipped Kueue team overlay, as kustomize renders it."""

from __future__ import annotations

from typing import Any


def _grants(objects: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    for obj in objects:
        if obj.get("kind") not in ("Role", "ClusterRole"):
            continue
        for rule in obj.get("rules") or []:
            if group in rule.get("apiGroups", []) and resource in rule.get("resources", []) \
                    and verb in rule.get("verbs", []):
                return True
    return False


def test_review_the_kueue_team_overlay_lets_the_dispatcher_read_workloads(rendered) -> None:
    """Attack: deploy the shipped "full team setup" with Kueue (``infra/k8s/overlays/team-a``, which
    includes ``components/kueue``).

    Expected: the dispatcher's Role grants ``list`` on ``workloads.kueue.x-k8s.io`` — without it
    every tick's Workload list is 403 and observe degrades to the jobs' ``suspend`` flag: evictions
    read as QUEUED, no ``admitted_at`` (start_timeout cannot start at admission), a deactivated
    Workload never fails its attempt (README "Kueue", DEPLOY.md step 4).
    Actual: neither ``base/rbac.yaml`` nor ``components/kueue`` has such a rule; DEPLOY.md's "exactly
    these rules" table omits it too — the overlay that enables Kueue ships the degraded mode.
    """
    assert _grants(rendered["team-a"], "kueue.x-k8s.io", "workloads", "list")


def test_review_the_kueue_team_overlay_launches_a_kind_kueue_manages_by_default(rendered) -> None:
    """Attack: the same overlay, on Kueue v0.19 installed with its default ``integrations.frameworks``
    (``batch/job``, ``trainer.kubeflow.org/trainjob``, ... — ``kubeflow.org/pytorchjob`` is off by default
    and deprecated; README "Kueue" and DEPLOY.md say so and recommend TrainJob).

    Expected: the overlay's dispatcher launches a kind Kueue manages out of the box (``trainjob`` with
    the shipped ``components/trainjob-runtime``, or ``job``), or enables/explains the PyTorchJob one.
    Actual: the overlay keeps base's ``SWEEPQ_BACKEND: pytorchjob`` ("PyTorchJobs under a Kueue GPU
    quota"): Kueue's webhook ignores those jobs, they start at once outside the team's quota, and
    observe reports ``admission=None`` ("enable Kueue's integration").
    """
    [config] = [o for o in rendered["team-a"] if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "sweepq-dispatcher"]
    assert config["data"].get("SWEEPQ_BACKEND") in ("trainjob", "job"), config["data"]
