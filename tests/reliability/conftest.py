"""Fixtures of the reliability harness.

* ``atomic_aws`` (in tests/conftest.py) — the ``aws`` fixture with moto's request handling serialised.
  Real DynamoDB applies a conditional write atomically; moto evaluates the condition and writes in
  Python, where a thread switch could split the two. The harness must never report a moto race as
  a sweepq duplicate, so every request moto handles runs under one lock (the dispatchers still
  overlap everywhere else: between calls, in the Kubernetes API, in their own code).
* ``serial_moto_server`` — moto's HTTP server (for subprocesses: ``python -m dispatcher.cli tick``,
  ``producer submit``) with the same serialisation. One per test session; tests use their own
  queue and table names.
* ``ledger`` — the invariant checker (:mod:`invariants`) hooked into the Kubernetes emulator, so it
  records every job create of every client, in-process or not.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest
from invariants import Ledger


@pytest.fixture(scope="session")
def serial_moto_server() -> Iterator[str]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serial(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with lock:  # the whole request, body included, as one atomic step
            return list(app(environ, start_response))

    server = make_server("127.0.0.1", 0, serial, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="serial-moto", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture
def ledger(kube: Any, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    checker = Ledger(kube)
    checker.install(monkeypatch)
    return checker
