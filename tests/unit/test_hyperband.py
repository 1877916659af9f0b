"""Hyperband early termination (dispatcher.core.hyperband) against W&B's own ``sweeps.stop_runs``:
the bands, the decisions on seeded random histories, and the compact record of finished trials."""

from __future__ import annotations

import random

import pytest

from dispatcher.core.hyperband import (
    HyperbandSpec,
    TrialHistory,
    bands,
    compact,
    from_compact,
    history_values,
    parse_early_terminate,
    stop,
)

pytest.importorskip("sweeps")
from sweeps import RunState, SweepRun, stop_runs  # noqa: E402

SPECS = [
    {"type": "hyperband", "min_iter": 1},
    {"type": "hyperband", "min_iter": 2, "eta": 2},
    {"type": "hyperband", "min_iter": 3, "eta": 3, "strict": False},
    {"type": "hyperband", "min_iter": 1, "eta": 1.5},
    {"type": "hyperband", "max_iter": 27, "s": 2},
    {"type": "hyperband", "max_iter": 81, "s": 3, "eta": 3, "strict": False},
    {"type": "hyperband", "max_iter": 10, "s": 5, "eta": 2},
    {"type": "hyperband", "max_iter": 5, "s": 2, "eta": 2},
    {"type": "hyperband", "max_iter": 100, "s": 1, "eta": 4.5},
    {"type": "hyperband", "min_iter": 5, "max_iter": 50, "s": 2},  # both: W&B's engine uses max_iter
]


def config(et: dict, goal: str = "minimize") -> dict:
    return {"method": "random", "run_cap": 10, "program": "t.py", "metric": {"name": "loss", "goal": goal},
            "early_terminate": et, "parameters": {"x": {"min": 0.0, "max": 1.0}}}


def wandb_bands(et: dict) -> list[int]:
    run = SweepRun(name="r", state=RunState.running, history=[{"loss": 1.0}])
    stop_runs(config(et), [run])
    return run.early_terminate_info["bands"]


@pytest.mark.parametrize("et", SPECS, ids=lambda et: ",".join(f"{k}={v}" for k, v in et.items() if k != "type"))
def test_bands_are_w_and_bs(et: dict) -> None:
    spec, problems = parse_early_terminate(et, has_metric=True)
    assert not problems
    assert list(bands(spec)) == wandb_bands(et)


def random_trials(rng: random.Random, n: int) -> list[TrialHistory]:
    trials = []
    for i in range(n):
        length = rng.randint(0, 30)
        base, slope = rng.uniform(0, 5), rng.uniform(-0.2, 0.05)
        values = [base + slope * p + rng.gauss(0, 0.3) for p in range(length)]
        values = [None if rng.random() < 0.05 else v for v in values]  # NULL / not reported
        trials.append(TrialHistory(index=i, running=rng.random() < 0.6, values=tuple(values)))
    return trials


def wandb_stops(cfg: dict, trials: list[TrialHistory]) -> set[int]:
    runs = [SweepRun(name=str(t.index), state=RunState.running if t.running else RunState.finished,
                     history=[{"loss": v} for v in t.values if v is not None]) for t in trials]
    return {int(r.name) for r in stop_runs(cfg, runs)}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
def test_decisions_are_w_and_bs_stop_runs(seed: int, goal: str) -> None:
    # GIVEN seeded random histories (gaps included) under every spec
    rng = random.Random(seed)
    trials = random_trials(rng, rng.randint(1, 25))
    for et in SPECS:
        cfg = config(et, goal)
        # WHEN sweepq decides and W&B's engine decides on the same runs
        ours = stop(config=cfg, trials=trials)
        # THEN the same running trials are stopped, and only running ones
        assert {d.index for d in ours} == wandb_stops(cfg, trials), et
        assert all(trials[d.index].running for d in ours)


def test_the_docstring_example_of_stop_runs() -> None:
    # W&B's own example (sweeps.stop_runs docstring). Bands 1 and 2; the band-2 threshold is the
    # median of 9, 10, 8, 7, 6 = 8: b (10 at position 1) stops; c (8) is not worse, so it goes on.
    cfg = config({"type": "hyperband", "max_iter": 5, "eta": 2, "s": 2})
    trials = [
        TrialHistory(0, False, (10.0, 9.0)),
        TrialHistory(1, True, (10.0, 10.0)),
        TrialHistory(2, True, (10.0, 8.0, 8.0)),
        TrialHistory(3, True, (10.0, 7.0, 7.0)),
        TrialHistory(4, False, (10.0, 6.0, 6.0)),
    ]
    [b] = stop(config=cfg, trials=trials)
    assert (b.index, b.band, b.value, b.threshold) == (1, 2, 10.0, 8.0)
    assert b.reason == ("hyperband: loss value at position 1 10 is worse than the band-2 threshold 8 "
                        "(top 1/2 of trials at position 1)")


def test_a_decision_says_band_value_and_threshold_in_the_metrics_own_sign() -> None:
    cfg = config({"type": "hyperband", "min_iter": 2, "eta": 2}, goal="maximize")
    trials = [TrialHistory(0, False, (0.5, 0.9)), TrialHistory(1, False, (0.5, 0.8)),
              TrialHistory(2, True, (0.4, 0.3)), TrialHistory(3, True, (0.6, 0.95))]
    [d] = stop(config=cfg, trials=trials)
    # maximize: values negated like W&B's engine does; the threshold is the top half at position 1
    assert (d.index, d.band, d.value, d.threshold) == (2, 2, 0.3, 0.8)
    assert "value at position 1 0.3 is worse than the band-2 threshold 0.8" in d.reason


@pytest.mark.parametrize("seed", range(8))
def test_a_finished_trials_compact_record_decides_the_same(seed: int) -> None:
    # GIVEN finished trials kept only as compact records (a few numbers each)
    rng = random.Random(100 + seed)
    trials = random_trials(rng, 20)
    for et in SPECS:
        spec = HyperbandSpec.model_validate(et)
        kept = [t if t.running else from_compact(t.index, compact(spec, t.values)) for t in trials]
        # THEN every decision is the one the whole histories give
        assert stop(config=config(et), trials=kept) == stop(config=config(et), trials=trials)
        for t in trials:
            assert len(compact(spec, t.values)) <= len(bands(spec))


def test_history_values_keeps_positions_and_gaps() -> None:
    history = {"0": {"loss": 1.0}, "1": {"loss": None}, "3": {"loss": 0.5, "acc": 0.9}, "x": {"loss": 9},
               "4": {"acc": 1.0}, "5": "not-a-row"}
    assert history_values(history, "loss") == (1.0, None, None, 0.5, None)
    assert history_values({}, "loss") == () and history_values(None, "loss") == ()
    # a retried attempt rewrites the same positions (C1): nothing shifts
    retried = {**history, "3": {"loss": 0.5}, "4": {"loss": 0.4}}
    assert history_values(retried, "loss")[:4] == history_values(history, "loss")[:4]


def test_whole_floats_are_taken_where_the_engine_needs_ints() -> None:
    spec, problems = parse_early_terminate({"type": "hyperband", "max_iter": 27.0, "s": 2.0}, has_metric=True)
    assert not problems and spec.s == 2 and spec.max_iter == 27 and spec.strict is True and spec.eta == 3
    trials = [TrialHistory(0, False, (1.0,) * 9), TrialHistory(1, True, (5.0,) * 9)]
    assert [d.index for d in stop(config=config({"type": "hyperband", "max_iter": 27.0, "s": 2.0}), trials=trials)] == [1]
