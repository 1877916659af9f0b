"""``method: bayes`` suggestions from W&B's engine (dispatcher.core.search), with no mocks: the
real ``sweeps.next_runs`` on observations built the way the tick builds them."""

from __future__ import annotations

import json
import math

import pytest

from dispatcher.core.expand import SuggestedTrial
from dispatcher.core.search import (
    EngineError,
    Observation,
    default_seed,
    engine_config,
    engine_missing,
    observation,
    outcome_of,
    suggest,
)
from dispatcher.core.spec import validate_sweep

np = pytest.importorskip("numpy")
sweeps = pytest.importorskip("sweeps")
# W&B's engine silences sklearn's GP convergence warnings at import; pytest's own filters undo that.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
from sweeps import RunState, SweepRun, next_runs  # noqa: E402
from sweeps.bayes_search import _construct_gp_data, bayes_baseline_validate_and_fill  # noqa: E402

from dispatcher.core.search import _run  # noqa: E402


def gp_data(runs, sweep):
    """W&B's own GP inputs for these runs (what its bayes fits): (params, X, current_X, y, warnings)."""
    return _construct_gp_data(runs, bayes_baseline_validate_and_fill(engine_config(sweep)))

SPACE = {
    "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "layers": {"min": 1, "max": 6},
    "optimizer": {"values": ["adamw", "sgd"]},
    "sched": {"parameters": {"warmup": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
                             "kind": {"value": "cosine"}}},
    "epochs": {"value": 3},
}


def bayes(parameters=None, **metric) -> object:
    return validate_sweep({"method": "bayes", "run_cap": 50, "program": "train.py",
                           "metric": {"name": "loss", "goal": "minimize", **metric},
                           "parameters": parameters or SPACE})


def loss(params: dict) -> float:
    """A smooth objective with its optimum at lr = 1e-3, layers = 4, adamw."""
    return (math.log10(params["lr"]) + 3) ** 2 + 0.1 * (params.get("layers", 4) - 4) ** 2 + (params.get("optimizer") == "sgd")


def finished(sweep, index: int, params: dict) -> Observation:
    value = loss(params)
    return observation(index, params, "finished", metric_name="loss", metrics={"loss": value},
                       history={"0": {"loss": value + 1}, "1": {"loss": value}})


def run_loop(sweep, n: int, *, start: list[Observation] | None = None) -> list[Observation]:
    obs = list(start or [])
    while len(obs) < n:
        [s] = suggest(sweep, observations=obs, indices=[len(obs)], seed=default_seed(sweep, len(obs)))
        obs.append(finished(sweep, s.index, s.params))
    return obs


def test_engine_is_installed_here() -> None:
    assert engine_missing() is None


def test_a_suggestion_lies_in_the_space_with_the_files_types_and_nesting() -> None:
    sweep = bayes()
    suggestions = suggest(sweep, observations=[], indices=[0, 1, 2], seed=1)
    assert [s.index for s in suggestions] == [0, 1, 2]
    for s in suggestions:
        p = s.params
        assert set(p) == {"lr", "layers", "optimizer", "sched", "epochs"}
        assert type(p["lr"]) is float and 1e-5 <= p["lr"] <= 1e-1
        assert type(p["layers"]) is int and 1 <= p["layers"] <= 6
        assert p["optimizer"] in ("adamw", "sgd")
        assert p["sched"]["kind"] == "cosine" and p["epochs"] == 3
        assert type(p["sched"]["warmup"]) is int and p["sched"]["warmup"] % 10 == 0
        json.dumps(p)  # persisted as JSON with the claim: plain Python values only
        json.dumps(s.info)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_same_observations_and_seed_give_the_same_suggestions_and_numpy_is_left_alone() -> None:
    sweep = bayes()
    obs = run_loop(sweep, 5)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = suggest(sweep, observations=obs, indices=[5, 6], seed=99)
    b = suggest(sweep, observations=obs, indices=[5, 6], seed=99)
    c = suggest(sweep, observations=obs, indices=[5, 6], seed=100)
    assert [s.params for s in a] == [s.params for s in b]
    assert [s.params for s in a] != [s.params for s in c]
    assert (np.random.get_state()[1] == before).all()


def test_suggest_is_w_and_bs_next_runs_on_the_same_runs() -> None:
    # GIVEN observations of every outcome
    sweep = bayes(impute="latest")
    obs = run_loop(sweep, 4) + [
        observation(4, {**obs_params(), "lr": 0.05}, "failed", metric_name="loss", history={"0": {"loss": 9.0}}),
        observation(5, obs_params(), "running", metric_name="loss", history={"0": {"loss": 3.0}}),
        observation(6, {**obs_params(), "layers": 1}, "pending", metric_name="loss"),
    ]
    # WHEN sweepq suggests, and W&B's engine is called by hand on the runs W&B would hold
    ours = suggest(sweep, observations=obs, indices=[7], seed=5)
    runs = [SweepRun(name=str(o.index), state={"finished": RunState.finished, "failed": RunState.failed,
                                               "running": RunState.running, "pending": RunState.pending}[o.outcome],
                     config={k: {"value": v} for k, v in o.params.items()},
                     summary_metrics={"loss": o.metric} if o.metric is not None else {},
                     history=[{"loss": v} for v in o.history if v is not None]) for o in obs]
    np.random.seed(5)
    [theirs] = next_runs(engine_config(sweep), runs, validate=False, n=1)
    # THEN the same parameters
    assert ours[0].params == {k: _py(v["value"]) for k, v in theirs.config.items()}


