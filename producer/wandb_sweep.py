"""Register a sweep with W&B, so it appears *as a sweep* in W&B's UI (sweep page, parallel
coordinates, parameter importance) while sweepq schedules every trial (wandb #11390).

``producer submit`` calls :func:`register` before it sends the message; the message then carries
the returned W&B sweep id (with the entity and project W&B filed it under), and every trial gets
``WANDB_SWEEP_ID``, ``WANDB_ENTITY`` and ``WANDB_PROJECT`` so its run attaches to that sweep at
``wandb.init``. The sweep is created with ``controller: {type: local}`` — W&B's own switch for "a
local controller schedules this sweep", so W&B's server never schedules a run of it.

* **When**: :func:`decide` — an explicit request (``--wandb-sweep/--no-wandb-sweep``, else the team
  defaults' ``wandb_sweep: true|false`` or ``$SWEEPQ_WANDB_SWEEP``) wins; otherwise only when
  the submitter has W&B credentials (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``, or a
  ``.netrc`` entry for the W&B host — where ``wandb login`` writes) and ``WANDB_MODE`` is not
  ``offline``/``disabled``. Without credentials nothing changes.
* **The key**: this module never reads it (only whether one is there); W&B's SDK reads it from
  its usual places and sends it to W&B's API alone. It never enters the message, an item or a
  log line: log lines hold the W&B sweep id and URL; SDK output is captured and dropped, and an
  error message is scrubbed of the key before it is raised.
* **What W&B receives** (:func:`wandb_config`): the file as written, minus sweepq's ``sweepq:``
  block and ``scheduler`` (both outside W&B's schema for a locally controlled sweep), with
  ``controller: {type: local}``, the sweepq sweep id as the name when the file has none, and an
  explicit ``distribution: uniform`` where ``min``/``max`` mix an int and a float (W&B's SDK
  refuses to guess; its engine and sweepq take that as uniform).
* **Exactly once**: the sweepq sweep is exactly-once by its idempotency token; W&B's API has no
  such token. A ``producer submit`` retried after an ambiguous failure (the message was sent but
  the reply was lost) registers a second, empty W&B sweep; the dispatcher keeps the first message,
  so trials attach to one W&B sweep only and the other stays empty (its description names the
  sweepq sweep id, so it is easy to find and delete). Nothing in sweepq's state ever forks.
* **When W&B is unreachable**: :func:`register` raises :class:`WandbRegistrationError`. With an
  explicit request, submit should fail (exit 3); when registration was automatic, submit should
  warn and send the sweep without a W&B sweep id (runs are still grouped by sweep id in W&B).
* **The SDK's process state**: ``wandb.sweep`` sets ``WANDB_ENTITY``/``WANDB_PROJECT`` in
  ``os.environ`` and prints; :func:`register` restores the environment and keeps stdout clean (so
  ``producer submit -o json`` stays JSON).

Tested against a loopback stand-in for W&B's GraphQL API (the SDK pointed at it with
``WANDB_BASE_URL``), never the internet: ``tests/integration/test_wandb_sweep.py``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import netrc
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, MutableMapping
from urllib.parse import quote, urlparse

from pydantic import ValidationError

from dispatcher.core.errors import ConfigError
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.spec import EXTENSION_KEY, Sweep

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
OFF_MODES = ("offline", "disabled", "dryrun")
# Keys of the file W&B does not get: sweepq's own block, and a custom-scheduler hook that W&B's
# schema refuses next to `controller: {type: local}`.
NOT_FOR_WANDB = (EXTENSION_KEY, "scheduler")


class WandbRegistrationError(ConfigError):
    """W&B's API did not register the sweep (unreachable, refused credentials, ...)."""


@dataclass(frozen=True)
class WandbSweep:
    """The sweep as W&B filed it. ``entity``/``project`` are W&B's answer: trials must use them."""

    sweep_id: str
    entity: str | None
    project: str | None
    url: str | None

    @property
    def path(self) -> str:
        return "/".join(p for p in (self.entity, self.project, self.sweep_id) if p)


@dataclass(frozen=True)
class Decision:
    register: bool
    required: bool  # an explicit request: a failure to register fails the submit
    reason: str


