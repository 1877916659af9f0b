"""SQS message bodies: versioned JSON envelopes. Pure.

Two schemas share the queue:

* ``sweepq.submit/v1`` — a sweep request from ``producer submit``::

      {"schema": "sweepq.submit/v1", "sweep_id": "bert-lr-abcdefgh", "token": "<idempotency token>",
       "spec": {<the sweep file, unchanged>}, "launch": {<resolved LaunchSettings>},
       "submitter": "arn:aws:iam::...:user/alice", "submitted_at": "2026-11-25T10:00:00Z",
       "source": "sweep.yaml"}

  ``sweep_id`` must equal ``sweep_id_for(spec.name, token)``, so a retried send (same token)
  always lands on the same sweep item and a conditional put makes it exactly-once.

* ``sweepq.wake/v1`` — "a trial finished, top up now" from the trainer's exit hook. A trigger only.

* ``sweepq.cancel/v1`` — ``producer cancel``: researchers only need to *send* to the queue and
  *read* the table; the dispatcher performs the cancellation.

* ``sweepq.pause/v1`` / ``sweepq.resume/v1`` — ``producer pause`` / ``producer resume``, shaped like
  cancel (``{"schema", "sweep_id", "requested_by"}``): a paused sweep launches nothing new, its
  running trials go on; resume lets it continue where it stopped.

Who sent a control message is SQS's ``SenderId``, never the body: ``requested_by`` is a note.

:func:`decode` raises :class:`MessageError` for anything that is not one of these envelopes
(garbage, truncated JSON, unknown schema, a sweep id that does not match its token): such a
message is left on the queue for SQS to redrive into the DLQ. A valid envelope whose *spec* is
invalid is not a MessageError: the dispatcher stores that sweep as REJECTED with the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from dispatcher.core.errors import MessageError
from dispatcher.core.identity import is_sweep_id, sweep_id_for

SUBMIT_SCHEMA = "sweepq.submit/v1"
WAKE_SCHEMA = "sweepq.wake/v1"
CANCEL_SCHEMA = "sweepq.cancel/v1"
PAUSE_SCHEMA = "sweepq.pause/v1"
RESUME_SCHEMA = "sweepq.resume/v1"
MAX_BODY_BYTES = 256 * 1024  # SQS's classic message size limit
MAX_DEPTH = 100  # JSON nesting of a body; a sweep file nests a few levels (20 parameter groups at most)


@dataclass(frozen=True)
class SubmitMessage:
    sweep_id: str
    token: str
    spec: dict[str, Any]
    launch: dict[str, Any]
    submitter: str
    submitted_at: str
    source: str = ""
    kind: Literal["submit"] = "submit"


@dataclass(frozen=True)
class WakeMessage:
    sweep_id: str | None
    event: str
    kind: Literal["wake"] = "wake"


@dataclass(frozen=True)
class CancelMessage:
    sweep_id: str
    requested_by: str
    kind: Literal["cancel"] = "cancel"


@dataclass(frozen=True)
class PauseMessage:
    """``producer pause`` (``resume`` False) or ``producer resume`` (True)."""

    sweep_id: str
    requested_by: str
    resume: bool = False
    kind: Literal["pause"] = "pause"

    @property
    def action(self) -> str:
        return "resume" if self.resume else "pause"


def encode_cancel(*, sweep_id: str, requested_by: str) -> str:
    return json.dumps({"schema": CANCEL_SCHEMA, "sweep_id": sweep_id, "requested_by": requested_by}, sort_keys=True)


def encode_pause(*, sweep_id: str, requested_by: str, resume: bool = False) -> str:
    """The body of ``producer pause`` (or, with ``resume``, ``producer resume``)."""
    schema = RESUME_SCHEMA if resume else PAUSE_SCHEMA
    return json.dumps({"schema": schema, "sweep_id": sweep_id, "requested_by": requested_by}, sort_keys=True)


def encode_submit(msg: SubmitMessage) -> str:
    body = json.dumps(
        {
            "schema": SUBMIT_SCHEMA,
            "sweep_id": msg.sweep_id,
            "token": msg.token,
            "spec": msg.spec,
            "launch": msg.launch,
            "submitter": msg.submitter,
            "submitted_at": msg.submitted_at,
            "source": msg.source,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    size = len(body.encode())
    if size > MAX_BODY_BYTES:
        raise MessageError(
            f"the message is {size:,} bytes, over SQS's limit of {MAX_BODY_BYTES:,} — the sweep file is too "
            "large; use min/max ranges instead of long value lists"
        )
    return body


def encode_wake(*, sweep_id: str | None, event: str = "trial-finished", **extra: Any) -> str:
    return json.dumps({"schema": WAKE_SCHEMA, "event": event, "sweep_id": sweep_id, **extra}, sort_keys=True)


def _check_structure(data: Any) -> None:
    """Refuse what JSON can carry but the dispatcher must never process: nesting deep enough to
    exhaust the recursion limit of the validators and serializers (RecursionError aborted the
    tick), and lone surrogates (``"\\ud800"`` parses into a str that cannot be encoded as UTF-8,
    so hashing or storing it raised UnicodeEncodeError). Iterative: the check cannot recurse."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise MessageError(f"body is nested deeper than {MAX_DEPTH} levels — not a sweep; send sweeps with "
                               "`producer submit`")
        if isinstance(node, dict):
            stack.extend((key, depth) for key in node)
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MessageError(f"body holds a lone surrogate (\\u{ord(node[exc.start]):04x} in {node[:40]!r}) — "
                                   "not valid Unicode text; send sweeps with `producer submit`") from exc


