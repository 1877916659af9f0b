"""dispatcher.core.history: the summary an ended trial keeps of its metric's history."""

from __future__ import annotations

import json
import math

import pytest

from dispatcher.core import history
from dispatcher.core.hyperband import TrialHistory, bands, from_compact, parse_early_terminate, stop
from dispatcher.core.metrics import MAX_POSITION

METRIC = "eval/loss"


def spec(raw: dict):
    parsed, problems = parse_early_terminate(raw, has_metric=True)
    assert parsed is not None, problems
    return parsed


def test_a_summary_round_trips_as_json_text_and_keeps_only_finite_numbers() -> None:
    kept = history.summarize([1.0, None, 1e200, 0.2, None], metric=METRIC, summary=float("nan"),
                             hyperband=spec({"type": "hyperband", "min_iter": 2, "eta": 2}))
    assert kept == {"metric": METRIC, "n": 3, "min": 0.2, "max": 1e200, "latest": 0.2, "bands": {"2": 1e200}}
    assert history.load(history.dump(kept), metric=METRIC) == {**kept, "bands": {2: 1e200}}
    assert history.engine_history(kept) == (0.2, 1e200, 0.2)


@pytest.mark.parametrize("raw", [None, "", "not json", json.dumps([1]), json.dumps({"metric": "other", "n": 1}),
                                 json.dumps({"metric": METRIC, "n": "1"})])
def test_an_item_without_a_readable_summary_of_this_metric_falls_back(raw) -> None:
    assert history.load(raw, metric=METRIC) is None


def test_no_history_gives_an_empty_engine_history_and_the_old_item_fallback_uses_the_metric() -> None:
    empty = history.summarize([], metric=METRIC)
    assert empty == {"metric": METRIC, "n": 0} and history.engine_history(empty) == ()
    old = history.ended_observation(2, {"lr": 0.1}, "stopped", metric=METRIC, metrics={METRIC: 5.0}, stored=None)
    assert old.history == (5.0,) and old.metric == 5.0
    new = history.ended_observation(2, {"lr": 0.1}, "failed", metric=METRIC, metrics=None,
                                    stored=history.dump(history.summarize([3.0, 1.0, 2.0], metric=METRIC,
                                                                          summary=2.0)))
    assert new.history == (1.0, 3.0, 2.0) and new.metric == 2.0


@pytest.mark.parametrize("raw", [{"type": "hyperband", "min_iter": 1, "eta": 1.001},
                                 {"type": "hyperband", "max_iter": 10_000, "s": 1000, "eta": 1.001}])
def test_the_summary_is_bounded_by_the_spec_whatever_the_trial_wrote(raw) -> None:
    # the largest history the reader accepts (positions < MAX_POSITION), values as long as JSON makes them
    values = [math.pi * 10**-(p % 300) for p in range(MAX_POSITION)]
    parsed = spec(raw)
    kept = history.summarize(values, metric=METRIC, summary=values[-1], hyperband=parsed)
    limit = 100 if parsed.min_iter is not None else parsed.s
    assert len(kept["bands"]) <= min(limit, len(set(bands(parsed))))
    # the module's documented bound: ≈ 30 bytes a band, ≤ ~35 KB for the largest spec (1,000 bands)
    assert len(history.dump(kept)) <= 32 * len(kept["bands"]) + 250 <= 35_000


def test_hyperband_decides_the_same_on_kept_bands_as_on_whole_histories() -> None:
    config = {"method": "grid", "metric": {"name": METRIC, "goal": "minimize"},
              "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2}}
    parsed = spec(config["early_terminate"])
    ended = {0: [1.0, 0.1, None, 0.05, 0.04], 1: [0.9, 0.5, 0.45, 0.3], 2: [2.0]}
    running = [TrialHistory(3, True, (1.0, 0.35)), TrialHistory(4, True, (1.0, 0.2, 0.6, 0.7))]
    whole = [TrialHistory(i, False, tuple(v)) for i, v in ended.items()]
    kept = [from_compact(i, history.load(history.dump(history.summarize(v, metric=METRIC, hyperband=parsed)),
                                         metric=METRIC)["bands"]) for i, v in ended.items()]
    kept = [k for k in kept if k.values]
    decided = stop(config=config, trials=[*running, *whole])
    assert decided and decided == stop(config=config, trials=[*running, *kept])
