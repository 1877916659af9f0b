"""Real processes against moto's HTTP server and the Kubernetes emulator: ``python -m
dispatcher.cli tick`` / ``run`` and ``python -m producer``, with their environment, and the
queue/table they share (created by the test through the same server)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from sweepworld import PYTHON, REPO, subprocess_env, unique, write_kubeconfig

from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store


@dataclass
class ServerStack:
    """A queue (+ DLQ) and a table on moto's server, with clients for the test's own reads."""

    endpoint: str
    queue: Queue
    dlq_url: str
    store: Store
    sqs: Any
    dynamodb: Any
    kubeconfig: Path
    cap: int

    def env(self, *, lease_seconds: int = 30, extra: dict[str, str] | None = None) -> dict[str, str]:
        return subprocess_env(endpoint=self.endpoint, queue_url=self.queue.url, table=self.store.table,
                              kubeconfig=self.kubeconfig, cap=self.cap, lease_seconds=lease_seconds, extra=extra)


def server_stack(endpoint: str, kube: Any, tmp_path: Path, *, cap: int, visibility_timeout: int = 2) -> ServerStack:
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    sqs = session.client("sqs", endpoint_url=endpoint)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    name = unique("rel")
    url, dlq = create_queues(sqs, name, visibility_timeout=visibility_timeout)
    store = Store(name, dynamodb)
    store.create_table()
    # the trials' metrics table (CONTRACTS C1): a succeeded trial's transition waits for it to exist
    MetricsStore(f"{name}-metrics", dynamodb).create_table()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url)
    return ServerStack(endpoint, Queue(sqs, url), dlq, store, sqs, dynamodb, kubeconfig, cap)


def dispatcher_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``python -m dispatcher.cli <args>`` (``tick -o json`` by default)."""
    return subprocess.Popen([PYTHON, "-m", "dispatcher.cli", *(args or ("tick", "-o", "json"))], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_tick(env: dict[str, str], *, timeout: float = 60, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["tick", "-o", "json", *(["-v"] if verbose else [])]
    return subprocess.run([PYTHON, "-m", "dispatcher.cli", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def run_producer(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "producer", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
