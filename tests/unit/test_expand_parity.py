"""Grid order and values are W&B's own (`sweeps.grid_search_next_runs`), compared canonically."""

from __future__ import annotations

import pytest

from dispatcher.core.identity import canonical
from dispatcher.core.spec import validate_sweep

sweeps = pytest.importorskip("sweeps")
from sweeps.grid_search import grid_search_next_runs  # noqa: E402

CONFIGS = {
    "two-categoricals": {"a": {"values": [1, 2, 3]}, "b": {"values": ["x", "y"]}},
    "sorted-names": {"zeta": {"values": [1, 2]}, "alpha": {"values": [3, 4]}, "Mid": {"values": [5, 6]}},
    "constant-mixed": {"lr": {"values": [0.1, 0.01]}, "epochs": {"value": 3}, "bs": {"values": [16, 32]}},
    "int-uniform": {"n": {"min": 1, "max": 4}, "m": {"distribution": "int_uniform", "min": -2, "max": 0}},
    "q-uniform": {"w": {"distribution": "q_uniform", "min": 0.1, "max": 1.3, "q": 0.3}},
    "q-uniform-noise": {"w": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.1}},
    "q-uniform-int": {"w": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 3}},
    "duplicates": {"a": {"values": [1, 1.0, 2, 2, 3.0]}, "b": {"values": [True, False]}},
    "nested": {
        "opt": {"parameters": {"name": {"values": ["adam", "sgd"]}, "mom": {"value": 0.9}}},
        "bs": {"values": [8, 16]},
        "z": {"values": [0, 1]},
    },
    "deep-nested": {"a": {"parameters": {"b": {"parameters": {"c": {"values": [1, 2]}}}, "d": {"values": [3, 4]}}}},
    "dict-and-list-values": {"layers": {"values": [[64, 64], [128]]}, "sched": {"values": [{"t": "cos"}, {"t": "lin"}]}},
    "single-value": {"only": {"values": [42]}},
    "strings-unicode": {"s": {"values": ["ä", "b c", "; rm -rf /"]}, "t": {"values": [None, "none"]}},
}


def _denoise(value):
    """W&B's q_uniform carries float noise (0.30000000000000004); compare at 12 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _denoise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_denoise(v) for v in value]
    return value


def _wandb_grid(parameters: dict) -> list[dict]:
    out = []
    runs: list = []
    while True:
        (nxt,) = grid_search_next_runs(runs, {"method": "grid", "parameters": parameters}, validate=False)
        if nxt is None:
            return out
        runs.append(nxt)
        out.append({k: v["value"] for k, v in nxt.config.items()})


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grid_matches_wandb_sweeps(name):
    # GIVEN the same parameters section
    parameters = CONFIGS[name]
    # WHEN both engines expand it
    sweep = validate_sweep({"method": "grid", "program": "train.py", "parameters": parameters})
    ours = [sweep.trial(i) for i in range(sweep.total)]
    theirs = _wandb_grid(parameters)
    # THEN same count, same order, same values (whole floats = ints; ours exact where W&B's are noisy)
    assert sweep.total == len(theirs)
    assert [canonical(t) for t in ours] == [canonical(_denoise(t)) for t in theirs]


def test_q_uniform_has_no_float_noise():
    sweep = validate_sweep(
        {"method": "grid", "program": "t.py", "parameters": {"w": {"distribution": "q_uniform", "min": 0.0, "max": 1.5, "q": 0.1}}}
    )
    values = [sweep.trial(i)["w"] for i in range(sweep.total)]
    assert all(len(repr(v)) <= 4 for v in values), values
    assert values[12] == 1.2
