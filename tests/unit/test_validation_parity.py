"""Validation verdicts against W&B's own engine (PyPI ``sweeps``), case by case.

W&B accepts a file when its schema finds no violation (``schema_violations_from_proposed_config``,
what ``SweepConfig`` raises on) *and* its engine can serve it: ``next_runs`` gives a first run and,
with ``early_terminate``, ``stop_runs`` evaluates. sweepq accepts it when ``validate_sweep`` does.

Every case records both verdicts; the test checks each against the live engines, so a change on
either side shows up here. Where the verdicts differ, the case says why sweepq differs on purpose
(the same reasons are in the README's sweep-file section and in the refusal messages).
"""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.core.errors import SpecError
from dispatcher.core.spec import validate_sweep

sweeps = pytest.importorskip("sweeps")
# W&B's engine samples NaN for normal with sigma 0 (scipy warns); that is its verdict, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
from sweeps import next_runs, stop_runs  # noqa: E402
from sweeps.config import schema_violations_from_proposed_config  # noqa: E402

P = {"lr": {"values": [0.1, 0.01]}}  # a plain parameters section
F = {"lr": {"min": 0.0001, "max": 0.1}}  # a continuous one
M = {"name": "loss", "goal": "minimize"}
HB = {"type": "hyperband", "min_iter": 3}

NEVER_ENDS = "sweepq refuses a search that never ends by itself: add run_cap"
DEPRECATED = "W&B's server only warns about v1 log distributions and runs them; sweepq warns too (Sweep.warnings)"
COMMAND = "W&B's agent runs such a command anyway; sweepq refuses what is almost surely a mistake"


def case(cid: str, cfg: dict[str, Any], wandb: bool, ours: bool, why: str = "") -> Any:
    return pytest.param(cfg, wandb, ours, why, id=cid)


def grid(**kw: Any) -> dict[str, Any]:
    return {"method": "grid", "parameters": P, **kw}


def rand(params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"method": "random", "run_cap": 5, "parameters": params, **kw}


def one(param: dict[str, Any], method: str = "random") -> dict[str, Any]:
    return {"method": method, "run_cap": 5, "parameters": {"x": param}}


