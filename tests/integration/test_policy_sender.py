"""The policy's decisions on what the real queue delivers (moto SQS): the sender is the message's
``SenderId`` system attribute — the IAM principal SQS authenticated — never the body's ``submitter``
or ``requested_by``. Raw hostile bodies from one team (the dispatcher's ServiceAccount, another
team's Secret and PVC, a claimed operator identity, a claimed team) are refused with readable
reasons; a benign body from the same sender in the same batch is admitted.

This is the API the lead wires into intake (``admission = policy.admit(launch, sender=received.sender_id)``)
and into cancel/pause/resume (``policy.control_refusal(...)``); the queue adapter's ``sender_id``
comes from the robustness branch, so the attribute is read here with boto3 directly.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from helpers import bootstrap, grid_spec

from dispatcher.core.identity import sweep_id_for
from dispatcher.core.message import CancelMessage, SubmitMessage, decode, encode_cancel
from dispatcher.core.policy import Policy
from dispatcher.core.spec import validate_launch
from dispatcher.settings import Settings

MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"  # moto signs every message with this IAM user id
POLICY = Policy.from_data({
    "wandb_secrets": [],
    "output_pvcs": [],
    "teams": {
        "vision": {"members": [MOTO_SENDER], "kueue_queue": "vision", "wandb_secrets": ["wandb-vision"],
                   "output_pvcs": ["vision-outputs"]},
        "nlp": {"members": ["AROANLPROLE:*"], "kueue_queue": "nlp", "wandb_secrets": ["wandb-nlp"],
                "output_pvcs": ["nlp-outputs"]},
    },
    "operators": ["AROAOPSROLE:*"],
})


def body(name: str, launch: dict[str, Any], *, submitter: str = "AROAOPSROLE:root") -> str:
    token = uuid.uuid4().hex
    return json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id_for(name, token), "token": token,
                       "spec": grid_spec(name, 1, 1), "launch": launch, "submitter": submitter,
                       "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"})


def receive_all(sqs: Any, url: str) -> list[tuple[str, Any]]:
    """(SenderId, decoded body) of every message, as intake receives them."""
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"],
                                    WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return out
        for message in batch:
            out.append((message["Attributes"]["SenderId"], decode(message["Body"])))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def queue(aws):
    settings = Settings.load({}, namespace="sweepq")
    _, q = bootstrap(aws, settings)
    return aws.client("sqs"), q.url


HOSTILE = {
    "dispatcher-sa": ({"service_account": "sweepq-dispatcher", "wandb_secret": "wandb-vision"}, [("service_accounts.dispatcher", "service_account")]),
    "nlp-secret": ({"wandb_secret": "wandb-nlp"}, [("wandb_secrets", "wandb_secret")]),
    "nlp-pvc": ({"wandb_secret": None, "output_pvc": "nlp-outputs"}, [("output_pvcs", "output_pvc")]),
    "claims-nlp": ({"team": "nlp", "wandb_secret": "wandb-nlp"}, [("team.membership", "team"),
                                                                  ("wandb_secrets", "wandb_secret")]),
    "nlp-queue": ({"wandb_secret": None, "kueue_queue": "nlp"}, [("teams.kueue_queue", "kueue_queue")]),
}


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_hostile_bodies_next_to_a_benign_one_are_judged_by_the_real_sender(queue) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=body("benign", {"wandb_secret": "wandb-vision",
                                                              "output_pvc": "vision-outputs"}))
    for name, (launch, _) in HOSTILE.items():
        sqs.send_message(QueueUrl=url, MessageBody=body(name, launch))
    seen = {}
    for sender, msg in receive_all(sqs, url):
        assert isinstance(msg, SubmitMessage) and sender == MOTO_SENDER
        assert msg.submitter == "AROAOPSROLE:root" and not POLICY.is_operator(sender)  # the claim is not the sender
        seen[msg.spec["name"]] = POLICY.admit(validate_launch(msg.launch), sender=sender)
    benign = seen.pop("benign")
    assert benign.ok and benign.team == "vision" and benign.launch.kueue_queue == "vision"
    for name, admission in seen.items():
        assert [(v.rule, v.field) for v in admission.violations] == HOSTILE[name][1], name
        assert "is refused by the operator policy" in admission.reason and "allowed:" in admission.reason
    assert "'sweepq-dispatcher' is refused by the operator policy (service_accounts.dispatcher)" in \
        seen["dispatcher-sa"].reason
    assert f"{MOTO_SENDER} is not a member" in seen["claims-nlp"].reason


def test_a_forged_cancel_is_refused_by_sender_not_by_what_the_body_claims(queue) -> None:
    sqs, url = queue
    stored_submitter = "AROANLPROLE:bob"  # the SenderId recorded when bob submitted the sweep
    sqs.send_message(QueueUrl=url, MessageBody=encode_cancel(sweep_id="bobs-sweep-4o4yutnd",
                                                             requested_by=stored_submitter))
    [(sender, msg)] = receive_all(sqs, url)
    assert isinstance(msg, CancelMessage) and msg.requested_by == stored_submitter  # the forged claim
    reason = POLICY.control_refusal(sender, submitter=stored_submitter, action="cancel", sweep_id=msg.sweep_id)
    assert reason == (f"cancel of bobs-sweep-4o4yutnd by {MOTO_SENDER} refused: only its submitter (AROANLPROLE:bob) "
                      "and the policy's operators may cancel it")
    assert POLICY.control_refusal(sender, submitter=MOTO_SENDER, action="pause", sweep_id="mine-4o4yutnd") is None
    ops = POLICY.model_copy(update={"operators": [MOTO_SENDER]})
    assert ops.control_refusal(sender, submitter=stored_submitter, action="resume", sweep_id=msg.sweep_id) is None
