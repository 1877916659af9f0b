"""Grid order, values *and types* are W&B's own (`sweeps.grid_search_next_runs`), trial by trial.

Compared strictly: ``1`` and ``1.0`` are different values here, so are ``[2, 3]`` and
``[2.0, 3.0]`` — W&B's grid hashes a whole float at the top of a value as its int but keeps nested
types, and a duplicate keeps its first position with its *last* occurrence's value. The only
tolerance: W&B's ``q_uniform`` carries ``numpy.arange`` float noise (``0.30000000000000004``);
ours is exact, so floats are compared at 12 significant digits.
"""

from __future__ import annotations

import json

import pytest

from dispatcher.core.spec import validate_sweep

sweeps = pytest.importorskip("sweeps")
from sweeps.grid_search import grid_search_next_runs  # noqa: E402

CONFIGS = {
    # order
    "two-categoricals": {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}},
    "sorted-names": {"zeta": {"values": [1, 2]}, "alpha": {"values": [3, 4]}, "Mid": {"values": [5, 6]}},
    "underscore-and-case": {"_b": {"values": [1, 2]}, "B": {"values": [3, 4]}, "a_": {"values": [5]}},
    "dots-and-dashes": {"a.b": {"values": [1, 2]}, "a-b": {"values": [3, 4]}, "ab": {"values": [5, 6]}},
    "constant-mixed": {"lr": {"values": [0.1, 0.01]}, "epochs": {"value": 3}, "bs": {"values": [16, 32]}},
    "constants-only": {"a": {"value": 1}, "b": {"value": "x"}},
    "explicit-distributions": {"a": {"distribution": "categorical", "values": [1, 2]},
                               "c": {"distribution": "constant", "value": 7}},
    "single-value": {"only": {"values": [42]}},
    # int_uniform / q_uniform
    "int-uniform": {"n": {"min": 1, "max": 4}, "m": {"distribution": "int_uniform", "min": -2, "max": 0}},
    "int-uniform-wide": {"n": {"min": -50, "max": 50}},
    "q-uniform": {"w": {"distribution": "q_uniform", "min": 0.1, "max": 1.3, "q": 0.3}},
    "q-uniform-noise": {"w": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.1}},
    "q-uniform-int": {"w": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 3}},
    "q-uniform-int-min-float-max": {"w": {"distribution": "q_uniform", "min": 1, "max": 10.5, "q": 2}},
    "q-uniform-float-q": {"w": {"distribution": "q_uniform", "min": 0, "max": 4, "q": 1.0}},
    "q-uniform-default-q": {"w": {"distribution": "q_uniform", "min": 0, "max": 5}},
    "q-uniform-float-min": {"w": {"distribution": "q_uniform", "min": 0.5, "max": 3, "q": 1}},
    "q-uniform-negative": {"w": {"distribution": "q_uniform", "min": -1.0, "max": 1.0, "q": 0.25}},
    "q-uniform-exact-end": {"w": {"distribution": "q_uniform", "min": 0, "max": 6, "q": 2}},
    # duplicates: first position, last occurrence's value, top-level whole floats = ints
    "duplicates": {"a": {"values": [1, 1.0, 2, 2, 3.0]}, "b": {"values": [True, False]}},
    "duplicate-last-value": {"a": {"values": [1, 2, 1.0]}},
    "duplicate-zero": {"a": {"values": [0, -0.0, 1]}},
    "duplicate-large": {"a": {"values": [3000000, 3000000.0, 1e20, 100000000000000000000]}},
    "bool-is-not-int": {"a": {"values": [1, True, 0, False]}},
    "string-is-not-number": {"a": {"values": [1, "1", 1.5, "1.5"]}},
    "none-and-none-string": {"t": {"values": [None, "none", "null"]}},
    # strict types inside lists and dicts
    "nested-list-floats": {"a": {"values": [[2, 3], [2.0, 3.0]]}},
    "nested-dict-floats": {"a": {"values": [{"lr": 1}, {"lr": 1.0}, {"lr": 2}]}},
    "nested-duplicates": {"a": {"values": [[1, 2], [1, 2], {"k": [1]}, {"k": [1]}]}},
    "dict-key-order": {"a": {"values": [{"x": 1, "y": 2}, {"y": 2, "x": 1}, {"x": 2}]}},
    "dict-and-list-values": {"layers": {"values": [[64, 64], [128]]}, "sched": {"values": [{"t": "cos"}, {"t": "lin"}]}},
    "empty-containers": {"a": {"values": [[], {}, [[]], ""]}},
    # nested parameter groups
    "nested": {
        "opt": {"parameters": {"name": {"values": ["adam", "sgd"]}, "mom": {"value": 0.9}}},
        "bs": {"values": [8, 16]},
        "z": {"values": [0, 1]},
    },
    "deep-nested": {"a": {"parameters": {"b": {"parameters": {"c": {"values": [1, 2]}}}, "d": {"values": [3, 4]}}}},
    "nested-same-leaf-names": {"a": {"parameters": {"x": {"values": [1, 2]}}}, "b": {"parameters": {"x": {"values": [3, 4]}}},
                               "x": {"values": [5, 6]}},
    "nested-with-int-uniform": {"g": {"parameters": {"n": {"min": 0, "max": 2}, "q": {"distribution": "q_uniform",
                                                                                      "min": 0, "max": 1, "q": 0.5}}}},
    # values of every kind
    "strings-unicode": {"s": {"values": ["ä", "b c", "; rm -rf /"]}, "t": {"values": [None, "none"]}},
    "floats": {"lr": {"values": [1e-5, 3e-5, 0.1, 1.5e-3]}},
    "negative-and-big-ints": {"n": {"values": [-1, 0, 2**53 + 1, 10**30]}},
    "mixed-types": {"m": {"values": [1, "a", 2.5, None, True, [1], {"k": "v"}]}},
    "many-axes": {k: {"values": [0, 1]} for k in "abcdefg"},
    "wide-and-narrow": {"wide": {"min": 1, "max": 30}, "narrow": {"values": ["x"]}, "mid": {"values": [1.0, 2.0, 3.0]}},
}


