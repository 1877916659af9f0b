"""From a sweep file on disk to a validated sweep, resolved launch settings and a submit message.

No CLI and no AWS here: :mod:`producer.cli` reads flags and sends; this module decides what.

Launch settings are merged field by field, later layers winning (:func:`launch_layers`)::

    team defaults file (--defaults / $SWEEPQ_DEFAULTS)
      < $SWEEPQ_BACKEND (kind) and $SWEEPQ_IMAGE (image)
      < the file's ``sweepq:`` block
      < command-line flags
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import uuid
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


def parse_sweep(data: bytes, *, source: str, max_grid_size: int) -> Sweep:
    """Parse and validate a sweep file. Raises :class:`SpecError` listing every problem."""
    raw = load_yaml(data, source=source)
    not_json = json_problems(raw) if isinstance(raw, dict) else []
    try:
        sweep = validate_sweep(raw, source=source, max_grid_size=max_grid_size)
    except SpecError as exc:
        raise SpecError(not_json + exc.problems, source=source) from exc
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


def launch_layers(defaults_file: str | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The team-defaults layer: the defaults file (if any), then ``$SWEEPQ_BACKEND`` / ``$SWEEPQ_IMAGE``.

    Raises :class:`ConfigError` (exit 3) when the defaults are unreadable or invalid on their own.
    """
    env = os.environ if env is None else env
    path = defaults_file or env.get(DEFAULTS_ENV) or None
    layer: dict[str, Any] = {}
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
        layer.update(loaded)
    if env.get(ENV["backend"]):
        layer["kind"] = env[ENV["backend"]]
    if env.get(IMAGE_ENV):
        layer["image"] = env[IMAGE_ENV]
    try:
        merge_launch(layer)
    except ValidationError as exc:
        raise ConfigError("\n".join(_layer_problems(exc, f"team defaults ({path or 'environment'})"))) from exc
    return layer


def resolve(sweep: Sweep, *, defaults: dict[str, Any], overrides: dict[str, Any]) -> LaunchSettings:
    """Team defaults < the file's ``sweepq:`` block < flags. SpecError (exit 1) on conflicts."""
    return resolve_launch(sweep, defaults=defaults, overrides={k: v for k, v in overrides.items() if v is not None})


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
