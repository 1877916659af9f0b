"""The tick reads a succeeded trial's final metrics from the metrics table (CONTRACTS C1), against
moto and the Kubernetes API emulator: only an item of the live attempt's job, trial and attempt,
written by one of that job's pods, is trusted; forged and garbage items are left out with a
logged reason and never fail the tick; the trusted values land on the trial item and pick the
best trial."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, report_final_metrics, submit

from dispatcher.adapters.dynamo import ser
from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.tick import METRICS_WAIT_S

GOOD, FORGED = 0.6, 0.99


def world_for(aws, kube, kind: str):
    settings = Settings.load({}, backend=kind, max_running=2, namespace="sweepq")
    store, queue = bootstrap(aws, settings)

    class World:
        pass

    w = World()
    w.aws, w.kube, w.kind, w.settings, w.store = aws, kube, kind, settings, store
    w.clock = Clock()
    w.dispatcher = make_dispatcher(aws, settings, {kind: make_backend(kind, api_client=kube.api_client,
                                                                      namespace="sweepq")}, w.clock, queue)
    # GIVEN a sweep of two trials, both launched (one job each, attempt 1)
    w.sweep_id = submit(queue, grid_spec("metrics", 1, 2))
    report = w.dispatcher.tick()
    assert not report.errors, report.errors
    w.jobs = [f"{w.sweep_id}-{index}-a1" for index in (0, 1)]
    assert sorted(j["metadata"]["name"] for j in kube.list_objects(kind)) == w.jobs
    return w


@pytest.fixture
def world(aws, kube):
    return world_for(aws, kube, "pytorchjob")


def put_item(w, **item) -> None:
    w.aws.client("dynamodb").put_item(TableName=w.settings.metrics_table, Item=ser(item))


def succeed_all(w):
    for job in w.jobs:
        w.kube.set_job_phase(w.kind, job, JobPhase.SUCCEEDED)
    report = w.dispatcher.tick()
    assert not report.errors, report.errors  # nothing a trial writes fails the tick
    return report


def events(caplog, name):
    out = []
    for record in caplog.records:
        try:
            doc = json.loads(record.getMessage())
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") == name:
            out.append(doc)
    return out


def test_final_metrics_go_onto_the_trial_item_and_pick_the_best(world):
    w = world
    report_final_metrics(w.aws, w.settings, w.jobs[0], {"eval/accuracy": GOOD, "eval/loss": 0.4, "epoch": 2.0})
    report_final_metrics(w.aws, w.settings, w.jobs[1], {"eval/accuracy": 0.7, "eval/loss": 0.3, "epoch": 2.0})
    report = succeed_all(w)
    assert report.finished == 2
    trials = {t["index"]: t for t in w.store.trials(w.sweep_id)}
    assert {i: (t["state"], t["metrics"]) for i, t in trials.items()} == {
        0: ("SUCCEEDED", {"eval/accuracy": GOOD, "eval/loss": 0.4, "epoch": 2}),
        1: ("SUCCEEDED", {"eval/accuracy": 0.7, "eval/loss": 0.3, "epoch": 2}),
    }
    best = w.store.get_sweep(w.sweep_id)["best"]
    assert (best["trial_index"], best["value"], best["trial_id"]) == (1, 0.7, f"{w.sweep_id}-1")


@pytest.mark.parametrize("forgery", [
    "another trial's job",   # trial 1's pod writes its own key, naming trial 0's job and trial
    "another trial's id",    # its own job, trial 0's trial id
    "another attempt",       # its own job, attempt 2
])
@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_trials_forged_metrics_for_another_trial_are_ignored(world, caplog, forgery):
    # (pytorchjob: the reader gets each job's first pod by key, and an item's key is its pod, so
    # the pod check matters for the kinds read through the index: the batch Job test below)
    w = world
    caplog.set_level(logging.WARNING)
    job0, job1 = w.jobs
    report_final_metrics(w.aws, w.settings, job0, {"eval/accuracy": GOOD})
    forged = {"pod": f"{job1}-worker-0", "job": job1, "trial_id": f"{w.sweep_id}-1", "attempt": 1, "world_size": 1,
              "metrics": {"eval/accuracy": FORGED}, "final": {"eval/accuracy": FORGED}, "status": "finished",
              "updated_at": 1_900_000_000}
    forged.update({"another trial's job": {"job": job0, "trial_id": f"{w.sweep_id}-0"},
                   "another trial's id": {"trial_id": f"{w.sweep_id}-0"},
                   "another attempt": {"attempt": 2}}[forgery])
    put_item(w, **forged)
    succeed_all(w)
    trials = {t["index"]: t for t in w.store.trials(w.sweep_id)}
    # THEN trial 1 succeeded with no metrics, trial 0 keeps its own value, which is the best
    assert (trials[0]["state"], trials[0]["metrics"]) == ("SUCCEEDED", {"eval/accuracy": GOOD})
    assert trials[1]["state"] == "SUCCEEDED" and "metrics" not in trials[1]
    best = w.store.get_sweep(w.sweep_id)["best"]
    assert (best["trial_index"], best["value"]) == (0, GOOD)
    [missing] = [e for e in events(caplog, "metrics-missing") if e["trial"] == 1]
    assert missing["job"] == job1 and "no trusted metrics item" in missing["reason"]
    [ignored] = [e for e in events(caplog, "metrics-ignored") if e["job"] == job1]
    assert ignored["reason"].split(":")[0] == {"another trial's job": "job", "another trial's id": "trial_id",
                                               "another attempt": "attempt"}[forgery]


def test_a_batch_jobs_forged_item_in_the_index_is_ignored(aws, kube, caplog):
    # kind job: pods have random names, the reader queries the by_job index, so every pod's item
    # naming a job is returned for it — the one from another job's pod must be left out
    w = world_for(aws, kube, "job")
    caplog.set_level(logging.WARNING)
    job0, job1 = w.jobs
    report_final_metrics(w.aws, w.settings, job0, {"eval/accuracy": GOOD}, kind="job", pod=f"{job0}-k2m4p")
    report_final_metrics(w.aws, w.settings, job1, {"eval/accuracy": 0.5}, kind="job", pod=f"{job1}-x7q2z")
    # trial 1's other pod (its own key, as IAM allows) claims trial 0's job, trial and attempt, fresher
    put_item(w, pod=f"{job1}-b5n8w", job=job0, trial_id=f"{w.sweep_id}-0", attempt=1, world_size=1,
             metrics={"eval/accuracy": FORGED}, final={"eval/accuracy": FORGED}, status="finished",
             updated_at=1_900_000_000)
    succeed_all(w)
    trials = {t["index"]: t for t in w.store.trials(w.sweep_id)}
    assert (trials[0]["metrics"], trials[1]["metrics"]) == ({"eval/accuracy": GOOD}, {"eval/accuracy": 0.5})
    assert w.store.get_sweep(w.sweep_id)["best"]["value"] == GOOD
    # the forgery is never even read: the index is queried for pods named after the job only
    assert not [e for e in events(caplog, "metrics-ignored") if e.get("pod") == f"{job1}-b5n8w"]


LONG = "m" * 200  # a valid metric name (≤ 256) too long to copy onto the trial item (> 128)


@pytest.mark.parametrize(("garbage", "recorded"), [
    # values the reader drops one by one: the others are recorded
    ({"final": {"eval/accuracy": None, "eval/loss": 0.4}}, {"eval/loss": 0.4}),
    ({"final": {"eval/accuracy": GOOD, LONG: 1.0}}, {"eval/accuracy": GOOD}),
    ({"final": {f"x{i:03d}": i for i in range(200)} | {"eval/accuracy": GOOD}}, "65 names"),
    # items it refuses whole: no metrics for the trial
    ({"final": {"eval/accuracy": "0.99"}}, None),
    ({"final": {"eval/accuracy": True}}, None),
    ({"final": {"n" * 300: 1.0}}, None),
    ({"final": ["eval/accuracy", 0.99]}, None),
    ({"metrics": {f"m{i}": 1 for i in range(300)}}, None),
    ({"history": "x" * 100_000}, None),
    ({"status": "s" * 100_000}, None),
    ({"status": "running"}, None),           # a succeeded job whose item never said finished (after the wait)
    ({"attempt": "1"}, None),
    ({"updated_at": "yesterday"}, None),
    ({"trial_id": None}, None),
    ({"owner": "me"}, "unread"),             # outside the contract: never read (the reads project)
    ({"job": "j" * 2000}, None),
])
@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_garbage_metrics_are_ignored_with_a_logged_reason_and_never_fail_the_tick(world, caplog, garbage, recorded):
    w = world
    caplog.set_level(logging.WARNING)
    job0, job1 = w.jobs
    report_final_metrics(w.aws, w.settings, job1, {"eval/accuracy": 0.5})
    item = {"pod": f"{job0}-worker-0", "job": job0, "trial_id": f"{w.sweep_id}-0", "attempt": 1, "world_size": 1,
            "metrics": {"eval/accuracy": GOOD}, "final": {"eval/accuracy": GOOD}, "status": "finished",
            "updated_at": 1_800_000_000}
    item.update(garbage)
    put_item(w, **{k: v for k, v in item.items() if v is not None})
    succeed_all(w)
    if item["status"] == "running":  # not final yet: waits for it (METRICS_WAIT_S), then records without
        w.clock.advance(METRICS_WAIT_S + 1)
        w.dispatcher.tick()
    trials = {t["index"]: t for t in w.store.trials(w.sweep_id)}
    # THEN both trials are recorded SUCCEEDED, trial 1 with its metrics
    assert [trials[i]["state"] for i in (0, 1)] == ["SUCCEEDED", "SUCCEEDED"]
    assert trials[1]["metrics"] == {"eval/accuracy": 0.5}
    logged = [e for e in events(caplog, "metrics-ignored") + events(caplog, "metrics-missing") if e.get("job") == job0]
    assert all(len(e["reason"]) < 2000 for e in logged)  # a reason, never a dump of the value
    assert bool(logged) is (recorded != "unread")
    if recorded is None:
        assert "metrics" not in trials[0]
        assert w.store.get_sweep(w.sweep_id)["best"]["trial_index"] == 1
    elif recorded == "unread":
        assert trials[0]["metrics"] == {"eval/accuracy": GOOD}
    elif recorded == "65 names":
        assert len(trials[0]["metrics"]) == 64 and trials[0]["metrics"]["eval/accuracy"] == GOOD
    else:
        assert trials[0]["metrics"] == recorded


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_without_the_metrics_table_the_trial_waits_for_it_and_then_records_its_metrics(world):
    w = world
    report_final_metrics(w.aws, w.settings, w.jobs[0], {"eval/accuracy": GOOD})
    report_final_metrics(w.aws, w.settings, w.jobs[1], {"eval/accuracy": 0.5})
    dynamodb = w.aws.client("dynamodb")
    saved = [dynamodb.get_item(TableName=w.settings.metrics_table, Key={"pod": {"S": f"{job}-worker-0"}})["Item"]
             for job in w.jobs]
    dynamodb.delete_table(TableName=w.settings.metrics_table)
    for job in w.jobs:
        w.kube.set_job_phase(w.kind, job, JobPhase.SUCCEEDED)
    # WHEN a tick finds the jobs succeeded but no metrics table
    report = w.dispatcher.tick()
    # THEN the sweep is held with an error naming the setting, the trials not recorded without metrics
    assert any("SWEEPQ_METRICS_TABLE" in e and "dispatcher bootstrap" in e for e in report.errors), report.errors
    assert {t["state"] for t in w.store.trials(w.sweep_id)} == {"LAUNCHED"}
    # WHEN bootstrap creates it (and the trainers' items are there) THEN the next tick records them
    bootstrap(w.aws, w.settings)
    for item in saved:
        dynamodb.put_item(TableName=w.settings.metrics_table, Item=item)
    report = w.dispatcher.tick()
    assert not report.errors, report.errors
    trials = {t["index"]: t for t in w.store.trials(w.sweep_id)}
    assert (trials[0]["metrics"], trials[1]["metrics"]) == ({"eval/accuracy": GOOD}, {"eval/accuracy": 0.5})
    assert w.store.get_sweep(w.sweep_id)["best"]["value"] == GOOD


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_numbers_keep_their_value_from_the_metrics_table_to_the_trial_item(world):
    w = world
    report_final_metrics(w.aws, w.settings, w.jobs[0], {"eval/accuracy": Decimal("0.9412345678901234"),
                                                        "tiny": Decimal("1E-130"), "big": 10**37})
    report_final_metrics(w.aws, w.settings, w.jobs[1], {"eval/accuracy": 0.5})
    succeed_all(w)
    metrics = {t["index"]: t for t in w.store.trials(w.sweep_id)}[0]["metrics"]
    assert metrics == {"eval/accuracy": 0.9412345678901234, "tiny": 1e-130, "big": 10**37}
