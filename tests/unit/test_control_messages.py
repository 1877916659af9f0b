"""Control message bodies (``sweepq.cancel/v1``, ``sweepq.pause/v1``, ``sweepq.resume/v1``): what
``producer`` sends decodes to what intake handles; a body naming no sweep is not a sweepq message."""

from __future__ import annotations

import json

import pytest

from dispatcher.core.errors import MessageError
from dispatcher.core.message import (
    PAUSE_SCHEMA,
    RESUME_SCHEMA,
    CancelMessage,
    PauseMessage,
    decode,
    encode_cancel,
    encode_pause,
)


def test_pause_and_resume_round_trip_with_the_action_they_ask_for() -> None:
    paused = decode(encode_pause(sweep_id="bert-abcdefgh", requested_by="arn:aws:iam::1:user/alice"))
    assert paused == PauseMessage("bert-abcdefgh", "arn:aws:iam::1:user/alice", resume=False)
    assert paused.action == "pause"
    resumed = decode(encode_pause(sweep_id="bert-abcdefgh", requested_by="alice", resume=True))
    assert isinstance(resumed, PauseMessage) and resumed.resume and resumed.action == "resume"
    assert json.loads(encode_pause(sweep_id="bert-abcdefgh", requested_by="", resume=True))["schema"] == RESUME_SCHEMA
    assert isinstance(decode(encode_cancel(sweep_id="bert-abcdefgh", requested_by="")), CancelMessage)


@pytest.mark.parametrize("schema", [PAUSE_SCHEMA, RESUME_SCHEMA])
@pytest.mark.parametrize("sweep_id", [None, "", "../etc", 7, "A" * 300])
def test_a_control_body_without_a_sweep_id_goes_to_the_dlq(schema: str, sweep_id: object) -> None:
    with pytest.raises(MessageError, match="sweep_id"):
        decode(json.dumps({"schema": schema, "sweep_id": sweep_id}))


def test_the_note_is_bounded_and_never_an_identity() -> None:
    msg = decode(json.dumps({"schema": PAUSE_SCHEMA, "sweep_id": "bert-abcdefgh", "requested_by": "x" * 5000}))
    assert isinstance(msg, PauseMessage) and len(msg.requested_by) == 256