_JSON_TOKENS = re.compile(r'\\.|["\[\]{}]')  # escapes, quotes and brackets, in order: one linear pass


def _text_depth(body: str) -> int:
    """The deepest bracket nesting of JSON text, brackets inside strings skipped, without parsing it.
    Checked before ``json.loads`` so that a deep body is refused the same way whatever the
    interpreter's recursion limit is (a library or test that raised it let 2,000 levels parse, and
    the refusal changed). Linear on any text, hostile text included: no backtracking regex."""
    depth = deepest = 0
    in_string = False
    for token in _JSON_TOKENS.findall(body):
        if token == '"':
            in_string = not in_string
        elif in_string or token[0] == "\\":
            continue
        elif token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode(body: str | bytes) -> SubmitMessage | WakeMessage | CancelMessage | PauseMessage:
    """Parse a body. Raises :class:`MessageError` (→ DLQ) when it is not a sweepq envelope."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if len(body.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise MessageError(f"body is over {MAX_BODY_BYTES:,} bytes — not a sweepq message")
    if _text_depth(body) > MAX_DEPTH:
        raise MessageError(f"body is nested deeper than {MAX_DEPTH} levels — not a sweep; send sweeps with "
                           "`producer submit`")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MessageError(f"body is not JSON ({exc}) — send sweeps with `producer submit`") from exc
    if not isinstance(data, dict):
        raise MessageError(f"body is JSON {type(data).__name__}, not an object — send sweeps with `producer submit`")
    _check_structure(data)
    schema = data.get("schema")
    if schema == WAKE_SCHEMA:
        sweep_id = data.get("sweep_id")
        return WakeMessage(sweep_id=sweep_id if is_sweep_id(sweep_id) else None, event=str(data.get("event", "")))
    if schema in (CANCEL_SCHEMA, PAUSE_SCHEMA, RESUME_SCHEMA):
        sweep_id = data.get("sweep_id")
        if not is_sweep_id(sweep_id):
            raise MessageError(f"sweep_id: {str(sweep_id)[:60]!r} is not a sweep id")
        note = str(data.get("requested_by", ""))[:256]
        if schema == CANCEL_SCHEMA:
            return CancelMessage(sweep_id=sweep_id, requested_by=note)
        return PauseMessage(sweep_id=sweep_id, requested_by=note, resume=schema == RESUME_SCHEMA)
    if schema != SUBMIT_SCHEMA:
        raise MessageError(
            f"schema: {schema!r} is not {SUBMIT_SCHEMA!r} — this dispatcher understands {SUBMIT_SCHEMA}; "
            "upgrade the dispatcher or resubmit with a matching producer"
        )
    missing = [k for k in ("sweep_id", "token", "spec", "launch", "submitter", "submitted_at") if k not in data]
    if missing:
        raise MessageError(f"{', '.join(missing)}: missing from a {SUBMIT_SCHEMA} body")
    token, sweep_id = data["token"], data["sweep_id"]
    if not isinstance(token, str) or not 8 <= len(token) <= 128:
        raise MessageError(f"token: {str(token)[:40]!r} must be a string of 8..128 characters")
    spec = data["spec"]
    name = spec.get("name") if isinstance(spec, dict) else None
    if not is_sweep_id(sweep_id) or sweep_id != sweep_id_for(name if isinstance(name, str) else None, token):
        raise MessageError(f"sweep_id: {str(sweep_id)[:60]!r} does not match its token and name")
    for key in ("spec", "launch"):
        if not isinstance(data[key], dict):
            raise MessageError(f"{key}: must be an object, got {type(data[key]).__name__}")
    return SubmitMessage(
        sweep_id=sweep_id,
        token=token,
        spec=data["spec"],
        launch=data["launch"],
        submitter=str(data["submitter"])[:256],
        submitted_at=str(data["submitted_at"])[:64],
        source=str(data.get("source", ""))[:256],
    )
