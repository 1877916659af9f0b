"""From a sweep file on disk to a validated sweep, resolved launch settings and a submit message.

No CLI and no AWS here: :mod:`producer.cli` reads flags and sends; this module decides what.

Launch settings are merged field by field, later layers winning (:func:`launch_layers`)::

    team defaults file (--defaults / $SWEEPQ_DEFAULTS)
      < $SWEEPQ_BACKEND (kind) and $SWEEPQ_IMAGE (image)
      < the file's ``sweepq:`` block
      < command-line flags

The team defaults may also say whether sweeps are registered with W&B (``wandb_sweep: true|false``,
``$SWEEPQ_WANDB_SWEEP`` over it): a producer-only choice, popped before the launch settings are
validated and never sent (:func:`team_defaults`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from dispatcher.core.errors import ConfigError, SpecError
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import DryRun
from dispatcher.core.launch import LaunchSettings, merge_launch
from dispatcher.core.message import SubmitMessage, encode_submit
from dispatcher.core.spec import Sweep, resolve_launch, validate_sweep
from dispatcher.core.yamlsafe import MAX_SPEC_BYTES, load_yaml
from dispatcher.settings import ENV, Settings
from producer.hints import improve

DEFAULTS_ENV = "SWEEPQ_DEFAULTS"
IMAGE_ENV = "SWEEPQ_IMAGE"
STDIN = "-"
_READ_LIMIT = 16 * 1024 * 1024  # larger files are refused by size without being read


def read_source(path: str) -> tuple[bytes, str]:
    """The bytes of ``path`` (``-`` = stdin) and the name messages use. FileNotFoundError if absent."""
    if path == STDIN:
        return sys.stdin.buffer.read(_READ_LIMIT + 1), "<stdin>"
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(path)
    size = file.stat().st_size
    if size > _READ_LIMIT:
        raise SpecError(
            f"file is {size // 1024} KiB, the limit is {MAX_SPEC_BYTES // 1024} KiB — sweep files list parameter "
            "ranges, not data; use min/max or fewer values",
            source=file.name,
        )
    return file.read_bytes(), file.name


def json_problems(value: Any, where: str = "") -> list[str]:
    """Values YAML can produce but the JSON body cannot carry faithfully: timestamps, binary, sets,
    NaN/infinity. Each problem names its path and the fix."""
    problems: list[str] = []
    here = where or "(top level)"
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                problems.append(f"{path}: a YAML {type(key).__name__} cannot be a JSON key — quote it")
                continue
            problems.extend(json_problems(item, path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems.extend(json_problems(item, f"{where}[{i}]"))
    elif isinstance(value, (dt.date, dt.datetime)):
        problems.append(f"{here}: {value.isoformat()} is a YAML timestamp, not a string — quote it: '{value}'")
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(f"{here}: {value!r} is not a finite number — JSON cannot carry it; write a large number instead")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        problems.append(f"{here}: a YAML {type(value).__name__} cannot be sent as JSON — write a plain value or a list")
    return problems


def parse_sweep(data: bytes, *, source: str, max_grid_size: int, launchable: bool = False) -> Sweep:
    """Parse and validate a sweep file. Raises :class:`SpecError` listing every problem, each with
    a fix that works (:mod:`producer.hints`). ``launchable`` (``submit``) also asks for what a launch
    needs and ``validate``/``expand`` do not (a ``program`` — W&B files written for
    ``wandb.agent(function=...)`` have none)."""
    raw = load_yaml(data, source=source)
    not_json = json_problems(raw) if isinstance(raw, dict) else []
    try:
        sweep = validate_sweep(raw, source=source, max_grid_size=max_grid_size, launchable=launchable)
    except SpecError as exc:
        raise SpecError(not_json + [improve(p) for p in exc.problems], source=source) from exc
    if not_json:
        raise SpecError(not_json, source=source)
    return sweep


def load_sweep_file(path: str, *, max_grid_size: int) -> Sweep:
    data, source = read_source(path)
    return parse_sweep(data, source=source, max_grid_size=max_grid_size)


def _layer_problems(exc: ValidationError, where: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}" if ":" in msg.split(" ")[0] else f"{where}: {loc}: {msg}")
    return out


# A producer-only team default (never a launch setting, never in the message): register every sweep
# with W&B (true), never (false); absent = automatic, when the submitter has W&B credentials.
WANDB_SWEEP_KEY = "wandb_sweep"
WANDB_SWEEP_ENV = "SWEEPQ_WANDB_SWEEP"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class TeamDefaults:
    launch: dict[str, Any]  # the team-defaults layer of the launch settings
    wandb_sweep: bool | None  # register with W&B: the team's choice, None = automatic


def team_defaults(defaults_file: str | None, env: Mapping[str, str] | None = None) -> TeamDefaults:
    """The team defaults: the defaults file (if any), then ``$SWEEPQ_BACKEND`` / ``$SWEEPQ_IMAGE``
    (launch settings) and ``$SWEEPQ_WANDB_SWEEP`` (over the file's ``wandb_sweep:``).

    Raises :class:`ConfigError` (exit 3) when the defaults are unreadable or invalid on their own.
    """
    env = os.environ if env is None else env
    path = defaults_file or env.get(DEFAULTS_ENV) or None
    layer: dict[str, Any] = {}
    wandb_sweep: bool | None = None
    if path:
        where = f"{DEFAULTS_ENV if not defaults_file else '--defaults'} {path}"
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read the team defaults ({exc.strerror}) — fix the path") from exc
        try:
            loaded = load_yaml(data, source=path)
        except SpecError as exc:
            raise ConfigError("\n".join(f"{where}: {p}" for p in exc.problems)) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}: must be a mapping of launch settings (image:, gpus_per_node:, ...)")
        loaded = dict(loaded)
        if WANDB_SWEEP_KEY in loaded:
            wandb_sweep = loaded.pop(WANDB_SWEEP_KEY)
            if not isinstance(wandb_sweep, bool):
                raise ConfigError(f"{where}: {WANDB_SWEEP_KEY}: {str(wandb_sweep)[:40]!r} is not true or false — write "
                                  f"{WANDB_SWEEP_KEY}: true (register every sweep with W&B), false (never), or omit it")
        layer.update(loaded)
    if env.get(ENV["backend"]):
        layer["kind"] = env[ENV["backend"]]
    if env.get(IMAGE_ENV):
        layer["image"] = env[IMAGE_ENV]
    if env.get(WANDB_SWEEP_ENV):
        text = env[WANDB_SWEEP_ENV].strip().lower()
        if text not in _TRUE + _FALSE:
            raise ConfigError(f"{WANDB_SWEEP_ENV}: {env[WANDB_SWEEP_ENV][:40]!r} is not true or false — set it to "
                              "true, false, or unset it (automatic: register when you have W&B credentials)")
        wandb_sweep = text in _TRUE
    try:
        merge_launch(layer)
    except ValidationError as exc:
        raise ConfigError("\n".join(_layer_problems(exc, f"team defaults ({path or 'environment'})"))) from exc
    return TeamDefaults(launch=layer, wandb_sweep=wandb_sweep)


def launch_layers(defaults_file: str | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The team-defaults layer of the launch settings (:func:`team_defaults`)."""
    return team_defaults(defaults_file, env).launch


def resolve(sweep: Sweep, *, defaults: dict[str, Any], overrides: dict[str, Any]) -> LaunchSettings:
    """Team defaults < the file's ``sweepq:`` block < flags. SpecError (exit 1) on conflicts.
    ``overrides`` holds only the flags given (an explicit ``None`` unsets a key)."""
    try:
        return resolve_launch(sweep, defaults=defaults, overrides=overrides)
    except SpecError as exc:
        raise SpecError([improve(p) for p in exc.problems], source=exc.source) from exc


def file_block(sweep: Sweep) -> dict[str, Any]:
    block = sweep.raw.get("sweepq") if isinstance(sweep.raw, dict) else None
    return dict(block) if isinstance(block, dict) else {}


def kind_source(*, defaults: dict[str, Any], overrides: dict[str, Any], block: dict[str, Any],
                env: Mapping[str, str] | None = None) -> str:
    """Where the job kind of a submit comes from, for ``--dry-run`` to say it ("" = nowhere: the
    dispatcher's own ``SWEEPQ_BACKEND`` decides)."""
    env = os.environ if env is None else env
    if overrides.get("kind"):
        return "--kind"
    if block.get("kind"):
        return "the file's sweepq.kind"
    if env.get(ENV["backend"]):
        return f"${ENV['backend']}"
    if defaults.get("kind"):
        return "the team defaults"
    return ""


def launch_payload(launch: LaunchSettings) -> dict[str, Any]:
    """The ``launch`` of the SQS body: non-default ``None`` values dropped, except an explicit
    ``wandb_secret: null`` ("no W&B secret"), which would otherwise turn back into the default."""
    payload = launch.model_dump(mode="json", exclude_none=True)
    if launch.wandb_secret is None:
        payload["wandb_secret"] = None
    return payload


def new_token() -> str:
    """A fresh idempotency token: one per ``producer submit`` invocation."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """UTC ISO-8601 with ``Z`` and milliseconds (sorts as text, orders quick successive submits)."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def build_submit(
    sweep: Sweep, launch: LaunchSettings, *, token: str, submitter: str, source: str, submitted_at: str
) -> tuple[SubmitMessage, str]:
    """The message and its encoded body. MessageError (exit 1) when the body is over 256 KiB."""
    msg = SubmitMessage(
        sweep_id=sweep_id_for(sweep.spec.name, token),
        token=token,
        spec=sweep.raw,
        launch=launch_payload(launch),
        submitter=submitter,
        submitted_at=submitted_at,
        source=source,
    )
    return msg, encode_submit(msg)


def dry_run(settings: Settings, sweep: Sweep, sweep_id: str, launch: LaunchSettings) -> DryRun:
    """The exact job the dispatcher would create for trial 0, attempt 1. Needs no cluster."""
    from dispatcher.backends import make_backend
    from dispatcher.trials import launch_request
    from dispatcher.wiring import backend_options

    kind = launch.kind or settings.backend
    backend = make_backend(kind, api_client=None, namespace=settings.namespace, **backend_options(kind, settings))
    request = launch_request(settings, sweep, sweep_id, launch, 0, 1, settings.queue_url)
    return backend.dryrun(request)


def pretty_body(body: str) -> str:
    return json.dumps(json.loads(body), indent=2, sort_keys=True, ensure_ascii=False)
