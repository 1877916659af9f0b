"""The sweep file: a W&B sweep config (grid, random or bayes), plus an optional ``sweepq:`` block.

``load_sweep(text)`` / ``validate_sweep(raw)`` turn a file into a :class:`Sweep` or raise a
:class:`SpecError` listing *every* problem, each naming the field path, the bad value and the fix.
Accepted-but-notable things (deprecated distributions) are in :attr:`Sweep.warnings`.

Any W&B sweep config that W&B's own engine (PyPI ``sweeps``) accepts with ``method: grid``,
``random`` or ``bayes`` is accepted unchanged, with these deliberate differences (each refused with
a message that says why): ``random``/``bayes`` need ``run_cap`` (they never end otherwise),
``run_cap`` ≤ :data:`MAX_RUN_CAP`, ``method: custom``, ``${envvar:...}`` in ``command``, beta
``a``/``b`` = 0, and the bounds of :mod:`dispatcher.core.hyperband`. A file without ``program``
validates and expands (W&B files written for ``wandb.agent(function=...)`` have none); launching
it needs a program when the command uses ``${program}`` (:func:`launch_problems`). The
``sweepq:`` block (launch settings, see :mod:`dispatcher.core.launch`) is optional.
Purely computational.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dispatcher.core import wandb_keys
from dispatcher.core.errors import SpecError
from dispatcher.core.expand import Expansion, grid_dims
from dispatcher.core.hyperband import HyperbandSpec, parse_early_terminate
from dispatcher.core.identity import params_hash
from dispatcher.core.launch import LaunchSettings, merge_launch
from dispatcher.core.params import CATEGORICAL_PROB, CONSTANT, GRIDDABLE, Param, field_path, parse_parameters, suggest
from dispatcher.core.yamlsafe import load_yaml

DEFAULT_MAX_GRID_SIZE = 10**7
# The largest run_cap: a DynamoDB number (the sweep's total) far inside its 38 digits, and more
# trials than any cluster runs; a random or bayes sweep's size is its run_cap.
MAX_RUN_CAP = 10**9
METHODS = ("grid", "random", "bayes")
# W&B's GP over more dimensions than this costs seconds per suggestion (measured: 5 parameters 3.5 s,
# 2,000 parameters 35 s for one tick's 4 suggestions), and the tick serialises every sweep behind it.
MAX_BAYES_PARAMETERS = 100
EXTENSION_KEY = "sweepq"
# Every macro W&B's agent fills in (wandb/wandb_agent.py, sdk/launch/sweeps/utils.py).
ARG_MACROS = (
    "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}", "${args_json}", "${args_json_file}",
    "${args_no_equals}", "${args_append_hydra}", "${args_override_hydra}",
)
MACROS = ("${env}", "${interpreter}", "${program}", *ARG_MACROS)
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")
# Keys W&B's own sweep schema knows; accepted unchanged (some are only stored).
WANDB_KEYS = {
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
}
KNOWN_KEYS = WANDB_KEYS | {EXTENSION_KEY}


def _not_text_or_bool(value: Any, field: str, example: str) -> Any:
    """W&B's schema types numbers strictly: ``"1"`` and ``true`` are no run_cap (pydantic would take them)."""
    if isinstance(value, (str, bool)):
        raise ValueError(f"{field}: {value!r:.40} is not a whole number — write e.g. {example} (unquoted)")
    return value


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="Key the trainer reports, e.g. eval/accuracy.")
    goal: Literal["minimize", "maximize"] = "minimize"
    target: float | None = Field(default=None, description="Stored only: W&B stops creating runs once one reaches it.")
    impute: Literal["latest", "best", "worst"] | None = Field(
        default=None, description="bayes: the metric of a failed trial (default worst).")
    impute_while_running: Literal["latest", "best", "worst", "false"] | None = Field(
        default=None, description="bayes: use running trials' metric so far (default 'false': they are fantasised).")

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        if isinstance(value, (str, bool)):
            raise ValueError(f"metric.target: {value!r:.40} is not a number")
        return value

    @field_validator("impute_while_running", mode="before")
    @classmethod
    def _while_running(cls, value: Any) -> Any:
        if value is False:  # YAML `false`: W&B's schema wants the string (its engine crashes on the bool)
            raise ValueError("metric.impute_while_running: false (a YAML boolean) — write impute_while_running: 'false'")
        return value


