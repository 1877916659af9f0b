"""rev11w — adversarial review of the operator policy on the real path (issue 11).

Every test here drives the public path: raw SQS bodies (moto), ``Dispatcher.tick`` or the Lambda
handler, the Kubernetes API emulator over HTTP, the policy loaded through ``PolicySource`` from a
file the operator edits. Each test asserts what issue 11 / the README promise; a failing test is a
finding (see /work/coord/reports/rev11w.md).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Clock, bootstrap, grid_spec, make_dispatcher

from dispatcher.adapters.policy_source import PolicySource
from dispatcher.adapters.queue import Received
from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import JobPhase
from dispatcher.core.message import encode_cancel
from dispatcher.report import TickReport
from dispatcher.settings import Settings

MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"  # moto signs every message it delivers with this IAM user id
VICTIM = "AROAVISIONROLE:victim"
EVE = "AROANLPROLE:eve"


class World:
    """moto SQS + DynamoDB, the Kubernetes emulator, and the operator's policy *file* read through
    the real ``PolicySource`` (what ``SWEEPQ_POLICY=/etc/sweepq/policy.yaml`` does)."""

    def __init__(self, aws: Any, kube: Any, tmp_path: Path, policy: dict[str, Any], **settings: Any) -> None:
        self.settings = Settings.load({}, backend="pytorchjob", namespace="sweepq",
                                      **{"max_running": 8, **settings})
        self.store, self.queue = bootstrap(aws, self.settings)
        self.kube, self.aws, self.clock = kube, aws, Clock()
        self.policy_path = tmp_path / "policy.yaml"
        self.write_policy(policy)
        self.source = PolicySource(str(self.policy_path))
        backends = {"pytorchjob": make_backend("pytorchjob", api_client=kube.api_client, namespace="sweepq")}
        self.dispatcher = make_dispatcher(aws, self.settings, backends, self.clock, self.queue,
                                          policy=self.source.get)

    def write_policy(self, policy: dict[str, Any] | str) -> None:
        self.policy_path.write_text(policy if isinstance(policy, str) else yaml.safe_dump(policy))

    def body(self, name: str, launch: dict[str, Any], *, trials: int = 4, token: str | None = None) -> tuple[str, str]:
        token = token or uuid.uuid4().hex
        sweep_id = sweep_id_for(name, token)
        return sweep_id, json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id, "token": token,
                                     "spec": grid_spec(name, 1, trials), "launch": launch,
                                     "submitter": "someone-else", "submitted_at": "2026-01-01T00:00:00Z",
                                     "source": "raw"})

    def send(self, name: str, launch: dict[str, Any], **kw: Any) -> str:
        sweep_id, body = self.body(name, launch, **kw)
        self.queue.send(body)
        return sweep_id

    def deliver(self, body: str, sender: str) -> TickReport:
        """One message of ``sender`` as the Lambda SQS event source hands it over (its SenderId)."""
        report = TickReport(scope=self.settings.dispatcher_scope)
        self.queue.send(body)
        [m] = self.queue.receive(max_messages=1, wait_s=0)
        self.dispatcher.process_message(Received(m.message_id, m.receipt, m.body, m.receive_count,
                                                 sender_id=sender), report)
        return report

    def jobs(self, sweep_id: str | None = None) -> list[dict[str, Any]]:
        jobs = self.kube.list_objects("pytorchjob", namespace="sweepq")
        return [j for j in jobs if sweep_id is None or j["metadata"]["labels"]["sweepq.io/sweep-id"] == sweep_id]

    def finish_all(self) -> None:
        for job in self.jobs():
            self.kube.set_job_phase("pytorchjob", job["metadata"]["name"], JobPhase.SUCCEEDED)

    def tick(self) -> TickReport:
        self.clock.advance(30)
        return self.dispatcher.tick()


def team_policy(members: list[str], **team: Any) -> dict[str, Any]:
    return {"teams": {"vision": {"members": members, **team}}}


# --------------------------------------------------------------------------------------------
# F1: the operator policy's team quotas are not enforced by the tick
# --------------------------------------------------------------------------------------------
def test_rev11w_team_quota_max_jobs_of_the_policy_bounds_what_the_tick_creates(aws, kube, tmp_path) -> None:
    """README "Plan": free capacity is shared "within each team's quota (max_jobs, max_gpus from
    the operator policy; never borrowed past)". A team with quota max_jobs: 1 submits a 4-trial
    sweep on a cluster cap of 8: the tick must create at most 1 job."""
    w = World(aws, kube, tmp_path, team_policy([MOTO_SENDER], quota={"max_jobs": 1, "max_gpus": 1}))
    sweep_id = w.send("quota", {})
    w.dispatcher.tick()
    assert w.store.get_sweep(sweep_id)["team"] == "vision"
    made = w.jobs(sweep_id)
    assert len(made) <= 1, f"team quota max_jobs=1, the tick created {len(made)} jobs for the team"


# --------------------------------------------------------------------------------------------
# F2: "its sender removed from its team" is not held by the launch-time check
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["sender-removed-from-team", "team-deleted"])
def test_rev11w_a_sweep_whose_sender_left_its_team_launches_nothing_more(aws, kube, tmp_path, change) -> None:
    """dispatcher/launching.py: "a sweep the policy no longer allows (a Secret, image or
    ServiceAccount withdrawn, **its sender removed from its team**) launches nothing". The operator
    removes the sender from the team (or deletes the team); intake of the same body would now
    refuse it (``team.required``), so the tick must not launch its next trial."""
    w = World(aws, kube, tmp_path, team_policy([MOTO_SENDER]), max_running=1)
    sweep_id = w.send("leaver", {})
    assert w.dispatcher.tick().launched == 1
    after = team_policy(["AIDASOMEONEELSE"]) if change == "sender-removed-from-team" else \
        {"teams": {"nlp": {"members": ["AIDASOMEONEELSE"]}}}
    w.write_policy(after)
    # the same body, sent now, is refused: the sender is in no team and there is no default_team
    probe = w.send("probe", {})
    w.finish_all()
    report = w.tick()
    assert w.store.get_sweep(probe)["state"] == "REJECTED"
    assert "team.required" in w.store.get_sweep(probe)["reason"]
    assert len(w.jobs(sweep_id)) == 1, (
        f"{change}: the policy now refuses the sender ({w.store.get_sweep(probe)['reason']!r}) but the tick "
        f"launched {len(w.jobs(sweep_id)) - 1} more job(s) of its stored sweep; report errors: {report.errors}")


# --------------------------------------------------------------------------------------------
# F3: a policy outage (fail closed) parks every sweep for an operator, for good
# --------------------------------------------------------------------------------------------
def test_rev11w_a_broken_policy_file_for_a_few_ticks_does_not_park_every_sweep(aws, kube, tmp_path) -> None:
    """policy_source.py fails closed: an invalid file raises ConfigError "on every call until it is
    fixed — the dispatcher then launches nothing". Launching nothing is right; but the tick counts
    the deployment's ConfigError as a failure *of each sweep* and after SWEEPQ_SWEEP_FAILURES_TO_HOLD
    (3) ticks parks every sweep with work for an operator (``held`` on the item, cleared only by a
    manual ``aws dynamodb update-item`` per sweep). Once the operator fixes the file, sweeps must
    launch again by themselves."""
    w = World(aws, kube, tmp_path, {}, max_running=1)
    sweeps = [w.send(f"victim{i}", {}) for i in range(2)]
    assert w.dispatcher.tick().launched == 1
    w.write_policy("images: [ghcr.io/acme/\n")  # a typo: an unclosed list
    for _ in range(3):
        w.finish_all()
        report = w.tick()
        assert report.launched == 0  # fail closed: right
    w.write_policy({})  # fixed
    w.finish_all()
    launched = sum(w.tick().launched for _ in range(2))
    held = {s: w.store.get_sweep(s).get("held") for s in sweeps}
    assert launched >= 1 and not any(held.values()), (
        f"after the policy file was fixed nothing launches: the sweeps were parked for an operator by the "
        f"deployment's own ConfigError: {json.dumps(held, default=str)[:600]}")


def test_rev11w_a_policy_narrowed_then_restored_does_not_leave_the_sweep_parked(aws, kube, tmp_path) -> None:
    """The operator withdraws the team's Secret for a few minutes (or a bad policy push is rolled
    back). The sweep must be held *while* the policy refuses it and launch again once it allows it
    (issue 11: "a stored sweep that no longer passes after a policy change is held with a reason");
    today it is parked for good after 3 ticks — an operator must edit each sweep's item by hand."""
    ok = team_policy([MOTO_SENDER], wandb_secrets=["wandb-vision"])
    w = World(aws, kube, tmp_path, {**ok, "wandb_secrets": []}, max_running=1)
    sweep_id = w.send("narrowed", {"wandb_secret": "wandb-vision"})
    assert w.dispatcher.tick().launched == 1
    w.write_policy({**team_policy([MOTO_SENDER]), "wandb_secrets": []})  # Secret withdrawn
    for _ in range(3):
        w.finish_all()
        assert w.tick().launched == 0
    w.write_policy({**ok, "wandb_secrets": []})  # restored
    w.finish_all()
    launched = sum(w.tick().launched for _ in range(2))
    meta = w.store.get_sweep(sweep_id)
    assert launched >= 1, f"policy restored, sweep still parked: held={meta.get('held')}"


