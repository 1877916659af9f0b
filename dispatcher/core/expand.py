"""Lazy expansion of a sweep into trials. Purely computational, O(number of parameters) per trial.

Grid order is W&B's (``sweeps.grid_search_next_runs``): parameters in sorted-name order with nested
groups flattened at the parent's position, the cartesian product with the **last parameter varying
fastest**. Duplicate values collapse the way W&B's grid hashes them (:func:`grid_key`): a whole
float *at the top of a value* equals the int (``1`` ≡ ``1.0``, ``0`` ≡ ``-0.0``, ``1e20`` ≡
``10**20``), but inside a list or dict types are strict (``[2, 3]`` and ``[2.0, 3.0]`` are two
values, ``True`` is never ``1``); a duplicate keeps the **first position and the last
occurrence's value** (``values: [1, 2, 1.0]`` → ``1.0, 2``), as W&B does. ``int_uniform`` is
inclusive of ``max``; ``q_uniform`` is ``numpy.arange(min, max, q)`` (max excluded, like W&B): ints
only when ``min``, ``max`` and ``q`` are all ints (numpy's dtype rule; ``q`` defaults to ``1.0``), and
rounded to the decimals of ``min`` and ``q`` so there is no float noise such as
``1.2000000000000002``.

Bayes: trials are not a function of their index — W&B's engine suggests each one from the trials
that finished before it (:mod:`dispatcher.core.search`); :meth:`Expansion.trial` refuses and says so.

Random: trial ``i`` is a pure function of ``(seed, i)`` — reproducible, no stored state, and
independent of ``run_cap`` (raising the cap only appends trials).

Nothing here ever materialises the product: a 10^9-point grid costs the same as a 4-point one.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, Iterator, Sequence

from dispatcher.core.errors import PermanentError
from dispatcher.core.params import CATEGORICAL, CATEGORICAL_PROB, CONSTANT, INT_UNIFORM, Q_UNIFORM, Param


class SuggestedTrial(PermanentError, LookupError):
    """A bayes trial has no parameters until W&B's engine suggests them at claim time. Permanent:
    asking again cannot help — the caller reads the parameters persisted with the trial's claim."""


def _decimals(value: Any) -> int:
    exponent = Decimal(repr(float(value))).normalize().as_tuple().exponent
    return max(0, -int(exponent)) if isinstance(exponent, int) else 0


class QRange(Sequence[Any]):
    """``numpy.arange(lo, hi, q)`` without materialising it and without float noise."""

    def __init__(self, lo: float, hi: float, q: float) -> None:
        self.lo, self.hi, self.q = lo, hi, q
        # numpy's length rule: ceil((stop - start) / step), computed in floating point — exactly
        # (with fractions) when the float quotient overflows (max 1e300, q 1e-300): the grid-size
        # check must see the astronomic size and refuse it, not crash on int(inf).
        steps: float | Fraction = (hi - lo) / q
        if not math.isfinite(steps):
            steps = (Fraction(hi) - Fraction(lo)) / Fraction(q)
        self.size = max(0, math.ceil(steps))  # not `count`: that is Sequence.count()
        self._len = self.size
        # numpy.arange's dtype: int only when start, stop and step are all ints (min 1, max 10.5,
        # q 2 gives floats 1.0, 3.0, ... in W&B).
        self._ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, q))
        self._digits = max(_decimals(lo), _decimals(q))

    def __len__(self) -> int:  # len() fails above sys.maxsize: sizes are read from Dim.size
        return self._len

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self._len))]
        if k < 0:
            k += self._len
        if not 0 <= k < self._len:
            raise IndexError(k)
        if self._ints:
            return self.lo + k * self.q
        return float(round(self.lo + k * self.q, self._digits))


