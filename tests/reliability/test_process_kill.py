"""Scenario 1b — SIGKILL real ``python -m dispatcher.cli tick`` processes at random moments.

The crash-point harness (test_crash_points.py) stops an in-process run before or after each
external call; this kills real processes, mid-anything, against moto's HTTP server and the
Kubernetes emulator (reached through a kubeconfig file), then lets ticks continue until every
sweep has finished. Half the kills come at a random moment of the process's life (imports
included), half at a random moment of its tick (up to 0.4 s after it took the lease).

The lease: a killed tick leaves the lease item behind, held for ``SWEEPQ_LEASE_SECONDS`` (30 s,
the minimum) of real time. Instead of waiting, the test expires it the way time would: it sets
the item's ``expires_at`` to the past (``acquire_lease`` then succeeds through its
``expires_at < :now`` condition, exactly as after 30 s). A kill that finds the lease item present
and unexpired is counted as a kill *inside* a tick.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import grid_spec, submit
from invariants import Ledger
from procs import ServerStack, dispatcher_process, run_tick, server_stack
from sweepworld import advance_cluster

from dispatcher.adapters.dynamo import des, ser
from dispatcher.adapters.store import lease_key

CAP = 3


LEASE_KEY = lease_key("local/sweepq")  # the subprocesses' scope: <no cluster: local>/<SWEEPQ_NAMESPACE>


def expire_lease(stack: ServerStack) -> bool:
    """Age the lease item past its expiry; True if a live (unexpired) lease was there."""
    item = stack.dynamodb.get_item(TableName=stack.store.table, Key=ser(LEASE_KEY), ConsistentRead=True).get("Item")
    if item is None:
        return False
    live = float(des(item)["expires_at"]) > time.time()
    try:
        stack.dynamodb.update_item(TableName=stack.store.table, Key=ser(LEASE_KEY),
                                   UpdateExpression="SET expires_at = :past", ConditionExpression="attribute_exists(pk)",
                                   ExpressionAttributeValues=ser({":past": time.time() - 3600}))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    return live


def _wait_for_lease(stack: ServerStack, process: subprocess.Popen[str], *, timeout: float) -> None:
    """Until the process holds the lease (its tick has begun), or it exits, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        item = stack.dynamodb.get_item(TableName=stack.store.table, Key=ser(LEASE_KEY), ConsistentRead=True)
        if "Item" in item and float(des(item["Item"])["expires_at"]) > time.time():
            return
        time.sleep(0.02)


def kill_ticks(stack: ServerStack, kube: Any, ledger: Ledger, *, seed: int, kills: int,
               sweeps: int) -> dict[str, Any]:
    rng = random.Random(seed)
    env = stack.env(lease_seconds=30)
    for n in range(sweeps):
        launch = {"max_retries": 2, **({"max_concurrent": 1} if n % 2 else {})}
        spec = grid_spec(f"kill{seed}-{n}", 2, 2)
        sweep_id = submit(stack.queue, spec, launch, token=f"kill-{seed}-{n}")
        ledger.expect(sweep_id, "COMPLETED", total=4, max_concurrent=launch.get("max_concurrent"))
    # calibrate: how long one whole tick process takes here (imports included)
    started = time.monotonic()
    first = run_tick(env)
    assert first.returncode in (0, 1), first.stderr[-3000:]
    full = time.monotonic() - started
    advance_cluster(kube, rng)
    killed = inside = finished = 0
    for k in range(kills):
        process = dispatcher_process(env)
        try:
            if k % 2:  # at any moment of the process's life, imports included
                process.wait(timeout=rng.uniform(0.3 * full, 1.05 * full))
            else:  # at a moment of its tick: once it holds the lease, up to 0.4 s later
                _wait_for_lease(stack, process, timeout=2 * full)
                process.wait(timeout=rng.uniform(0.0, 0.4))
            finished += 1
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL: no cleanup, no lease release, mid-whatever it was doing
            process.wait()
            killed += 1
            inside += expire_lease(stack)
        process.stdout.close()
        process.stderr.close()
        ledger.observe()
        advance_cluster(kube, rng)
    # THEN ticks that are left alone finish every sweep
    for _ in range(40):
        done = run_tick(env)
        assert done.returncode in (0, 1), done.stderr[-3000:]
        ledger.observe()
        if not stack.store.active_sweeps():
            break
        advance_cluster(kube, rng, start_p=1.0, finish_p=0.0)  # pending jobs start ...
        advance_cluster(kube, rng, start_p=1.0, finish_p=0.8)  # ... and most running ones end
    figures = ledger.check_final(stack.store)
    ledger.assert_ok(figures)
    return {"killed": killed, "inside": inside, "finished": finished, "tick_s": round(full, 2), "figures": figures}


@pytest.mark.slow
@pytest.mark.parametrize("seed,kills,sweeps", [pytest.param(1, 3, 1), pytest.param(2, 20, 3, marks=pytest.mark.soak),
                                               pytest.param(3, 20, 3, marks=pytest.mark.soak)])
def test_sigkilled_tick_processes_lose_and_duplicate_nothing(serial_moto_server, kube, ledger, tmp_path: Path,
                                                             seed: int, kills: int, sweeps: int) -> None:
    stack = server_stack(serial_moto_server, kube, tmp_path, cap=CAP, visibility_timeout=2)
    ledger.cap = CAP
    out = kill_ticks(stack, kube, ledger, seed=seed, kills=kills, sweeps=sweeps)
    print(f"\nprocess kills seed {seed}: {out['killed']} SIGKILLs ({out['inside']} inside a tick holding the lease), "
          f"{out['finished']} ticks finished before their kill, a tick takes {out['tick_s']} s — "
          f"{out['figures'].line()}")
    assert out["killed"] >= 1
