"""Kueue-native jobs, backend side, end to end against the emulator's Kueue (tests/kube_kueue.py).

GIVEN Kueue with a quota, WHEN the backends create labelled jobs and observe them, THEN each
JobStatus carries Kueue's admission state (QUEUED / ADMITTED / EVICTED, ``admitted_at``) read
from the Workloads in one list call per observe, waiting jobs stay PENDING without pods, an
eviction keeps the same job (same name and attempt) and resumes it on re-admission.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kube_kueue import Quota

from dispatcher.backends import kueue, make_backend
from dispatcher.core.jobs import Admission, JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

NAMESPACE = "sweepq"
SWEEP = "kueue-sweep-abcdefgh"
LAUNCH: dict[str, dict[str, Any]] = {
    "job": {"gpus_per_node": 1},
    "trainjob": {"gpus_per_node": 8, "nodes": 2},
    "pytorchjob": {"gpus_per_node": 8, "nodes": "1:2"},
}
PRIORITY_CLASSES = {-100: "sweepq-low", 0: "sweepq-normal", 100: "sweepq-high"}


def request(kind: str, index: int, *, queue: str = "team-a", priority: int = 0) -> LaunchRequest:
    launch = LaunchSettings(kind=kind, image="trainer:1", kueue_queue=queue, priority=priority, **LAUNCH[kind])
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=1, job_name=f"{SWEEP}-{index}-a1",
        namespace=NAMESPACE, params={"lr": 0.1}, command=TrialCommand(argv=("train.py", f"--lr=0.{index}")),
        launch=launch, env={"SWEEP_ID": SWEEP},
    )


def backend(kube: Any, kind: str, **options: Any) -> Any:
    return make_backend(kind, api_client=kube.api_client, namespace=NAMESPACE,
                        kueue_priority_classes=PRIORITY_CLASSES, **options)


def launch(b: Any, kind: str, count: int, **kwargs: Any) -> list[str]:
    return [b.submit(b.dryrun(request(kind, index, **kwargs))) for index in range(count)]


@pytest.mark.parametrize("kind", ["job", "trainjob"])  # Kueue's integrations that are on by default
def test_quota_for_two_admits_two_of_six_and_the_rest_wait_suspended(kube, kind) -> None:
    # GIVEN Kueue with a LocalQueue quota of 2 jobs
    kube.kueue.install(queues={"team-a": 2}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, kind)
    # WHEN six trials' jobs are created with the queue label
    names = launch(b, kind, 6)
    kube.reset_counts()
    observed = b.observe()
    # THEN two are admitted (unsuspended, admitted_at set), four wait for quota, still suspended
    assert kube.kueue.admitted() == names[:2] and kube.kueue.waiting() == names[2:]
    for name in names[:2]:
        assert (observed[name].admission, observed[name].phase) == (Admission.ADMITTED, JobPhase.PENDING)
        assert observed[name].admitted_at is not None
    for name in names[2:]:
        status = observed[name]
        assert (status.admission, status.phase, status.admitted_at) == (Admission.QUEUED, JobPhase.PENDING, None)
        assert "waiting for Kueue quota (LocalQueue team-a): couldn't assign flavors" in status.detail
    for job in kube.list_objects(kind):
        assert bool(job["spec"]["suspend"]) == (job["metadata"]["name"] not in names[:2])
        assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "sweepq-normal"
    # AND Kueue's state took one Workload list, not one read per job
    assert dict(kube.requests) == {("list", f"{kind}s"): 1, ("list", "workloads"): 1}
    # WHEN an admitted job finishes, THEN its quota goes to the next one
    kube.set_job_phase(kind, names[0], JobPhase.SUCCEEDED)
    assert kube.kueue.admitted() == names[1:3]
    observed = b.observe()
    assert observed[names[0]].phase is JobPhase.SUCCEEDED and observed[names[2]].admission is Admission.ADMITTED


def test_an_eviction_suspends_the_same_job_and_it_resumes_when_re_admitted(kube) -> None:
    # GIVEN an admitted, running job
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    [name] = launch(b, "job", 1)
    kube.set_job_phase("job", name, JobPhase.RUNNING)
    running = b.observe()[name]
    assert (running.admission, running.phase) == (Admission.ADMITTED, JobPhase.RUNNING)
    uid = kube.get_object("job", name)["metadata"]["uid"]
    # WHEN Kueue evicts it and holds it back (requeue backoff)
    kube.kueue.evict(name, "Preempted", requeue=False)
    evicted = b.observe()[name]
    # THEN it is the same job, suspended again, EVICTED and PENDING — not failed, not gone
    job = kube.get_object("job", name)
    assert (job["metadata"]["uid"], job["spec"]["suspend"]) == (uid, True)
    assert (evicted.admission, evicted.phase, evicted.attempt, evicted.started_at) == \
        (Admission.EVICTED, JobPhase.PENDING, 1, None)
    assert "evicted by Kueue (Preempted" in evicted.detail and "resumes from its checkpoint" in evicted.detail
    with pytest.raises(AssertionError, match="suspended"):  # the emulator keeps tests honest: no pods now
        kube.set_job_phase("job", name, JobPhase.RUNNING)
    # WHEN it is requeued, THEN Kueue re-admits the same job and unsuspends it
    kube.kueue.requeue(name)
    resumed = b.observe()[name]
    assert kube.get_object("job", name)["spec"]["suspend"] is False
    assert resumed.admission is Admission.ADMITTED and resumed.admitted_at >= running.admitted_at
    workload = kube.kueue.workload(name)
    assert {c["type"]: c["status"] for c in workload["status"]["conditions"]}["Evicted"] == "False"


def test_priority_classes_order_admission_and_preempt_lower_priority_jobs(kube) -> None:
    # GIVEN a quota of 1, preemption within the queue, and the operator's priority mapping
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-low": 10, "sweepq-normal": 100,
                                                               "sweepq-high": 1000}, preemption=True)
    b = backend(kube, "job")
    [low] = launch(b, "job", 1, priority=-50)
    assert kube.kueue.admitted() == [low]
    # WHEN a sweep of priority 200 launches, THEN its job gets the high class and preempts the low one
    high = b.submit(b.dryrun(request("job", 7, priority=200)))
    assert kube.get_object("job", high)["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "sweepq-high"
    assert kube.get_object("job", low)["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "sweepq-low"
    observed = b.observe()
    assert observed[high].admission is Admission.ADMITTED
    assert observed[low].admission is Admission.EVICTED and "Preempted" in observed[low].detail


def test_a_deactivated_workload_fails_the_attempt_with_kueues_reason(kube) -> None:
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    [name] = launch(b, "job", 1)
    kube.kueue.deactivate(name)
    status = b.observe()[name]
    assert status.phase is JobPhase.FAILED and status.finished_at is not None
    assert "Kueue deactivated its Workload and will not admit it again" in status.reason


def test_an_unknown_queue_or_priority_class_is_inadmissible_and_says_why(kube) -> None:
    """Waits that can never end get their own admission, INADMISSIBLE, with what to fix: a
    LocalQueue Kueue does not know (its Workload is "Inadmissible") at once, a priority class the
    cluster lacks (Kueue makes no Workload) once the job has waited NO_WORKLOAD_AFTER_S for one."""
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    lost = b.submit(b.dryrun(request("job", 0, queue="team-typo")))
    nameless = make_backend("job", api_client=kube.api_client, namespace=NAMESPACE,
                            kueue_priority_classes={0: "no-such-class"})
    blocked = nameless.submit(nameless.dryrun(request("job", 1)))
    observed = b.observe()
    assert observed[lost].admission is Admission.INADMISSIBLE and observed[lost].phase is JobPhase.PENDING
    assert "LocalQueue team-typo doesn't exist" in observed[lost].detail
    # a fresh job without a Workload yet is only waiting for Kueue
    assert observed[blocked].admission is Admission.QUEUED and "waiting for Kueue" in observed[blocked].detail
    assert kube.kueue.events == [f"{blocked}: WorkloadPriorityClass 'no-such-class' not found"]
    # ... until Kueue has had far more than enough time to make one
    later = make_backend("job", api_client=kube.api_client, namespace=NAMESPACE,
                         clock=lambda: time.time() + kueue.NO_WORKLOAD_AFTER_S + 60)
    stuck = later.observe()[blocked]
    assert stuck.admission is Admission.INADMISSIBLE and stuck.phase is JobPhase.PENDING
    assert "WorkloadPriorityClass 'no-such-class' exists" in stuck.detail, stuck.detail


def test_a_job_kueue_suspends_without_a_queue_label_is_read_from_its_workload(kube) -> None:
    """Kueue with manageJobsWithoutQueueName suspends sweepq's unlabelled jobs too: observe must
    not call them running outside Kueue, but say they cannot be admitted and what to set."""
    kube.kueue.install(queues={"team-a": 1}, manage_jobs_without_queue_name=True)
    b = backend(kube, "job")
    unlabelled = LaunchSettings(kind="job", image="trainer:1", gpus_per_node=1)
    name = b.submit(b.dryrun(LaunchRequest(
        sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1", namespace=NAMESPACE,
        params={}, command=TrialCommand(argv=("train.py",)), launch=unlabelled, env={"SWEEP_ID": SWEEP})))
    assert kube.get_object("job", name)["spec"]["suspend"] is True
    status = b.observe()[name]
    assert status.admission is Admission.INADMISSIBLE and status.phase is JobPhase.PENDING
    assert "set kueue_queue" in status.detail, status.detail
    assert kube.count("list", "workload") == 1


def test_a_pytorchjob_when_kueues_pytorchjob_integration_is_off_is_reported_unmanaged(kube) -> None:
    # GIVEN Kueue with its defaults (kubeflow.org/pytorchjob is off by default, and deprecated)
    kube.kueue.install(queues={"team-a": 1})
    b = backend(kube, "pytorchjob")
    [name] = launch(b, "pytorchjob", 1)
    # THEN the job is not suspended, Kueue made no Workload, and observe says so
    assert not kube.get_object("pytorchjob", name)["spec"]["runPolicy"].get("suspend")
    status = b.observe()[name]
    assert status.admission is None and "enable Kueue's integration" in status.detail
    # AND with the integration enabled, it queues like the others (spec.runPolicy.suspend)
    kube.reset()
    kube.kueue.install(queues={"team-a": 1}, frameworks={"batch/job", "kubeflow.org/pytorchjob"},
                       priority_classes={"sweepq-normal": 0})
    first, second = launch(b, "pytorchjob", 2)
    assert kube.get_object("pytorchjob", second)["spec"]["runPolicy"]["suspend"] is True
    observed = b.observe()
    assert (observed[first].admission, observed[second].admission) == (Admission.ADMITTED, Admission.QUEUED)


def test_older_kueue_serving_only_v1beta1_workloads_is_read_after_one_fallback(kube) -> None:
    kube.kueue.install(queues={"team-a": 1}, version="v1beta1", priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    first, second = launch(b, "job", 2)
    kube.reset_counts()
    observed = b.observe()
    assert (observed[first].admission, observed[second].admission) == (Admission.ADMITTED, Admission.QUEUED)
    b.observe()
    assert kube.requests[("list", "workloads")] == 3  # v1beta2 (404) + v1beta1 once, then v1beta1 only


def test_unreadable_workloads_degrade_to_the_jobs_suspend_and_never_fail_observe(kube) -> None:
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    first, second = launch(b, "job", 2)
    kube.fail_next("workload", 403)  # the dispatcher's Role lacks `list workloads`
    observed = b.observe()
    assert (observed[first].admission, observed[second].admission) == (Admission.ADMITTED, Admission.QUEUED)
    assert observed[first].admitted_at is None  # only a Workload knows when


def test_gpu_quota_admits_by_gpus(kube) -> None:
    kube.kueue.install(queues={"team-a": Quota(gpus=16)}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "trainjob")
    names = launch(b, "trainjob", 3)  # 16 GPUs each
    assert kube.kueue.admitted() == names[:1]
    kube.kueue.set_quota("team-a", gpus=32)
    assert kube.kueue.admitted() == names[:2]
    assert b.observe()[names[2]].admission is Admission.QUEUED


def _spec_without_suspend(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj["spec"].items() if k != "suspend"}


@pytest.mark.parametrize("trainer_types", ["v2.2.0", "v2.2.1", "v2.3.0"])
def test_kueues_typed_update_on_admission_keeps_every_field_of_a_sweepq_trainjob(kube, trainer_types) -> None:
    """Kueue v0.17 – v0.19 (Trainer v2.2.x types) and main (v2.3.0) admit a TrainJob by writing it
    back through their types: nothing sweepq renders is lost — its pods keep their labels,
    ServiceAccount, volumes and max_runtime."""
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0}, trainer_types=trainer_types)
    b = backend(kube, "trainjob", runtime="sweepq-torch-distributed")
    launch = LaunchSettings(kind="trainjob", image="trainer:1", kueue_queue="team-a", gpus_per_node=8, nodes=2,
                            max_runtime="2h", output_pvc="sweepq-outputs", service_account="sweepq-trainer")
    dryrun = b.dryrun(LaunchRequest(
        sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1", namespace=NAMESPACE,
        params={}, command=TrialCommand(argv=("train.py",)), launch=launch, env={"SWEEP_ID": SWEEP}))
    b.submit(dryrun)
    stored = kube.get_object("trainjob", dryrun.job_name)
    assert stored["spec"]["suspend"] is False and kube.kueue.admitted() == [dryrun.job_name]
    assert _spec_without_suspend(stored) == _spec_without_suspend(dryrun.request)
    assert kube.kueue.events == []


def test_kueue_before_v0_17_deletes_the_runtime_patches_and_a_patched_grace_period_needs_trainer_v2_3_types(kube):
    """Why the support matrix says Kueue v0.17+ and why the grace period is in the runtime: Kueue
    v0.15/v0.16 (Trainer v2.1.0 types) delete runtimePatches and activeDeadlineSeconds on admission;
    v0.17 – v0.19 (v2.2.x) delete a terminationGracePeriodSeconds patched into the node pods."""
    kube.kueue.install(queues={"team-a": 2}, priority_classes={"sweepq-normal": 0}, trainer_types="v2.1.0")
    b = backend(kube, "trainjob", runtime="sweepq-torch-distributed")
    launch = LaunchSettings(kind="trainjob", image="trainer:1", kueue_queue="team-a", max_runtime="2h")
    make = lambda index: b.dryrun(LaunchRequest(  # noqa: E731
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=1, job_name=f"{SWEEP}-{index}-a1",
        namespace=NAMESPACE, params={}, command=TrialCommand(argv=("train.py",)), launch=launch, env={}))
    old = make(0)
    b.submit(old)
    stored = kube.get_object("trainjob", old.job_name)
    assert "runtimePatches" not in stored["spec"] and "activeDeadlineSeconds" not in stored["spec"]
    assert "deleted spec.activeDeadlineSeconds, spec.runtimePatches" in kube.kueue.events[0]
    # Kueue v0.19's types, and a TrainJob that patches the grace period (what sweepq did before)
    kube.kueue.sim.config.trainer_types = "v2.2.1"
    patched = make(1)
    patched.request["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 600
    b.submit(patched)
    pod = kube.get_object("trainjob", patched.job_name)["spec"]["runtimePatches"][0]["trainingRuntimeSpec"][
        "template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert "terminationGracePeriodSeconds" not in pod and "securityContext" in pod  # only that field is lost
    assert "deleted spec.runtimePatches.trainingRuntimeSpec" in kube.kueue.events[-1]
