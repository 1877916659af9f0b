"""The ``parameters:`` section of a W&B sweep file, parsed into a flat, ordered list of :class:`Param`.

W&B's rules, which we follow exactly (they decide grid order):

* parameter names are sorted at every nesting level;
* a nested group (``{parameters: {...}}``) is flattened *at the parent's position*;
* the form of a parameter decides its distribution when ``distribution`` is omitted:
  ``value`` → constant, ``values`` → categorical (``probabilities`` → weighted categorical),
  integer ``min``/``max`` → int_uniform, float ``min``/``max`` → uniform.

Purely computational: no I/O.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

CONSTANT = "constant"
CATEGORICAL = "categorical"
INT_UNIFORM = "int_uniform"
Q_UNIFORM = "q_uniform"
UNIFORM = "uniform"

# distribution -> (required keys, optional keys with defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    CONSTANT: (("value",), {}),
    CATEGORICAL: (("values",), {"probabilities": None}),
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
        return CATEGORICAL
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


def _check_leaf(where: str, dist: str, cfg: Mapping[str, Any], problems: list[str]) -> dict[str, Any] | None:
    required, optional = DISTRIBUTIONS[dist]
    allowed = set(required) | set(optional) | {"distribution"}
    start = len(problems)
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
    if dist == CATEGORICAL:
        values = out["values"]
        if not isinstance(values, list):
            problems.append(f"{where}.values: {values!r} is not a list — write values: [a, b, c]")
        elif not values:
            problems.append(f"{where}.values: is empty — give at least one value")
        probs = out.get("probabilities")
        if probs is not None and isinstance(values, list):
            if not isinstance(probs, list) or len(probs) != len(values) or not all(_is_number(p) and p >= 0 for p in probs):
                problems.append(
                    f"{where}.probabilities: {_brief(probs)} must be {len(values)} non-negative numbers, one per value"
                )
            elif abs(sum(probs) - 1.0) > 1e-6:
                problems.append(f"{where}.probabilities: sum to {sum(probs):g}, not 1 — normalise them")
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
    for key in ("q", "sigma"):
        if key in out and out[key] <= 0 and not (key == "sigma" and out[key] == 0):
            problems.append(f"{where}.{key}: {out[key]!r} must be > 0")
    for key in ("a", "b"):
        if key in out and out[key] <= 0:
            problems.append(f"{where}.{key}: {out[key]!r} must be > 0")
    return out if len(problems) == start else None


def parse_parameters(raw: Any, *, where: str = "parameters", prefix: tuple[str, ...] = ()) -> tuple[list[Param], list[str]]:
    """Flatten ``parameters:`` into W&B order. Returns ``(params, problems)``; never raises."""
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
        if not name or any(c in name for c in "=\n\r\t ") or name.startswith("-"):
            problems.append(f"{here}: {name!r} is not a usable argument name — use letters, digits, '_', '-' or '.'")
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
            sub, sub_problems = parse_parameters(cfg["parameters"], where=f"{here}.parameters", prefix=prefix + (name,))
            params.extend(sub)
            problems.extend(sub_problems)
            continue
        dist = _infer_distribution(here, cfg, problems)
        if dist is None:
            continue
        checked = _check_leaf(here, dist, cfg, problems)
        if checked is not None:
            params.append(Param(path=prefix + (name,), distribution=dist, config=checked))
    return params, problems


def field_path(param: Param) -> str:
    """The YAML path of a parameter, as error messages show it."""
    return "parameters." + ".parameters.".join(param.path)
