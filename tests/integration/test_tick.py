"""The dispatcher tick against moto (DynamoDB + SQS) and the Kubernetes API emulator over HTTP."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, report_final_metrics, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.backends import make_backend
from dispatcher.core.jobs import LABEL_SWEEP_ID, JobPhase
from dispatcher.settings import Settings

KIND = "pytorchjob"


@pytest.fixture
def world(atomic_aws, kube):
    """GIVEN a bootstrapped queue + table, an empty cluster, a virtual clock."""
    aws = atomic_aws  # concurrent ticks below: moto's conditional writes must be atomic like DynamoDB's
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    clock = Clock()

    class World:
        pass

    w = World()
    w.aws, w.kube, w.settings, w.store, w.queue, w.clock = aws, kube, settings, store, queue, clock
    w.backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    w.dispatcher = lambda **kw: make_dispatcher(aws, kw.pop("settings", settings), {KIND: w.backend}, clock, queue, **kw)
    return w


def jobs(kube):
    return kube.list_objects(KIND)




def report_metric(w, job, value):
    """What the trainer does at the end of a trial: its pod's item of the metrics table (CONTRACTS C1)."""
    report_final_metrics(w.aws, w.settings, job, {"eval/accuracy": value, "epoch": 1.0})


def labels(job):
    return job["metadata"]["labels"]


@pytest.mark.slow  # > 10 s: not in `scripts/test.sh --fast`
def test_three_sweeps_cap_three_all_succeed_with_caps_held_every_tick(world):
    w = world
    ids = [
        submit(w.queue, grid_spec("alpha", 2, 2)),
        submit(w.queue, grid_spec("beta", 2, 3), {"max_concurrent": 1}),
        submit(w.queue, grid_spec("gamma", 1, 2)),
    ]
    d = w.dispatcher()
    for _ in range(60):
        report = d.tick()
        assert not report.errors, report.errors
        live = [j for j in jobs(w.kube) if not phase_of(j).terminal]
        # THEN the global cap and the per-sweep cap hold at every observation
        assert len(live) <= 3
        per_sweep = Counter(labels(j)[LABEL_SWEEP_ID] for j in live)
        assert per_sweep[ids[1]] <= 1
        if all(w.store.get_sweep(s)["state"] == "COMPLETED" for s in ids):
            break
        # the cluster makes progress: pending → running, running → succeeded (trainer reports a metric)
        for j in live:
            name, lab = j["metadata"]["name"], labels(j)
            if phase_of(j) is JobPhase.PENDING:
                w.kube.set_job_phase(KIND, name, JobPhase.RUNNING)
            else:
                index = int(lab["sweepq.io/trial-index"])
                report_metric(w, name, 0.5 + index / 100)
                w.kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
        w.clock.advance(60)
    else:
        pytest.fail("sweeps did not complete")
    # every trial launched exactly once, all succeeded, best recorded
    names = [j["metadata"]["name"] for j in jobs(w.kube)]
    assert len(names) == len(set(names)) == 4 + 6 + 2
    for sid, total in zip(ids, (4, 6, 2), strict=True):
        meta = w.store.get_sweep(sid)
        assert (meta["state"], meta["succeeded"], meta["failed"], meta["live"]) == ("COMPLETED", total, 0, {})
        trials = w.store.trials(sid)
        assert sorted(t["index"] for t in trials) == list(range(total))
        assert {t["state"] for t in trials} == {"SUCCEEDED"}
        assert meta["best"]["trial_index"] == total - 1 and meta["best"]["value"] == pytest.approx(0.5 + (total - 1) / 100)


def test_duplicate_delivery_and_resubmission_make_one_sweep_and_bad_messages_do_not_block(world):
    w = world
    spec = grid_spec("dup", 1, 2)
    first = submit(w.queue, spec, token="same-token-123")
    again = submit(w.queue, spec, token="same-token-123")  # a retried send: same token
    assert first == again
    bad = submit(w.queue, {**grid_spec("bad", 1, 1), "method": "bayes"})
    w.queue.send("this is not json")
    w.queue.send(json.dumps({"schema": "sweepq.submit/v9", "sweep_id": "x"}))
    good = submit(w.queue, grid_spec("good", 1, 1))
    report = w.dispatcher().tick()
    assert (report.accepted, report.duplicates, report.rejected, report.dead_letters) == (2, 1, 1, 2)
    assert w.store.get_sweep(first)["state"] == "ACTIVE"
    assert w.store.get_sweep(good)["state"] == "ACTIVE"
    rejected = w.store.get_sweep(bad)
    assert rejected["state"] == "REJECTED" and "method: 'bayes'" in rejected["reason"]
    # the two garbage bodies stay on the queue for SQS to redrive into the DLQ; the rest were deleted
    attrs = w.aws.client("sqs").get_queue_attributes(QueueUrl=w.queue.url, AttributeNames=["All"])["Attributes"]
    assert int(attrs["ApproximateNumberOfMessagesNotVisible"]) + int(attrs["ApproximateNumberOfMessages"]) == 2
    assert len(jobs(w.kube)) == 3  # 2 trials of "dup" + 1 of "good"


