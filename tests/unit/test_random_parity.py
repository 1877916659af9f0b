"""Random search draws from W&B's distributions: support, quantization, value types and the
distribution itself (two-sample KS for continuous parameters, chi-square for discrete ones),
against ``sweeps.random_search_next_runs``. Seeds are fixed on both sides, so every statistic is
the same on every run: the thresholds cannot flake, and a wrong parameterisation (exponents for
values, a dropped quantization, a shifted range) fails by orders of magnitude.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from dispatcher.core.expand import Expansion
from dispatcher.core.params import parse_parameters

np = pytest.importorskip("numpy")
stats = pytest.importorskip("scipy.stats")
pytest.importorskip("sweeps")
from sweeps.random_search import random_search_next_runs  # noqa: E402

N = 600
P_MIN = 1e-3  # with fixed seeds a test statistic is a constant; a wrong distribution gives p ~ 1e-30

PARAMS = {
    "categorical": {"values": ["a", "b", "c", "d"]},
    "categorical-mixed": {"values": [1, "x", 2.5, None, True]},
    "categorical-lists": {"values": [[1, 2], [3], {"k": 1}]},
    "categorical-single": {"values": [7]},
    "categorical-w-probabilities": {"values": ["a", "b", "c"], "probabilities": [0.7, 0.2, 0.1]},
    "categorical-w-probabilities-explicit": {"distribution": "categorical_w_probabilities", "values": [1, 2],
                                             "probabilities": [0.25, 0.75]},
    "probabilities-isclose": {"values": [1, 2, 3], "probabilities": [0.33333, 0.33333, 0.33333]},
    "constant": {"value": 3},
    "int-uniform": {"min": 1, "max": 6},
    "int-uniform-negative": {"min": -10, "max": -3},
    "int-uniform-wide": {"distribution": "int_uniform", "min": 0, "max": 1000},
    "uniform": {"min": 0.0, "max": 1.0},
    "uniform-ints-explicit": {"distribution": "uniform", "min": 0, "max": 10},
    "uniform-mixed-bounds": {"min": 1, "max": 2.5},
    "uniform-negative": {"min": -5.0, "max": -1.0},
    "q-uniform": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.1},
    "q-uniform-int-q": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
    "q-uniform-default-q": {"distribution": "q_uniform", "min": 0, "max": 20},
    "q-uniform-offset": {"distribution": "q_uniform", "min": 0.1, "max": 1.3, "q": 0.3},
    "log-uniform-v1": {"distribution": "log_uniform", "min": -5.0, "max": 0.0},
    "log-uniform-values": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "log-uniform-values-ints": {"distribution": "log_uniform_values", "min": 1, "max": 1000},
    "inv-log-uniform-v1": {"distribution": "inv_log_uniform", "min": 0.0, "max": 3.0},
    "inv-log-uniform-values": {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 10.0},
    "q-log-uniform-v1": {"distribution": "q_log_uniform", "min": 0.0, "max": 5.0},
    "q-log-uniform-v1-int-q": {"distribution": "q_log_uniform", "min": 0.0, "max": 6.0, "q": 4},
    "q-log-uniform-values": {"distribution": "q_log_uniform_values", "min": 1, "max": 512, "q": 1},
    "q-log-uniform-values-float-q": {"distribution": "q_log_uniform_values", "min": 0.01, "max": 10.0, "q": 0.05},
    "normal": {"distribution": "normal"},
    "normal-shifted": {"distribution": "normal", "mu": 10.0, "sigma": 3.0},
    "normal-narrow": {"distribution": "normal", "mu": -1.0, "sigma": 0.01},
    "q-normal": {"distribution": "q_normal", "mu": 0.0, "sigma": 5.0, "q": 0.5},
    "q-normal-int-q": {"distribution": "q_normal", "mu": 50, "sigma": 10, "q": 5},
    "log-normal": {"distribution": "log_normal"},
    "log-normal-shifted": {"distribution": "log_normal", "mu": 2.0, "sigma": 0.3},
    "q-log-normal": {"distribution": "q_log_normal", "mu": 1.0, "sigma": 0.5, "q": 0.1},
    "q-log-normal-int-q": {"distribution": "q_log_normal", "mu": 3.0, "sigma": 0.5, "q": 2},
    "beta": {"distribution": "beta"},
    "beta-skewed": {"distribution": "beta", "a": 2.0, "b": 8.0},
    "beta-u-shaped": {"distribution": "beta", "a": 0.5, "b": 0.5},
    "q-beta": {"distribution": "q_beta", "a": 2.0, "b": 2.0, "q": 0.05},
    "q-beta-default-q": {"distribution": "q_beta", "a": 3.0, "b": 1.0},
    "nested-uniform": {"parameters": {"lr": {"min": 0.001, "max": 0.1}}},
    "nested-categorical": {"parameters": {"opt": {"values": ["adam", "sgd"]}, "m": {"value": 0.9}}},
    "nested-normal": {"parameters": {"a": {"parameters": {"z": {"distribution": "normal", "mu": 1.0}}}}},
}


def _leaves(trial: dict, paths: list[tuple[str, ...]]) -> dict:
    """``{path: value}`` of the sweep's leaf parameters (a dict *value* is one value, not a group)."""
    out = {}
    for path in paths:
        node = trial
        for key in path:
            node = node[key]
        out[path] = node
    return out


