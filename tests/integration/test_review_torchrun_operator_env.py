"""Review (rev13) of issue 13: the elastic PyTorchJob on the oldest Training Operator sweepq says it
supports (v1.7, README "Job kinds", DEPLOY.md), run with real torchrun on CPU: the container argv
exactly as rendered, the env the v1.7.0 operator injects into a Worker-only elastic job
(pkg/controller.v1/pytorch/envvar.go + elastic.go at tag v1.7.0)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.backends.pytorchjob import build_pytorchjob
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

SWEEP = "rev-sweep-abcdefgh"
WORKER = """
import os
os.write(1, ("worker %s of %s\\n" % (os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"])).encode())
"""  # one write(2) per line: with PYTHONUNBUFFERED print's pieces interleave between the workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="needs torchrun")
def test_review_training_operator_v1_7_runs_one_worker_per_node_instead_of_nproc_per_node(tmp_path) -> None:
    """Attack: a trial with ``nproc_per_node: 4`` as an elastic PyTorchJob on Training Operator v1.7.0.

    v1.7.0 sets ``PET_NPROC_PER_NODE`` from ``spec.nprocPerNode`` only inside ``if Master != nil``
    (envvar.go), and from ``elasticPolicy.nProcPerNode`` otherwise (elastic.go). sweepq's elastic jobs
    have Worker replicas only and (since this change) use ``spec.nprocPerNode``, never
    ``elasticPolicy.nProcPerNode``.

    Expected (v1.7 is listed as supported): 4 workers per node.
    Actual: no ``PET_NPROC_PER_NODE`` reaches the container, torchrun defaults to 1 process — the node's
    other GPUs sit idle while the trial holds (and is counted for) all of them.
    """
    script = tmp_path / "train.py"
    script.write_text(WORKER)
    launch = LaunchSettings(kind="pytorchjob", image="trainer:1", gpus_per_node=0, nproc_per_node=4, nodes="1:1")
    request = LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                            namespace="sweepq", params={}, command=TrialCommand(argv=(str(script),)),
                            launch=launch, env={"SWEEP_ID": SWEEP})
    manifest = build_pytorchjob(request)
    spec = manifest["spec"]
    assert "Master" not in spec["pytorchReplicaSpecs"] and "nProcPerNode" not in spec["elasticPolicy"]
    [container] = spec["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    argv = [*container["command"], *container.get("args", [])]
    argv[0] = str(Path(sys.executable).parent / argv[0])
    policy = spec["elasticPolicy"]
    # what v1.7.0 appends for a Worker-only elastic PyTorchJob (no Master → no PET_NPROC_PER_NODE)
    operator_env = {"PYTHONUNBUFFERED": "1", "PET_RDZV_ENDPOINT": f"127.0.0.1:{_free_port()}",
                    "PET_RDZV_BACKEND": policy["rdzvBackend"],
                    "PET_NNODES": f"{policy['minReplicas']}:{policy['maxReplicas']}",
                    "PET_MAX_RESTARTS": str(policy["maxRestarts"])}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PET_")}
    done = subprocess.run(argv, env={**env, **operator_env}, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = [line for line in done.stdout.splitlines() if line.startswith("worker ")]
    assert len(workers) == 4, workers
