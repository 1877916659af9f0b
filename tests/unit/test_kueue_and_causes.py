"""Pure readers of Kueue admission (dispatcher/backends/kueue.py), pod failure causes
(dispatcher/backends/kube_pods.py) and the priority → WorkloadPriorityClass mapping. No cluster."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.backends.kube_options import JobOptions
from dispatcher.backends.kube_pods import job_detail, pod_failure
from dispatcher.backends.kueue import (
    NO_WORKLOAD_AFTER_S,
    WorkloadReader,
    admission_of,
    apply_admission,
    workloads_by_owner,
)
from dispatcher.core.errors import ConfigError
from dispatcher.core.jobs import Admission, JobPhase
from dispatcher.core.policy import Policy

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def job(*, queue: str | None = "team-a", suspend: bool = False, run_policy: bool = False) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": queue} if queue else {}
    spec: dict[str, Any] = {"runPolicy": {"suspend": suspend}} if run_policy else {"suspend": suspend}
    return {"kind": "Job", "metadata": {"name": "j", "uid": "u1", "labels": labels}, "spec": spec}


def workload(*conditions: tuple[str, str, str], active: bool = True, owner_uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "job-j-abcde", "creationTimestamp": T0, "ownerReferences": [
        {"kind": "Job", "name": "j", "uid": owner_uid, "controller": True}]},
        "spec": {"active": active},
        "status": {"conditions": [{"type": t, "status": s, "reason": r, "message": f"{r} message",
                                   "lastTransitionTime": T1} for t, s, r in conditions]}}


@pytest.mark.parametrize("the_job, the_workload, admission, detail", [
    (job(queue=None), None, None, ""),
    (job(suspend=True), None, Admission.QUEUED, "waiting for Kueue (LocalQueue team-a)"),
    (job(suspend=True, run_policy=True), None, Admission.QUEUED, "waiting for Kueue"),
    (job(), None, None, "enable Kueue's integration"),
    (job(suspend=True), workload(("QuotaReserved", "False", "Pending")), Admission.QUEUED,
     "waiting for Kueue quota (LocalQueue team-a): Pending message"),
    (job(suspend=True), workload(("QuotaReserved", "True", "QuotaReserved")), Admission.QUEUED, "waiting"),
    (job(), workload(("QuotaReserved", "True", "QuotaReserved"), ("Admitted", "True", "Admitted")),
     Admission.ADMITTED, ""),
    (job(suspend=True), workload(("Evicted", "True", "Preempted"), ("Admitted", "False", "NoReservation"),
                                 ("Requeued", "True", "Preempted")), Admission.EVICTED, "evicted by Kueue (Preempted"),
    (job(), workload(("Evicted", "False", "QuotaReserved"), ("Admitted", "True", "Admitted")), Admission.ADMITTED, ""),
    (job(suspend=True), workload(("Admitted", "True", "Admitted"), owner_uid="old"), Admission.QUEUED,
     "waiting for Kueue"),  # a Workload of an earlier job of the same name is not this job's
    (job(suspend=True), workload(("QuotaReserved", "False", "Inadmissible")), Admission.INADMISSIBLE,
     "Kueue cannot admit it (LocalQueue team-a): Inadmissible message — fix the queue"),
    (job(queue=None, suspend=True), workload(("QuotaReserved", "False", "Pending")), Admission.QUEUED,
     "waiting for Kueue quota (no LocalQueue)"),  # manageJobsWithoutQueueName + a default LocalQueue
    (job(queue=None, suspend=True), None, Admission.QUEUED, "suspended, waiting for Kueue"),
], ids=["no-label", "no-workload-yet", "no-workload-runpolicy", "not-managed", "pending", "checks-pending",
        "admitted", "evicted", "re-admitted", "stale-workload", "inadmissible", "unlabelled-managed",
        "unlabelled-suspended"])
def test_admission_table(the_job, the_workload, admission, detail) -> None:
    view = admission_of(the_job, the_workload)
    assert view.admission is admission and detail in view.detail and not view.failed
    assert (view.admitted_at == 1767225900.0) == (admission is Admission.ADMITTED and the_workload is not None)


def test_a_request_over_the_queues_maximum_capacity_never_fits() -> None:
    never = workload(("QuotaReserved", "False", "Pending"))
    never["status"]["conditions"][0]["message"] = ("couldn't assign flavors to pod set main: insufficient quota for "
                                                   "nvidia.com/gpu in flavor gpu, request > maximum capacity (16 > 8)")
    view = admission_of(job(suspend=True), never)
    assert view.admission is Admission.INADMISSIBLE and "request > maximum capacity (16 > 8)" in view.detail
    later = workload(("QuotaReserved", "False", "Pending"))
    later["status"]["conditions"][0]["message"] = ("couldn't assign flavors to pod set main: insufficient unused quota "
                                                   "for nvidia.com/gpu in flavor a, 8 more needed, insufficient quota "
                                                   "for nvidia.com/gpu in flavor b, request > maximum capacity (16 > 8)")
    assert admission_of(job(suspend=True), later).admission is Admission.QUEUED  # flavor a fits once quota frees
    assert apply_admission(JobPhase.PENDING, view) == (JobPhase.PENDING, "")


def test_a_suspended_job_kueue_made_no_workload_for_becomes_inadmissible_after_a_while() -> None:
    """Kueue makes a Workload within seconds; none after NO_WORKLOAD_AFTER_S means none will come."""
    labelled = job(suspend=True)
    labelled["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "sweepq-hgih"
    assert admission_of(labelled, None, age_s=NO_WORKLOAD_AFTER_S - 1).admission is Admission.QUEUED
    stuck = admission_of(labelled, None, age_s=NO_WORKLOAD_AFTER_S + 1)
    assert stuck.admission is Admission.INADMISSIBLE and not stuck.failed
    assert "WorkloadPriorityClass 'sweepq-hgih' exists" in stuck.detail and "integrations.frameworks" in stuck.detail
    unlabelled = admission_of(job(queue=None, suspend=True), None, age_s=NO_WORKLOAD_AFTER_S + 1)
    assert unlabelled.admission is Admission.INADMISSIBLE and "set kueue_queue" in unlabelled.detail
    # without the Workloads (no RBAC, no Kueue API) nothing can be concluded: plain waiting
    assert admission_of(labelled, None, workloads_read=False, age_s=1e6).admission is Admission.QUEUED
    assert admission_of(job(queue=None), None, age_s=1e6).admission is None  # not suspended: not Kueue's


def test_a_deactivated_workload_fails_the_attempt_and_waiting_is_always_pending() -> None:
    view = admission_of(job(suspend=True), workload(("Evicted", "True", "Deactivated"), active=False))
    assert view.admission is Admission.EVICTED and "will not admit it again (Deactivated" in view.failed
    assert apply_admission(JobPhase.PENDING, view)[0] is JobPhase.FAILED
    assert apply_admission(JobPhase.SUCCEEDED, view) == (JobPhase.SUCCEEDED, "")
    evicted = admission_of(job(suspend=True), workload(("Evicted", "True", "Preempted")))
    assert apply_admission(JobPhase.RUNNING, evicted) == (JobPhase.PENDING, "")  # a stale Running condition
    # without the Workloads, the job's suspend flag alone
    assert admission_of(job(), None, workloads_read=False).admission is Admission.ADMITTED


def test_workloads_are_matched_to_jobs_by_controller_owner_and_the_newest_wins() -> None:
    old, new = workload(), workload()
    old["metadata"]["creationTimestamp"], new["metadata"]["creationTimestamp"] = T0, T1
    other = {"metadata": {"ownerReferences": [{"kind": "Job", "name": "x", "controller": False}]}}
    assert workloads_by_owner([new, old, other]) == {("Job", "j"): new}


def test_the_workload_reader_falls_back_to_v1beta1_once_and_degrades_on_errors() -> None:
    class Missing(Exception):
        status = 404

    class Forbidden(Exception):
        status = 403

    calls = []

    def served(only: str, error: type[Exception] = Missing):
        def list_workloads(version: str) -> list[dict[str, Any]]:
            calls.append(version)
            if version != only:
                raise error()
            return [{"v": version}]
        return list_workloads

    reader = WorkloadReader(served("v1beta1"))
    assert reader.read() == [{"v": "v1beta1"}] and reader.read() == [{"v": "v1beta1"}]
    assert calls == ["v1beta2", "v1beta1", "v1beta1"]
    assert WorkloadReader(served("none")).read() is None
    assert WorkloadReader(served("v1beta1", Forbidden)).read() is None  # 403: no fallback, degrade


def test_priority_classes_map_sweep_priorities_by_threshold_as_the_policy_does() -> None:
    options = JobOptions.build(kueue_priority_classes={0: "normal", 100: "high", -100: "low"})
    # below every threshold: no class (Kueue's default priority), as Policy.priority_class says
    assert [options.priority_class(p) for p in (-1000, -101, -100, -1, 0, 99, 100, 1000)] == \
        [None, None, "low", "low", "normal", "normal", "high", "high"]
    policy = Policy.from_data({"kueue": {"priority_classes": [{"name": "low", "min_priority": -100},
                                                              {"name": "normal", "min_priority": 0},
                                                              {"name": "high", "min_priority": 100}]}})
    assert [options.priority_class(p) for p in range(-1000, 1001, 7)] == \
        [policy.priority_class(p) for p in range(-1000, 1001, 7)]
    assert JobOptions.build().priority_class(100) is None
    with pytest.raises(ConfigError, match=r"kueue_priority_classes: key 5000 is not a sweep priority"):
        JobOptions.build(kueue_priority_classes={5000: "high"})
    with pytest.raises(ConfigError, match=r"kueue_priority_classes\[0\]: 'High_Prio'"):
        JobOptions.build(kueue_priority_classes={0: "High_Prio"})
    with pytest.raises(ConfigError, match="run_as_user: 0"):
        JobOptions.build(run_as_user=0)


def test_the_policys_own_mapping_with_team_lists_is_the_backend_option() -> None:
    """Deployed, the option is ``policy.priority_class`` itself: a team's own list wins."""
    policy = Policy.from_data({
        "kueue": {"priority_classes": [{"name": "normal", "min_priority": 0}]},
        "teams": {"vision": {"members": ["AROA*:vision-*"],
                             "priority_classes": [{"name": "vision-high", "min_priority": 50}]}}})
    options = JobOptions.build(kueue_priority_classes=policy.priority_class)
    assert options.priority_class(60, "vision") == "vision-high"
    assert options.priority_class(10, "vision") is None  # the team's list has nothing below 50
    assert options.priority_class(60, None) == "normal"


