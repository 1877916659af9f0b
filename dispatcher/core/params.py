"""The ``parameters:`` section of a W&B sweep file, parsed into a flat, ordered list of :class:`Param`.

W&B's rules, which we follow exactly (they decide grid order):

* parameter names are sorted at every nesting level;
* a nested group (``{parameters: {...}}``) is flattened *at the parent's position*;
* the form of a parameter decides its distribution when ``distribution`` is omitted:
  ``value`` → constant, ``values`` → categorical (with ``probabilities`` →
  categorical_w_probabilities), integer ``min``/``max`` → int_uniform, any other numeric
  ``min``/``max`` → uniform;
* parameter names match W&B's pattern ``^[A-Za-z_][A-Za-z0-9_.-]*$`` at every level;
* probabilities: one non-negative number per value, summing to 1 within ``numpy.isclose``
  (``abs(sum - 1) <= 1e-8 + 1e-5``), so ``[0.33333, 0.33333, 0.33333]`` is accepted;
* the v1 log distributions (``log_uniform``, ``q_log_uniform``, ``inv_log_uniform``: ``min``/``max``
  are base-e exponents) are accepted with a warning, as W&B's server does.

Where sweepq is stricter than W&B's schema, on purpose: ``beta``/``q_beta`` need ``a``, ``b`` > 0
(W&B's schema allows 0, and its engine then samples NaN). ``normal`` with ``sigma: 0`` is accepted
and always gives ``mu`` (W&B's engine gives NaN there).

Purely computational: no I/O.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

CONSTANT = "constant"
CATEGORICAL = "categorical"
CATEGORICAL_PROB = "categorical_w_probabilities"
INT_UNIFORM = "int_uniform"
Q_UNIFORM = "q_uniform"
UNIFORM = "uniform"

# distribution -> (required keys, optional keys with defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    CONSTANT: (("value",), {}),
    CATEGORICAL: (("values",), {}),
    CATEGORICAL_PROB: (("values", "probabilities"), {}),
    INT_UNIFORM: (("min", "max"), {}),
    UNIFORM: (("min", "max"), {}),
    Q_UNIFORM: (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),
    "log_uniform_values": (("min", "max"), {}),
    "inv_log_uniform": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
GRIDDABLE = (CONSTANT, CATEGORICAL, INT_UNIFORM, Q_UNIFORM)
# W&B deprecated these: min/max are base-e exponents. Its server warns and runs them; so do we.
DEPRECATED = {
    "log_uniform": "log_uniform_values",
    "q_log_uniform": "q_log_uniform_values",
    "inv_log_uniform": "inv_log_uniform_values",
}
# W&B's schema (``definitions.parameters.propertyNames``), at every nesting level.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Nested ``parameters:`` groups deeper than this are refused: real sweeps nest two or three levels,
# and without a bound a raw SQS body nested a few hundred levels exhausted Python's recursion limit
# here (RecursionError escaped validation and aborted the dispatcher's tick).
MAX_GROUP_DEPTH = 20
PARAM_KEYS = {"value", "values", "probabilities", "min", "max", "q", "mu", "sigma", "a", "b", "distribution", "parameters"}


@dataclass(frozen=True)
class Param:
    """One leaf parameter. ``path`` is its position in the nested file, e.g. ``("optimizer", "lr")``."""

    path: tuple[str, ...]
    distribution: str
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ".".join(self.path)


def suggest(key: str, known: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def _is_number(value: Any) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range (JSON and YAML carry any number of digits)
        return False


def _brief(value: Any) -> str:
    """``repr`` of a value for a message, shortened: a 400-digit number is not worth 400 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _infer_distribution(where: str, cfg: Mapping[str, Any], problems: list[str]) -> str | None:
    if "distribution" in cfg:
        dist = cfg["distribution"]
        if dist not in DISTRIBUTIONS:
            problems.append(f"{where}.distribution: unknown distribution {dist!r} — {suggest(str(dist), list(DISTRIBUTIONS))}")
            return None
        return str(dist)
    if "value" in cfg:
        return CONSTANT
    if "values" in cfg:
        return CATEGORICAL_PROB if "probabilities" in cfg else CATEGORICAL
    if "min" in cfg and "max" in cfg:
        if _is_int(cfg["min"]) and _is_int(cfg["max"]):
            return INT_UNIFORM
        return UNIFORM
    if "min" in cfg or "max" in cfg:
        missing = "max" if "min" in cfg else "min"
        problems.append(f"{where}: has {'min' if missing == 'max' else 'max'} but no {missing} — give both")
        return None
    problems.append(
        f"{where}: no value, values, min/max or distribution — write e.g. `values: [1, 2]` or `value: 3`"
    )
    return None


def _isclose_to_one(total: float) -> bool:
    """``numpy.isclose(total, 1.0)`` with its defaults (rtol 1e-5, atol 1e-8), as W&B checks it."""
    return abs(total - 1.0) <= 1e-8 + 1e-5


def _check_categorical(where: str, dist: str, out: dict[str, Any], problems: list[str]) -> None:
    values = out["values"]
    if not isinstance(values, list):
        problems.append(f"{where}.values: {_brief(values)} is not a list — write values: [a, b, c]")
        return
    if not values:
        problems.append(f"{where}.values: is empty — give at least one value")
        return
    if dist != CATEGORICAL_PROB:
        return
    probs = out["probabilities"]
    if not isinstance(probs, list) or len(probs) != len(values) or not all(_is_number(p) and p >= 0 for p in probs):
        problems.append(f"{where}.probabilities: {_brief(probs)} must be {len(values)} non-negative numbers, one per value")
    elif not _isclose_to_one(math.fsum(probs)):
        problems.append(f"{where}.probabilities: sum to {math.fsum(probs):g}, not 1 — normalise them")


