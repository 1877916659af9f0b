"""``method: bayes`` in the tick, against moto and the Kubernetes API emulator: each fresh trial's
parameters are W&B's engine's suggestion, stored with the claim that reserves the index; every
create of the trial (first, re-create after a crash, retry) renders the stored parameters."""

from __future__ import annotations

import json
import math

import pytest
from helpers import Clock, bootstrap, make_dispatcher, report_final_metrics, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.backends import make_backend
from dispatcher.core.command import render_command
from dispatcher.core.jobs import LABEL_TRIAL_INDEX, JobPhase
from dispatcher.core.spec import validate_sweep
from dispatcher.settings import Settings
from dispatcher.suggesting import MAX_SUGGESTIONS_PER_SWEEP

pytest.importorskip("sweeps")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
KIND = "pytorchjob"


def bayes_spec(name: str = "bo", run_cap: int = 6) -> dict:
    return {"name": name, "method": "bayes", "run_cap": run_cap, "program": "train.py",
            "metric": {"name": "eval/loss", "goal": "minimize"},
            "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
                           "layers": {"values": [1, 2, 4]}, "epochs": {"value": 2}}}


def loss(params: dict) -> float:
    return (math.log10(params["lr"]) + 3) ** 2 + 0.1 * abs(params["layers"] - 2)


class World:
    def __init__(self, aws, kube, **settings) -> None:
        self.aws, self.kube = aws, kube
        self.settings = Settings.load({}, backend=KIND, namespace="sweepq", **{"max_running": 2, **settings})
        self.store, self.queue = bootstrap(aws, self.settings)
        self.clock = Clock()
        self.backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")

    def dispatcher(self, backend=None):
        return make_dispatcher(self.aws, self.settings, {KIND: backend or self.backend}, self.clock, self.queue)

    def jobs(self) -> list[dict]:
        return self.kube.list_objects(KIND)

    def params(self, sweep_id: str) -> dict[int, dict]:
        return {int(t["index"]): json.loads(t["params"]) for t in self.store.trials(sweep_id)}

    def finish(self, job: dict, sweep_id: str, value: float | None) -> None:
        """What the trainer and the cluster do: its pod's final metrics in the metrics table (C1), the
        job succeeded (the tick copies the metrics onto the trial item, where bayes reads them)."""
        if value is not None:
            report_final_metrics(self.aws, self.settings, job["metadata"]["name"], {"eval/loss": value})
        self.kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.SUCCEEDED)


def rendered(job: dict) -> str:
    return json.dumps(job["spec"])


def assert_job_has(job: dict, spec: dict, params: dict) -> None:
    argv = render_command(validate_sweep(spec), params).argv
    text = rendered(job)
    for arg in argv:
        if arg.startswith("--"):
            assert json.dumps(arg) in text, (arg, text[:400])


@pytest.fixture
def world(aws, kube):
    return World(aws, kube)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_bayes_sweep_is_accepted_and_its_trials_get_stored_suggestions_that_move_with_results(world) -> None:
    w = world
    spec = bayes_spec(run_cap=6)
    sid = submit(w.queue, spec)
    d = w.dispatcher()
    report = d.tick()
    assert report.accepted == 1 and report.launched == 2 and not report.errors, report.errors
    first = w.params(sid)
    assert sorted(first) == [0, 1] and first[0] != first[1]
    for params in first.values():
        assert 1e-5 <= params["lr"] <= 1e-1 and params["layers"] in (1, 2, 4) and params["epochs"] == 2
    by_index = {int(j["metadata"]["labels"][LABEL_TRIAL_INDEX]): j for j in w.jobs()}
    for index, params in first.items():
        assert_job_has(by_index[index], spec, params)  # the job renders exactly the stored suggestion
    seen = dict(first)
    for _ in range(12):
        for job in w.jobs():
            if not phase_of(job).terminal:
                index = int(job["metadata"]["labels"][LABEL_TRIAL_INDEX])
                w.finish(job, sid, loss(seen[index]))
        w.clock.advance(60)
        report = d.tick()
        assert not report.errors, report.errors
        stored = w.params(sid)
        for index, params in seen.items():
            assert stored[index] == params  # a stored suggestion never changes
        seen = stored
        if w.store.get_sweep(sid)["state"] == "COMPLETED":
            break
    meta = w.store.get_sweep(sid)
    assert meta["state"] == "COMPLETED" and meta["succeeded"] == 6
    assert sorted(seen) == list(range(6))
    assert len({json.dumps(p, sort_keys=True) for p in seen.values()}) == 6  # never the same point twice
    assert meta["best"]["value"] == pytest.approx(min(loss(p) for p in seen.values()))
    names = [j["metadata"]["name"] for j in w.jobs()]
    assert len(names) == len(set(names)) == 6
    # every finished trial keeps its metric's summary (no bands: no early_terminate), what bayes fits on
    for trial in w.store.trials(sid):
        kept = json.loads(trial["metric_summary"])
        assert kept["metric"] == "eval/loss" and "bands" not in kept
        assert kept["summary"] == pytest.approx(float(trial["metrics"]["eval/loss"]))


