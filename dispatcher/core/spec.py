"""The sweep file: a W&B sweep config (grid or random), plus an optional ``sweepq:`` block.

``load_sweep(text)`` / ``validate_sweep(raw)`` turn a file into a :class:`Sweep` or raise a
:class:`SpecError` listing *every* problem, each naming the field path, the bad value and the fix.

Any valid W&B sweep config with ``method: grid`` or ``method: random`` is accepted unchanged; the
``sweepq:`` block (launch settings, see :mod:`dispatcher.core.launch`) is optional.
Purely computational.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dispatcher.core.errors import SpecError
from dispatcher.core.expand import Expansion, grid_dims
from dispatcher.core.identity import params_hash
from dispatcher.core.launch import LaunchSettings, merge_launch
from dispatcher.core.params import GRIDDABLE, Param, field_path, parse_parameters, suggest
from dispatcher.core.yamlsafe import load_yaml

DEFAULT_MAX_GRID_SIZE = 10**7
EXTENSION_KEY = "sweepq"
MACROS = ("${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_json}")
ARG_MACROS = ("${args}", "${args_no_hyphens}", "${args_json}")
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
# Keys W&B's own sweep schema knows; accepted unchanged (some are only stored).
WANDB_KEYS = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}
KNOWN_KEYS = WANDB_KEYS | {EXTENSION_KEY}


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="Key the trainer reports, e.g. eval/accuracy.")
    goal: Literal["minimize", "maximize"] = "minimize"
    target: float | None = None


class SweepSpec(BaseModel):
    """The W&B part of a sweep file. Unknown W&B-compatible keys are kept in ``raw`` of :class:`Sweep`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    method: Literal["grid", "random"]
    parameters: dict[str, Any]
    program: str | None = None
    command: list[str] | None = None
    metric: Metric | None = None
    run_cap: int | None = Field(default=None, ge=1)
    name: str | None = Field(default=None, max_length=128)
    description: str | None = None
    project: str | None = None
    entity: str | None = None
    early_terminate: dict[str, Any] | None = None


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the file as written (``raw``), its parsed parts and its lazy expansion."""

    raw: dict[str, Any]
    spec: SweepSpec
    params: tuple[Param, ...]
    expansion: Expansion
    launch_block: dict[str, Any]  # the file's ``sweepq:`` block, unmerged

    @property
    def total(self) -> int:
        return self.expansion.total

    def trial(self, index: int) -> dict[str, Any]:
        return self.expansion.trial(index)

    def breakdown(self) -> list[tuple[str, int]]:
        """``[(parameter, number of values)]`` of the grid axes (empty for random)."""
        return [(d.param.name, d.size) for d in self.expansion.dims]


_EXAMPLES = {"run_cap": "run_cap: 50", "gpus_per_node": "gpus_per_node: 0 for CPU-only trials", "priority": "priority: 10"}


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Field names of the model that holds ``loc``'s last key, walking into nested models
    (``metric`` → Metric, ``resources`` → Resources): without that, an unknown nested key got
    itself as the suggestion ("metric.goals: unknown key — did you mean 'goals'?")."""
    if model is LaunchSettings and len(loc) == 1:
        return set(LaunchSettings.model_fields) | {"nodes"}
    current: Any = model
    for part in loc[:-1]:
        info = current.model_fields.get(str(part))
        annotation = info.annotation if info is not None else None
        nested = [t for t in (annotation, *get_args(annotation)) if isinstance(t, type) and issubclass(t, BaseModel)]
        if not nested:
            return set()
        current = nested[0]
    return set(current.model_fields)


