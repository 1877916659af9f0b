"""Hyperband early termination in the tick, against moto (the sweep table and the trials' metrics
table, CONTRACTS C1) and the Kubernetes API emulator: running trials' histories are read from the
metrics table, W&B's engine decides, a losing trial is recorded EARLY_STOPPED and its whole job
deleted, its slot given to the next trial in the same tick, never retried."""

from __future__ import annotations

import json

import pytest
from helpers import Clock, bootstrap, grid_spec, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.errors import TransientError
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

pytest.importorskip("sweeps")
KIND = "pytorchjob"
HYPERBAND = {"type": "hyperband", "min_iter": 2, "eta": 2}


def hyperband_spec(name: str, n: int) -> dict:
    spec = grid_spec(name, n, 1, early_terminate=HYPERBAND)
    spec["metric"] = {"name": "eval/loss", "goal": "minimize"}
    return spec


class World:
    def __init__(self, aws, kube, *, max_running: int) -> None:
        self.aws, self.kube, self.clock = aws, kube, Clock()
        self.settings = Settings.load({}, backend=KIND, max_running=max_running, namespace="sweepq")
        self.store, self.queue = bootstrap(aws, self.settings)
        self.metrics = MetricsStore(str(self.settings.metrics_table), aws.client("dynamodb"))
        self.metrics.create_table()
        self.backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")

    def dispatcher(self, *, metrics: bool = True, backend=None, session=None) -> Dispatcher:
        aws = session or self.aws
        store = Store(self.settings.table, aws.client("dynamodb"), scope=self.settings.dispatcher_scope)
        reader = MetricsStore(str(self.settings.metrics_table), aws.client("dynamodb")) if metrics else None
        return Dispatcher(settings=self.settings, store=store, queue=self.queue, backends={KIND: backend or self.backend},
                          clock=self.clock, metrics=reader)

    def report(self, sweep_id: str, index: int, losses: list[float], *, attempt: int = 1,
               status: str = "running") -> None:
        """What the trainer's rank 0 writes after each evaluation: its pod's metrics item."""
        job = job_name(sweep_id, index, attempt)
        item = {"pod": f"{job}-worker-0", "job": job, "trial_id": trial_id(sweep_id, index), "attempt": attempt,
                "world_size": 1, "status": status, "updated_at": self.clock(),
                "metrics": {"eval/loss": losses[-1], "epoch": len(losses)},
                "history": {str(p): {"eval/loss": v} for p, v in enumerate(losses)}}
        self.aws.client("dynamodb").put_item(TableName=str(self.settings.metrics_table), Item=ser(item))

    def live_jobs(self) -> dict[str, dict]:
        return {j["metadata"]["name"]: j for j in self.kube.list_objects(KIND) if not phase_of(j).terminal}

    def run_all(self) -> None:
        for name in self.live_jobs():
            self.kube.set_job_phase(KIND, name, JobPhase.RUNNING)

    def trial(self, sweep_id: str, index: int) -> dict:
        return self.store.get_trial(sweep_id, index)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_hyperband_stops_losers_at_the_band_frees_their_slots_and_counts_ended_trials(aws, kube) -> None:
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec("hb", 5))
    d = w.dispatcher()
    assert d.tick().launched == 3  # trials 0, 1, 2
    w.run_all()
    w.clock.advance(60)
    d.tick()  # RUNNING recorded
    # WHEN each reported two evaluations (band 2 of min_iter 2, eta 2) and trial 2 is the worst
    for index, loss in ((0, 0.1), (1, 0.2), (2, 0.9)):
        w.report(sid, index, [1.0, loss])
    w.clock.advance(600)
    report = d.tick()
    # THEN trial 2 is early-stopped (its job deleted) and trial 3 takes its slot in the same tick
    assert not report.errors, report.errors
    assert (report.early_stopped, report.launched) == (1, 1)
    stopped = w.trial(sid, 2)
    assert stopped["state"] == "EARLY_STOPPED" and "band-2 threshold 0.2" in stopped["reason"]
    assert stopped["metrics"]["eval/loss"] == pytest.approx(0.9)  # what it reached, for status and bayes
    assert stopped["attempts"][-1]["outcome"] == "EARLY_STOPPED"
    assert set(w.live_jobs()) == {job_name(sid, i, 1) for i in (0, 1, 3)}
    assert job_name(sid, 2, 1) not in {j["metadata"]["name"] for j in kube.list_objects(KIND)}
    meta = w.store.get_sweep(sid)
    assert meta["early_stopped"] == 1 and "2" not in meta["live"] and meta["failed"] == 0
    # WHEN trial 0 finishes, and trial 3 reports 0.95 at the band: against the running trials alone
    # (0.2, 0.95) it would pass; with the ended ones (0.1 finished, 0.9 stopped) the threshold is 0.9
    w.report(sid, 0, [1.0, 0.1, 0.05], status="finished")
    w.kube.set_job_phase(KIND, job_name(sid, 0, 1), JobPhase.SUCCEEDED)
    w.run_all()
    w.clock.advance(60)
    report = d.tick()
    assert report.finished == 1 and report.early_stopped == 0
    w.report(sid, 3, [1.0, 0.95])
    w.clock.advance(60)
    report = d.tick()
    assert report.early_stopped == 1 and not report.errors, report.errors
    assert w.trial(sid, 3)["state"] == "EARLY_STOPPED" and "threshold 0.9 " in w.trial(sid, 3)["reason"]
    # THEN nothing stopped is ever retried; the sweep completes with its early-stopped count
    for _ in range(6):
        for name in w.live_jobs():
            w.kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
        w.clock.advance(60)
        d.tick()
        if w.store.get_sweep(sid)["state"] == "COMPLETED":
            break
    meta = w.store.get_sweep(sid)
    assert meta["state"] == "COMPLETED" and "2 early-stopped" in meta["reason"]
    assert (meta["succeeded"], meta["early_stopped"], meta["failed"]) == (3, 2, 0)
    names = {j["metadata"]["name"] for j in kube.list_objects(KIND)}
    # the stopped trials' jobs are gone, the others ran once each: no stopped trial was retried
    assert names == {job_name(sid, i, 1) for i in (0, 1, 4)}


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_nothing_is_stopped_before_the_first_band_or_without_a_metrics_reader(aws, kube) -> None:
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec("hb", 3))
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    w.report(sid, 0, [0.1])
    w.report(sid, 1, [0.2])
    w.report(sid, 2, [5.0])  # far worse, but only one evaluation: below the first band (2)
    w.clock.advance(60)
    assert d.tick().early_stopped == 0
    w.report(sid, 0, [0.1, 0.1])
    w.report(sid, 1, [0.2, 0.2])
    w.report(sid, 2, [5.0, 5.0])
    assert w.dispatcher(metrics=False).tick().early_stopped == 0  # no metrics table wired: nothing read
    report = d.tick()
    assert report.early_stopped == 1 and w.trial(sid, 2)["state"] == "EARLY_STOPPED"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_metrics_item_of_another_attempt_cannot_stop_a_trial(aws, kube) -> None:
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec("hb", 3))
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    w.report(sid, 0, [0.1, 0.1])
    w.report(sid, 1, [0.2, 0.2])
    w.report(sid, 2, [5.0, 5.0], attempt=2)  # not trial 2's live attempt: never trusted for it
    assert d.tick().early_stopped == 0
    assert w.trial(sid, 2)["state"] == "RUNNING"
    w.report(sid, 2, [5.0, 5.0])  # its own attempt's item: now it is stopped
    assert d.tick().early_stopped == 1