# --------------------------------------------------------------------------------------------
# F4: a claimed trial re-created after a crash/failed create bypasses the launch-time policy check
# --------------------------------------------------------------------------------------------
def test_rev11w_a_relaunch_is_checked_against_the_current_policy(aws, kube, tmp_path) -> None:
    """Trial 0 is claimed but its create fails (a 500 from the API server; the same state a crash
    between claim and create leaves). The operator then withdraws the ServiceAccount the sweep runs
    as. The next tick re-creates the claimed trial's job (``Relaunch``) in reconcile, which never
    calls ``_policy_check``: a job the current policy refuses reaches the cluster."""
    policy = {"service_accounts": ["sweepq-trainer", "vision-runner"]}
    w = World(aws, kube, tmp_path, policy, max_running=1)
    sweep_id = w.send("relaunch", {"service_account": "vision-runner"})
    kube.fail_next("pytorchjob", 500, verb="create", times=5)
    w.dispatcher.tick()
    meta = w.store.get_sweep(sweep_id)
    assert meta["live"]["0"]["state"] == "PENDING" and w.jobs(sweep_id) == []
    w.write_policy({"service_accounts": ["sweepq-trainer"]})  # vision-runner withdrawn
    kube.handler.faults.clear()
    w.tick()
    made = [j["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"].get("serviceAccountName")
            for j in w.jobs(sweep_id)]
    assert "vision-runner" not in made, (
        "the current policy no longer allows ServiceAccount vision-runner, yet the tick created a job running "
        f"as it: {made}")