class SweepSpec(BaseModel):
    """The W&B part of a sweep file. Unknown W&B-compatible keys are kept in ``raw`` of :class:`Sweep`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    method: Literal["grid", "random", "bayes"]
    parameters: dict[str, Any]
    program: str | None = None
    command: list[Any] | None = Field(default=None, description="argv with W&B macros; numbers are passed as text.")
    metric: Metric | None = None
    run_cap: int | None = Field(default=None, ge=1, le=MAX_RUN_CAP)
    name: str | None = None
    description: str | None = None
    project: str | None = None
    entity: str | None = None
    early_terminate: dict[str, Any] | None = None

    @field_validator("run_cap", mode="before")
    @classmethod
    def _run_cap(cls, value: Any) -> Any:
        return _not_text_or_bool(value, "run_cap", "run_cap: 50")


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the file as written (``raw``), its parsed parts and its lazy expansion."""

    raw: dict[str, Any]
    spec: SweepSpec
    params: tuple[Param, ...]
    expansion: Expansion
    launch_block: dict[str, Any]  # the file's ``sweepq:`` block, unmerged
    warnings: tuple[str, ...] = ()
    hyperband: HyperbandSpec | None = None

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def total(self) -> int:
        return self.expansion.total

    def trial(self, index: int) -> dict[str, Any]:
        """Trial ``index``'s parameters. Raises :class:`~dispatcher.core.expand.SuggestedTrial` for
        bayes, whose parameters come from :func:`dispatcher.core.search.suggest` at claim time."""
        return self.expansion.trial(index)

    def example_params(self, index: int = 0) -> dict[str, Any]:
        """Parameters to *render* trial ``index`` with when nothing is launched (intake's check of
        trial 0's job, ``submit --dry-run``): the trial itself for grid/random, a prior draw for
        bayes (whose real parameters are suggested at claim time)."""
        if self.method == "bayes":
            return self.expansion.prior_sample(index)
        return self.trial(index)

    def preview(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` trials, or ``[]`` for bayes (nothing to know before trials finish)."""
        if self.method == "bayes":
            return []
        return [self.trial(i) for i in range(min(count, self.total))]

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
    command = list(DEFAULT_COMMAND) if spec.command is None else spec.command
    for i, part in enumerate(command):
        if isinstance(part, bool) or not isinstance(part, (str, int, float)):
            problems.append(
                f"command[{i}]: {part!r:.40} is not a string or a number — quote it (W&B's agent would pass "
                f"str() of it: {str(part)!r:.40})"
            )
            continue
        for macro in re.findall(r"\$\{[^}]*\}", str(part)):
            if macro.startswith("${envvar:"):
                problems.append(
                    f"command[{i}]: {macro} (W&B's agent substitutes its own environment) is not supported — the "
                    "trial's environment is sweepq's: pass the value as a parameter or in sweepq.env"
                )
            elif macro not in MACROS:
                problems.append(f"command[{i}]: unknown macro {macro} — W&B macros are {', '.join(MACROS)}")
            elif part != macro:
                problems.append(
                    f"command[{i}]: {part!r:.60} — a macro must be a whole element (W&B's agent passes "
                    f"{macro} inside text verbatim); split it into its own list item"
                )
    if not any(part in ARG_MACROS for part in command):
        problems.append(
            "command: has none of ${args} or W&B's other argument macros (${args_no_hyphens}, ${args_json}, "
            "${args_json_file}, ...) — the trial would never see its parameters; add ${args}"
        )


def launch_problems(sweep: "Sweep") -> list[str]:
    """What keeps a valid sweep from being launched: a command that uses ``${program}`` (W&B's
    default does) without a ``program``. Checked at submit (:func:`resolve_launch`) and when a
    trial's command is rendered; ``producer validate``/``expand`` do not need it."""
    command = list(DEFAULT_COMMAND) if sweep.spec.command is None else sweep.spec.command
    if "${program}" in command and not sweep.spec.program:
        return list(_PROGRAM_MISSING)
    return []


_PROGRAM_MISSING = [
    "program: missing — the command runs ${program} (W&B's default command does); name a script that exists "
    "where the trials run (e.g. program: train.py in the local backend's working directory or the image), "
    'or run the reference trainer with command: ["${env}", "${interpreter}", "-m", "trainer", "${args}"]. '
    "(A file written for wandb.agent(function=...) has no program: sweepq launches a process, so name it.)"
]


def _check_grid(
    params: list[Param], max_grid_size: int, run_cap: int | None, problems: list[str], *, size_check: bool = True
) -> None:
    for p in params:
        if p.distribution not in GRIDDABLE:
            if p.distribution == "uniform":
                why = "`min`/`max` is continuous and cannot be gridded — give `values:`, or integer min/max, or use method: random"
            elif p.distribution == CATEGORICAL_PROB:
                why = ("weighted `probabilities` make no sense in a grid (W&B's grid refuses them too) — drop "
                       "them or use method: random")
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
    launchable: bool = False,
) -> Sweep:
    """Validate a parsed sweep file. Raises :class:`SpecError` with every problem found.

    ``launchable=True`` (``producer submit``) adds :func:`launch_problems` to them, so one run
    lists every problem; ``validate``/``expand`` leave it out (a file without ``program`` is fine
    there)."""
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
    if method == "custom":
        problems.append(
            "method: 'custom' is not supported — it hands the search to a custom scheduler (scheduler.engine: "
            "optuna or ax) that sweepq does not run; use method: grid, random or bayes"
        )
    elif method is None:
        problems.append("method: missing — write method: grid, method: random or method: bayes")
    elif method not in METHODS:
        problems.append(f"method: {method!r:.40} is not a method — {suggest(str(method), list(METHODS))}")
    if "parameters" not in raw:
        problems.append("parameters: missing — define the parameters to sweep, e.g. lr: {values: [0.1, 0.01]}")
    if method not in METHODS or "parameters" not in raw:
        raise SpecError(problems, source=source)

    problems += wandb_keys.check_strings(raw) + wandb_keys.check_metrics(raw)
    problems += wandb_keys.check_controller(raw) + wandb_keys.check_scheduler(raw)
    wandb_part = {k: v for k, v in raw.items() if k in WANDB_KEYS}
    try:
        spec = SweepSpec.model_validate(wandb_part)
    except ValidationError as exc:
        raise SpecError(problems + _pydantic_problems(exc), source=source) from exc

    warnings: list[str] = []
    params, param_problems = parse_parameters(spec.parameters, warnings=warnings)
    problems += param_problems
    _check_command(spec, problems)
    block = _check_block(raw, problems)
    _check_method(spec, params, problems)
    if spec.method == "grid":
        _check_grid(params, max_grid_size, spec.run_cap, problems, size_check=not param_problems)
    hyperband = None
    if spec.early_terminate is not None:
        hyperband, et_problems = parse_early_terminate(spec.early_terminate, has_metric=spec.metric is not None)
        problems += et_problems
    if launchable:
        command = list(DEFAULT_COMMAND) if spec.command is None else spec.command
        if "${program}" in command and not spec.program:
            problems += _PROGRAM_MISSING
    if problems:
        raise SpecError(problems, source=source)

    seed = int(params_hash(spec.parameters)[:8], 16)
    expansion = Expansion(params, method=spec.method, run_cap=spec.run_cap, seed=seed)
    return Sweep(raw=raw, spec=spec, params=tuple(params), expansion=expansion, launch_block=dict(block),
                 warnings=tuple(warnings), hyperband=hyperband)


def _check_block(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    block = raw.get(EXTENSION_KEY) or {}
    if not isinstance(block, dict):
        problems.append(
            f"{EXTENSION_KEY}: must be a mapping of launch settings, got {type(block).__name__} — "
            "e.g. sweepq: {kind: pytorchjob, gpus_per_node: 8}"
        )
        return {}
    try:
        merge_launch(block)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc, prefix=f"{EXTENSION_KEY}.", model=LaunchSettings))
    return block


def _check_method(spec: SweepSpec, params: list[Param], problems: list[str]) -> None:
    if spec.method == "random" and not spec.run_cap:
        problems.append("run_cap: missing — a random sweep never ends by itself; add e.g. run_cap: 50")
    if spec.method != "bayes":
        return
    if not spec.run_cap:
        problems.append(
            "run_cap: missing — method: 'bayes' never ends by itself (W&B's engine suggests runs forever); "
            "add e.g. run_cap: 30"
        )
    if spec.metric is None:
        problems.append(
            "metric: missing — method: 'bayes' models the metric of finished trials; add e.g. "
            "metric: {name: eval/loss, goal: minimize}"
        )
    if params and all(p.distribution == CONSTANT for p in params):
        problems.append(
            "parameters: method: 'bayes' needs at least one parameter to search (all are constants) — give one "
            "values: or min/max"
        )
    searched = [p for p in params if p.distribution != CONSTANT]
    if len(searched) > MAX_BAYES_PARAMETERS:
        problems.append(
            f"parameters: {len(searched)} searched parameters, more than the {MAX_BAYES_PARAMETERS} method: 'bayes' "
            "takes — one GP fit over thousands of dimensions costs minutes of every tick; search fewer (fix the "
            "others with value:) or use method: random"
        )
    for p in searched:
        problem = _bayes_range_problem(p)
        if problem:
            problems.append(f"parameters.{p.name}: {problem}")


def _bayes_range_problem(p: Param) -> str | None:
    """What W&B's engine would turn into inf or NaN for this parameter (it samples in float64)."""
    c = p.config
    lo, hi = c.get("min"), c.get("max")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not math.isfinite(float(hi) - float(lo)):
        return (f"the range {lo!r}…{hi!r} is wider than a float holds; method: 'bayes' would suggest inf — "
                "narrow it")
    if p.distribution in ("log_normal", "q_log_normal"):
        mu, sigma = float(c.get("mu", 0.0)), float(c.get("sigma", 1.0))
        if mu + 10 * sigma > 709 or mu - 10 * sigma < -745:  # exp() overflows / underflows to 0 in float64
            return (f"log_normal with mu {mu!r}, sigma {sigma!r} gives values beyond float range (exp(709) is the "
                    "largest); method: 'bayes' would suggest inf or 0 — lower mu or sigma")
    return None


def load_sweep(text: str | bytes, *, source: str = "sweep file", max_grid_size: int = DEFAULT_MAX_GRID_SIZE) -> Sweep:
    return validate_sweep(load_yaml(text, source=source), source=source, max_grid_size=max_grid_size)


def resolve_launch(sweep: Sweep, *, defaults: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> LaunchSettings:
    """Team defaults < the file's ``sweepq:`` block < command-line overrides. Also refuses a sweep
    that cannot be launched (:func:`launch_problems`): this is the submit-time check."""
    problems = launch_problems(sweep)
    try:
        launch = merge_launch(defaults, sweep.launch_block, overrides)
    except ValidationError as exc:
        raise SpecError(problems + _pydantic_problems(exc, prefix=f"{EXTENSION_KEY}.", model=LaunchSettings)) from exc
    if problems:
        raise SpecError(problems)
    return launch


def validate_launch(raw: Any, *, prefix: str = "launch.") -> LaunchSettings:
    """The resolved launch settings of a submit body. Raises :class:`SpecError` naming each field
    like the file's ``sweepq:`` block does — not pydantic's own text, which repeats the input: a
    refused ``env.WANDB_API_KEY`` value ended up in the REJECTED sweep's reason and in the logs."""
    try:
        return LaunchSettings.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, prefix=prefix, model=LaunchSettings)) from exc


# ``nodes: 2`` / ``nodes: "1:4"``: the shorthand LaunchSettings accepts before validation (it becomes
# min_nodes/max_nodes, so the model's own schema does not have it).
_NODES_SCHEMA = {
    "anyOf": [{"type": "integer", "minimum": 1, "maximum": 999999},
              {"type": "string", "pattern": r"^\s*\d{1,6}\s*(?::\s*\d{1,6}\s*)?$"}],
    "description": "Nodes per trial: N, or 'MIN:MAX' (torchrun's --nnodes) for an elastic range; sets min_nodes "
                   "and max_nodes.",
}


def _embedded(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A model's schema for use inside another document: its ``$defs`` move to the document's root,
    where its ``$ref: '#/$defs/...'`` pointers resolve (left nested, they point at nothing)."""
    for name, definition in schema.pop("$defs", {}).items():
        if defs.setdefault(name, definition) != definition:
            raise AssertionError(f"json_schema: two different models are both called {name}")
    return schema


def json_schema() -> dict[str, Any]:
    """JSON schema of a sweep file (W&B keys + the ``sweepq:`` block), one document whose
    ``$ref`` pointers all resolve from its root."""
    schema = SweepSpec.model_json_schema()
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    schema["title"] = "sweepq sweep file"
    block = _embedded(LaunchSettings.model_json_schema(), defs)
    block["properties"]["nodes"] = _NODES_SCHEMA
    schema["properties"][EXTENSION_KEY] = block
    schema["properties"]["early_terminate"] = _embedded(HyperbandSpec.model_json_schema(), defs)
    schema["properties"]["parameters"]["description"] = (
        "W&B parameters: {name: {value|values|min/max|distribution|parameters: {...}}}"
    )
    return schema
