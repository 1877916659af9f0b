"""``producer submit / status / list / cancel`` against moto's SQS, STS and DynamoDB.

The sweep items are written by the dispatcher's own code (``Dispatcher.intake`` and ``tick``)
from the messages the producer sent. The only stand-in is the job backend: a recording
:class:`FakeBackend` at our own ``Backend`` interface, whose jobs the test moves through phases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store, trial_key
from dispatcher.adapters.dynamo import ser
from dispatcher.core.jobs import DryRun, JobPhase, JobStatus, LaunchRequest
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.message import CancelMessage, SubmitMessage, decode
from dispatcher.core.spec import validate_sweep
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher, TickReport
from producer.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweep.yaml"
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"


class FakeBackend:
    """Records created jobs; the test sets their phases. Implements dispatcher.core.jobs.Backend."""

    kind = "local"

    def __init__(self) -> None:
        self.jobs: dict[str, JobStatus] = {}
        self.requests: dict[str, LaunchRequest] = {}

    def dryrun(self, request: LaunchRequest) -> DryRun:
        return DryRun(job_name=request.job_name, kind=self.kind, request=request, rendered=request.job_name)

    def submit(self, dryrun: DryRun) -> str:
        r: LaunchRequest = dryrun.request
        self.requests[r.job_name] = r
        self.jobs.setdefault(r.job_name, JobStatus(r.job_name, self.kind, r.sweep_id, r.trial_index, r.attempt,
                                                   JobPhase.PENDING))
        return r.job_name

    def observe(self) -> dict[str, JobStatus]:
        return dict(self.jobs)

    def cancel(self, name: str) -> None:
        self.jobs.pop(name, None)

    def set_phase(self, name: str, phase: JobPhase) -> None:
        old = self.jobs[name]
        self.jobs[name] = JobStatus(old.name, old.kind, old.sweep_id, old.trial_index, old.attempt, phase)


class World:
    def __init__(self, sqs: Any, ddb: Any, url: str, store: Store) -> None:
        self.sqs, self.ddb, self.url, self.store = sqs, ddb, url, store
        self.backend = FakeBackend()
        self.dispatcher = Dispatcher(settings=Settings(backend="local"), store=store, queue=Queue(sqs, url),
                                     backends={"local": self.backend})

    def queued(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessages"])

    def receive(self) -> list[Any]:
        return [decode(m.body) for m in Queue(self.sqs, self.url).receive(max_messages=10)]

    def intake(self) -> TickReport:
        report = TickReport()
        self.dispatcher.intake.drain(report)
        return report

    def report_metrics(self, sweep_id: str, index: int, metrics: dict[str, float]) -> None:
        """What the trainer's TrialTableReporter does at the end of a trial (METRICS is a reserved word)."""
        self.ddb.update_item(TableName="sweepq", Key=ser(trial_key(sweep_id, index)), UpdateExpression="SET #m = :m",
                             ExpressionAttributeNames={"#m": "metrics"}, ExpressionAttributeValues=ser({":m": metrics}))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("NO_COLOR", "1")
    with mock_aws():
        sqs, ddb = boto3.client("sqs"), boto3.client("dynamodb")
        url, _ = create_queues(sqs, "sweepq")
        store = Store("sweepq", ddb)
        store.create_table()
        yield World(sqs, ddb, url, store)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def submit(*args: str, path: Path = EXAMPLE) -> str:
    result = run("submit", str(path), "-o", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["sweep_id"]


# -- submit ---------------------------------------------------------------------------------------

def test_submit_round_trip(world: World) -> None:
    # WHEN a researcher submits the demo sweep (queue found by its default name)
    result = run("submit", str(EXAMPLE), "-o", "json", "--priority", "5")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"sweep_id", "trials"} and out["trials"] == 4
    # THEN exactly one message is on the queue, a valid envelope whose spec re-validates
    [msg] = world.receive()
    assert isinstance(msg, SubmitMessage) and msg.sweep_id == out["sweep_id"]
    assert validate_sweep(msg.spec).total == 4
    launch = LaunchSettings.model_validate(msg.launch)
    assert (launch.kind, launch.priority, launch.max_concurrent) == ("local", 5, 2)
    assert msg.submitter == MOTO_ARN and msg.source == "sweep.yaml"


def test_submit_text_says_how_to_watch(world: World) -> None:
    result = run("submit", str(EXAMPLE), "--queue-url", world.url)
    assert result.exit_code == 0, result.output
    sweep_id = world.receive()[0].sweep_id
    assert f"submitted sweep {sweep_id}: 4 trials (grid) to {world.url}" in result.stdout
    assert f"producer status {sweep_id}" in result.stdout


def test_retried_submit_with_the_same_key_is_one_sweep(world: World) -> None:
    first = submit("--idempotency-key", "ci-build-4711")
    second = submit("--idempotency-key", "ci-build-4711")
    other = submit()
    assert first == second != other
    report = world.intake()
    assert (report.accepted, report.duplicates) == (2, 1)
    assert world.queued() == 0


def test_dry_run_sends_nothing(world: World) -> None:
    assert run("submit", str(EXAMPLE), "--dry-run").exit_code == 0
    assert world.queued() == 0


