"""The outcome rules through the real tick (moto + the Kubernetes emulator over HTTP): the pods'
cause reaches the trial, the same error twice is not retried a third time (the fingerprint
carries from one attempt's live entry to the next claim), a pod the cluster stopped costs no
retry, an image that cannot be pulled is not retried, and a sweep with no success ends FAILED."""

from __future__ import annotations

import kube_status as pods
import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings

KIND = "job"


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=4, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    clock = Clock()
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq", clock=clock)

    class World:
        pass

    w = World()
    w.kube, w.store, w.queue, w.clock = kube, store, queue, clock
    w.dispatcher = make_dispatcher(aws, settings, {KIND: backend}, clock, queue)
    return w


def live_job(w) -> str:
    (name,) = [j["metadata"]["name"] for j in w.kube.list_objects(KIND)
               if not any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
                          for c in (j.get("status") or {}).get("conditions") or [])]
    return name


def fail(w, name: str, pod_status: dict) -> None:
    w.kube.put_pods(KIND, name, [pod_status])
    w.kube.set_job_phase(KIND, name, JobPhase.FAILED, reason="BackoffLimitExceeded")


def disrupted() -> dict:
    status = pods.exited("trainer", 143)
    status["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                             "message": "Preempted by a higher-priority pod", "lastTransitionTime": pods.now_rfc3339()}]
    return status


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_disruption_costs_no_retry_and_the_same_error_twice_ends_the_trial(world) -> None:
    w = world
    sid = submit(w.queue, grid_spec("flaky", 1, 1), {"kind": KIND, "gpus_per_node": 0, "max_retries": 5})
    # attempt 1: a pod the cluster stopped; attempts 2 and 3: OOM-killed both times
    for attempt, status in ((1, disrupted()), (2, pods.oom_killed("trainer")), (3, pods.oom_killed("trainer"))):
        w.dispatcher.tick()
        name = live_job(w)
        assert name == f"{sid}-0-a{attempt}"
        fail(w, name, status)
        w.clock.advance(60)
    w.dispatcher.tick()
    (trial,) = w.store.trials(sid)
    # THEN the trial ended after attempt 3, not 6 + 1: the same OOM twice in a row is not retried again
    assert trial["state"] == "FAILED" and int(trial["attempt"]) == 3
    assert [(int(a["attempt"]), a["counted"]) for a in trial["attempts"]] == [(1, False), (2, True), (3, True)]
    first, _, last = trial["attempts"]
    assert "disrupted (PreemptionByScheduler)" in first["reason"] and "not counted against max_retries" in first["reason"]
    assert "OOMKilled (container trainer, exit code 137)" in last["reason"]
    assert "attempt 3 of 7; not retried: the same error as attempt 2" in trial["reason"]
    # AND the sweep, with no successful trial, ended FAILED
    meta = w.store.get_sweep(sid)
    assert meta["state"] == "FAILED" and meta["reason"] == "no trial succeeded: 0 succeeded, 1 failed, 0 cancelled"
    assert len(w.kube.list_objects(KIND)) == 3


def test_an_image_that_cannot_be_pulled_is_not_retried(world) -> None:
    w = world
    sid = submit(w.queue, grid_spec("typo-image", 1, 1), {"kind": KIND, "gpus_per_node": 0, "max_retries": 2})
    w.dispatcher.tick()
    fail(w, live_job(w), pods.image_pull_backoff("trainer", "ghcr.io/acme/trainr:1"))
    w.dispatcher.tick()
    (trial,) = w.store.trials(sid)
    assert trial["state"] == "FAILED" and int(trial["attempt"]) == 1
    assert "ImagePullBackOff" in trial["reason"] and "not retried: the image cannot be pulled" in trial["reason"]
    assert w.store.get_sweep(sid)["state"] == "FAILED"