# --------------------------------------------------------------------------------------------
# F5: a cancel of a sweep not stored yet tombstones it for every sender
# --------------------------------------------------------------------------------------------
def test_rev11w_a_stranger_cannot_pre_cancel_someone_elses_sweep(aws, kube, tmp_path) -> None:
    """A cancel for a sweep id that is not stored yet leaves a tombstone with no sender check, and
    the later submit of that id — by anyone — is swallowed as a duplicate. Sweep ids are
    predictable whenever the submitter uses ``producer submit --idempotency-key`` (CI: a commit
    sha, a job name): ``sweep_id_for(name, key)``. Eve (team nlp) pre-cancels vision's CI sweep;
    the victim's submit must still run (issue 11: cancels are allowed to the submitter and the
    operators only)."""
    w = World(aws, kube, tmp_path, {"teams": {"vision": {"members": [VICTIM]}, "nlp": {"members": ["AROANLPROLE:*"]}}})
    victim_id, victim_body = w.body("nightly", {}, token="ci-nightly-2026-01-02")
    report = w.deliver(encode_cancel(sweep_id=victim_id, requested_by=VICTIM), EVE)  # forged note, real sender eve
    report = w.deliver(victim_body, VICTIM)
    meta = w.store.get_sweep(victim_id)
    assert meta["state"] == "ACTIVE", (
        f"eve's cancel of an id she does not own swallowed the victim's submit: state={meta['state']}, "
        f"reason={meta.get('reason')!r}, duplicates={report.duplicates}")


# --------------------------------------------------------------------------------------------
# F6: while the policy cannot be read, nothing can be cancelled (and with kind template enabled,
# nothing at all is observed or reconciled)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kinds", ["pytorchjob", "pytorchjob,template"])
def test_rev11w_a_submitters_cancel_goes_through_while_the_policy_file_is_broken(aws, kube, tmp_path, kinds) -> None:
    """Failing closed means *launching* nothing. Stopping work must still be possible: the
    submitter's own cancel needs no policy (only the stored sender_id), and deleting jobs is the
    safe direction. Today ``request_cancel`` reads the policy first (ConfigError: the cancel stays on
    the queue, and after maxReceiveCount goes to the DLQ), and with kind ``template`` enabled
    ``observe()`` asks the template backend for the policy's templates, so the whole round stops
    before reconcile: no cancel, no max_runtime, no completion is handled for any sweep."""
    w = World(aws, kube, tmp_path, {}, kinds=kinds)
    if "template" in kinds:
        w.dispatcher.backends["template"] = make_backend("template", api_client=kube.api_client, namespace="sweepq",
                                                         policy=w.source.get)
    sweep_id = w.send("runaway", {}, trials=2)
    assert w.dispatcher.tick().launched == 2
    w.write_policy("teams: {vision: {members: [oops]\n")  # an operator's typo
    w.queue.send(encode_cancel(sweep_id=sweep_id, requested_by="me"))  # moto signs it as MOTO_SENDER, the submitter
    reports = [w.tick() for _ in range(2)]
    meta = w.store.get_sweep(sweep_id)
    assert meta.get("cancel_requested") is True, (
        f"the submitter's cancel was not recorded while the policy file is broken: {[r.errors for r in reports]}")
    assert meta["state"] == "CANCELLED" and w.jobs(sweep_id) == [], (
        f"state={meta['state']}, {len(w.jobs(sweep_id))} jobs still running; errors: {[r.errors for r in reports]}")