def _paths(name: str) -> list[tuple[str, ...]]:
    params, problems = parse_parameters({"x": PARAMS[name]})
    assert not problems
    return [p.path for p in params]


def _plain(value):
    """numpy scalars → Python, so types compare as the trainer sees them (str() of the value)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def ours(name: str) -> list[dict]:
    params, problems = parse_parameters({"x": PARAMS[name]})
    assert not problems
    expansion = Expansion(params, method="random", run_cap=N, seed=20240611)
    return [_leaves(expansion.trial(i), [p.path for p in params]) for i in range(N)]


def theirs(name: str) -> list[dict]:
    random.seed(7)
    np.random.seed(7)
    runs = random_search_next_runs({"method": "random", "parameters": {"x": PARAMS[name]}}, n=N)
    paths = _paths(name)
    return [{path: _plain(v) for path, v in _leaves({k: c["value"] for k, c in run.config.items()}, paths).items()}
            for run in runs]


def _key(value):
    """A hashable key; floats at 9 digits (W&B's quantized floats carry noise: 0.30000000000000004)."""
    if isinstance(value, float):
        return ("float", float(f"{value:.9g}"))
    return repr(value) if isinstance(value, (list, dict)) else (type(value).__name__, value)


def _bounds(cfg: dict) -> tuple[float, float] | None:
    """The support W&B's own parameterisation gives, for the bounded distributions."""
    dist = cfg.get("distribution", "uniform" if "min" in cfg and isinstance(cfg.get("min"), float) else "")
    if "beta" in dist:
        return (0.0, 1.0)
    if "min" not in cfg:
        return None
    lo, hi = cfg["min"], cfg["max"]
    if dist in ("log_uniform", "q_log_uniform"):
        return (math.exp(lo), math.exp(hi))
    if dist == "inv_log_uniform":
        return (math.exp(-hi), math.exp(-lo))
    return (lo, hi)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_random_draws_match_wandb(name: str) -> None:
    a, b = ours(name), theirs(name)
    assert a[0].keys() == b[0].keys()
    cfg = PARAMS[name]
    for path in a[0]:
        xs, ys = [t[path] for t in a], [t[path] for t in b]
        # types: the same kinds of value (int vs float vs str ...)
        assert {type(x).__name__ for x in xs} == {type(y).__name__ for y in ys}, path
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs + ys)
        leaf = cfg if "parameters" not in cfg else None
        if numeric and leaf is not None:
            q = leaf.get("q", 1.0 if str(leaf.get("distribution", "")).startswith("q_") else None)
            bounds = _bounds(leaf)
            if bounds is not None:  # support: inside the range (widened by one quantum)
                slack = q or 1e-12
                assert bounds[0] - slack <= min(xs) and max(xs) <= bounds[1] + slack, (path, min(xs), max(xs), bounds)
            if q is not None:  # quantization: multiples of q
                assert all(math.isclose(x / q, round(x / q), abs_tol=1e-6) for x in xs), path
        distinct = {_key(v) for v in xs + ys}
        if len(distinct) <= 40 or not numeric:
            counts_a, counts_b = Counter(map(_key, xs)), Counter(map(_key, ys))
            keys = sorted(distinct, key=repr)
            if len(keys) > 1:
                table = [[counts_a.get(k, 0) + 0.5 for k in keys], [counts_b.get(k, 0) + 0.5 for k in keys]]
                p = stats.chi2_contingency(table).pvalue
                assert p > P_MIN, (path, p)
        else:
            p = stats.ks_2samp(xs, ys).pvalue
            assert p > P_MIN, (path, p)


def test_a_wrong_parameterisation_is_caught() -> None:
    # The check has teeth: log_uniform_values read as exponents (the classic v1/v2 mix-up) fails.
    wrong = PARAMS["log-uniform-v1"]
    params, _ = parse_parameters({"x": {"distribution": "log_uniform_values", "min": math.exp(wrong["min"]),
                                        "max": math.exp(wrong["max"]) * 3}})
    expansion = Expansion(params, method="random", run_cap=N, seed=1)
    xs = [expansion.trial(i)["x"] for i in range(N)]
    ys = [t[("x",)] for t in theirs("log-uniform-v1")]
    assert stats.ks_2samp(xs, ys).pvalue < P_MIN
