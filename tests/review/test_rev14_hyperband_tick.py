"""rev14 — what trial code holding the trainer's credentials can do to the hyperband tick.

The trainer policy lets a pod write only its own metrics item (infra/aws/sweepq.yaml OwnPodMetrics),
but everything inside that item is the pod's word. These tests write such items (as the pod would,
through moto) and assert what dispatcher/core/metrics.py and dispatcher/early_stop.py promise:
"Bounds that keep one hostile item from costing the dispatcher more than a normal one", and that
a trial's decision rests on what it reported while it ran. A failing test is a finding.
"""

from __future__ import annotations

import pytest
from helpers import Clock, bootstrap, grid_spec, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.jobs import JobPhase
from dispatcher.core.metrics import MAX_POSITIONS, history_series, verify
from dispatcher.early_stop import values_of
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

pytest.importorskip("sweeps")
KIND = "pytorchjob"


def raw_item(sweep_id: str, index: int, history: dict, *, status: str = "running", attempt: int = 1) -> dict:
    job = job_name(sweep_id, index, attempt)
    return {"pod": f"{job}-worker-0", "job": job, "trial_id": trial_id(sweep_id, index), "attempt": attempt,
            "world_size": 1, "status": status, "updated_at": 1_800_000_000, "metrics": {}, "history": history}


def test_one_history_position_of_nine_digits_does_not_cost_the_tick_a_list_that_long() -> None:
    # GIVEN a pod's own item with ONE history entry, at position 3,000,000 (the position grammar
    # `0|[1-9][0-9]{0,8}` accepts up to 999,999,999; MAX_POSITIONS only bounds how many entries)
    sid = "hb-abcdefgh"
    raw = raw_item(sid, 0, {"3000000": {"eval/loss": 0.5}})
    item = verify(raw, kind=KIND, job=job_name(sid, 0, 1), attempt=1)  # trusted: it is the pod's own item
    # THEN what the tick builds from it (early_stop.values_of → hyperband.stop → one SweepRun row
    # per position) stays within the bound the module promises for one hostile item
    series = history_series(item, "eval/loss")
    assert len(series) <= MAX_POSITIONS, f"one item made a {len(series):,}-entry history (999,999,999 is accepted)"
    assert len(values_of(item, "eval/loss")) <= MAX_POSITIONS
    # (fixed: positions from MAX_POSITION on are not read; the item itself stays valid)
    far = verify(raw_item(sid, 0, {"0": {"eval/loss": 0.9}, "999999999": {"eval/loss": 0.1}}), kind=KIND,
                 job=job_name(sid, 0, 1), attempt=1)
    assert history_series(far, "eval/loss") == [0.9]


# ------------------------------------------------------------------ tick-level


class World:
    def __init__(self, aws, kube, *, max_running: int) -> None:
        self.aws, self.kube, self.clock = aws, kube, Clock()
        self.settings = Settings.load({}, backend=KIND, max_running=max_running, namespace="sweepq")
        self.store, self.queue = bootstrap(aws, self.settings)
        self.metrics = MetricsStore(str(self.settings.metrics_table), aws.client("dynamodb"))
        self.metrics.create_table()
        self.backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")

    def dispatcher(self) -> Dispatcher:
        store = Store(self.settings.table, self.aws.client("dynamodb"), scope=self.settings.dispatcher_scope)
        reader = MetricsStore(str(self.settings.metrics_table), self.aws.client("dynamodb"))
        return Dispatcher(settings=self.settings, store=store, queue=self.queue, backends={KIND: self.backend},
                          clock=self.clock, metrics=reader)

    def write(self, sweep_id: str, index: int, losses: list[float], *, status: str = "running") -> None:
        item = raw_item(sweep_id, index, {str(p): {"eval/loss": v} for p, v in enumerate(losses)}, status=status)
        item["metrics"] = {"eval/loss": losses[-1]}
        item["updated_at"] = self.clock()
        self.aws.client("dynamodb").put_item(TableName=str(self.settings.metrics_table), Item=ser(item))

    def run_all(self) -> None:
        for j in self.kube.list_objects(KIND):
            if not phase_of(j).terminal:
                self.kube.set_job_phase(KIND, j["metadata"]["name"], JobPhase.RUNNING)


def hyperband_spec(n: int) -> dict:
    spec = grid_spec("hb", n, 1, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    spec["metric"] = {"name": "eval/loss", "goal": "minimize"}
    return spec


def test_a_stopped_trials_later_write_does_not_decide_other_trials_fates(aws, kube) -> None:
    """hyperband.py's contract: a terminal trial contributes what it had when it ended (``compact``,
    'a finished trial's metrics item is never read again'). early_stop.py re-reads every ended
    trial's metrics item on every evaluation, so a stopped pod (its SIGTERM grace period, or any
    write that lands after the stop) rewrites the history the others are judged against.
    (Fixed, issue 14: the stop keeps ``metric_summary`` with the compact bands on the trial item.)"""
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec(5))
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    for index, loss in ((0, 0.1), (1, 0.2), (2, 0.9)):
        w.write(sid, index, [1.0, loss])
    w.clock.advance(60)
    report = d.tick()
    assert report.early_stopped == 1 and w.store.get_trial(sid, 2)["state"] == "EARLY_STOPPED"
    assert w.store.get_trial(sid, 1)["state"] == "RUNNING"  # 0.2 is within the top 1/2 at band 2
    # WHEN the stopped trial's pod writes its own item once more (it still holds its credentials
    # until it exits), claiming -5.0 at the band
    w.write(sid, 2, [1.0, -5.0], status="stopped")
    w.run_all()
    w.write(sid, 3, [1.0, 0.15])
    w.clock.advance(60)
    d.tick()
    # THEN trial 1, which passed band 2 on what every trial reported while it ran, is still running
    assert w.store.get_trial(sid, 1)["state"] == "RUNNING", w.store.get_trial(sid, 1).get("reason")


def test_a_trial_that_reported_finished_is_not_recorded_early_stopped(aws, kube) -> None:
    """W&B's stop_runs only stops runs in state running; a run that finished is compared, never
    stopped. Here the trainer wrote its last evaluation with status 'finished' (its process is
    exiting; the pod is not Completed yet) and the tick records it EARLY_STOPPED, deletes its job,
    and keeps 'what it reached' instead of its final metrics (hyperband.py: 'A trial that
    finished before the intent committed stays SUCCEEDED')."""
    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec(3))
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    w.write(sid, 0, [1.0, 0.1])
    w.write(sid, 1, [1.0, 0.2])
    w.write(sid, 2, [1.0, 0.9], status="finished")  # done: all its evaluations, final written
    w.clock.advance(60)
    d.tick()
    state = w.store.get_trial(sid, 2)["state"]
    assert state != "EARLY_STOPPED", "a trial whose trainer reported finished was early-stopped (job deleted)"
