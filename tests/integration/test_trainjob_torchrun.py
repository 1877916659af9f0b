"""The TrainJob trainer container's argv, exactly as rendered, run with real torchrun on CPU under
the env Trainer v2.3's torch plugin injects (pkg/runtime/framework/plugins/torch/torch.go):
``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion index),
``PET_MASTER_ADDR=<job>-node-0-0.<job>`` and ``PET_MASTER_PORT=29400``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.backends.trainjob import build_trainjob
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

SWEEP = "tj-sweep-abcdefgh"
WORKER = """
import os
os.write(1, ("worker %s of %s\\n" % (os.environ["RANK"], os.environ["WORLD_SIZE"])).encode())
"""  # one write(2) per line: with PYTHONUNBUFFERED print's pieces interleave between the workers
pytestmark = pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                                reason="needs torchrun")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv_of(tmp_path: Path, nodes: int, nproc: int) -> tuple[list[str], dict[str, str]]:
    script = tmp_path / "train.py"
    script.write_text(WORKER)
    launch = LaunchSettings(kind="trainjob", image="trainer:1", gpus_per_node=0, nproc_per_node=nproc, nodes=nodes)
    request = LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                            namespace="sweepq", params={}, command=TrialCommand(argv=(str(script),)), launch=launch,
                            env={"SWEEP_ID": SWEEP})
    trainer = build_trainjob(request)["spec"]["trainer"]
    argv = [*trainer["command"], *trainer.get("args", [])]
    argv[0] = str(Path(sys.executable).parent / argv[0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    env.update({"PYTHONUNBUFFERED": "1", "PET_NNODES": str(trainer["numNodes"]),
                "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"])})
    return argv, env


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_one_node_needs_no_dns_for_its_own_name(tmp_path) -> None:
    """``--standalone``: the rendezvous is local, so the node never resolves PET_MASTER_ADDR (its
    headless-Service record may not be published yet)."""
    argv, env = argv_of(tmp_path, nodes=1, nproc=2)
    env.update({"PET_NODE_RANK": "0", "PET_MASTER_ADDR": f"{SWEEP}-0-a1-node-0-0.{SWEEP}-0-a1.invalid",
                "PET_MASTER_PORT": "29400"})
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line for line in done.stdout.splitlines() if line.startswith("worker")) == \
        ["worker 0 of 2", "worker 1 of 2"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_two_nodes_meet_through_trainers_static_rendezvous(tmp_path) -> None:
    """Node rank 0 hosts the store at PET_MASTER_ADDR:PET_MASTER_PORT because of its rank (not by
    resolving its own name), node 1 connects: one world of nodes × workers."""
    argv, env = argv_of(tmp_path, nodes=2, nproc=1)
    port = str(_free_port())
    procs = []
    for rank in (1, 0):  # the peer first: it retries until rank 0's store is up
        node_env = {**env, "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": port}
        procs.append(subprocess.Popen(argv, env=node_env, cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=180)
            outputs.append(out)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    workers = sorted(line for out in outputs for line in out.splitlines() if line.startswith("worker"))
    assert workers == ["worker 0 of 2", "worker 1 of 2"], outputs