def test_ended_trials_keep_their_history_summary_and_their_metrics_items_are_never_read_again(aws, kube) -> None:
    """hyperband.py step 4 / dispatcher.core.history: a trial that ends — succeeded, failed, stopped —
    keeps the metric's history as the tick last read it on its trial item (``metric_summary``, in
    the transition's own transaction); evaluations then read only the running trials' items."""
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec("hb", 5), {"max_retries": 0})
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    # WHEN trial 0 finishes (1.0, 0.1, 0.3) and trial 1 fails after reporting 1.0, 0.5, 0.4
    w.report(sid, 0, [1.0, 0.1, 0.3], status="finished")
    w.kube.set_job_phase(KIND, job_name(sid, 0, 1), JobPhase.SUCCEEDED)
    w.report(sid, 1, [1.0, 0.5, 0.4], status="failed")
    w.kube.set_job_phase(KIND, job_name(sid, 1, 1), JobPhase.FAILED)
    w.clock.advance(60)
    report = d.tick()
    assert (report.finished, report.failed) == (1, 1), report.as_dict()
    # THEN each trial item keeps its summary: extrema, latest, the W&B summary value, band values
    done = json.loads(w.trial(sid, 0)["metric_summary"])
    assert done == {"metric": "eval/loss", "n": 3, "min": 0.1, "max": 1.0, "latest": 0.3, "summary": 0.3,
                    "bands": {"2": 0.1}}
    failed = json.loads(w.trial(sid, 1)["metric_summary"])
    assert failed["n"] == 3 and failed["latest"] == 0.4 and failed["bands"] == {"2": 0.5}
    # WHEN a running trial reaches the band, the ended pods rewrite their items (a late flush)
    w.report(sid, 0, [1.0, 0.01, 0.3], status="finished")
    w.report(sid, 1, [1.0, 0.02], status="failed")
    w.run_all()
    for index, loss in ((2, 0.3), (3, 0.35), (4, 0.6)):
        w.report(sid, index, [1.0, loss])
    asked: list[str] = []
    read = d.metrics.read  # type: ignore[union-attr]

    def spy(refs, **kw):
        refs = list(refs)
        asked.extend(job for _, job, _ in refs)
        return read(refs, **kw)

    d.metrics.read = spy  # type: ignore[union-attr,method-assign]
    w.clock.advance(60)
    d.tick()
    # THEN the evaluation read no ended trial's item, and judged on the kept values: band 2 holds
    # 0.1, 0.5 (ended) and 0.3, 0.35, 0.6 — threshold 0.35, only trial 4 is stopped (on the late
    # writes, 0.01 and 0.02, the threshold would be 0.3 and trial 3 stopped too)
    assert not {job_name(sid, 0, 1), job_name(sid, 1, 1)} & set(asked), asked
    assert [w.trial(sid, i)["state"] for i in (2, 3, 4)] == ["RUNNING", "RUNNING", "EARLY_STOPPED"]
    assert "threshold 0.35" in w.trial(sid, 4)["reason"]
    assert json.loads(w.trial(sid, 4)["metric_summary"])["bands"] == {"2": 0.6}


