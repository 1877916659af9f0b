"""bayes and hyperband sweep files at the dispatcher's intake.

A bayes sweep is accepted and its first trials are claimed with suggested parameters (the tick
side is tested in test_bayes_tick.py); a dispatcher without W&B's engine refuses it with the
reason and the fix; a sweep with a valid ``early_terminate`` runs (the block stored).
"""

from __future__ import annotations

import json

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.settings import Settings

KIND = "pytorchjob"


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    return store, queue, kube, make_dispatcher(aws, settings, {KIND: backend}, Clock(), queue)


def test_a_bayes_sweep_is_accepted_and_claims_suggested_trials(world) -> None:
    pytest.importorskip("sweeps")
    store, queue, kube, dispatcher = world
    spec = {"name": "bo", "method": "bayes", "run_cap": 4, "program": "train.py",
            "metric": {"name": "eval/loss"}, "parameters": {"lr": {"min": 0.0001, "max": 0.1}}}
    sweep_id = submit(queue, spec)
    report = dispatcher.tick()
    assert report.accepted == 1 and report.launched == 3 and not report.errors, report.errors
    assert store.get_sweep(sweep_id)["method"] == "bayes"
    lrs = [json.loads(t["params"])["lr"] for t in store.trials(sweep_id)]
    assert len(set(lrs)) == 3 and all(0.0001 <= lr <= 0.1 for lr in lrs)
    assert len(kube.list_objects(KIND)) == 3


def test_without_the_engine_a_bayes_sweep_is_refused_with_the_fix(world, monkeypatch) -> None:
    store, queue, kube, dispatcher = world
    monkeypatch.setattr("dispatcher.intake.engine_missing", lambda: "W&B's search engine is not installed "
                        "on this dispatcher (sweeps) — install the extra: pip install 'sweepq[bayes]'")
    spec = {"name": "bo", "method": "bayes", "run_cap": 4, "program": "train.py",
            "metric": {"name": "eval/loss"}, "parameters": {"lr": {"min": 0.0001, "max": 0.1}}}
    sweep_id = submit(queue, spec)
    report = dispatcher.tick()
    assert report.rejected == 1
    meta = store.get_sweep(sweep_id)
    assert meta["state"] == "REJECTED" and "method: bayes" in meta["reason"] and "sweepq[bayes]" in meta["reason"]
    assert kube.list_objects(KIND) == []


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_sweep_with_hyperband_runs_with_the_block_stored(world) -> None:
    store, queue, kube, dispatcher = world
    spec = grid_spec("hb", 2, 1, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 2})
    sweep_id = submit(queue, spec)
    report = dispatcher.tick()
    assert report.accepted == 1 and report.launched == 2
    assert store.get_spec(sweep_id)["early_terminate"] == {"type": "hyperband", "min_iter": 2, "eta": 2}
    assert len(kube.list_objects(KIND)) == 2