def test_failed_jobs_are_retried_with_new_attempts_then_fail(world):
    w = world
    sid = submit(w.queue, grid_spec("flaky", 1, 1), {"max_retries": 2})
    d = w.dispatcher()
    # a different error each time (the same one twice is not retried a third time: test_reconcile_outcomes)
    for attempt, reason in zip((1, 2, 3), ("OOMKilled", "BackoffLimitExceeded", "OOMKilled"), strict=True):
        d.tick()
        (job,) = [j for j in jobs(w.kube) if not phase_of(j).terminal]
        assert job["metadata"]["name"] == f"{sid}-0-a{attempt}"
        assert labels(job)["sweepq.io/attempt"] == str(attempt)
        w.kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.FAILED, reason=reason)
        w.clock.advance(60)
    d.tick()
    meta = w.store.get_sweep(sid)
    assert meta["state"] == "FAILED" and meta["failed"] == 1  # no trial succeeded
    (trial,) = w.store.trials(sid)
    assert trial["state"] == "FAILED" and "OOMKilled" in trial["reason"] and "attempt 3 of 3" in trial["reason"]
    assert [a["outcome"] for a in trial["attempts"]] == ["FAILED", "FAILED", "FAILED"]
    assert len(jobs(w.kube)) == 3


def test_circuit_breaker_fails_the_sweep_and_stops_launching(world):
    w = world
    sid = submit(w.queue, grid_spec("doomed", 4, 4), {"max_retries": 0, "max_failed_trials": 2})
    d = w.dispatcher()
    d.tick()
    running = [j for j in jobs(w.kube) if not phase_of(j).terminal]
    assert len(running) == 3
    for j in running[:2]:
        w.kube.set_job_phase(KIND, j["metadata"]["name"], JobPhase.FAILED)
    report = d.tick()
    meta = w.store.get_sweep(sid)
    assert meta["state"] == "FAILED" and "circuit breaker" in meta["reason"]
    assert report.launched == 0
    # the third job was cancelled (deleted); nothing else was ever launched
    assert {j["metadata"]["name"] for j in jobs(w.kube)} == {j["metadata"]["name"] for j in running[:2]}


def test_cancel_deletes_the_sweeps_jobs_and_launches_nothing_more(world):
    from dispatcher.core.message import encode_cancel

    w = world
    sid = submit(w.queue, grid_spec("stopme", 3, 3))
    other = submit(w.queue, grid_spec("keep", 1, 1))
    d = w.dispatcher()
    d.tick()
    assert any(labels(j)[LABEL_SWEEP_ID] == sid for j in jobs(w.kube))
    w.queue.send(encode_cancel(sweep_id=sid, requested_by="alice"))
    d.tick()
    assert w.store.get_sweep(sid)["state"] == "CANCELLED"
    assert [labels(j)[LABEL_SWEEP_ID] for j in jobs(w.kube)] == [other]
    d.tick()
    assert [labels(j)[LABEL_SWEEP_ID] for j in jobs(w.kube)] == [other]
    assert {t["state"] for t in w.store.trials(sid)} == {"CANCELLED"}


