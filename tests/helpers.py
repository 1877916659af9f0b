"""Test helpers shared by integration tests (not fixtures: plain functions)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import JobPhase
from dispatcher.core.message import SubmitMessage, encode_submit
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


def bootstrap(session: Any, settings: Settings, *, visibility_timeout: int = 300) -> tuple[Store, Queue]:
    url, _ = create_queues(session.client("sqs"), settings.queue_name, visibility_timeout=visibility_timeout)
    store = Store(settings.table, session.client("dynamodb"))
    store.create_table()
    return store, Queue(session.client("sqs"), url)


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
                    owner: str | None = None) -> Dispatcher:
    store = Store(settings.table, session.client("dynamodb"))
    return Dispatcher(settings=settings, store=store, queue=queue, backends=backends, clock=clock, owner=owner)


def pytorchjob_phase(job: dict[str, Any]) -> JobPhase:
    """A PyTorchJob's phase from its true conditions, read independently of the backend under test."""
    conds = {c["type"] for c in (job.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    if "Succeeded" in conds:
        return JobPhase.SUCCEEDED
    if "Failed" in conds:
        return JobPhase.FAILED
    return JobPhase.RUNNING if "Running" in conds else JobPhase.PENDING