def test_missing_queue_is_exit_3(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPQ_QUEUE_NAME", "no-such-queue")
    result = run("submit", str(EXAMPLE))
    assert result.exit_code == 3
    assert result.stderr.strip() == ("error: find queue 'no-such-queue': the queue does not exist — run "
                                     "`dispatcher bootstrap` or set SWEEPQ_QUEUE_URL")


# -- status / list --------------------------------------------------------------------------------

def test_status_follows_the_dispatcher(world: World) -> None:
    sweep_id = submit()
    world.dispatcher.tick()  # accepts the sweep and launches max_concurrent = 2 trials
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "ACTIVE" and doc["total"] == 4 and doc["submitter"] == MOTO_ARN
    assert doc["counts"] == {"not_started": 2, "waiting": 0, "pending": 0, "launched": 2, "running": 0,
                             "succeeded": 0, "failed": 0, "cancelled": 0}
    assert doc["best"] is None

    # WHEN trial 0 runs and trial 1 succeeds with a metric
    world.backend.set_phase(f"{sweep_id}-0-a1", JobPhase.RUNNING)
    world.backend.set_phase(f"{sweep_id}-1-a1", JobPhase.SUCCEEDED)
    world.report_metrics(sweep_id, 1, {"eval/accuracy": 0.75, "eval/loss": 0.5})
    world.dispatcher.tick()
    # THEN status shows it, and trial 2 was launched into the freed slot
    result = run("status", sweep_id, "-o", "json", "--trials")
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"not_started": 1, "waiting": 0, "pending": 0, "launched": 1, "running": 1,
                             "succeeded": 1, "failed": 0, "cancelled": 0}
    assert doc["best"]["trial_index"] == 1 and doc["best"]["value"] == 0.75
    assert doc["best"]["metric"] == "eval/accuracy" and doc["best"]["params"]["learning_rate"] == 0.0003
    assert [(t["index"], t["state"], t["attempt"], t["metric"]) for t in doc["trials"]] == [
        (0, "RUNNING", 1, None), (1, "SUCCEEDED", 1, 0.75), (2, "LAUNCHED", 1, None)]

    text = run("status", sweep_id, "--trials").stdout
    assert f"sweep {sweep_id}  demo-lr-bs  ACTIVE" in text
    assert "1/4 finished (25%)" in text
    assert "not started 1  waiting 0  pending 0  launched 1  running 1  succeeded 1  failed 0  cancelled 0" in text
    assert "best: trial 1 eval/accuracy=0.75 (maximize)" in text
    assert "1 more trial not started yet" in text
    table = text.split("swept params")[1]  # the trials table shows swept params only; constants left out
    assert '"learning_rate":' in table and '"model"' not in table


def test_status_defaults_to_the_newest_sweep(world: World) -> None:
    submit()
    newest = submit()
    world.intake()
    assert json.loads(run("status", "-o", "json").stdout)["sweep_id"] == newest


def test_rejected_sweep_shows_its_reason(world: World) -> None:
    # GIVEN a sweep whose kind this dispatcher does not run
    sweep_id = submit("--kind", "pytorchjob")
    world.intake()
    result = run("status", sweep_id)
    assert result.exit_code == 0
    assert "REJECTED" in result.stdout
    assert "reason: " in result.stdout and "sweepq.kind: 'pytorchjob' is not enabled on this dispatcher" in result.stdout
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "REJECTED" and "use one of local" in doc["reason"]


def test_unknown_sweep_is_exit_4(world: World) -> None:
    result = run("status", "nosuch-abcdefgh")
    assert result.exit_code == 4
    assert "sweep nosuch-abcdefgh is not in table sweepq" in result.stderr
    result = run("status")
    assert result.exit_code == 4 and "no sweeps in table sweepq" in result.stderr


def test_missing_table_is_exit_3(world: World) -> None:
    result = run("status", "--table", "nope")
    assert result.exit_code == 3
    assert "table not found" in result.stderr and "Traceback" not in result.output


def test_list_newest_first(world: World) -> None:
    assert "no sweeps in table sweepq" in run("list").stdout
    first = submit()
    second = submit("--kind", "job")  # rejected: listed too
    world.intake()
    rows = json.loads(run("list", "-o", "json").stdout)
    assert [r["sweep_id"] for r in rows] == [second, first]
    assert rows[1] == {"sweep_id": first, "name": "demo-lr-bs", "submitter": MOTO_ARN, "state": "ACTIVE",
                       "finished": 0, "total": 4, "submitted_at": rows[1]["submitted_at"]}
    assert rows[0]["state"] == "REJECTED"
    assert [r["sweep_id"] for r in json.loads(run("list", "-o", "json", "--limit", "1").stdout)] == [second]
    text = run("list").stdout
    assert first in text and "0/4" in text and "REJECTED" in text


# -- cancel ---------------------------------------------------------------------------------------

def test_cancel_is_a_message_the_dispatcher_acts_on(world: World) -> None:
    sweep_id = submit()
    world.dispatcher.tick()
    assert len(world.backend.jobs) == 2
    # WHEN the researcher cancels
    result = run("cancel", sweep_id)
    assert result.exit_code == 0, result.output
    assert "deletes its 2 live jobs" in result.stdout
    # THEN the queue carries a cancel request, and the next tick deletes the jobs and ends the sweep
    world.dispatcher.tick()
    assert world.backend.jobs == {}
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "CANCELLED"
    # AND cancelling again sends nothing
    result = run("cancel", sweep_id, "-o", "json")
    assert json.loads(result.stdout) == {"sweep_id": sweep_id, "cancel_requested": False, "state": "CANCELLED"}
    assert world.queued() == 0


def test_cancel_before_the_sweep_is_stored(world: World) -> None:
    result = run("cancel", "early-abcdefgh", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"sweep_id": "early-abcdefgh", "cancel_requested": True, "state": None}
    [msg] = world.receive()
    assert isinstance(msg, CancelMessage) and msg.requested_by == MOTO_ARN