def _one_problem(err: Any, prefix: str, model: type[BaseModel]) -> str:
    loc_t = tuple(err["loc"])
    loc = ".".join(str(p) for p in loc_t) or "(top level)"
    kind = err.get("type", "")
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    field = str(loc_t[-1]) if loc_t else ""
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"{prefix}{loc}: unknown key — {suggest(field, _known_fields(model, loc_t) or {field})}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{prefix}{loc}: {shown} is not a whole number — write e.g. {_EXAMPLES.get(field, field + ': 1')}"
    if kind in ("float_parsing", "float_type"):
        return f"{prefix}{loc}: {shown} is not a number"
    if kind in ("string_type", "bool_type", "bool_parsing", "dict_type", "list_type", "model_type"):
        want = kind.split("_")[0].replace("dict", "mapping").replace("model", "mapping").replace("string", "string")
        return f"{prefix}{loc}: {shown} is not a {want} — {msg.lower()}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()), "?")
        op = {"greater_than_equal": "≥", "greater_than": ">", "less_than_equal": "≤", "less_than": "<"}[kind]
        hint = f" — {_EXAMPLES[field]}" if field in _EXAMPLES else ""
        return f"{prefix}{loc}: {shown} must be {op} {bound}{hint}"
    if kind in ("literal_error", "enum"):
        expected = re.findall(r"'([^']+)'", str(ctx.get("expected", "")))
        tip = suggest(str(value), expected) if expected else msg
        return f"{prefix}{loc}: {shown} is not one of {', '.join(expected) or msg} — {tip}"
    if kind == "missing":
        return f"{prefix}{loc}: missing — add it"
    if ":" in msg.split(" ")[0]:
        return f"{prefix}{msg}"  # our own validators already name the field and the fix
    return f"{prefix}{loc}: {msg} (got {shown})"


def _pydantic_problems(exc: ValidationError, prefix: str = "", model: type[BaseModel] = SweepSpec) -> list[str]:
    return [_one_problem(err, prefix, model) for err in exc.errors()]


def _check_command(spec: SweepSpec, problems: list[str]) -> None:
    command = spec.command or list(DEFAULT_COMMAND)
    for i, part in enumerate(command):
        for macro in re.findall(r"\$\{[^}]*\}", part):
            if macro not in MACROS:
                problems.append(
                    f"command[{i}]: unknown macro {macro} — W&B macros are {', '.join(MACROS)}"
                )
    if not any(part in ARG_MACROS for part in command):
        problems.append(
            "command: has none of ${args}, ${args_no_hyphens}, ${args_json} — the trial would never see its "
            "parameters; add ${args}"
        )
    if "${program}" in command and not spec.program:
        problems.append("program: missing — the command uses ${program}; write e.g. program: train.py")


def _check_grid(
    params: list[Param], max_grid_size: int, run_cap: int | None, problems: list[str], *, size_check: bool = True
) -> None:
    for p in params:
        if p.distribution not in GRIDDABLE:
            if p.distribution == "uniform":
                why = "`min`/`max` is continuous and cannot be gridded — give `values:`, or integer min/max, or use method: random"
            elif p.distribution == "categorical":
                why = "weighted `probabilities` make no sense in a grid — drop them or use method: random"
            else:
                why = f"distribution {p.distribution} is continuous and cannot be gridded — give `values:` or use method: random"
            problems.append(f"{field_path(p)}: {why}")
    if not size_check or any(p.distribution not in GRIDDABLE for p in params):
        return
    dims = grid_dims(params)
    size = 1
    for d in dims:
        size *= d.size
    effective = min(size, run_cap) if run_cap else size
    if effective > max_grid_size:
        parts = " × ".join(f"{d.param.name} ({d.size:,})" for d in dims)
        problems.append(
            f"parameters: the grid has {size:,} trials, over the limit of {max_grid_size:,}: {parts} — "
            "use fewer values, set run_cap, or raise SWEEPQ_MAX_GRID_SIZE"
        )