def test_a_history_read_that_fails_never_holds_a_trials_end_and_the_trial_is_read_as_before(aws, kube) -> None:
    """The summary of a failed trial's history comes from one batched read when it ends; a read
    DynamoDB refuses leaves it without one (the transition is written all the same), and hyperband
    then reads its metrics item at each evaluation, as for items stored before summaries existed."""
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec("hb", 4), {"max_retries": 0})
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    w.report(sid, 1, [1.0, 0.5], status="failed")
    w.kube.set_job_phase(KIND, job_name(sid, 1, 1), JobPhase.FAILED)
    read = d.metrics.read  # type: ignore[union-attr]
    asked: list[str] = []

    def refused(refs, **kw):
        raise TransientError("throttled")

    d.metrics.read = refused  # type: ignore[union-attr,method-assign]
    w.clock.advance(60)
    report = d.tick()
    assert report.failed == 1 and w.trial(sid, 1)["state"] == "FAILED"
    assert "metric_summary" not in w.trial(sid, 1)

    def spy(refs, **kw):
        refs = list(refs)
        asked.extend(job for _, job, _ in refs)
        return read(refs, **kw)

    d.metrics.read = spy  # type: ignore[union-attr,method-assign]
    w.run_all()
    for index, loss in ((0, 0.1), (2, 0.9)):
        w.report(sid, index, [1.0, loss])
    w.clock.advance(60)
    d.tick()
    assert job_name(sid, 1, 1) in asked  # the fallback: its item is read, its 0.5 counts at band 2
    assert w.trial(sid, 2)["state"] == "EARLY_STOPPED" and "threshold 0.5 " in w.trial(sid, 2)["reason"]
