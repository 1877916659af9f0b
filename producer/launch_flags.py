"""``producer submit`` flags for every key of the ``sweepq:`` block, generated from the model.

One flag per field of :class:`dispatcher.core.launch.LaunchSettings`, named after the key
(``gpus_per_node`` → ``--gpus-per-node``), with the field's own description as help and its
bounds as the flag's range, so a key added to the model gets its flag without a change here.
How a field's type becomes a flag:

=============================== ==============================================================
``int`` / ``str`` (optional)    ``--key VALUE``; bounds (``ge``/``le``) checked by the flag
``Literal[...]``                ``--key CHOICE``
``bool``                        ``--key / --no-key``
a duration (``max_runtime``)    ``--key 90m`` (seconds, or ``s``/``m``/``h``/``d``)
``min_nodes`` + ``max_nodes``   one ``--nodes N`` or ``--nodes MIN:MAX``
``dict[str, str]`` (``env``)    ``--env NAME=VALUE``, repeatable
a nested model (``resources``)  one flag per sub-key: ``--cpu 8 --memory 64Gi``
anything else (``template``)    ``--key YAML`` or ``--key @file.yaml``
an optional key with a default  ``none`` unsets it: ``--wandb-secret none``
=============================== ==============================================================

Flags win over the file's ``sweepq:`` block, which wins over the team defaults (see
:mod:`producer.sweepfile`); a nested model's sub-keys are merged key by key across the layers.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
import yaml
from pydantic import BaseModel

from dispatcher.core.launch import LaunchSettings, parse_duration

NODE_FIELDS = ("min_nodes", "max_nodes")
UNSET = ("none", "null")
PREFIX = "launch__"


@dataclass(frozen=True)
class Flag:
    """One generated option: ``key`` is the ``sweepq:`` key it sets (``resources.cpu`` for a sub-key)."""

    key: str
    option: str
    param: inspect.Parameter
    convert: Callable[[Any], Any]


def _inner(annotation: Any) -> tuple[Any, bool]:
    """The type inside ``Optional[...]``, and whether ``None`` was allowed."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(annotation)):
            return args[0], True
    return annotation, False


def _bounds(field: Any) -> dict[str, Any]:
    out = {}
    for item in field.metadata:
        if hasattr(item, "ge"):
            out["min"] = item.ge
        if hasattr(item, "le"):
            out["max"] = item.le
    return out


def _duration_fields() -> set[str]:
    fields: set[str] = set()
    for decorator in LaunchSettings.__pydantic_decorators__.field_validators.values():
        if decorator.func.__name__ == "_durations":
            fields.update(decorator.info.fields)
    return fields


def _option(name: str) -> str:
    return "--" + name.replace("_", "-").replace(".", "-")


def _param(name: str, annotation: Any, option: typer.models.OptionInfo) -> inspect.Parameter:
    return inspect.Parameter(PREFIX + name.replace(".", "__"), inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[annotation, option])


