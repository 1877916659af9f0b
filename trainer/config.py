"""Typed training configuration and the W&B-style argument parser.

A W&B sweep agent expands ``${args}`` to ``--learning_rate=0.001 --batch_size=16 --fp16=False``;
people type ``--learning_rate 0.001``. Both forms are accepted, for every field of a frozen
dataclass, with one parser shared by ``trainer`` and ``trainer prepare``:

- ``--key=value`` and ``--key value``; ``--key-name`` is the same as ``--key_name``;
- booleans as ``True``/``False`` (also ``true``/``1``/``yes``), or a bare ``--flag`` for True;
- ints written as whole floats (``--batch_size=16.0``) are accepted, other floats are not;
- an unknown argument is an error that names it, suggests the closest match and lists the
  valid ones; a value that does not convert names the field, the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

OptimizerName = Literal["adamw", "sgd"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


class ConfigError(ValueError):
    """A command-line argument is unknown or has an invalid value. The message says how to fix it."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one trial needs. Every field is a ``--field=value`` argument."""

    model: str = field(default="tiny", metadata=_help(
        "'tiny' (random-init small BERT, no download), 'bert-base-random' (bert-base-cased's shape, random "
        "init, no download), a Hugging Face hub name (bert-base-cased) or a local model directory"))
    data: str = field(default="synthetic", metadata=_help(
        "'synthetic' (seeded sentiment-like headlines) or a directory with train.csv, validation.csv, test.csv"))
    learning_rate: float = field(default=5e-5, metadata=_help("peak learning rate (tiny models like ~1e-3)"))
    weight_decay: float = field(default=0.01, metadata=_help("decoupled weight decay; biases and LayerNorm get none"))
    batch_size: int = field(default=16, metadata=_help(
        "global batch size: examples per optimizer step over all ranks together; each rank's share and the "
        "micro-batches are derived from it and the world size, so an elastic restart keeps the recipe"))
    micro_batch_size: int = field(default=0, metadata=_help(
        "most examples one rank puts through one forward/backward (gradient accumulation covers the rest of its "
        "share); 0: the whole share at once. Memory only: the result does not depend on it"))
    eval_batch_size: int = field(default=64, metadata=_help("evaluation batch size per process"))
    epochs: int = field(default=3, metadata=_help("passes over the training set"))
    warmup_ratio: float = field(default=0.1, metadata=_help("fraction of optimizer steps with linear warmup"))
    optimizer: OptimizerName = field(default="adamw", metadata=_help("adamw or sgd"))
    momentum: float = field(default=0.9, metadata=_help("SGD momentum (sgd only)"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm; 0 disables clipping"))
    max_length: int = field(default=128, metadata=_help("truncate sequences to this many tokens (padding is dynamic)"))
    dropout: float = field(default=0.1, metadata=_help("hidden and attention dropout probability"))
    seed: int = field(default=42, metadata=_help("seed for initialisation, shuffling and dropout"))
    data_seed: int = field(default=1234, metadata=_help("seed of the synthetic data set (kept apart from --seed)"))
    synthetic_samples: int = field(default=3000, metadata=_help("size of the synthetic data set (80/10/10 split)"))
    eval_every: int = field(default=0, metadata=_help(
        "evaluate every N optimizer steps (and at the last step) instead of at epoch ends; 0: at every epoch end. "
        "Each evaluation is one position of the metric history (Hyperband's iteration)"))
    checkpoint_every: int = field(default=200, metadata=_help(
        "write a checkpoint every N optimizer steps (0: only at epoch ends)"))
    log_every: int = field(default=10, metadata=_help("log train loss and lr every N optimizer steps"))
    precision: Precision = field(default="auto", metadata=_help(
        "auto (bf16 autocast on GPUs with bf16 tensor cores, fp16 with loss scaling on older GPUs, fp32 on CPU), "
        "bf16, fp16 (loss-scaled), fp32"))
    compile: bool = field(default=False, metadata=_help("torch.compile the model for training (GPU throughput)"))
    num_workers: int = field(default=0, metadata=_help("DataLoader worker processes (kept alive across epochs)"))
    output_dir: str | None = field(default=None, metadata=_help(
        "root of outputs; overrides SWEEPQ_OUTPUT_DIR (the run writes to <root>/<trial id or 'standalone'>/)"))
    resume: bool = field(default=True, metadata=_help("resume from this trial's latest checkpoint if one exists"))

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "a positive number, e.g. 2e-5")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "0 or more")
        for name in ("batch_size", "eval_batch_size", "epochs", "log_every"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "an integer of at least 1")
        _check(0 <= self.warmup_ratio <= 1, "warmup_ratio", self.warmup_ratio, "a fraction in [0, 1]")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a value in [0, 1)")
        _check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "0 (off) or a positive norm")
        _check(8 <= self.max_length <= 8192, "max_length", self.max_length, "a token count between 8 and 8192")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "a probability in [0, 1)")
        _check(self.synthetic_samples >= 30, "synthetic_samples", self.synthetic_samples, "at least 30")
        for name in ("checkpoint_every", "num_workers", "micro_batch_size", "eval_every"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "0 or more")

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that change what is trained (a checkpoint is only valid for the same values)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in OPERATIONAL_FIELDS}


