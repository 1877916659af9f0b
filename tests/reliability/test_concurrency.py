"""Scenario 2 — 2, 4 and 8 dispatchers ticking at once on one queue, table and cluster while
sweeps are being submitted: as threads in one process, and as ``dispatcher run`` processes.

The lease serialises the ticks (a tick that finds it taken marks it dirty and the holder runs one
more round); the ledger checks every job create against the caps as it happens, and the end
state for duplicates and losses.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import bootstrap
from invariants import Ledger
from procs import dispatcher_process, server_stack
from sweepworld import KIND, advance_cluster, submit_random

from dispatcher.adapters.queue import Queue
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.errors import SweepqError
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

CAP = 4
SWEEPS = 6


def _drive_until_done(store: Store, queue: Queue, kube: Any, ledger: Ledger, rng: random.Random, *,
                      sweeps: int, budget_s: float, alive: Any = lambda: None) -> int:
    """Submit `sweeps` over the first part of the run, move the cluster along, observe the caps;
    returns how many steps it took. ``alive()`` raises if a dispatcher died."""
    deadline = time.monotonic() + budget_s
    submitted, steps = 0, 0
    while time.monotonic() < deadline:
        steps += 1
        if submitted < sweeps and rng.random() < 0.5:
            submit_random(queue, ledger, rng, submitted)
            submitted += 1
        ledger.observe()
        advance_cluster(kube, rng, fail_p=0.15)
        alive()
        if submitted == sweeps and not store.active_sweeps() and not _queued(queue):
            return steps
        time.sleep(0.05)
    pytest.fail(f"{len(store.active_sweeps())} sweeps still active after {budget_s} s")


def _queued(queue: Queue) -> int:
    attrs = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.mark.slow
@pytest.mark.parametrize("n", [pytest.param(2, marks=pytest.mark.soak), pytest.param(4, marks=pytest.mark.soak), 8])
def test_threads_ticking_at_once_never_duplicate_or_exceed_a_cap(atomic_aws, kube, ledger, n: int) -> None:
    # GIVEN n dispatchers in threads, each with its own clients and owner, on the real clock
    settings = Settings.load({}, backend=KIND, max_running=CAP, namespace="sweepq", lease_seconds=60)
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    ledger.cap = CAP
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatchers = [Dispatcher(settings=settings, store=Store(settings.table, atomic_aws.client("dynamodb")),
                              queue=Queue(atomic_aws.client("sqs"), queue.url), backends={KIND: backend},
                              owner=f"thread-{i}") for i in range(n)]
    stop = threading.Event()
    leases: list[str] = []
    crashes: list[BaseException] = []

    def loop(d: Dispatcher, seed: int) -> None:
        pause = random.Random(seed)
        while not stop.is_set():
            try:
                leases.append(d.tick().lease)
            except SweepqError as exc:  # a lost race on the lease item itself: the next tick retries
                leases.append(f"error: {exc}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                crashes.append(exc)
                return
            stop.wait(pause.uniform(0, 0.02))

    threads = [threading.Thread(target=loop, args=(d, i), name=f"dispatcher-{i}") for i, d in enumerate(dispatchers)]
    for t in threads:
        t.start()
    # WHEN sweeps are submitted while they tick, and the cluster moves jobs along
    try:
        steps = _drive_until_done(store, queue, kube, ledger, random.Random(n), sweeps=SWEEPS, budget_s=60,
                                  alive=lambda: not crashes or pytest.fail(f"a dispatcher crashed: {crashes[0]!r}"))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    # THEN nothing duplicated, lost or over a cap, and the ticks really overlapped
    figures = ledger.check_final(store)
    ledger.assert_ok(figures)
    busy = leases.count("busy")
    assert leases.count("held") > 0 and busy > 0, f"no overlap in {len(leases)} ticks"
    print(f"\nconcurrency threads x{n}: {len(leases)} ticks ({busy} found the lease busy and marked it dirty, "
          f"{sum(1 for x in leases if x.startswith('error'))} errors), {steps} steps — {figures.line()}")


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.parametrize("n", [2, 4, 8])
def test_processes_ticking_at_once_never_duplicate_or_exceed_a_cap(serial_moto_server, kube, ledger, tmp_path: Path,
                                                                    n: int) -> None:
    # GIVEN n `dispatcher run` processes (a tick every 0.2 s) on moto's server and the emulator
    stack = server_stack(serial_moto_server, kube, tmp_path, cap=CAP, visibility_timeout=2)
    ledger.cap = CAP
    env = stack.env(lease_seconds=30, extra={"SWEEPQ_LOG_LEVEL": "INFO"})
    procs = [dispatcher_process(env, "run", "--interval", "0.2", "--no-watch") for _ in range(n)]

    def alive() -> None:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a dispatcher exited with {p.returncode}: {p.stderr.read()[-3000:]}")

    # WHEN sweeps are submitted while they tick
    try:
        steps = _drive_until_done(stack.store, stack.queue, kube, ledger, random.Random(100 + n), sweeps=SWEEPS,
                                  budget_s=120, alive=alive)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60) for p in procs]
    # THEN nothing duplicated, lost or over a cap; the processes overlapped and exited cleanly
    figures = ledger.check_final(stack.store)
    ledger.assert_ok(figures)
    ticks = [json.loads(line.split(" ", 4)[4]) for _, err in outputs for line in err.splitlines()
             if '"event": "tick"' in line]
    busy = sum(t["lease"] == "busy" for t in ticks)
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    assert not any("Traceback" in err for _, err in outputs)
    assert busy > 0 and len(ticks) > busy, f"{len(ticks)} ticks, {busy} busy"
    print(f"\nconcurrency processes x{n}: {len(ticks)} ticks ({busy} found the lease busy), {steps} steps — "
          f"{figures.line()}")
