"""The operator policy on the real path (moto SQS + DynamoDB, the Kubernetes emulator over HTTP):
intake judges each body by the message's ``SenderId`` (never the body's ``submitter``), stores the
team and the sender, launches what the policy filled and forced, refuses control messages from
anyone but the submitter and the operators, and holds a stored sweep the policy no longer allows.

moto signs every message it delivers with one IAM user id (``MOTO_SENDER``); messages of other
principals are handed to intake as the Lambda event source hands them (a record whose
``SenderId`` attribute names the principal), through ``Dispatcher.process_message``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher

from dispatcher.adapters.queue import Received
from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import JobPhase
from dispatcher.core.message import encode_cancel, encode_pause
from dispatcher.core.policy import Policy
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from producer import summary

MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"  # moto signs every message with this IAM user id
NLP_SENDER = "AROANLPROLE:eve"
OPERATOR = "AROAOPSROLE:alice"
TEAMS = {
    "vision": {"members": [MOTO_SENDER], "kueue_queue": "vision", "wandb_secrets": ["wandb-vision"],
               "output_pvcs": ["vision-outputs"]},
    "nlp": {"members": ["AROANLPROLE:*"], "kueue_queue": "nlp", "wandb_secrets": ["wandb-nlp"],
            "output_pvcs": ["nlp-outputs"]},
}
POLICY = Policy.from_data({"wandb_secrets": [], "output_pvcs": [], "teams": TEAMS, "operators": ["AROAOPSROLE:*"]})


class World:
    def __init__(self, aws: Any, kube: Any) -> None:
        self.settings = Settings.load({}, backend="pytorchjob", max_running=8, namespace="sweepq")
        self.store, self.queue = bootstrap(aws, self.settings)
        self.kube, self.aws, self.clock = kube, aws, Clock()
        self.policy = POLICY
        backends = {"pytorchjob": make_backend("pytorchjob", api_client=kube.api_client, namespace="sweepq")}
        # the policy as a getter, like PolicySource.get: an operator's change takes effect next tick
        self.dispatcher = make_dispatcher(aws, self.settings, backends, self.clock, self.queue,
                                          policy=lambda: self.policy)

    def body(self, name: str, launch: dict[str, Any], *, submitter: str = "AROAOPSROLE:root") -> tuple[str, str]:
        token = uuid.uuid4().hex
        sweep_id = sweep_id_for(name, token)
        return sweep_id, json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id, "token": token,
                                     "spec": grid_spec(name, 1, 2), "launch": launch, "submitter": submitter,
                                     "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"})

    def send(self, name: str, launch: dict[str, Any]) -> str:
        sweep_id, body = self.body(name, launch)
        self.queue.send(body)
        return sweep_id

    def deliver(self, body: str, sender: str) -> TickReport:
        """One message of ``sender``, as the Lambda event source hands it to the function."""
        report = TickReport(scope=self.settings.dispatcher_scope)
        self.queue.send(body)
        [message] = self.queue.receive(max_messages=1, wait_s=0)
        self.dispatcher.process_message(Received(message.message_id, message.receipt, message.body,
                                                 message.receive_count, sender_id=sender), report)
        return report

    def jobs(self) -> list[dict[str, Any]]:
        return self.kube.list_objects("pytorchjob", namespace="sweepq")


@pytest.fixture
def world(aws, kube) -> World:
    return World(aws, kube)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]


def test_hostile_bodies_are_judged_by_the_real_sender_and_the_benign_one_launches_as_its_team(world) -> None:
    w = world
    benign = w.send("benign", {"wandb_secret": "wandb-vision"})
    hostile = {
        "dispatcher-sa": (w.send("dispatcher-sa", {"service_account": "sweepq-dispatcher",
                                                   "wandb_secret": "wandb-vision"}), "service_account"),
        "nlp-secret": (w.send("nlp-secret", {"wandb_secret": "wandb-nlp"}), "wandb_secret"),
        "nlp-pvc": (w.send("nlp-pvc", {"wandb_secret": None, "output_pvc": "nlp-outputs"}), "output_pvc"),
        "claims-nlp": (w.send("claims-nlp", {"team": "nlp", "wandb_secret": "wandb-nlp"}), "team"),
        "nlp-queue": (w.send("nlp-queue", {"wandb_secret": None, "kueue_queue": "nlp"}), "kueue_queue"),
    }
    report = w.dispatcher.tick()
    assert (report.accepted, report.rejected) == (1, len(hostile)), report.as_dict()
    for case, (sweep_id, field) in hostile.items():
        meta = w.store.get_sweep(sweep_id)
        assert meta["state"] == "REJECTED", case
        assert field in meta["reason"], (case, meta["reason"])
    # the benign sweep counts against the sender's team, whatever its body claims
    meta = w.store.get_sweep(benign)
    assert (meta["team"], meta["sender_id"], meta["submitter"]) == ("vision", MOTO_SENDER, MOTO_SENDER)
    assert meta["submitter_claim"] == "AROAOPSROLE:root"  # the body's word, kept as a note only
    jobs = w.jobs()
    assert {j["metadata"]["labels"]["sweepq.io/sweep-id"] for j in jobs} == {benign} and len(jobs) == 2
    for job in jobs:
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "vision"  # forced from the team
        key = next(e for e in _container(job)["env"] if e["name"] == "WANDB_API_KEY")
        assert key["valueFrom"]["secretKeyRef"]["name"] == "wandb-vision"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_only_the_submitter_and_operators_may_cancel_a_sweep(world) -> None:
    w = world
    sweep_id = w.send("mine", {"wandb_secret": "wandb-vision"})
    assert w.dispatcher.tick().launched == 2
    # a teammate of another team forges a cancel naming the submitter in the body
    report = w.deliver(encode_cancel(sweep_id=sweep_id, requested_by=MOTO_SENDER), NLP_SENDER)
    assert report.cancel_requests == 1
    assert any("refused" in e and NLP_SENDER in e for e in report.errors), report.errors
    meta = w.store.get_sweep(sweep_id)
    assert meta["state"] == "ACTIVE" and not meta.get("cancel_requested")
    # an unauthenticated record (no SenderId) is no one: refused too
    w.deliver(encode_cancel(sweep_id=sweep_id, requested_by="root"), "")
    assert not w.store.get_sweep(sweep_id).get("cancel_requested")
    # an operator may cancel anyone's sweep; the record names who did, from SenderId
    report = w.deliver(encode_cancel(sweep_id=sweep_id, requested_by="ops on call"), OPERATOR)
    assert report.errors == []
    meta = w.store.get_sweep(sweep_id)
    assert meta["cancel_requested"] is True
    assert (meta["cancelled_by"], meta["cancel_note"]) == (OPERATOR, "ops on call")
    w.clock.advance(30)
    w.dispatcher.tick()
    assert w.store.get_sweep(sweep_id)["state"] == "CANCELLED"


def test_the_submitter_cancels_its_own_sweep_through_the_queue(world) -> None:
    w = world
    sweep_id = w.send("own", {"wandb_secret": "wandb-vision"})
    w.dispatcher.tick()
    w.queue.send(encode_cancel(sweep_id=sweep_id, requested_by="me"))  # moto: signed as MOTO_SENDER
    w.clock.advance(30)
    report = w.dispatcher.tick()
    assert report.errors == [] and w.store.get_sweep(sweep_id)["state"] == "CANCELLED"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_stored_sweep_the_policy_no_longer_allows_launches_nothing_until_the_grant_is_back(world) -> None:
    w = world
    w.dispatcher.settings = w.dispatcher.intake.settings = Settings.load(
        {}, backend="pytorchjob", max_running=1, namespace="sweepq", sweep_failures_to_hold=2)
    sweep_id = w.send("withdrawn", {"wandb_secret": "wandb-vision"})
    assert w.dispatcher.tick().launched == 1
    # the operator withdraws the team's W&B Secret; the running trial finishes
    w.policy = Policy.from_data({"wandb_secrets": [], "output_pvcs": [], "operators": ["AROAOPSROLE:*"],
                                 "teams": {**TEAMS, "vision": {**TEAMS["vision"], "wandb_secrets": []}}})
    [job] = w.jobs()
    w.kube.set_job_phase("pytorchjob", job["metadata"]["name"], JobPhase.SUCCEEDED)
    for _ in range(3):  # more ticks than SWEEPQ_SWEEP_FAILURES_TO_HOLD: a policy hold is no failure
        w.clock.advance(30)
        report = w.dispatcher.tick()
        assert report.launched == 0
        assert any("wandb_secret" in e for e in report.errors), report.errors
    meta = w.store.get_sweep(sweep_id)
    assert meta["state"] == "ACTIVE" and meta["succeeded"] == 1 and len(w.jobs()) == 1
    assert "wandb_secret" in meta["policy_hold"] and not meta.get("held")  # shown by producer status
    # the grant comes back: the sweep resumes by itself and the hold is cleared
    w.policy = POLICY
    w.clock.advance(30)
    assert w.dispatcher.tick().launched == 1
    assert "policy_hold" not in w.store.get_sweep(sweep_id)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_only_the_submitter_and_operators_may_pause_or_resume_a_refusal_is_noted_for_status(world) -> None:
    w = world
    sweep_id = w.send("pausable", {"wandb_secret": "wandb-vision"})
    assert w.dispatcher.tick().launched == 2
    # a member of another team forges a pause naming the submitter in the body: refused, never performed
    report = w.deliver(encode_pause(sweep_id=sweep_id, requested_by=MOTO_SENDER), NLP_SENDER)
    assert report.pause_requests == 1
    assert any(e.startswith(f"pause {sweep_id}: ") and NLP_SENDER in e for e in report.errors), report.errors
    meta = w.store.get_sweep(sweep_id)
    assert not meta.get("paused") and meta["control_refused"]["by"] == NLP_SENDER
    assert summary.status_doc(meta)["control_refused"]["action"] == "pause"
    # an unauthenticated record (no SenderId) is no one: refused too
    w.deliver(encode_pause(sweep_id=sweep_id, requested_by="root"), "")
    assert not w.store.get_sweep(sweep_id).get("paused")
    # an operator may pause anyone's sweep, and resume it; the record names who did, from SenderId
    assert w.deliver(encode_pause(sweep_id=sweep_id, requested_by="ops: cluster drain"), OPERATOR).errors == []
    meta = w.store.get_sweep(sweep_id)
    assert (meta["paused"], meta["paused_by"], meta["pause_note"]) == (True, OPERATOR, "ops: cluster drain")
    assert summary.status_doc(meta)["state"] == "PAUSED"
    # the other team cannot resume it either
    w.deliver(encode_pause(sweep_id=sweep_id, requested_by="", resume=True), NLP_SENDER)
    assert w.store.get_sweep(sweep_id)["paused"] is True
    assert w.deliver(encode_pause(sweep_id=sweep_id, requested_by="", resume=True), OPERATOR).errors == []
    assert w.store.get_sweep(sweep_id)["paused"] is False


def test_a_pause_of_a_sweep_not_stored_is_reported_and_changes_nothing(world) -> None:
    w = world
    report = TickReport(scope=w.settings.dispatcher_scope)
    w.queue.send(encode_pause(sweep_id="ghost-abcdefgh", requested_by=""))
    [message] = w.queue.receive(max_messages=1, wait_s=0)
    assert w.dispatcher.process_message(message, report) is True  # handled: deleted, not left for the DLQ
    assert any("ghost-abcdefgh" in e and "no such sweep" in e for e in report.errors), report.errors
    assert w.store.get_sweep("ghost-abcdefgh") is None