def _base_url(environ: Mapping[str, str]) -> str:
    return (environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def credentials_source(environ: Mapping[str, str] | None = None) -> str | None:
    """Where W&B's SDK would find credentials for this host, or ``None``. Never returns the key."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    host = urlparse(_base_url(environ)).hostname
    if environ.get("NETRC"):
        candidates = [pathlib.Path(environ["NETRC"]).expanduser()]
    else:
        home = pathlib.Path(environ.get("HOME") or pathlib.Path.home())
        candidates = [home / ".netrc", home / "_netrc"]
    for path in candidates:
        if not path.is_file():
            continue
        try:
            found = netrc.netrc(str(path)).authenticators(host or "")
        except (netrc.NetrcParseError, OSError) as exc:
            log.debug("W&B credentials: cannot read %s (%s)", path, type(exc).__name__)
            continue
        if found is not None:
            return f"netrc ({path})"
    return None


def decide(requested: bool | None = None, environ: Mapping[str, str] | None = None) -> Decision:
    """Register or not. ``requested``: ``True``/``False`` from a flag or the team policy, ``None``
    for automatic (credentials present, W&B not switched off)."""
    environ = os.environ if environ is None else environ
    if requested is False:
        return Decision(False, False, "not requested (--no-wandb-sweep, or the team defaults' wandb_sweep: false)")
    source = credentials_source(environ)
    mode = (environ.get("WANDB_MODE") or "").lower()
    if requested is True:
        if source is None:
            return Decision(True, True, "requested, but no W&B credentials: run `wandb login` or set WANDB_API_KEY")
        return Decision(True, True, f"requested; credentials from {source}")
    if mode in OFF_MODES:
        return Decision(False, False, f"WANDB_MODE={mode}")
    if source is None:
        return Decision(False, False, "no W&B credentials (run `wandb login` to see sweeps in W&B's UI)")
    return Decision(True, False, f"credentials from {source}")


def wandb_config(sweep: Sweep, *, sweepq_sweep_id: str) -> dict[str, Any]:
    """The config W&B receives (see the module docstring). Pure."""
    config = {k: copy.deepcopy(v) for k, v in sweep.raw.items() if k not in NOT_FOR_WANDB}
    config["controller"] = {"type": "local"}
    config.setdefault("name", sweepq_sweep_id)
    note = f"sweepq sweep {sweepq_sweep_id}"
    config["description"] = f"{config['description']}\n\n{note}" if config.get("description") else note
    for cfg in config["parameters"].values():
        if isinstance(cfg, dict) and "min" in cfg and "max" in cfg and "distribution" not in cfg:
            kinds = {isinstance(cfg["min"], int), isinstance(cfg["max"], int)}
            if kinds == {True, False}:
                cfg["distribution"] = "uniform"
    return config


@contextlib.contextmanager
def _sdk_quietly(environ: MutableMapping[str, str]) -> Iterator[dict[str, str | None]]:
    """Run the SDK with its prints captured and WANDB_* restored afterwards. Yields the values the
    SDK left in WANDB_ENTITY / WANDB_PROJECT (W&B's answer for where it filed the sweep)."""
    saved = {k: v for k, v in environ.items() if k.startswith("WANDB_")}
    seen: dict[str, str | None] = {}
    environ["WANDB_SILENT"] = "true"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield seen
    finally:
        seen.update(entity=environ.get("WANDB_ENTITY"), project=environ.get("WANDB_PROJECT"))
        for key in [k for k in environ if k.startswith("WANDB_")]:
            if key not in saved:
                del environ[key]
        environ.update(saved)


def _scrub(text: str, environ: Mapping[str, str]) -> str:
    key = environ.get("WANDB_API_KEY")
    return text.replace(key, "<redacted>") if key else text


def register(
    sweep: Sweep, *, sweepq_sweep_id: str, entity: str | None = None, project: str | None = None,
) -> WandbSweep:
    """Create the sweep in W&B (``controller: {type: local}``) and return where W&B filed it.

    ``entity``/``project``: the sweep file's win, then these arguments, then the SDK's defaults
    (``WANDB_ENTITY``/``WANDB_PROJECT``, the user's default entity). Raises
    :class:`WandbRegistrationError` (no SDK, W&B unreachable or refusing), never echoing the key.
    """
    try:
        import wandb
    except ImportError as exc:
        raise WandbRegistrationError(
            "W&B's SDK is not installed here — pip install 'sweepq[wandb]' (or submit with --no-wandb-sweep)"
        ) from exc
    environ = os.environ
    entity = sweep.spec.entity or entity
    project = sweep.spec.project or project
    config = wandb_config(sweep, sweepq_sweep_id=sweepq_sweep_id)
    try:
        with _sdk_quietly(environ) as seen:
            sweep_id = wandb.sweep(config, entity=entity, project=project)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types; one typed error, key scrubbed
        detail = _scrub(f"{type(exc).__name__}: {exc}", environ)
        raise WandbRegistrationError(
            f"W&B: could not register sweep {sweepq_sweep_id} at {_base_url(environ)} ({detail}) — check "
            "`wandb login` / WANDB_API_KEY and WANDB_BASE_URL, or submit with --no-wandb-sweep"
        ) from None
    entity = seen.get("entity") or entity
    project = seen.get("project") or project
    url = None
    if entity and project:
        to_app = getattr(wandb.util, "api_to_app_url", None) or wandb.util.app_url  # the SDK's API → UI mapping
        app = to_app(_base_url(environ)).rstrip("/")
        url = f"{app}/{quote(entity)}/{quote(project)}/sweeps/{quote(str(sweep_id))}"
    result = WandbSweep(sweep_id=str(sweep_id), entity=entity, project=project, url=url)
    log.info("registered sweep %s in W&B as %s (%s)", sweepq_sweep_id, result.path, url or "no URL")
    return result


@dataclass(frozen=True)
class Attachment:
    """What ``producer submit`` sends: ``launch`` with the W&B sweep when one was registered."""

    launch: LaunchSettings
    wandb: WandbSweep | None
    decision: Decision
    warning: str | None = None  # automatic registration failed: the sweep goes without a W&B sweep


def with_wandb_sweep(launch: LaunchSettings, wandb_sweep: WandbSweep) -> LaunchSettings:
    """``launch`` carrying the W&B sweep, validated as the dispatcher will validate it."""
    try:
        return LaunchSettings.model_validate({
            **launch.model_dump(), "wandb_sweep_id": wandb_sweep.sweep_id,
            "wandb_entity": wandb_sweep.entity, "wandb_project": wandb_sweep.project})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise WandbRegistrationError(
            f"W&B filed the sweep as {wandb_sweep.path}, which trials cannot be pointed at ({problems}) — use a plain "
            "entity and project name in the sweep file, or submit with --no-wandb-sweep") from None


def attach(
    sweep: Sweep, launch: LaunchSettings, *, sweepq_sweep_id: str, requested: bool | None,
    project: str | None = None, environ: Mapping[str, str] | None = None,
) -> Attachment:
    """Register the sweep with W&B when :func:`decide` says so and return the launch settings to send.

    A sweep whose launch settings already name a W&B sweep (``--wandb-sweep-id``) is attached to it
    as given. An explicit request that fails raises :class:`WandbRegistrationError` (exit 3); an
    automatic one that fails is returned with a ``warning`` and without a W&B sweep.
    """
    environ = os.environ if environ is None else environ
    if launch.wandb_sweep_id:
        return Attachment(launch, None, Decision(False, False, f"the launch settings name W&B sweep "
                                                               f"{launch.wandb_sweep_id}"))
    decision = decide(requested, environ)
    if not decision.register:
        log.debug("W&B sweep: not registering sweep %s: %s", sweepq_sweep_id, decision.reason)
        return Attachment(launch, None, decision)
    if decision.required and credentials_source(environ) is None:
        # W&B's SDK would ask for a key on the terminal: say what to do instead.
        raise WandbRegistrationError(f"W&B: registering sweep {sweepq_sweep_id} was {decision.reason} — or "
                                     "submit with --no-wandb-sweep")
    try:
        registered = register(sweep, sweepq_sweep_id=sweepq_sweep_id, project=project)
        return Attachment(with_wandb_sweep(launch, registered), registered, decision)
    except WandbRegistrationError as exc:
        if decision.required:
            raise
        warning = f"{exc} — sending sweep {sweepq_sweep_id} without a W&B sweep (its runs are still grouped by it)"
        log.warning("%s", warning)
        return Attachment(launch, None, decision, warning=warning)
