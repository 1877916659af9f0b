"""Review (rev13) of issue 13, backend side: Kueue admission as a real API server and Kueue show it.

Each test drives the real backend over HTTP against the emulator (official client), changing only
what the emulator does differently from upstream, and says so in its docstring.
"""

from __future__ import annotations

from typing import Any

from dispatcher.backends import make_backend
from dispatcher.core.jobs import Admission, JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

NAMESPACE = "sweepq"
SWEEP = "rev-sweep-abcdefgh"


def request(kind: str, index: int, **launch: Any) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image="trainer:1", kueue_queue="team-a", **launch)
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=1, job_name=f"{SWEEP}-{index}-a1",
        namespace=NAMESPACE, params={"lr": 0.1}, command=TrialCommand(argv=("train.py", "--lr=0.1")),
        launch=settings, env={"SWEEP_ID": SWEEP},
    )


def backend(kube: Any, kind: str) -> Any:
    return make_backend(kind, api_client=kube.api_client, namespace=NAMESPACE,
                        kueue_priority_classes={0: "sweepq-normal"})


def strip_type_meta(kube: Any, kind: str) -> None:
    """Store the objects as a real API server *lists* them for a built-in kind: the items of a
    JobList carry no ``kind`` / ``apiVersion`` (kubernetes/kubernetes#3030, #63676, #98925; the
    python client's list calls show ``items[i].kind is None``). CRD lists do carry them, and the
    emulator (kmock) returns the stored dict verbatim for every kind."""
    for job in kube.list_objects(kind):
        job.pop("kind", None)
        job.pop("apiVersion", None)
        kube.put_object(kind, job, NAMESPACE)


def test_review_batch_job_admission_is_lost_when_list_items_lack_kind(kube) -> None:
    """Attack: a Kueue-managed batch/v1 Job, observed through a JobList as a real API server sends it.

    Expected: the admitted job reads ADMITTED with ``admitted_at`` (what the tick needs to start
    ``start_timeout`` at admission), the waiting one QUEUED.
    Actual: ``KubeBackend._with_admission`` looks the Workload up by ``(obj["kind"], name)``; list
    items of a built-in kind have no ``kind``, so no Workload ever matches: the admitted, unsuspended
    job reads ``admission=None`` ("Kueue manages no Workload for it — enable Kueue's integration")
    and never gets an ``admitted_at``.
    """
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    names = [b.submit(b.dryrun(request("job", index))) for index in range(2)]
    assert kube.kueue.admitted() == names[:1]
    strip_type_meta(kube, "job")
    kube.set_job_phase("job", names[0], JobPhase.RUNNING)
    observed = b.observe()
    admitted = observed[names[0]]
    assert admitted.admission is Admission.ADMITTED, (admitted.admission, admitted.detail)
    assert admitted.admitted_at is not None


def test_review_batch_job_eviction_reads_as_queued_when_list_items_lack_kind(kube) -> None:
    """Attack: Kueue preempts an admitted batch/v1 Job (real JobList wire format, see above).

    Expected: EVICTED ("evicted by Kueue (Preempted ...)") — the tick must not count the eviction as
    a failure and must know the job was running before.
    Actual: with no Workload matched, the suspended job falls back to "no Workload, job suspended":
    QUEUED ("waiting for Kueue"), indistinguishable from a job that never ran.
    """
    kube.kueue.install(queues={"team-a": 1}, priority_classes={"sweepq-normal": 0})
    b = backend(kube, "job")
    [name] = [b.submit(b.dryrun(request("job", 0)))]
    kube.set_job_phase("job", name, JobPhase.RUNNING)
    kube.kueue.evict(name, "Preempted", requeue=False)
    strip_type_meta(kube, "job")
    evicted = b.observe()[name]
    assert evicted.admission is Admission.EVICTED, (evicted.admission, evicted.detail)
