"""rev14 — sweep files a careless or hostile teammate can send that sweepq accepts for
``method: bayes`` and W&B's engine then turns into non-finite, out-of-range parameters or into
minutes of GP fitting inside one tick (which serialises every sweep of the deployment).

dispatcher/core/params.py promises: "``normal`` with ``sigma: 0`` is accepted and always gives
``mu`` (W&B's engine gives NaN there)". dispatcher/suggesting.py bounds the *number* of suggestions
per tick (MAX_SUGGESTIONS_PER_TICK ≈ "2–25 s of GP fitting"), not the cost of one.
"""

from __future__ import annotations

import math

import pytest

from dispatcher.core.search import suggest
from dispatcher.core.spec import SpecError, validate_sweep

pytest.importorskip("sweeps")
pytestmark = pytest.mark.filterwarnings("ignore")


def bayes(parameters: dict) -> dict:
    return {"name": "bo", "method": "bayes", "run_cap": 20, "program": "train.py",
            "metric": {"name": "eval/loss", "goal": "minimize"}, "parameters": parameters}


def test_bayes_normal_with_sigma_zero_gives_mu_as_params_py_promises_not_nan() -> None:
    sweep = validate_sweep(bayes({"x": {"distribution": "normal", "mu": 0.5, "sigma": 0.0},
                                  "y": {"min": 0.0, "max": 1.0}}))
    got = [s.params["x"] for s in suggest(sweep, observations=[], indices=[0, 1], seed=1)]
    assert all(math.isfinite(v) and v == 0.5 for v in got), f"bayes suggested x = {got} (promised: mu = 0.5)"


@pytest.mark.parametrize("param", [
    {"min": -1e308, "max": 1e308},  # a uniform range whose width overflows
    {"distribution": "log_normal", "mu": 1000.0, "sigma": 1.0},  # exp(1000)
])
def test_an_accepted_bayes_parameter_never_gets_a_non_finite_suggestion(param: dict) -> None:
    # (fixed: such a file is refused at intake, naming the parameter; if accepted, every value is finite)
    try:
        sweep = validate_sweep(bayes({"x": param, "y": {"min": 0.0, "max": 1.0}}))
    except SpecError as exc:
        assert "parameters.x:" in str(exc) and "bayes" in str(exc)
        return
    got = [s.params["x"] for s in suggest(sweep, observations=[], indices=[0, 1], seed=1)]
    # a non-finite value is launched as --x=inf / --x=nan (and lies outside [min, max] for uniform)
    assert all(math.isfinite(v) for v in got), f"accepted {param}, bayes suggested x = {got}"


def test_a_bayes_sweep_with_thousands_of_parameters_is_refused_at_intake() -> None:
    """Measured here (2 shared cores, 20 finished + 4 running trials, one engine call of 4
    suggestions): 5 parameters 3.5 s, 2,000 parameters 35 s, 8,000 parameters 173 s — one such
    sweep spends the tick's whole lease (SWEEPQ_LEASE_SECONDS 240) and every sweep of the
    deployment waits behind it, tick after tick. Nothing bounds the parameter count."""
    spec = bayes({f"p{i}": {"min": 0.0, "max": 1.0} for i in range(8000)})
    with pytest.raises(SpecError):
        validate_sweep(spec)


def test_a_non_finite_engine_answer_is_an_engine_error_naming_the_parameter(monkeypatch) -> None:
    # the last guard behind intake: whatever W&B's engine returns, inf/NaN is never launched
    import sweeps

    from dispatcher.core import search

    sweep = validate_sweep(bayes({"opt": {"parameters": {"lr": {"min": 0.0, "max": 1.0}}}, "y": {"min": 0.0, "max": 1.0}}))
    real = sweeps.next_runs

    def poisoned(*args, **kwargs):
        runs = real(*args, **kwargs)
        runs[0].config["opt"]["value"]["lr"] = float("nan")
        return runs

    monkeypatch.setattr(sweeps, "next_runs", poisoned)
    with pytest.raises(search.EngineError, match=r"opt\.lr = nan for trial 0"):
        suggest(sweep, observations=[], indices=[0], seed=1)


def test_a_nested_sigma_zero_normal_is_the_constant_mu() -> None:
    sweep = validate_sweep(bayes({"g": {"parameters": {"x": {"distribution": "log_normal", "mu": 0.0, "sigma": 0}}},
                                  "y": {"min": 0.0, "max": 1.0}}))
    got = [s.params["g"]["x"] for s in suggest(sweep, observations=[], indices=[0, 1], seed=2)]
    assert got == [1.0, 1.0]
