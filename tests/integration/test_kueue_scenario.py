"""Issue 13's Kueue scenario through the real tick: quota for 2 jobs, cap 8, 6 trials, TrainJob.

GIVEN Kueue in the emulator (tests/kube_kueue.py) with a LocalQueue quota of 2 and a sweep of
6 trials under ``SWEEPQ_MAX_RUNNING=8``, WHEN the dispatcher ticks while the cluster runs what
Kueue admits, THEN Kueue — not sweepq's cap — decides what runs: 6 jobs wait suspended and 2 run
at a time; an eviction suspends a running job, which resumes as the same job (same attempt,
same W&B run id) when re-admitted; the sweep completes.

The tick side (``dispatcher.core.reconcile``): ``start_timeout`` counts from Kueue admission, so
a job waiting for quota is never cancelled, while one admitted and not started within it is; an
eviction is not a failed attempt (nothing counted, its cause recorded on the trial).
"""

from __future__ import annotations

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.jobs import Admission, JobPhase
from dispatcher.settings import Settings

KIND = "trainjob"  # with Kueue, the recommended kind (Kueue's TrainJob integration is on by default)


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=8, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    kube.kueue.install(queues={"team-a": 2}, priority_classes={"sweepq-normal": 0})
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq",
                           kueue_priority_classes={0: "sweepq-normal"})
    clock = Clock()

    class World:
        pass

    w = World()
    w.kube, w.store, w.queue, w.clock, w.backend = kube, store, queue, clock, backend
    w.dispatcher = make_dispatcher(aws, settings, {KIND: backend}, clock, queue)
    w.sweep = submit(queue, grid_spec("kueue", 2, 3), {"kind": KIND, "gpus_per_node": 0, "kueue_queue": "team-a"})
    return w


def finished(job) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def unsuspended(kube) -> list[str]:
    """The unfinished jobs Kueue let run."""
    return sorted(j["metadata"]["name"] for j in kube.list_objects(KIND) if not j["spec"].get("suspend") and not finished(j))


def run_until_complete(w, *, evict_once: bool, max_ticks: int = 30) -> dict[str, int]:
    """Tick; the cluster runs each admitted job, then finishes it. Evicts the first running job once."""
    evicted, reported = None, 0
    for _ in range(max_ticks):
        reported += w.dispatcher.tick().evicted
        assert len(unsuspended(w.kube)) <= 2  # Kueue's quota holds whatever sweepq's cap allows
        for name in w.kube.kueue.admitted():
            job = w.kube.get_object(KIND, name)
            running = ((job.get("status") or {}).get("jobsStatus") or [{}])[0].get("ready")
            if evict_once and evicted is None and running:
                evicted = name
                w.kube.kueue.evict(name, "Preempted", requeue=False)  # held back until requeued
                continue
            w.kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED if running else JobPhase.RUNNING)
        if evicted and evicted in w.kube.kueue.waiting() and len(w.kube.kueue.waiting()) == 1:
            status = w.backend.observe()[evicted]
            assert (status.admission, status.phase) == (Admission.EVICTED, JobPhase.PENDING)
            w.kube.kueue.requeue(evicted)
        w.clock.advance(60)
        if not w.store.active_sweeps():
            return {"evicted": 1 if evicted else 0, "reported": reported, "job": evicted}
    raise AssertionError(f"sweep not complete after {max_ticks} ticks: {w.store.get_sweep(w.sweep)}")


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_quota_two_cap_eight_six_trials_two_run_at_a_time_and_an_eviction_resumes_the_same_job(world) -> None:
    w = world
    # WHEN the first tick launches
    w.dispatcher.tick()
    # THEN all 6 trials have a job (cap 8), Kueue admitted 2, 4 wait suspended without pods
    assert len(w.kube.list_objects(KIND)) == 6
    assert len(w.kube.kueue.admitted()) == 2 and len(w.kube.kueue.waiting()) == 4
    statuses = w.backend.observe()
    assert sorted(s.admission.value for s in statuses.values()) == ["ADMITTED"] * 2 + ["QUEUED"] * 4
    before = {j["metadata"]["name"]: j for j in w.kube.list_objects(KIND)}
    # WHEN the cluster works through them, with one running job preempted and later re-admitted
    outcome = run_until_complete(w, evict_once=True)
    # THEN the sweep completes with every trial on its first attempt: the eviction was no failure,
    # the resumed job is the same object (same name, uid, attempt label and W&B run id)
    sweep = w.store.get_sweep(w.sweep)
    assert (outcome["evicted"], outcome["reported"]) == (1, 1)
    assert sweep["state"] == "COMPLETED" and int(sweep["succeeded"]) == 6
    # AND the evicted trial says why it was stopped and that it did not count against its retries
    trials = {t["job"]: t for t in w.store.trials(w.sweep)}
    hit = trials[outcome["job"]]
    assert "evicted by Kueue (Preempted" in hit["reason"] and "not counted against max_retries" in hit["reason"]
    assert [(int(a["attempt"]), a["outcome"]) for a in hit["attempts"]] == [(1, "SUCCEEDED")]
    after = {j["metadata"]["name"]: j for j in w.kube.list_objects(KIND)}
    assert after.keys() == before.keys() and all(name.endswith("-a1") for name in after)
    for name, job in after.items():
        assert job["metadata"]["uid"] == before[name]["metadata"]["uid"]
        env = {e["name"]: e.get("value") for e in job["spec"]["trainer"]["env"]}
        assert env["WANDB_RUN_ID"] == name.rsplit("-a", 1)[0] and env["SWEEPQ_ATTEMPT"] == "1"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_jobs_waiting_for_quota_are_not_cancelled_past_start_timeout(world) -> None:
    w = world
    w.dispatcher.tick()
    waiting, admitted = set(w.kube.kueue.waiting()), set(w.kube.kueue.admitted())
    assert len(waiting) == 4 and len(admitted) == 2
    w.clock.advance(31 * 60)  # past the default start_timeout (30 min) while 4 jobs wait for quota
    w.dispatcher.tick()
    names = {j["metadata"]["name"] for j in w.kube.list_objects(KIND)}
    # THEN the 4 waiting for quota are untouched: same jobs, first attempts, nothing recorded against them
    assert waiting <= names
    trials = {t["job"]: t for t in w.store.trials(w.sweep)}
    assert all(int(trials[n]["attempt"]) == 1 and not trials[n].get("attempts") for n in waiting)
    # AND the 2 admitted 31 min ago that never started were cancelled and will be retried, counted
    assert not admitted & names
    for name in admitted:
        (ended,) = trials[name]["attempts"]
        assert ended["outcome"] == "FAILED" and ended["counted"] is True
        assert "admitted by Kueue, still pending after 1860 s (start_timeout 1800 s)" in ended["reason"]