def obs_params() -> dict:
    return {"lr": 1e-3, "layers": 3, "optimizer": "adamw", "sched": {"warmup": 20, "kind": "cosine"}, "epochs": 3}


def _py(value):
    if isinstance(value, dict):
        return {k: _py(v) for k, v in value.items()}
    return value.item() if type(value).__module__ == "numpy" else value


@pytest.mark.parametrize(("impute", "expected"), [("worst", 7.0), ("latest", 4.0), ("best", 2.0)])
def test_failed_and_stopped_trials_count_as_metric_impute_says(impute: str, expected: float) -> None:
    # GIVEN a finished trial (loss 7 at its worst... best 5) and a failed one with history 2, 4
    sweep = bayes(parameters={"x": {"min": 0.0, "max": 1.0}}, impute=impute)
    obs = [
        observation(0, {"x": 0.2}, "finished", metric_name="loss", metrics={"loss": 5.0}, history={"0": {"loss": 7.0}}),
        observation(1, {"x": 0.8}, "failed", metric_name="loss", history={"0": {"loss": 2.0}, "1": {"loss": 4.0}}),
        observation(2, {"x": 0.5}, "stopped", metric_name="loss", history={"0": {"loss": 2.0}, "1": {"loss": 4.0}}),
    ]
    runs = [_run(o, "loss") for o in obs]
    # WHEN W&B's engine builds its GP data from the runs sweepq hands it
    _, _, current, y, _ = gp_data(runs, sweep)
    # THEN the finished one counts its best value, the failed and stopped ones what impute says
    assert list(y) == [5.0, expected, expected]
    assert len(current) == 0


def test_running_and_claimed_trials_are_fantasised_unless_impute_while_running() -> None:
    space = {"x": {"min": 0.0, "max": 1.0}}
    obs = [
        observation(0, {"x": 0.1}, "finished", metric_name="loss", metrics={"loss": 1.0}),
        observation(1, {"x": 0.4}, "running", metric_name="loss", history={"0": {"loss": 3.0}}),
        observation(2, {"x": 0.9}, "pending", metric_name="loss"),
    ]
    runs = [_run(o, "loss") for o in obs]
    _, _, current, y, _ = gp_data(runs, bayes(parameters=space))
    assert list(y) == [1.0] and len(current) == 2
    _, _, current, y, _ = gp_data(runs, bayes(parameters=space, impute_while_running="latest"))
    assert list(y) == [1.0, 3.0] and len(current) == 1


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_suggestions_move_toward_the_better_region() -> None:
    # GIVEN a smooth objective in log(lr) and a fixed seed schedule (deterministic)
    sweep = bayes(parameters={"lr": SPACE["lr"]})
    obs = run_loop(sweep, 16)
    distance = [abs(math.log10(o.params["lr"]) + 3) for o in obs]
    # THEN the last suggestions sit much closer to lr = 1e-3 than the first, prior-like ones
    early, late = sum(distance[:4]) / 4, sum(distance[-6:]) / 6
    assert late < early / 2, (early, late)
    assert min(distance) < 0.2


def test_an_index_that_has_parameters_is_never_suggested_again() -> None:
    sweep = bayes()
    obs = [observation(0, obs_params(), "running", metric_name="loss")]
    with pytest.raises(ValueError, match=r"trial indices \[0\] already have parameters"):
        suggest(sweep, observations=obs, indices=[0], seed=1)
    assert suggest(sweep, observations=obs, indices=[], seed=1) == []


def test_the_engine_refusing_the_observations_is_a_permanent_engine_error() -> None:
    # a stored value outside the space (the engine's value_to_idx raises)
    sweep = bayes(parameters={"opt": {"values": ["a", "b"]}})
    obs = [observation(0, {"opt": "zzz"}, "finished", metric_name="loss", metrics={"loss": 1.0}),
           observation(1, {"opt": "a"}, "finished", metric_name="loss", metrics={"loss": 2.0})]
    with pytest.raises(EngineError, match="method bayes: W&B's engine could not suggest trial 2"):
        suggest(sweep, observations=obs, indices=[2], seed=1)


def test_observations_round_trip_through_their_compact_item() -> None:
    o = observation(3, obs_params(), "failed", metric_name="loss", metrics={"loss": float("nan")},
                    history={"0": {"loss": 1.5}, "2": {"loss": None}})
    assert o.metric is None and o.history == (1.5, None, None)
    assert Observation.from_item(json.loads(json.dumps(o.to_item()))) == o


def test_bayes_trials_cannot_be_computed_from_their_index() -> None:
    sweep = bayes()
    with pytest.raises(SuggestedTrial):
        sweep.trial(0)
    assert sweep.preview(3) == []
    a, b = sweep.example_params(0), sweep.example_params(0)
    assert a == b and 1e-5 <= a["lr"] <= 1e-1  # a prior draw, for rendering checks only
    assert default_seed(sweep, 0) == default_seed(bayes(), 0) != default_seed(sweep, 1)


def test_every_stored_trial_state_has_an_outcome() -> None:
    from dispatcher.core.records import TrialState

    assert {state.value: outcome_of(state.value) for state in TrialState} == {
        "WAITING": "pending", "PENDING": "pending", "LAUNCHED": "pending", "RUNNING": "running",
        "SUCCEEDED": "finished", "FAILED": "failed", "CANCELLED": "cancelled", "LOST": "pending",
        "EARLY_STOPPED": "stopped"}  # a stored state since the tick stops Hyperband losers
    with pytest.raises(ValueError, match="trial state 'BOGUS' has no bayes outcome"):
        outcome_of("BOGUS")