# --------------------------------------------------------------------------------------------
# F8: a refused cancel is visible nowhere a researcher looks
# --------------------------------------------------------------------------------------------
def test_rev11w_a_refused_cancel_is_visible_in_producer_status(aws, kube, tmp_path, monkeypatch) -> None:
    """Issue 11, item 6: "a forged or unauthorised request is refused with a reason visible in
    ``producer status``". The refusal only goes to the tick report's ``errors`` (a log line of the
    Lambda/CronJob); nothing is stored on the sweep, so ``producer status`` cannot show it."""
    from typer.testing import CliRunner

    from producer.cli import app

    w = World(aws, kube, tmp_path, {"teams": {"vision": {"members": [MOTO_SENDER]},
                                              "nlp": {"members": ["AROANLPROLE:*"]}}})
    sweep_id = w.send("target", {}, trials=1)
    w.dispatcher.tick()
    report = w.deliver(encode_cancel(sweep_id=sweep_id, requested_by=MOTO_SENDER), EVE)
    assert any("refused" in e for e in report.errors)  # the tick knows
    monkeypatch.setenv("SWEEPQ_TABLE", w.settings.table)
    monkeypatch.setenv("SWEEPQ_QUEUE_URL", w.queue.url)
    monkeypatch.setenv("NO_COLOR", "1")
    result = CliRunner().invoke(app, ["status", sweep_id, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and EVE in result.output, (
        f"`producer status` says nothing of eve's refused cancel:\n{result.output[:1500]}")


def test_rev11w_producer_status_and_list_name_the_real_sender_not_the_bodys_claim(aws, kube, tmp_path, monkeypatch) -> None:
    """Issue 11, item 6: "``submitter`` ... come[s] from SQS's ``SenderId``, not the body". Intake
    stores the SenderId as ``sender_id`` but keeps the body's claim as ``submitter``, and that claim
    is what ``producer status`` and ``producer list`` show: eve's sweep reads as the operator's."""
    from typer.testing import CliRunner

    from producer.cli import app

    w = World(aws, kube, tmp_path, {})
    sweep_id, body = w.body("forged", {}, trials=1)
    body = body.replace('"submitter": "someone-else"', '"submitter": "arn:aws:iam::123456789012:user/the-operator"')
    w.deliver(body, EVE)
    assert w.store.get_sweep(sweep_id)["sender_id"] == EVE
    monkeypatch.setenv("SWEEPQ_TABLE", w.settings.table)
    monkeypatch.setenv("SWEEPQ_QUEUE_URL", w.queue.url)
    shown = {}
    for command in (["status", sweep_id, "-o", "json"], ["list", "-o", "json"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        shown[command[0]] = result.output
    for command, output in shown.items():
        assert "the-operator" not in output and EVE in output, (
            f"`producer {command}` shows the body's forged submitter, not the SenderId {EVE}:\n{output[:800]}")


def test_rev11w_tightening_a_limit_clamps_what_intake_filled_instead_of_refusing_the_sweep(aws, kube, tmp_path) -> None:
    """``admit`` fills ``max_concurrent`` (and ``max_runtime``, ``memory``, ``priority``…) from the
    policy's limits when the sweep leaves them unset, and the tick re-checks the *filled* settings.
    The operator lowers ``limits.max_concurrent`` from 4 to 2: a sweep that never asked for a
    concurrency now "asks for 4", is refused at every launch and parked after 3 ticks. Intake of the
    same body today would fill 2 and admit it."""
    w = World(aws, kube, tmp_path, {"limits": {"max_concurrent": 4}})
    sweep_id = w.send("unset", {}, trials=8)
    assert w.dispatcher.tick().launched == 4
    w.write_policy({"limits": {"max_concurrent": 2}})
    launched = 0
    for _ in range(4):
        w.finish_all()
        launched += w.tick().launched
    meta = w.store.get_sweep(sweep_id)
    assert launched >= 2 and not meta.get("held"), (
        f"launched {launched} after the limit was lowered; held={meta.get('held')}")