def test_two_ticks_at_once_never_duplicate_a_job_or_exceed_the_cap(world):
    w = world
    for name in ("p", "q", "r"):
        submit(w.queue, grid_spec(name, 3, 3))
    barrier = threading.Barrier(2)
    reports = []

    def run(owner):
        d = w.dispatcher(owner=owner)
        barrier.wait()
        reports.append(d.tick())

    threads = [threading.Thread(target=run, args=(f"owner-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [j["metadata"]["name"] for j in jobs(w.kube)]
    assert len(names) == len(set(names)) <= 3
    assert sorted(r.lease for r in reports) in (["busy", "held"], ["held", "held"])


def test_a_sweep_whose_job_cannot_be_rendered_is_rejected_at_intake(world):
    w = world
    settings = Settings.load({}, backend=KIND, kinds=f"{KIND},trainjob", max_running=3, namespace="sweepq")
    trainjob = make_backend("trainjob", api_client=w.kube.api_client, namespace="sweepq")
    d = make_dispatcher(w.aws, settings, {KIND: w.backend, "trainjob": trainjob}, w.clock, w.queue)
    bad = submit(w.queue, grid_spec("elastic-tj", 1, 1), {"kind": "trainjob", "nodes": "1:4"})
    off = submit(w.queue, grid_spec("no-such-kind", 1, 1), {"kind": "elasticjob"})
    report = d.tick()
    assert report.rejected == 2
    meta = w.store.get_sweep(bad)
    assert meta["state"] == "REJECTED" and "nodes" in meta["reason"]
    assert "'elasticjob' is not enabled" in w.store.get_sweep(off)["reason"]
    assert jobs(w.kube) == []


def test_output_pvc_is_mounted_where_the_trainer_writes(world):
    w = world
    submit(w.queue, grid_spec("pvc", 1, 1), {"output_pvc": "sweepq-outputs"})
    w.dispatcher().tick()
    (job,) = jobs(w.kube)
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert {"name": "outputs", "persistentVolumeClaim": {"claimName": "sweepq-outputs"}} in pod["volumes"]
    (container,) = pod["containers"]
    assert {"name": "outputs", "mountPath": "/outputs"} in container["volumeMounts"]
    assert {"name": "SWEEPQ_OUTPUT_DIR", "value": "/outputs"} in container["env"]


def test_a_tick_that_finds_the_lease_taken_marks_it_dirty_so_the_holder_ticks_again(world):
    w = world
    # GIVEN dispatcher A holds the lease (mid-tick)
    assert w.store.acquire_lease("A", now=w.clock(), seconds=60)
    # WHEN a wake makes dispatcher B tick meanwhile
    report = w.dispatcher(owner="B").tick()
    # THEN B does nothing but leave a dirty mark, and A is told to go once more before releasing
    assert report.lease == "busy" and report.launched == 0
    assert w.store.release_lease("A") is False
    assert w.store.release_lease("A") is True
    assert w.store.acquire_lease("B", now=w.clock(), seconds=60)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_the_holder_runs_another_round_when_marked_dirty_during_its_tick(world):
    w = world
    d = w.dispatcher(owner="A")
    rounds = []
    original = d._round

    def round_and_get_woken(report):
        rounds.append(1)
        original(report)
        if len(rounds) == 1:
            submit(w.queue, grid_spec("late", 1, 1))  # arrives after this round's intake...
            w.store.mark_dirty()                       # ...and its Lambda invocation found the lease taken

    d._round = round_and_get_woken
    report = d.tick()
    assert len(rounds) == 2 and report.accepted == 1 and report.launched == 1


def test_a_sweep_that_sets_a_variable_sweepq_owns_is_rejected_naming_it(world):
    # CONTRACTS C2: a sender can never set SWEEP_ID, TRIAL_*, SWEEPQ_* or the W&B run identity
    w = world
    sid = submit(w.queue, grid_spec("owned", 1, 1), {"env": {"SWEEP_ID": "someone-elses", "FOO": "1"}})
    report = w.dispatcher().tick()
    meta = w.store.get_sweep(sid)
    assert report.rejected == 1 and meta["state"] == "REJECTED"
    # one clear message, from one layer (the launch settings' validation), not two stacked
    assert meta["reason"] == ("launch.env.SWEEP_ID: reserved (SWEEP_ID): sweepq sets it for every trial — remove it; "
                              "no sweep may set it")
    assert jobs(w.kube) == []


def test_each_sweep_records_the_scope_and_namespace_that_accepted_it(world):
    w = world
    sid = submit(w.queue, grid_spec("scoped", 1, 1))
    w.dispatcher().tick()
    meta = w.store.get_sweep(sid)
    assert (meta["scope"], meta["namespace"], meta["list_pk"]) == ("local/sweepq", "sweepq", "ACTIVE#local/sweepq")
    assert w.store.scopes() == ["local/sweepq"] and [m["sweep_id"] for m in w.store.list_sweeps()] == [sid]
