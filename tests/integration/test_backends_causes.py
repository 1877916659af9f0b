"""Pod-level failure causes in ``JobStatus.detail`` (issue 18), against the emulator.

GIVEN jobs whose pods fail or cannot start, WHEN a backend observes them, THEN ``detail`` names
the cause a researcher can act on (OOMKilled, ImagePullBackOff, CreateContainerConfigError,
Unschedulable, the exit code and container), from at most one pods list per observe, and only
when some job needs it: a failed job's cause is read once; a pending one only after a while.
"""

from __future__ import annotations

from typing import Any

import kube_status as pods
import pytest

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

NAMESPACE = "sweepq"
SWEEP = "cause-sweep-abcdefgh"
CONTAINER = {"pytorchjob": "pytorch", "trainjob": "node", "job": "trainer"}
LAUNCH = {"pytorchjob": {"gpus_per_node": 8, "nodes": 2}, "trainjob": {"gpus_per_node": 8, "nodes": 2},
          "job": {"gpus_per_node": 1}}


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def request(kind: str, index: int) -> LaunchRequest:
    launch = LaunchSettings(kind=kind, image="registry.example/trainer:typo", **LAUNCH[kind])
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=1, job_name=f"{SWEEP}-{index}-a1",
        namespace=NAMESPACE, params={}, command=TrialCommand(argv=("train.py",)), launch=launch, env={})


def setup(kube: Any, kind: str, count: int) -> tuple[Any, Clock, list[str]]:
    clock = Clock()
    b = make_backend(kind, api_client=kube.api_client, namespace=NAMESPACE, clock=clock, pending_detail_after_s=60)
    return b, clock, [b.submit(b.dryrun(request(kind, index))) for index in range(count)]


@pytest.mark.parametrize("kind", list(CONTAINER))
def test_a_failed_jobs_cause_comes_from_its_pods_once(kube, kind) -> None:
    # GIVEN a failed job whose worker 1 was OOM-killed first and worker 0 then exited 1
    b, _, [name] = setup(kube, kind, 1)
    c = CONTAINER[kind]
    kube.put_pods(kind, name, [pods.exited(c, 1), pods.oom_killed(c)])
    kube.set_job_phase(kind, name, JobPhase.FAILED)
    kube.reset_counts()
    # WHEN it is observed
    failed = b.observe()[name]
    # THEN the detail names the OOM (the most telling cause), its pod and container, from one pods list
    assert failed.phase is JobPhase.FAILED
    assert failed.detail.startswith(f"pod {kube.list_objects('pod')[1]['metadata']['name']}: OOMKilled "
                                    f"(container {c}, exit code 137)")
    assert failed.detail.endswith("; 1 more pod with problems")
    assert kube.count("list", "pod") == 1
    # AND the next observes reuse it: a failed job never changes, its pods are not listed again
    assert b.observe()[name].detail == failed.detail
    assert kube.count("list", "pod") == 1


@pytest.mark.parametrize("statuses, expected", [
    (lambda c: [pods.image_pull_backoff(c, "registry.example/trainer:typo")],
     'ImagePullBackOff (container {c}): Back-off pulling image "registry.example/trainer:typo"'),
    (lambda c: [pods.config_error(c, 'secret "wandb" not found')],
     'CreateContainerConfigError (container {c}): secret "wandb" not found'),
    (lambda c: [pods.unschedulable()], "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."),
], ids=["image-pull", "config", "unschedulable"])
def test_a_job_pending_a_while_gets_the_reason_its_pods_do_not_start(kube, statuses, expected) -> None:
    # GIVEN a pending batch Job whose pod cannot start, and another one whose pod is just being created
    b, clock, [stuck, fresh] = setup(kube, "job", 2)
    kube.put_pods("job", stuck, statuses("trainer"))
    kube.put_pods("job", fresh, [{"phase": "Pending"}])  # (a job without any pod is reported: test below)
    kube.set_job_phase("job", stuck, JobPhase.PENDING)
    kube.reset_counts()
    # WHEN observed right away, THEN nobody waits long yet: no pods list, no detail
    assert b.observe()[stuck].detail == "" and kube.count("list", "pod") == 0
    # WHEN observed after the threshold, THEN one pods list gives the stuck job its cause
    clock.now += 61
    observed = b.observe()
    assert observed[stuck].detail.endswith(expected.format(c="trainer"))
    assert observed[fresh].detail == "" and kube.count("list", "pod") == 1
    # AND while it stays pending, each observe looks again (once per observe, for every such job)
    b.observe()
    assert kube.count("list", "pod") == 2