CASES = [
    # methods
    case("grid", grid(), True, True),
    case("random-no-run-cap", {"method": "random", "parameters": F}, True, False, NEVER_ENDS),
    case("random", rand(F), True, True),
    case("bayes", {"method": "bayes", "run_cap": 5, "metric": M, "parameters": F}, True, True),
    case("bayes-no-metric", {"method": "bayes", "run_cap": 5, "parameters": F}, False, False),
    case("bayes-no-run-cap", {"method": "bayes", "metric": M, "parameters": F}, True, False, NEVER_ENDS),
    case("bayes-constants-only", {"method": "bayes", "run_cap": 5, "metric": M, "parameters": {"a": {"value": 1}}},
         False, False),
    case("method-custom", {"method": "custom", "parameters": P}, False, False),
    case("method-missing", {"parameters": P}, False, False),
    case("method-unknown", {"method": "Grid", "parameters": P}, False, False),
    case("parameters-missing", {"method": "grid"}, False, False),
    case("parameters-empty", {"method": "grid", "parameters": {}}, False, False),
    # parameter forms
    case("values-empty", one({"values": []}), False, False),
    case("values-not-a-list", one({"values": 0.1}), False, False),
    case("constant", one({"value": 3}), True, True),
    case("int-min-max", one({"min": 1, "max": 9}), True, True),
    case("float-min-max", one({"min": 0.5, "max": 1.5}), True, True),
    case("int-min-float-max", one({"min": 1, "max": 2.5}), True, True),
    case("min-not-below-max", one({"min": 2, "max": 1}), False, False),
    case("min-only", one({"min": 2}), False, False),
    case("bool-min-max", one({"min": False, "max": True}), False, False),
    case("values-and-min", one({"values": [1], "min": 0}), False, False),
    case("empty-definition", one({}), False, False),
    case("int-uniform-floats", one({"distribution": "int_uniform", "min": 0.0, "max": 1.0}), False, False),
    case("uniform-ints", one({"distribution": "uniform", "min": 0, "max": 1}), True, True),
    case("q-uniform-default-q", one({"distribution": "q_uniform", "min": 0, "max": 10}), True, True),
    case("q-uniform-q-zero", one({"distribution": "q_uniform", "min": 0, "max": 10, "q": 0}), False, False),
    case("q-uniform-q-negative", one({"distribution": "q_uniform", "min": 0, "max": 10, "q": -1}), False, False),
    case("log-uniform-values", one({"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}), True, True),
    case("log-uniform-values-min-zero", one({"distribution": "log_uniform_values", "min": 0, "max": 1}), False, False),
    case("inv-log-uniform-values", one({"distribution": "inv_log_uniform_values", "min": 1, "max": 10}), True, True),
    case("q-log-uniform-values", one({"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 2}), True, True),
    case("log-uniform-v1", one({"distribution": "log_uniform", "min": -5, "max": 0}), False, True, DEPRECATED),
    case("q-log-uniform-v1", one({"distribution": "q_log_uniform", "min": 0, "max": 5}), False, True, DEPRECATED),
    case("inv-log-uniform-v1", one({"distribution": "inv_log_uniform", "min": 0, "max": 5}), False, True, DEPRECATED),
    case("normal", one({"distribution": "normal"}), True, True),
    case("normal-sigma-zero", one({"distribution": "normal", "mu": 2, "sigma": 0}), True, True),
    case("normal-sigma-negative", one({"distribution": "normal", "sigma": -1}), False, False),
    case("q-normal", one({"distribution": "q_normal", "mu": 10, "sigma": 3, "q": 2}), True, True),
    case("log-normal", one({"distribution": "log_normal", "mu": 0, "sigma": 0.5}), True, True),
    case("q-log-normal", one({"distribution": "q_log_normal", "q": 0.5}), True, True),
    case("beta", one({"distribution": "beta", "a": 2, "b": 5}), True, True),
    case("beta-a-zero", one({"distribution": "beta", "a": 0, "b": 1}), True, False,
         "a beta distribution with a = 0 has no density: W&B's engine samples NaN; sweepq refuses it"),
    case("q-beta", one({"distribution": "q_beta", "q": 0.1}), True, True),
    case("unknown-distribution", one({"distribution": "gaussian"}), False, False),
    case("normal-with-min", one({"distribution": "normal", "min": 0, "max": 1}), False, False),
    # probabilities
    case("probabilities", one({"values": [1, 2], "probabilities": [0.3, 0.7]}), True, True),
    case("categorical-w-probabilities", one({"distribution": "categorical_w_probabilities", "values": [1, 2],
                                             "probabilities": [0.3, 0.7]}), True, True),
    case("categorical-with-probabilities", one({"distribution": "categorical", "values": [1, 2],
                                                "probabilities": [0.3, 0.7]}), False, False),
    case("probabilities-sum-0.9", one({"values": [1, 2], "probabilities": [0.2, 0.7]}), False, False),
    case("probabilities-isclose", one({"values": [1, 2, 3], "probabilities": [0.33333, 0.33333, 0.33333]}), True, True),
    case("probabilities-length", one({"values": [1, 2, 3], "probabilities": [0.5, 0.5]}), False, False),
    case("probabilities-negative", one({"values": [1, 2], "probabilities": [-0.5, 1.5]}), False, False),
    # grid-only rules (W&B's grid engine refuses these at its first run)
    case("grid-probabilities", one({"values": [1, 2], "probabilities": [0.3, 0.7]}, "grid"), False, False),
    case("grid-uniform", one({"min": 0.0, "max": 1.0}, "grid"), False, False),
    case("grid-normal", one({"distribution": "normal"}, "grid"), False, False),
    case("grid-q-uniform", one({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25}, "grid"), True, True),
    case("grid-int-uniform", one({"min": 1, "max": 4}, "grid"), True, True),
    # nesting and names
    case("nested", grid(parameters={"opt": {"parameters": {"lr": {"values": [1, 2]}, "m": {"value": 0.9}}}}), True, True),
    case("nested-extra-key", grid(parameters={"opt": {"parameters": {"lr": {"value": 1}}, "value": 2}}), False, False),
    case("name-with-space", grid(parameters={"learning rate": {"values": [1]}}), False, False),
    case("name-leading-digit", grid(parameters={"1cycle": {"values": [1]}}), False, False),
    case("name-unicode", grid(parameters={"λ": {"values": [1]}}), False, False),
    case("name-leading-dash", grid(parameters={"-rf": {"values": [1]}}), False, False),
    case("name-dots-dashes-underscore", grid(parameters={"_a.b-c": {"values": [1]}}), True, True),
    # top-level keys
    case("run-cap-zero", rand(F, run_cap=0), False, False),
    case("run-cap-negative", rand(F, run_cap=-1), False, False),
    case("run-cap-quoted", rand(F, run_cap="1"), False, False),
    case("run-cap-true", rand(F, run_cap=True), False, False),
    case("run-cap-whole-float", rand(F, run_cap=5.0), True, True),
    case("run-cap-fraction", rand(F, run_cap=5.5), False, False),
    case("run-cap-huge", rand(F, run_cap=10**40), True, False,
         "every number that reaches DynamoDB is bounded: run_cap ≤ 10^9"),
    case("name-over-128", grid(name="n" * 300), True, True),
    case("name-not-a-string", grid(name=12), False, False),
    case("unknown-top-level-key", grid(paramters=P), False, False),
    case("stored-strings", grid(description="d", project="p", entity="e", apiVersion="v1", job="j", image_uri="i"),
         True, True),
    case("program-missing", grid(), True, True),
    case("program-not-a-string", grid(program=42), False, False),
    # command
    case("command-with-int", grid(command=["python", "train.py", "--workers", 4, "${args}"]), True, True),
    case("command-string", grid(command="python train.py ${args}"), False, False),
    case("command-no-boolean-flags", grid(command=["python", "t.py", "${args_no_boolean_flags}"]), True, True),
    case("command-json-file", grid(command=["python", "t.py", "${args_json_file}"]), True, True),
    case("command-without-args", grid(command=["python", "t.py"]), True, False,
         "W&B's agent runs it without the parameters; sweepq refuses a trial that never sees them"),
    case("command-unknown-macro", grid(command=["python", "t.py", "${argz}", "${args}"]), True, False, COMMAND),
    case("command-envvar", grid(command=["python", "${envvar:DATA}", "${args}"]), True, False,
         "${envvar:...} substitutes the W&B agent's environment; a sweepq trial's environment is sweepq's"),
    case("command-null", grid(command=["python", None, "${args}"]), True, False, COMMAND),
    # metric
    case("metric-name-only", grid(metric={"name": "loss"}), True, True),
    case("metric-goal-invalid", grid(metric={"name": "loss", "goal": "minimise"}), False, False),
    case("metric-unknown-key", grid(metric={"name": "loss", "goals": "minimize"}), False, False),
    case("metric-impute-best", grid(metric={"name": "loss", "impute": "best"}), True, True),
    case("metric-impute-invalid", grid(metric={"name": "loss", "impute": "mean"}), False, False),
    case("impute-while-running", grid(metric={"name": "loss", "impute_while_running": "latest"}), True, True),
    case("impute-while-running-bool", grid(metric={"name": "loss", "impute_while_running": False}), False, False),
    case("metric-target", grid(metric={"name": "acc", "goal": "maximize", "target": 0.99}), True, True),
    case("metric-target-string", grid(metric={"name": "acc", "target": "0.99"}), False, False),
    case("metrics-without-custom", grid(metrics=[M, {"name": "acc", "goal": "maximize"}]), False, False),
    case("metric-and-metrics", grid(metric=M, metrics=[M, {"name": "acc"}]), False, False),
    # controller, kind, scheduler
    case("controller-local", grid(controller={"type": "local"}), True, True),
    case("controller-invalid", grid(controller={"type": "remote"}), False, False),
    case("kind-sweep", grid(kind="sweep"), True, True),
    case("kind-other", grid(kind="experiment"), False, False),
    case("scheduler-wandb", grid(scheduler={"engine": "wandb"}), True, True),
    case("scheduler-optuna", rand(F, scheduler={"engine": "optuna", "source": "s.py"}), False, False),
    case("scheduler-and-early-terminate", rand(F, metric=M, scheduler={"engine": "wandb"}, early_terminate=HB),
         False, False),
    # early_terminate
    case("hyperband-min-iter", rand(F, metric=M, early_terminate=HB), True, True),
    case("hyperband-max-iter-s", rand(F, metric=M, early_terminate={"type": "hyperband", "max_iter": 27, "s": 2}),
         True, True),
    case("hyperband-max-iter-no-s", rand(F, metric=M, early_terminate={"type": "hyperband", "max_iter": 27}),
         False, False),
    case("early-terminate-envelope", rand(F, metric=M, early_terminate={"type": "envelope"}), False, False),
    case("hyperband-eta-1", rand(F, metric=M, early_terminate={**HB, "eta": 1}), False, False),
    case("hyperband-eta-1.5", rand(F, metric=M, early_terminate={**HB, "eta": 1.5}), True, True),
    case("hyperband-min-iter-0", rand(F, metric=M, early_terminate={"type": "hyperband", "min_iter": 0}), False, False),
    case("hyperband-not-strict", rand(F, metric=M, early_terminate={**HB, "strict": False}), True, True),
    case("hyperband-extra-key", rand(F, metric=M, early_terminate={**HB, "brackets": 2}), False, False),
    case("hyperband-no-bands", rand(F, metric=M, early_terminate={"type": "hyperband", "max_iter": 2, "s": 2}),
         False, False),
    case("hyperband-no-metric", rand(F, early_terminate=HB), False, False),
    case("hyperband-s-fraction", rand(F, metric=M, early_terminate={"type": "hyperband", "max_iter": 27, "s": 2.5}),
         False, False),
    case("hyperband-s-zero", rand(F, metric=M, early_terminate={"type": "hyperband", "max_iter": 27, "s": 0}),
         False, False),
    case("hyperband-eta-overflows", rand(F, metric=M, early_terminate={**HB, "eta": 1e6}), False, False),
    case("hyperband-with-grid", grid(metric=M, early_terminate=HB), True, True),
    case("hyperband-with-bayes", {"method": "bayes", "run_cap": 5, "metric": M, "parameters": F,
                                  "early_terminate": HB}, True, True),
]


# For every file sweepq refuses, the refusal names the reason the case is about (not another
# problem that happens to be there too).
REASONS = {
    "random-no-run-cap": "run_cap: missing", "bayes-no-metric": "metric: missing", "bayes-no-run-cap": "run_cap: missing",
    "bayes-constants-only": "needs at least one parameter to search", "method-custom": "method: 'custom'",
    "method-missing": "method: missing", "method-unknown": "method: 'Grid' is not a method",
    "parameters-missing": "parameters: missing", "parameters-empty": "parameters: is empty",
    "values-empty": "parameters.x.values: is empty", "values-not-a-list": "parameters.x.values: 0.1 is not a list",
    "min-not-below-max": "min 2 is not less than max 1", "min-only": "has min but no max",
    "bool-min-max": "parameters.x.min: False is not a number", "values-and-min": "parameters.x.min: not a field",
    "empty-definition": "parameters.x: no value, values", "int-uniform-floats": "int_uniform needs integer min/max",
    "q-uniform-q-zero": "parameters.x.q: 0 must be > 0", "q-uniform-q-negative": "parameters.x.q: -1 must be > 0",
    "log-uniform-values-min-zero": "parameters.x.min: 0 must be > 0", "normal-sigma-negative": "sigma: -1 must be ≥ 0",
    "beta-a-zero": "parameters.x.a: 0 must be > 0", "unknown-distribution": "unknown distribution 'gaussian'",
    "normal-with-min": "parameters.x.min: not a field of a normal parameter",
    "categorical-with-probabilities": "distribution categorical takes no probabilities",
    "probabilities-sum-0.9": "sum to 0.9, not 1", "probabilities-length": "must be 3 non-negative numbers",
    "probabilities-negative": "must be 2 non-negative numbers", "grid-probabilities": "make no sense in a grid",
    "grid-uniform": "cannot be gridded", "grid-normal": "distribution normal is continuous and cannot be gridded",
    "nested-extra-key": "a nested group has only `parameters:`", "name-with-space": "'learning rate' is not a usable",
    "name-leading-digit": "'1cycle' is not a usable", "name-unicode": "'λ' is not a usable",
    "name-leading-dash": "'-rf' is not a usable", "run-cap-zero": "run_cap: 0 must be ≥ 1",
    "run-cap-negative": "run_cap: -1 must be ≥ 1", "run-cap-quoted": "run_cap: '1' is not a whole number",
    "run-cap-true": "run_cap: True is not a whole number", "run-cap-fraction": "run_cap: 5.5 is not a whole number",
    "run-cap-huge": "must be ≤ 1000000000", "name-not-a-string": "name: 12 is not a string",
    "unknown-top-level-key": "paramters: unknown key", "program-not-a-string": "program: 42 is not a string",
    "command-string": "is not a list", "command-without-args": "command: has none of ${args}",
    "command-unknown-macro": "unknown macro ${argz}", "command-envvar": "${envvar:DATA}",
    "command-null": "command[1]: None is not a string or a number", "metric-goal-invalid": "metric.goal: 'minimise'",
    "metric-unknown-key": "metric.goals: unknown key", "metric-impute-invalid": "metric.impute: 'mean'",
    "impute-while-running-bool": "metric.impute_while_running: false", "metric-target-string": "metric.target: '0.99'",
    "metrics-without-custom": "needs method: custom", "metric-and-metrics": "cannot both be set",
    "controller-invalid": "controller: 'remote'", "kind-other": "kind: 'experiment'",
    "scheduler-optuna": "scheduler.engine: 'optuna'", "scheduler-and-early-terminate": "scheduler: cannot be used with",
    "hyperband-max-iter-no-s": "early_terminate: give min_iter", "early-terminate-envelope": "early_terminate.type",
    "hyperband-eta-1": "early_terminate.eta: 1 must be > 1", "hyperband-min-iter-0": "early_terminate.min_iter: 0",
    "hyperband-extra-key": "early_terminate.brackets: unknown key", "hyperband-no-bands": "there are no bands",
    "hyperband-no-metric": "early_terminate compares the metric", "hyperband-s-fraction": "early_terminate.s: 2.5",
    "hyperband-s-zero": "early_terminate.s: 0 must be ≥ 1", "hyperband-eta-overflows": "early_terminate.eta: 1000000.0",
}


def wandb_accepts(cfg: dict[str, Any]) -> bool:
    """W&B's verdict: no schema violation, and its engine serves the file."""
    if schema_violations_from_proposed_config(cfg):
        return False
    try:
        next_runs(cfg, [], validate=False, n=1)
        if "early_terminate" in cfg:
            stop_runs(cfg, [], validate=False)
    except Exception:  # noqa: BLE001 - any refusal by the engine is W&B's "no"
        return False
    return True


def sweepq_problems(cfg: dict[str, Any]) -> list[str]:
    try:
        validate_sweep(cfg)
    except SpecError as exc:
        return exc.problems
    return []


def test_there_are_at_least_74_cases() -> None:
    assert len(CASES) >= 74


@pytest.mark.parametrize("cfg,wandb,ours,why", CASES)
def test_verdict_matches_wandb_or_says_why(request: pytest.FixtureRequest, cfg: dict[str, Any], wandb: bool, ours: bool,
                                           why: str) -> None:
    # GIVEN a sweep config WHEN both sides judge it THEN each verdict is the recorded one
    assert wandb_accepts(cfg) is wandb, "W&B's engine changed its verdict: update the case"
    problems = sweepq_problems(cfg)
    assert (not problems) is ours, problems
    if not ours:  # refused for the reason the case is about
        reason = REASONS[request.node.callspec.id]
        assert any(reason in p for p in problems), (reason, problems)
    # AND a difference is deliberate and explained; an agreement needs no explanation
    assert bool(why) is (wandb != ours)


def test_every_refusal_has_its_reason_recorded() -> None:
    refused = {c.id for c in CASES if not c.values[2]}
    assert refused == set(REASONS)


def test_deliberate_differences_are_few() -> None:
    differing = [c for c in CASES if c.values[1] != c.values[2]]
    assert len(differing) <= 12, [c.id for c in differing]