def _check_leaf(where: str, dist: str, cfg: Mapping[str, Any], problems: list[str]) -> dict[str, Any] | None:
    required, optional = DISTRIBUTIONS[dist]
    allowed = set(required) | set(optional) | {"distribution"}
    start = len(problems)
    if dist == CATEGORICAL and "probabilities" in cfg:
        problems.append(
            f"{where}: distribution categorical takes no probabilities (W&B's schema refuses them too) — write "
            "distribution: categorical_w_probabilities, or leave `distribution` out"
        )
        return None
    for key in cfg:
        if key not in allowed:
            problems.append(
                f"{where}.{key}: not a field of a {dist} parameter — allowed: {', '.join(sorted(allowed))}"
            )
    for key in required:
        if key not in cfg:
            problems.append(f"{where}: a {dist} parameter needs `{key}`")
    if len(problems) > start:
        return None
    out = {**optional, **{k: v for k, v in cfg.items() if k != "distribution"}}
    if dist in (CATEGORICAL, CATEGORICAL_PROB):
        _check_categorical(where, dist, out, problems)
    numeric = [k for k in ("min", "max", "q", "mu", "sigma", "a", "b") if k in out]
    for key in numeric:
        if not _is_number(out[key]):
            huge = isinstance(out[key], int) and not isinstance(out[key], bool)
            problems.append(f"{where}.{key}: {_brief(out[key])} is {'too large' if huge else 'not a number'}")
    if len(problems) > start:
        return None
    if dist == INT_UNIFORM and not (_is_int(out["min"]) and _is_int(out["max"])):
        problems.append(
            f"{where}: int_uniform needs integer min/max, got {out['min']!r}/{out['max']!r} — "
            "use distribution: uniform for floats"
        )
    if "min" in out and "max" in out and out["min"] >= out["max"]:
        problems.append(f"{where}: min {out['min']!r} is not less than max {out['max']!r} — swap them or widen the range")
    if dist.endswith("_values") and "min" in out and out["min"] <= 0:
        problems.append(f"{where}.min: {out['min']!r} must be > 0 for {dist}")
    if "q" in out and out["q"] <= 0:
        problems.append(f"{where}.q: {out['q']!r} must be > 0")
    if "sigma" in out and out["sigma"] < 0:
        problems.append(f"{where}.sigma: {out['sigma']!r} must be ≥ 0")
    for key in ("a", "b"):
        if key in out and out[key] <= 0:
            problems.append(f"{where}.{key}: {out[key]!r} must be > 0 (a beta distribution with {key} = 0 has no density)")
    return out if len(problems) == start else None


def parse_parameters(
    raw: Any, *, where: str = "parameters", prefix: tuple[str, ...] = (), warnings: list[str] | None = None
) -> tuple[list[Param], list[str]]:
    """Flatten ``parameters:`` into W&B order. Returns ``(params, problems)``; never raises.

    Warnings (accepted, but worth a look: deprecated distributions) are appended to ``warnings``.
    """
    problems: list[str] = []
    params: list[Param] = []
    if not isinstance(raw, dict):
        return [], [f"{where}: must be a mapping of name -> definition, got {type(raw).__name__}"]
    if not raw:
        return [], [f"{where}: is empty — define at least one parameter"]
    for name in sorted(raw, key=str):
        cfg = raw[name]
        here = f"{where}.{name}"
        if not isinstance(name, str):
            problems.append(f"{here}: parameter names must be strings, got {type(name).__name__} — quote it")
            continue
        if not NAME_PATTERN.fullmatch(name):
            problems.append(
                f"{here}: {_brief(name)} is not a usable argument name — W&B's pattern is "
                "^[A-Za-z_][A-Za-z0-9_.-]*$: start with a letter or '_', then letters, digits, '_', '-' or '.'"
            )
            continue
        if not isinstance(cfg, dict):
            problems.append(f"{here}: {cfg!r} is not a definition — write `{name}: {{value: {cfg!r}}}` or values: [...]")
            continue
        unknown = [k for k in cfg if k not in PARAM_KEYS]
        if unknown:
            for key in unknown:
                if isinstance(cfg[key], list) and str(key).lower().startswith("val"):
                    tip = "did you mean 'values'? (a list of values to sweep)"
                else:
                    tip = suggest(str(key), PARAM_KEYS)
                problems.append(f"{here}.{key}: unknown key — {tip}")
            continue
        if "parameters" in cfg:
            extra = [k for k in cfg if k != "parameters"]
            if extra:
                problems.append(f"{here}: a nested group has only `parameters:`, remove {', '.join(map(str, extra))}")
                continue
            if len(prefix) + 1 >= MAX_GROUP_DEPTH:
                problems.append(f"{here}: parameter groups nested deeper than {MAX_GROUP_DEPTH} levels — flatten them")
                continue
            sub, sub_problems = parse_parameters(
                cfg["parameters"], where=f"{here}.parameters", prefix=prefix + (name,), warnings=warnings
            )
            params.extend(sub)
            problems.extend(sub_problems)
            continue
        dist = _infer_distribution(here, cfg, problems)
        if dist is None:
            continue
        checked = _check_leaf(here, dist, cfg, problems)
        if checked is not None:
            params.append(Param(path=prefix + (name,), distribution=dist, config=checked))
            if dist in DEPRECATED and warnings is not None:
                warnings.append(
                    f"{here}: distribution {dist} takes min/max as base-e exponents (W&B deprecated it) — "
                    f"if min/max are the limit values, write distribution: {DEPRECATED[dist]}"
                )
    return params, problems


def field_path(param: Param) -> str:
    """The YAML path of a parameter, as error messages show it."""
    return "parameters." + ".parameters.".join(param.path)