def grid_key(value: Any) -> str:
    """When two grid values are the same value, as W&B's grid decides it (``yaml_hash``): a whole
    float at the top level is its int; nested values keep their types. JSON text, so the key is the
    same before and after the message's JSON round trip (dict keys become strings in both engines:
    W&B's SDK also sends the config through JSON)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    # default=: a YAML timestamp or set (refused later by the producer, which names it) must not crash here
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def _dedup(values: list[Any]) -> tuple[Any, ...]:
    """Distinct values at their first position, each holding its *last* occurrence (W&B's rule)."""
    slots: dict[str, int] = {}
    out: list[Any] = []
    for value in values:
        key = grid_key(value)
        if key in slots:
            out[slots[key]] = value
        else:
            slots[key] = len(out)
            out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class Dim:
    """One grid axis: a parameter and its (lazy) sequence of values."""

    param: Param
    values: Sequence[Any]

    @property
    def size(self) -> int:
        # Not len(): it raises OverflowError above sys.maxsize (int_uniform over ±1e100, a tiny
        # q_uniform step), and such grids must reach the size check to be refused with a message.
        if isinstance(self.values, range):
            return max(0, self.values.stop - self.values.start)
        if isinstance(self.values, QRange):
            return self.values.size
        return len(self.values)


def grid_dims(params: list[Param]) -> list[Dim]:
    """Axes of the grid in W&B order. Constants are not axes (they are in every trial)."""
    dims = []
    for p in params:
        if p.distribution == CATEGORICAL:
            dims.append(Dim(p, _dedup(list(p.config["values"]))))
        elif p.distribution == INT_UNIFORM:
            dims.append(Dim(p, range(p.config["min"], p.config["max"] + 1)))
        elif p.distribution == Q_UNIFORM:
            dims.append(Dim(p, QRange(p.config["min"], p.config["max"], p.config["q"])))
    return dims


def grid_size(params: list[Param]) -> int:
    return math.prod(d.size for d in grid_dims(params))


def _nest(flat: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


class Expansion:
    """The trials of one sweep, computed on demand.

    ``total`` is exact. ``trial(i)`` returns the nested parameter dict of trial ``i`` (0-based,
    launch order) in O(number of parameters).
    """

    def __init__(self, params: list[Param], *, method: str, run_cap: int | None, seed: int = 0) -> None:
        self.params = params
        self.method = method
        self.seed = seed
        if method == "grid":
            self.dims = grid_dims(params)
            self.constants = [(p.path, p.config["value"]) for p in params if p.distribution == CONSTANT]
            self.grid_size = math.prod(d.size for d in self.dims)
            self.total = min(self.grid_size, run_cap) if run_cap else self.grid_size
            # strides: the last dim varies fastest
            strides = []
            acc = 1
            for dim in reversed(self.dims):
                strides.append(acc)
                acc *= dim.size
            self.strides = list(reversed(strides))
        elif method in ("random", "bayes"):
            if not run_cap:
                raise ValueError(f"{method} sweeps need run_cap")
            self.dims, self.constants, self.strides = [], [], []
            self.grid_size = 0
            self.total = run_cap
        else:
            raise ValueError(f"method {method!r} cannot be expanded")

    def trial(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.total:
            raise IndexError(f"trial index {index} outside 0..{self.total - 1}")
        if self.method == "bayes":
            raise SuggestedTrial(
                f"trial {index}: method bayes — W&B's engine suggests each trial's parameters from the trials "
                "finished before it, when the trial is claimed (dispatcher.core.search.suggest); they cannot "
                "be listed in advance (see them with producer status --trials once the sweep runs)"
            )
        if self.method == "grid":
            flat = list(self.constants)
            for dim, stride in zip(self.dims, self.strides, strict=True):
                flat.append((dim.param.path, dim.values[(index // stride) % dim.size]))
            flat.sort(key=lambda item: item[0])
            return _nest(flat)
        return _nest([(p.path, sample(p, random.Random(f"{self.seed}:{index}:{p.name}"))) for p in self.params])

    def prior_sample(self, index: int) -> dict[str, Any]:
        """A draw from the parameters' own distributions, a pure function of ``(seed, index)``.

        What W&B's engine suggests before any trial has finished is also a draw from the prior, but
        a different one; this exists for checks that need *some* valid parameter set (rendering
        trial 0's job at intake, ``producer submit --dry-run``), never to launch a bayes trial.
        """
        return _nest([(p.path, sample(p, random.Random(f"{self.seed}:prior:{index}:{p.name}"))) for p in self.params])

    def __iter__(self) -> Iterator[dict[str, Any]]:  # pragma: no cover - convenience
        return (self.trial(i) for i in range(self.total))


def _quantize(value: float, q: float) -> Any:
    out = round(value / q) * q
    if isinstance(q, int) and not isinstance(q, bool):
        return int(out)
    return round(out, _decimals(q) + 1)


def sample(p: Param, rng: random.Random) -> Any:
    """Draw one value of a parameter. W&B's parameterisations (v1 ``log_uniform`` takes exponents)."""
    c, d = p.config, p.distribution
    if d == CONSTANT:
        return c["value"]
    if d == CATEGORICAL:
        return rng.choice(c["values"])
    if d == CATEGORICAL_PROB:
        return rng.choices(c["values"], weights=c["probabilities"])[0]
    if d == INT_UNIFORM:
        return rng.randint(c["min"], c["max"])
    if d in ("uniform", "q_uniform"):
        x = rng.uniform(c["min"], c["max"])
    elif d in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(c["min"], c["max"]))
    elif d in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(c["min"]), math.log(c["max"])))
    elif d == "inv_log_uniform":
        x = math.exp(-rng.uniform(c["min"], c["max"]))
    elif d == "inv_log_uniform_values":
        x = 1.0 / math.exp(rng.uniform(math.log(1.0 / c["max"]), math.log(1.0 / c["min"])))
    elif d in ("normal", "q_normal"):
        x = rng.gauss(c["mu"], c["sigma"])
    elif d in ("log_normal", "q_log_normal"):
        x = math.exp(rng.gauss(c["mu"], c["sigma"]))
    elif d in ("beta", "q_beta"):
        x = rng.betavariate(c["a"], c["b"])
    else:  # pragma: no cover - parse_parameters only admits known distributions
        raise ValueError(f"unknown distribution {d!r}")
    return _quantize(x, c["q"]) if d.startswith("q_") else x