def _unsettable(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in UNSET else value


def _env_pairs(values: Any) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for pair in values:
        name, sep, value = str(pair).partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE — write e.g. --env OMP_NUM_THREADS=4")
        out[name] = value
    return out


def _yaml_value(option: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        text = str(value)
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text()
            except OSError as exc:
                raise typer.BadParameter(f"{text[1:]}: cannot read ({exc.strerror}) — fix the path", param_hint=option) from exc
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"not valid YAML ({exc}) — quote the value or use @file.yaml", param_hint=option) from exc
    return convert


def _nodes(value: Optional[str]) -> Optional[str]:
    if value is not None:
        parts = value.split(":")
        if len(parts) > 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise typer.BadParameter(f"{value!r} is not N or MIN:MAX — write e.g. --nodes 2 or --nodes 1:4")
    return value


def _duration_check(option: str) -> Callable[[Optional[str]], Optional[str]]:
    def check(value: Optional[str]) -> Optional[str]:
        try:
            parse_duration(value, field=option)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        return value
    return check


def _help(description: str | None, key: str, extra: str = "") -> str:
    return f"{(description or key.replace('_', ' ')).rstrip('.')}{extra} [sweepq: {key}]"


def _field_flags(name: str, field: Any, durations: set[str]) -> list[Flag]:
    annotation, optional = _inner(field.annotation)
    option = _option(name)
    unset = " ('none' to unset)" if optional and field.default is not None else ""
    help_text = _help(field.description, name, unset)
    if name in durations:
        info = typer.Option(option, metavar="DURATION", callback=_duration_check(option), show_default=False,
                            help=_help(field.description, name))
        return [Flag(name, option, _param(name, Optional[str], info), lambda v: v)]
    if typing.get_origin(annotation) is typing.Literal:
        # one Enum per Literal field, for typer's choices; mypy cannot type an Enum whose name and members are
        # computed at run time
        choices = enum.Enum(f"{name}_choices", {str(c): str(c) for c in typing.get_args(annotation)},  # type: ignore[misc]
                            type=str)
        info = typer.Option(option, show_default=False, help=help_text)
        return [Flag(name, option, _param(name, Optional[choices], info), lambda v: v.value if v is not None else None)]
    if annotation is bool:
        info = typer.Option(f"{option}/--no-{option[2:]}", show_default=False, help=help_text)
        return [Flag(name, option, _param(name, Optional[bool], info), lambda v: v)]
    if annotation in (int, float):
        info = typer.Option(option, show_default=False, help=help_text, **_bounds(field))
        return [Flag(name, option, _param(name, Optional[annotation], info), lambda v: v)]
    if annotation is str:
        info = typer.Option(option, show_default=False, help=help_text)
        return [Flag(name, option, _param(name, Optional[str], info), _unsettable if unset else (lambda v: v))]
    if typing.get_origin(annotation) is dict and typing.get_args(annotation) == (str, str):
        info = typer.Option(option, metavar="NAME=VALUE", show_default=False, help=_help(field.description, name, "; repeatable"))
        return [Flag(name, option, _param(name, Optional[list[str]], info), _env_pairs)]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        flags = []
        for sub, sub_field in annotation.model_fields.items():
            key, sub_option = f"{name}.{sub}", _option(sub)
            info = typer.Option(sub_option, show_default=False, help=_help(sub_field.description, key))
            flags.append(Flag(key, sub_option, _param(key, Optional[str], info), lambda v: v))
        return flags
    info = typer.Option(option, metavar="YAML|@FILE", show_default=False, help=_help(field.description, name, " (YAML, or @file)"))
    return [Flag(name, option, _param(name, Optional[str], info), _yaml_value(option))]


def launch_flags() -> list[Flag]:
    """Every ``sweepq:`` key as a flag, in the model's order (``--nodes`` where ``min_nodes`` is)."""
    durations = _duration_fields()
    flags: list[Flag] = []
    for name, field in LaunchSettings.model_fields.items():
        if name in NODE_FIELDS:
            if name == NODE_FIELDS[0]:
                info = typer.Option("--nodes", metavar="N|MIN:MAX", callback=_nodes, show_default=False,
                                    help=_help("Nodes per trial: N, or MIN:MAX for an elastic range", "nodes"))
                flags.append(Flag("nodes", "--nodes", _param("nodes", Optional[str], info), lambda v: v))
            continue
        flags.extend(_field_flags(name, field, durations))
    return flags


FLAGS = launch_flags()


def parameters() -> list[inspect.Parameter]:
    return [flag.param for flag in FLAGS]


def overrides(values: dict[str, Any], *, lower: list[dict[str, Any]]) -> dict[str, Any]:
    """The flags' layer of launch settings from the command's keyword arguments (only the flags
    given; ``--wandb-secret none`` is an explicit ``None``). ``lower``: the layers under it (team
    defaults, the file's block), whose sub-keys of a nested model the flags complete."""
    out: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for flag in FLAGS:
        raw = values.get(flag.param.name)
        if raw is None or raw == []:
            continue
        if "." in flag.key:
            name, sub = flag.key.split(".", 1)
            nested.setdefault(name, {})[sub] = flag.convert(raw)
        else:
            out[flag.key] = flag.convert(raw)
    for name, given in nested.items():
        merged: dict[str, Any] = {}
        for layer in lower:
            if isinstance(layer.get(name), dict):
                merged.update(layer[name])
        out[name] = {**merged, **given}
    return out