def validate_sweep(
    raw: Any,
    *,
    source: str | None = None,
    max_grid_size: int = DEFAULT_MAX_GRID_SIZE,
) -> Sweep:
    """Validate a parsed sweep file. Raises :class:`SpecError` with every problem found."""
    if not isinstance(raw, dict):
        raise SpecError(
            f"the file must be a mapping (method:, parameters:, ...), got {type(raw).__name__} — "
            "start from examples/sweep.yaml",
            source=source,
        )
    problems: list[str] = []
    for key in raw:
        if key not in KNOWN_KEYS:
            problems.append(f"{key}: unknown key — {suggest(str(key), KNOWN_KEYS)}")
    method = raw.get("method")
    if method == "bayes":
        problems.append(
            "method: 'bayes' needs a live model of finished runs, which sweepq does not run — use "
            "method: random with run_cap (or method: grid), or run this sweep with a W&B agent"
        )
    elif method == "custom":
        problems.append("method: 'custom' is not supported — use method: grid or method: random")
    elif method is None:
        problems.append("method: missing — write method: grid or method: random")
    elif method not in ("grid", "random"):
        problems.append(f"method: {method!r} is not a method — {suggest(str(method), ['grid', 'random'])}")
    if "parameters" not in raw:
        problems.append("parameters: missing — define the parameters to sweep, e.g. lr: {values: [0.1, 0.01]}")
    if method not in ("grid", "random") or "parameters" not in raw:
        raise SpecError(problems, source=source)

    wandb_part = {k: v for k, v in raw.items() if k in WANDB_KEYS}
    try:
        spec = SweepSpec.model_validate(wandb_part)
    except ValidationError as exc:
        raise SpecError(problems + _pydantic_problems(exc), source=source) from exc

    params, param_problems = parse_parameters(spec.parameters)
    problems += param_problems
    _check_command(spec, problems)
    block = raw.get(EXTENSION_KEY) or {}
    if not isinstance(block, dict):
        problems.append(
            f"{EXTENSION_KEY}: must be a mapping of launch settings, got {type(block).__name__} — "
            "e.g. sweepq: {kind: pytorchjob, gpus_per_node: 8}"
        )
        block = {}
    else:
        try:
            merge_launch(block)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, prefix=f"{EXTENSION_KEY}.", model=LaunchSettings))
    if spec.method == "random" and not spec.run_cap:
        problems.append("run_cap: missing — a random sweep never ends by itself; add e.g. run_cap: 50")
    if spec.method == "grid":
        _check_grid(params, max_grid_size, spec.run_cap, problems, size_check=not param_problems)
    if problems:
        raise SpecError(problems, source=source)

    seed = int(params_hash(spec.parameters)[:8], 16)
    expansion = Expansion(params, method=spec.method, run_cap=spec.run_cap, seed=seed)
    return Sweep(raw=raw, spec=spec, params=tuple(params), expansion=expansion, launch_block=dict(block))


def load_sweep(text: str | bytes, *, source: str = "sweep file", max_grid_size: int = DEFAULT_MAX_GRID_SIZE) -> Sweep:
    return validate_sweep(load_yaml(text, source=source), source=source, max_grid_size=max_grid_size)


def resolve_launch(sweep: Sweep, *, defaults: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> LaunchSettings:
    """Team defaults < the file's ``sweepq:`` block < command-line overrides."""
    try:
        return merge_launch(defaults, sweep.launch_block, overrides)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, prefix=f"{EXTENSION_KEY}.", model=LaunchSettings)) from exc


def validate_launch(raw: Any, *, prefix: str = "launch.") -> LaunchSettings:
    """The resolved launch settings of a submit body. Raises :class:`SpecError` naming each field
    like the file's ``sweepq:`` block does — not pydantic's own text, which repeats the input: a
    refused ``env.WANDB_API_KEY`` value ended up in the REJECTED sweep's reason and in the logs."""
    try:
        return LaunchSettings.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, prefix=prefix, model=LaunchSettings)) from exc


def json_schema() -> dict[str, Any]:
    """JSON schema of a sweep file (W&B keys + the ``sweepq:`` block)."""
    schema = SweepSpec.model_json_schema()
    schema["title"] = "sweepq sweep file"
    schema["properties"][EXTENSION_KEY] = LaunchSettings.model_json_schema()
    schema["properties"]["parameters"]["description"] = (
        "W&B parameters: {name: {value|values|min/max|distribution|parameters: {...}}}"
    )
    return schema
