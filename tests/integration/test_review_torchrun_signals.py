"""Review (rev13) of issue 13: what the PyTorchJob container really exits with when the kubelet
stops it — real torchrun on CPU, started exactly as the rendered manifest says, with the env the
Training Operator v1.9 injects (pkg/controller.v1/pytorch/envvar.go, elastic.go)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dispatcher.backends.pytorchjob import RESTART_POLICY, build_pytorchjob
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

SWEEP = "rev-sweep-abcdefgh"
WORKER = """
import sys, time
print("worker up", flush=True)
time.sleep(600)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # > 10 s: not in `scripts/test.sh --fast`
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="needs torchrun")
def test_review_a_sigtermed_pytorchjob_pod_exits_non_retryable_under_restart_policy_exitcode(tmp_path) -> None:
    """Attack: a node shutting down (kubelet GracefulNodeShutdown) or under pressure (kubelet eviction)
    SIGTERMs an elastic PyTorchJob worker; the pod ends Failed with the container's exit code.

    Expected (pytorchjob.py: "ExitCode: the operator recreates pods that died from a signal (exit
    128+: preemption, OOM kill, node loss)"): the container exits ≥ 128, which the v1.9 operator's
    ``IsRetryableExitCode`` (exitCode >= 128) restarts — the elastic job goes on with its other nodes.
    Actual: torchrun (the container's PID 1) turns SIGTERM into ``SignalException`` and exits **1**,
    which restartPolicy ExitCode treats as a permanent application error: the operator sets the
    PyTorchJob Failed ("non-retryable exit code") and the attempt is burned.
    """
    script = tmp_path / "train.py"
    script.write_text(WORKER)
    launch = LaunchSettings(kind="pytorchjob", image="trainer:1", gpus_per_node=0, nodes="1:2")
    request = LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                            namespace="sweepq", params={}, command=TrialCommand(argv=(str(script),)),
                            launch=launch, env={"SWEEP_ID": SWEEP})
    manifest = build_pytorchjob(request)
    worker = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["restartPolicy"] == RESTART_POLICY == "ExitCode"
    [container] = worker["template"]["spec"]["containers"]
    argv = [*container["command"], *container.get("args", [])]
    argv[0] = str(Path(sys.executable).parent / argv[0])
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PET_NPROC_PER_NODE": manifest["spec"]["nprocPerNode"],
           "PET_RDZV_ENDPOINT": f"127.0.0.1:{port}", "PET_RDZV_BACKEND": "c10d", "PET_NNODES": "1:2",
           "PET_MAX_RESTARTS": str(manifest["spec"]["elasticPolicy"]["maxRestarts"])}
    log = tmp_path / "torchrun.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 120
            while "worker up" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.5)
            assert "worker up" in log.read_text(), log.read_text()
            proc.send_signal(signal.SIGTERM)  # what the kubelet sends first
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code >= 128, f"torchrun exited {code} after SIGTERM: restartPolicy ExitCode fails the PyTorchJob"
