"""Shared fixtures: AWS is moto (in-process, or its HTTP server for subprocesses)."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest

# No test may ever reach real AWS or a real W&B account.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["WANDB_MODE"] = "offline"
# `producer submit` keeps a record of what it sent in $SWEEPQ_HOME: never the developer's own home in tests.
os.environ["SWEEPQ_HOME"] = tempfile.mkdtemp(prefix="sweepq-home-")
os.environ.setdefault("WANDB_SILENT", "true")

# moto's TransactWriteItems without its whole-table deep copy per item (tests/moto_txn.py, issue 16).
import moto_txn  # noqa: E402

moto_txn.install()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def aws(monkeypatch):
    """moto in-process for the duration of one test; yields a boto3 Session."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        import boto3

        yield boto3.session.Session(region_name="us-east-1")


@pytest.fixture
def atomic_aws(aws, monkeypatch):
    """``aws`` with moto's request handling serialised: real DynamoDB applies a conditional write
    atomically, moto checks and writes in Python where a thread switch can split the two. Tests of
    concurrent dispatchers use this so a moto race is never reported as a sweepq duplicate."""
    import threading

    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    original = BotocoreStubber.process_request

    def process_request(self, request):
        with lock:
            return original(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", process_request)
    return aws


@pytest.fixture(scope="session")
def moto_server():
    """moto's HTTP server on loopback (for subprocesses: torchrun, `dispatcher tick`). Yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# The Kubernetes API emulator (kmock over HTTP) as the `kube` fixture.
from kube_emulator import kube  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """Longest first: soak, then slow cases, then the rest (a stable sort keeps file order within
    each group). Under pytest-xdist's worksteal the long cases start at once on one worker while the
    other drains the quick ones, instead of a 150 s soak starting last and the run waiting on it."""
    def weight(item) -> int:
        return 0 if item.get_closest_marker("soak") else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=weight)