def test_running_and_succeeded_jobs_cost_no_pods_list(kube) -> None:
    b, clock, [one, two] = setup(kube, "pytorchjob", 2)
    kube.set_job_phase("pytorchjob", one, JobPhase.RUNNING)
    kube.set_job_phase("pytorchjob", two, JobPhase.SUCCEEDED)
    clock.now += 3600
    kube.reset_counts()
    assert {s.detail for s in b.observe().values()} == {""}
    assert dict(kube.requests) == {("list", "pytorchjobs"): 1}


def test_unreadable_pods_leave_the_detail_empty_and_never_fail_observe(kube) -> None:
    b, _, [name] = setup(kube, "job", 1)
    kube.set_job_phase("job", name, JobPhase.FAILED)
    kube.fail_next("pod", 403)
    failed = b.observe()[name]
    assert failed.phase is JobPhase.FAILED and failed.detail == ""
    kube.put_pods("job", name, [pods.exited("trainer", 2)])
    assert b.observe()[name].detail == f"pod {kube.list_objects('pod')[0]['metadata']['name']}: exit code 2 " \
                                       "(container trainer)"


def test_a_trainjob_with_pods_that_never_ran_stays_pending_and_gets_their_cause(kube) -> None:
    """A TrainJob reading ``ready: 0, active: N`` has its pods read (one list, shared with the
    causes) to tell a restarting container from a job that never started: pods stuck pulling
    their image keep it PENDING — start_timeout still applies."""
    b, _, [name] = setup(kube, "trainjob", 1)
    kube.set_job_phase("trainjob", name, JobPhase.PENDING)  # jobsStatus: ready 0, active 1
    kube.put_pods("trainjob", name, [pods.image_pull_backoff("node", "registry.example/trainer:typo")] * 2)
    kube.reset_counts()
    status = b.observe()[name]
    assert status.phase is JobPhase.PENDING and status.started_at is None
    assert kube.count("list", "pod") == 1
    # WHEN one pod's container has run and restarts in place, THEN the job has started
    restarted = pods.running("node")
    restarted["containerStatuses"][0].update(ready=False, restartCount=1, lastState={
        "terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-01-01T10:00:00Z"}})
    kube.put_pods("trainjob", name, [restarted, pods.running("node")])
    status = b.observe()[name]
    assert status.phase is JobPhase.RUNNING and status.started_at is not None
    assert kube.count("list", "pod") == 2


@pytest.mark.parametrize("kind", list(CONTAINER))
def test_a_job_pending_a_while_without_any_pod_says_its_controller_cannot_create_them(kube, kind) -> None:
    """Pod Security or the admission policy refusing the pods, or a missing ServiceAccount: the
    job's controller creates no pod and says why only in its events. observe says so, and how to
    see them, from the same single pods list."""
    b, clock, [name] = setup(kube, kind, 1)
    kube.set_job_phase(kind, name, JobPhase.PENDING)
    assert not kube.list_objects("pod")
    clock.now += 61
    kube.reset_counts()
    status = b.observe()[name]
    assert status.phase is JobPhase.PENDING and status.detail.startswith("no pods after "), status.detail
    assert f"kubectl -n {NAMESPACE} describe " in status.detail and name in status.detail
    assert kube.count("list", "pod") == 1