def test_a_retried_bayes_trial_reuses_its_stored_parameters(aws, kube) -> None:
    w = World(aws, kube, max_running=1)
    spec = bayes_spec(run_cap=2)
    sid = submit(w.queue, spec, {"max_retries": 1})
    d = w.dispatcher()
    d.tick()
    (job,) = w.jobs()
    params = w.params(sid)[0]
    w.kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.FAILED, reason="OOMKilled")
    w.clock.advance(60)
    d.tick()  # attempt 1 failed → WAITING
    w.clock.advance(60)
    d.tick()
    retry = [j for j in w.jobs() if j["metadata"]["name"] == f"{sid}-0-a2"]
    assert retry, [j["metadata"]["name"] for j in w.jobs()]
    assert w.params(sid) == {0: params}
    assert_job_has(retry[0], spec, params)


class CreateFails:
    """A backend whose first create fails after the claim committed (a crash between the two)."""

    def __init__(self, backend) -> None:
        self.backend, self.kind, self.failed = backend, backend.kind, False

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def submit(self, dryrun):
        if not self.failed:
            self.failed = True
            raise RuntimeError("injected: the process died before the create")
        return self.backend.submit(dryrun)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_claimed_bayes_trial_whose_create_failed_is_recreated_with_its_stored_parameters(world) -> None:
    w = world
    spec = bayes_spec(run_cap=2)
    sid = submit(w.queue, spec)
    w.dispatcher(CreateFails(w.backend)).tick()
    stored = w.params(sid)
    # both trials claimed with their suggestions (the sweep's one transaction), the first create
    # failed, so the sweep created nothing more this tick: both jobs missing
    assert sorted(stored) == [0, 1] and w.jobs() == []
    report = w.dispatcher().tick()  # a fresh process: the relaunches render the stored parameters
    assert not report.errors, report.errors
    after = w.params(sid)
    assert after == stored
    for job in w.jobs():
        assert_job_has(job, spec, after[int(job["metadata"]["labels"][LABEL_TRIAL_INDEX])])
    assert sorted(j["metadata"]["name"] for j in w.jobs()) == [f"{sid}-0-a1", f"{sid}-1-a1"]


def test_suggestions_per_tick_are_bounded_by_the_free_slots_and_the_budget(aws, kube) -> None:
    w = World(aws, kube, max_running=MAX_SUGGESTIONS_PER_SWEEP + 3)
    sid = submit(w.queue, bayes_spec(run_cap=MAX_SUGGESTIONS_PER_SWEEP + 3))
    report = w.dispatcher().tick()
    assert not report.errors, report.errors
    assert report.launched == MAX_SUGGESTIONS_PER_SWEEP  # the rest wait for the next tick
    assert sorted(w.params(sid)) == list(range(MAX_SUGGESTIONS_PER_SWEEP))
    assert w.store.get_sweep(sid)["cursor"] == MAX_SUGGESTIONS_PER_SWEEP