# Fields that change how a run is operated, not what it computes: a checkpoint written with other
# values of these is still the same trial.
OPERATIONAL_FIELDS = frozenset({"output_dir", "resume", "checkpoint_every", "log_every", "num_workers",
                                "eval_batch_size", "micro_batch_size", "compile"})
# Arguments of earlier trainer versions whose meaning moved: the error says what to write instead.
RETIRED_ARGUMENTS = {
    "gradient_accumulation_steps": "accumulation is derived now: --batch_size is the global batch (all ranks, one "
                                   "optimizer step); to bound the memory of one forward pass set --micro_batch_size",
}


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"--{name}={value!r} is out of range: expected {expected}")


def parse_args(argv: list[str], cls: type = TrainConfig) -> Any:
    """Parse ``--key=value`` / ``--key value`` arguments into the frozen dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument {token!r}: arguments are --name=value (valid: {_valid(fields)})")
        name, has_value, raw = token[2:].partition("=")
        name = name.replace("-", "_")
        if name not in fields and name in RETIRED_ARGUMENTS and cls is TrainConfig:
            raise ConfigError(f"--{name} is no longer an argument: {RETIRED_ARGUMENTS[name]}")
        if name not in fields:
            raise ConfigError(_unknown_message(name, fields))
        kind = hints[name]
        if not has_value:
            next_is_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            if next_is_value:
                raw = argv[i + 1]
                i += 1
            elif _base_type(kind) is bool:
                raw = "True"
            else:
                raise ConfigError(f"--{name} needs a value, e.g. --{name}={_example(fields[name])}")
        if name in values:
            raise ConfigError(f"--{name} is given twice ({values[name]!r} and {raw!r}): give it once")
        values[name] = convert(name, raw, kind)
        i += 1
    required = [name for name, f in fields.items() if name not in values
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise ConfigError(f"missing required argument(s): {', '.join(f'--{name}=...' for name in required)}")
    return cls(**values)


def convert(name: str, raw: str, kind: Any) -> Any:
    """Convert one string value to the field's type; the error names the field and the value."""
    if _is_optional(kind):
        if raw in ("None", "none", "null", ""):
            return None
        kind = _base_type(kind)
    origin = typing.get_origin(kind)
    if origin is Literal:
        choices = typing.get_args(kind)
        if raw not in choices:
            raise ConfigError(f"--{name}={raw!r} is not one of {', '.join(map(str, choices))}")
        return raw
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"--{name}={raw!r} is not a boolean: write True or False")
    if kind is int:
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"--{name}={raw!r} is not an integer: write e.g. --{name}=16")
        return int(number)
    if kind is float:
        try:
            number = float(raw)
        except ValueError:
            raise ConfigError(f"--{name}={raw!r} is not a number: write e.g. --{name}=0.001") from None
        if not math.isfinite(number):
            raise ConfigError(f"--{name}={raw!r} is not a finite number")
        return number
    return raw


def usage(cls: type = TrainConfig, prog: str = "trainer") -> str:
    """Help text generated from the dataclass fields."""
    hints = typing.get_type_hints(cls)
    lines = [f"usage: {prog} [--name=value ...]", "", (cls.__doc__ or "").strip(), ""]
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        choices = typing.get_args(_base_type(kind)) if typing.get_origin(_base_type(kind)) is Literal else ()
        type_name = "|".join(choices) if choices else getattr(_base_type(kind), "__name__", str(kind))
        default = "required" if f.default is dataclasses.MISSING else f"default: {f.default!r}"
        lines.append(f"  --{f.name}={type_name}  ({default})")
        lines.append(f"        {f.metadata.get('help', '')}")
    return "\n".join(lines)


def _is_optional(kind: Any) -> bool:
    return typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)


def _base_type(kind: Any) -> Any:
    if _is_optional(kind):
        (inner,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return inner
    return kind


def _valid(fields: dict[str, Any]) -> str:
    return ", ".join(f"--{name}" for name in sorted(fields))


def _unknown_message(name: str, fields: dict[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    return f"unknown argument --{name}{hint}. Valid arguments: {_valid(fields)}"


def _example(f: dataclasses.Field) -> str:
    return "VALUE" if f.default is None else str(f.default)
