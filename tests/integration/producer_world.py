"""A world for producer tests: moto's SQS/STS/DynamoDB, the real dispatcher, a recording backend.

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

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store
from dispatcher.core.jobs import DryRun, JobPhase, JobStatus, LaunchRequest
from dispatcher.core.message import decode
from dispatcher.core.metrics import predictable_pod
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher, TickReport
from producer.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweep.yaml"
MOTO_ARN = "arn:aws:sts::123456789012:user/moto"


class FakeBackend:
    """Records created jobs; the test sets their phases. Implements dispatcher.core.jobs.Backend."""

    def __init__(self, kind: str = "local") -> None:
        self.kind = kind
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

    def set_phase(self, name: str, phase: JobPhase, reason: str = "") -> None:
        old = self.jobs[name]
        self.jobs[name] = JobStatus(old.name, old.kind, old.sweep_id, old.trial_index, old.attempt, phase, reason=reason)


class World:
    def __init__(self, sqs: Any, ddb: Any, url: str, store: Store, *, kind: str = "local") -> None:
        self.sqs, self.ddb, self.url, self.store = sqs, ddb, url, store
        self.backend = FakeBackend(kind)
        self.dispatcher = Dispatcher(settings=Settings(backend=kind), store=store, queue=Queue(sqs, url),
                                     backends={kind: self.backend}, metrics=MetricsStore("sweepq-metrics", ddb))

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
        """What the trainer writes (CONTRACTS C1): its pod's item of the metrics table, for the
        trial's current attempt; ``finished`` with final values once its job succeeded."""
        attempt = int((self.store.get_trial(sweep_id, index) or {})["attempt"])
        job = f"{sweep_id}-{index}-a{attempt}"
        done = self.backend.jobs[job].phase is JobPhase.SUCCEEDED
        item = {"pod": predictable_pod(self.backend.kind, job) or f"{job}-abcde", "job": job, "trial_id": f"{sweep_id}-{index}",
                "attempt": attempt, "world_size": 1, "metrics": metrics, "status": "finished" if done else "running",
                "updated_at": 1_800_000_000, **({"final": metrics} if done else {})}
        self.ddb.put_item(TableName="sweepq-metrics", Item=ser(item))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_", "WANDB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # a developer's `wandb login` must not register sweeps
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("SWEEPQ_HOME", str(tmp_path / "home"))  # the producer's records of queued sweeps
    with mock_aws():
        sqs, ddb = boto3.client("sqs"), boto3.client("dynamodb")
        url, _ = create_queues(sqs, "sweepq")
        store = Store("sweepq", ddb)
        store.create_table()
        MetricsStore("sweepq-metrics", ddb).create_table()
        yield World(sqs, ddb, url, store)


def make_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, kind: str = "local") -> Iterator[World]:
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_", "WANDB_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # a developer's `wandb login` must not register sweeps
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("SWEEPQ_HOME", str(tmp_path / "home"))  # the producer's records of queued sweeps
    with mock_aws():
        sqs, ddb = boto3.client("sqs"), boto3.client("dynamodb")
        url, _ = create_queues(sqs, "sweepq")
        store = Store("sweepq", ddb)
        store.create_table()
        MetricsStore("sweepq-metrics", ddb).create_table()
        yield World(sqs, ddb, url, store, kind=kind)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def submit(*args: str, path: Path = EXAMPLE) -> str:
    result = run("submit", str(path), "-o", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["sweep_id"]
