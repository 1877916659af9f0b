"""Test helpers shared by integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store
from dispatcher.adapters.wake_queue import create_wake_queue
from dispatcher.core.identity import parse_job_name, sweep_id_for
from dispatcher.core.identity import trial_id as trial_id_of
from dispatcher.core.jobs import JobPhase
from dispatcher.core.message import SubmitMessage, encode_submit
from dispatcher.core.metrics import predictable_pod
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher


class Clock:
    """A virtual clock: ``now`` advances only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bootstrap(session: Any, settings: Settings, *, visibility_timeout: int = 300,
              wake: bool = False) -> tuple[Store, Queue]:
    """What `dispatcher bootstrap` makes: the queue and its DLQ, the table, the trials' metrics
    table; with ``wake`` also the wake queue (off by default: without one, trials get no
    SWEEPQ_WAKE_QUEUE_URL, which most tests take for granted)."""
    url, _ = create_queues(session.client("sqs"), settings.queue_name, visibility_timeout=visibility_timeout)
    store = Store(settings.table, session.client("dynamodb"), scope=settings.dispatcher_scope)
    store.create_table()
    MetricsStore(str(settings.metrics_table), session.client("dynamodb")).create_table()
    if wake and settings.wake_queue_url is None:
        create_wake_queue(session.client("sqs"), str(settings.wake_queue_name))
    return store, Queue(session.client("sqs"), url)


def metrics_store(session: Any, settings: Settings) -> MetricsStore:
    return MetricsStore(str(settings.metrics_table), session.client("dynamodb"))


def report_final_metrics(session: Any, settings: Settings, job: str, metrics: dict[str, Any], *,
                         kind: str = "pytorchjob", pod: str | None = None, status: str = "finished",
                         trial_id: str | None = None, attempt: int | None = None) -> None:
    """What the trainer writes when a trial finishes (CONTRACTS C1): its pod's item of the metrics
    table. ``pod`` defaults to the job's first pod of ``kind``; the other fields to ``job``'s."""
    parsed = parse_job_name(job)
    assert parsed is not None, job
    sweep_id, index, job_attempt = parsed
    item = {"pod": pod or predictable_pod(kind, job) or f"{job}-abcde", "job": job,
            "trial_id": trial_id if trial_id is not None else trial_id_of(sweep_id, index),
            "attempt": attempt if attempt is not None else job_attempt, "world_size": 1,
            "metrics": metrics, "final": metrics, "status": status, "updated_at": 1_800_000_000}
    item = ser(item)
    session.client("dynamodb").put_item(TableName=str(settings.metrics_table), Item=item)


def submit(queue: Queue, spec: dict[str, Any], launch: dict[str, Any] | None = None, *, token: str | None = None,
           submitted_at: str | None = None) -> str:
    token = token or uuid.uuid4().hex
    sweep_id = sweep_id_for(spec.get("name"), token)
    queue.send(
        encode_submit(
            SubmitMessage(
                sweep_id=sweep_id,
                token=token,
                spec=spec,
                launch=launch or {},
                submitter="tester",
                submitted_at=submitted_at or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                source="test.yaml",
            )
        )
    )
    return sweep_id


def grid_spec(name: str, n_lr: int = 2, n_bs: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "method": "grid",
        "program": "train.py",
        "metric": {"name": "eval/accuracy", "goal": "maximize"},
        "parameters": {
            "learning_rate": {"values": [round(0.1 / (i + 1), 4) for i in range(n_lr)]},
            "batch_size": {"values": [16 * (i + 1) for i in range(n_bs)]},
        },
        **extra,
    }


def make_dispatcher(session: Any, settings: Settings, backends: dict, clock: Any, queue: Queue | None = None,
                    owner: str | None = None, policy: Any = None) -> Dispatcher:
    store = Store(settings.table, session.client("dynamodb"), scope=settings.dispatcher_scope)
    return Dispatcher(settings=settings, store=store, queue=queue, backends=backends, clock=clock, owner=owner,
                      policy=policy, metrics=metrics_store(session, settings))


def pytorchjob_phase(job: dict[str, Any]) -> JobPhase:
    """A PyTorchJob's phase from its true conditions, read independently of the backend under test."""
    conds = {c["type"] for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    if "Succeeded" in conds:
        return JobPhase.SUCCEEDED
    if "Failed" in conds:
        return JobPhase.FAILED
    return JobPhase.RUNNING if "Running" in conds else JobPhase.PENDING


class CountingSession:
    """``session`` whose clients count their calls (the benchmarks' ``AwsCalls``, on in-process
    moto): ``.calls.calls`` maps ``service.Operation`` to a count, ``.calls.reset()`` clears it."""

    def __init__(self, session: Any) -> None:
        from benchmarks._common import AwsCalls

        self.session, self.calls = session, AwsCalls()

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.calls.attach(self.session.client(service, **kwargs))
