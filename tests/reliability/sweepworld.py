"""Shared pieces of the reliability scenarios: seeded sweep mixes, a cluster that makes progress,
queue draining, and subprocess environments for ``python -m dispatcher.cli tick``.

The cluster stands in for the operators: it moves the jobs it finds through PENDING → RUNNING →
SUCCEEDED/FAILED with seeded odds, and can lose a running job (deleted behind the dispatcher's
back, like a node loss). Everything random takes a ``random.Random`` so a scenario is replayable
from its seed.
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import grid_spec, submit
from invariants import Ledger, is_terminal

from dispatcher.core.jobs import JobPhase

KIND = "pytorchjob"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Progress:
    advanced: int = 0
    failed: int = 0
    lost: int = 0


def _phase(obj: dict[str, Any]) -> JobPhase:
    conditions = {c["type"] for c in (obj.get("status") or {}).get("conditions", []) if c.get("status") == "True"}
    if "Succeeded" in conditions:
        return JobPhase.SUCCEEDED
    if "Failed" in conditions:
        return JobPhase.FAILED
    return JobPhase.RUNNING if "Running" in conditions else JobPhase.PENDING


def advance_cluster(kube: Any, rng: random.Random, *, fail_p: float = 0.15, lose_p: float = 0.0,
                    start_p: float = 0.8, finish_p: float = 0.6, kind: str = KIND) -> Progress:
    """One step of the operators: pending jobs start, running jobs end (seeded odds)."""
    progress = Progress()
    for job in sorted(kube.list_objects(kind), key=lambda j: j["metadata"]["name"]):
        if is_terminal(job):
            continue
        name, phase = job["metadata"]["name"], _phase(job)
        if phase is JobPhase.PENDING:
            if rng.random() < start_p:
                kube.set_job_phase(kind, name, JobPhase.RUNNING)
                progress.advanced += 1
        elif lose_p and rng.random() < lose_p:
            delete_job(kube, name, kind=kind)
            progress.lost += 1
        elif rng.random() < finish_p:
            failed = rng.random() < fail_p
            kube.set_job_phase(kind, name, JobPhase.FAILED if failed else JobPhase.SUCCEEDED,
                               reason="injected failure" if failed else "")
            progress.advanced += 1
            progress.failed += failed
    return progress


def delete_job(kube: Any, name: str, *, kind: str = KIND, namespace: str = "sweepq") -> None:
    """A job vanishes behind the dispatcher's back (node loss, an admin's kubectl delete) — straight
    in the emulator's store, so it never consumes a fault injected for the dispatcher's requests."""
    async def _delete() -> None:
        async with kube.handler._lock:
            kube._find(kind, name, namespace)[1].delete()

    kube._run(_delete())


def random_sweep(rng: random.Random, n: int) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A small grid (1..6 trials) with random caps and retries: (spec, launch, total)."""
    lrs, bss = rng.randint(1, 3), rng.randint(1, 2)
    launch: dict[str, Any] = {"max_retries": rng.choice([0, 1, 2])}
    if rng.random() < 0.5:
        launch["max_concurrent"] = rng.randint(1, 2)
    if rng.random() < 0.3:
        launch["priority"] = rng.randint(-5, 5)
    return grid_spec(f"soak{n}", lrs, bss), launch, lrs * bss


def submit_random(queue: Any, ledger: Ledger, rng: random.Random, n: int) -> str:
    spec, launch, total = random_sweep(rng, n)
    sweep_id = submit(queue, spec, launch, token=f"seed-{rng.getrandbits(64):016x}")
    ledger.expect(sweep_id, "COMPLETED", total=total, max_concurrent=launch.get("max_concurrent"))
    return sweep_id


def drain(sqs: Any, url: str) -> list[str]:
    """Every body on a queue (the DLQ, at the end of a scenario), receiving until it is empty."""
    bodies: list[str] = []
    for _ in range(100):
        out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30)
        messages = out.get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages]
    return bodies


def dlq_url(sqs: Any, url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]
    arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    return sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"]


def write_kubeconfig(path: Path, server: str) -> Path:
    """A kubeconfig for the emulator (plain HTTP, no credentials): how a subprocess reaches it."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "nobody", "namespace": "sweepq"}}],
    }))
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def subprocess_env(*, endpoint: str, queue_url: str, table: str, kubeconfig: Path, cap: int,
                   lease_seconds: int = 30, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a dispatcher subprocess: moto's server, the emulator, fake credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEPQ_", "AWS_", "KUBE")) or k == "SWEEPQ_HOME"}
    env.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "SWEEPQ_QUEUE_URL": queue_url, "SWEEPQ_TABLE": table,
        "SWEEPQ_BACKEND": KIND, "SWEEPQ_NAMESPACE": "sweepq", "SWEEPQ_MAX_RUNNING": str(cap),
        "SWEEPQ_LEASE_SECONDS": str(lease_seconds), "SWEEPQ_INTAKE_BUDGET_S": "5", "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": str(REPO), "HOME": env.get("HOME", "/tmp"),
    })
    env.update(extra or {})
    return env


PYTHON = sys.executable