def pod(name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def terminated(code: int, reason: str = "Error", at: str = T1, **extra: Any) -> dict[str, Any]:
    return {"name": "pytorch", "state": {"terminated": {"exitCode": code, "reason": reason, "finishedAt": at, **extra}}}


@pytest.mark.parametrize("pods, expected", [
    ([], ""),
    ([pod("p0", {"phase": "Running", "containerStatuses": [{"name": "pytorch", "state": {"running": {}}}]})], ""),
    ([pod("p0", {"containerStatuses": [terminated(1, at=T1)]}), pod("p1", {"containerStatuses": [terminated(3, at=T0)]})],
     "pod p1: exit code 3 (container pytorch); 1 more pod with problems"),  # the first to fail is the cause
    ([pod("p0", {"containerStatuses": [terminated(1)]}), pod("p1", {"containerStatuses": [terminated(137, "OOMKilled")]})],
     "pod p1: OOMKilled (container pytorch, exit code 137)"),
    ([pod("p0", {"containerStatuses": [{"name": "pytorch", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]})],
     "pod p0: OOMKilled (container pytorch, exit code 137)"),  # restarted: the last termination says why
    ([pod("p0", {"initContainerStatuses": [{"name": "init", "state": {"waiting": {
        "reason": "ErrImagePull", "message": "pull access denied"}}}]})],
     "pod p0: ErrImagePull (container init): pull access denied"),
    ([pod("p0", {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."})],
     "pod p0: Evicted: The node was low on resource: memory."),
    ([pod("p0", {"containerStatuses": [terminated(1, message="x" * 1000)]})], "…"),
    ([pod("p0", {"phase": "Failed", "containerStatuses": [terminated(143)], "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "lastTransitionTime": T0,
         "message": "Pod was terminated in response to imminent node shutdown."}]})],
     "pod p0: disrupted (TerminationByKubelet): the node is shutting down or evicting pods — Pod was terminated in "
     "response to imminent node shutdown.; not the trial's fault"),  # the exit 143 is its echo
    ([pod("p0", {"containerStatuses": [terminated(143)], "conditions": [
        {"type": "DisruptionTarget", "status": "False", "reason": "PreemptionByScheduler"}]})],
     "pod p0: exit code 143 (container pytorch)"),
], ids=["none", "running", "first-exit", "oom-wins", "oom-last-state", "image-pull", "node-eviction", "bounded",
        "disruption", "disruption-false"])
def test_job_detail_picks_the_most_telling_cause(pods, expected) -> None:
    detail = job_detail(pods)
    assert (expected in detail) if expected else detail == ""
    assert len(detail) <= 500
    if expected and expected != "…":
        assert detail.startswith(expected)


def test_pod_failure_keeps_the_short_reason_form() -> None:
    assert pod_failure(pod("p", {"containerStatuses": [terminated(137, "OOMKilled")]})) == "OOMKilled (exit code 137)"
    assert pod_failure(pod("p", {"containerStatuses": [terminated(1)]})) == "exit code 1"
    assert pod_failure(pod("p", {"reason": "DeadlineExceeded"})) == "DeadlineExceeded"