def _typed(value):
    """A value with its types spelled out, so 1 != 1.0 and [2] != [2.0] (floats at 12 digits)."""
    if isinstance(value, float):
        return ["float", float(f"{value:.12g}")]
    if isinstance(value, dict):
        return ["dict", {k: _typed(v) for k, v in sorted(value.items())}]
    if isinstance(value, (list, tuple)):
        return ["list", [_typed(v) for v in value]]
    return [type(value).__name__, value]


def _wandb_grid(parameters: dict) -> list[dict]:
    out = []
    runs: list = []
    while True:
        (nxt,) = grid_search_next_runs(runs, {"method": "grid", "parameters": parameters}, validate=False)
        if nxt is None:
            return out
        runs.append(nxt)
        out.append({k: v["value"] for k, v in nxt.config.items()})


def test_there_are_at_least_42_configs():
    assert len(CONFIGS) >= 42


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grid_matches_wandb_sweeps_with_strict_types(name):
    # GIVEN the same parameters section
    parameters = CONFIGS[name]
    # WHEN both engines expand it
    sweep = validate_sweep({"method": "grid", "program": "train.py", "parameters": parameters})
    ours = [sweep.trial(i) for i in range(sweep.total)]
    theirs = _wandb_grid(parameters)
    # THEN same count, same order, same values of the same types
    assert sweep.total == len(theirs)
    assert [_typed(t) for t in ours] == [_typed(t) for t in theirs]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grid_is_the_same_after_the_json_round_trip(name):
    # The dispatcher validates the spec it got through the SQS body: the same grid as the producer's.
    raw = {"method": "grid", "program": "train.py", "parameters": CONFIGS[name]}
    here, there = validate_sweep(raw), validate_sweep(json.loads(json.dumps(raw)))
    assert here.total == there.total
    assert [_typed(here.trial(i)) for i in range(here.total)] == [_typed(there.trial(i)) for i in range(there.total)]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 1.0], [1.0, 2]),  # W&B keeps the last occurrence's value
        ([0, -0.0, 1], [-0.0, 1]),
        ([3000000, 3000000.0], [3000000.0]),
        ([[2, 3], [2.0, 3.0]], [[2, 3], [2.0, 3.0]]),  # nested types are strict: two trials
        ([{"lr": 1}, {"lr": 1.0}, {"lr": 2}], [{"lr": 1}, {"lr": 1.0}, {"lr": 2}]),
        ([True, 1], [True, 1]),
    ],
)
def test_duplicates_collapse_like_wandb(values, expected):
    sweep = validate_sweep({"method": "grid", "program": "t.py", "parameters": {"a": {"values": values}}})
    got = [sweep.trial(i)["a"] for i in range(sweep.total)]
    assert [_typed(v) for v in got] == [_typed(v) for v in expected]


def test_q_uniform_types_follow_min_max_and_q():
    # numpy.arange(1, 10.5, 2) is float: W&B passes 1.0, 3.0, ...
    sweep = validate_sweep({"method": "grid", "program": "t.py",
                            "parameters": {"w": {"distribution": "q_uniform", "min": 1, "max": 10.5, "q": 2}}})
    values = [sweep.trial(i)["w"] for i in range(sweep.total)]
    assert values == [1.0, 3.0, 5.0, 7.0, 9.0] and all(type(v) is float for v in values)


def test_q_uniform_has_no_float_noise():
    sweep = validate_sweep(
        {"method": "grid", "program": "t.py", "parameters": {"w": {"distribution": "q_uniform", "min": 0.0, "max": 1.5, "q": 0.1}}}
    )
    values = [sweep.trial(i)["w"] for i in range(sweep.total)]
    assert all(len(repr(v)) <= 4 for v in values), values
    assert values[12] == 1.2
