"""Fixtures for the trainer tests: tiny configs, trial contexts and a real torchrun launcher."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from trainer_support import REPO, torchrun_command

from trainer.config import TrainConfig
from trainer.context import TrialContext

# Variables of the dispatcher contract and of wandb that must not leak from the developer's shell.
_CONTRACT_PREFIXES = ("SWEEP_ID", "TRIAL_", "SWEEPQ_", "WANDB_", "TORCHELASTIC_", "TORCH_ELASTIC_", "POD_NAME",
                      "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """On shared, busy cores OpenMP threads spin against each other; one thread is faster and steadier."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(**overrides: Any) -> TrainConfig:
    defaults = dict(model="tiny", data="synthetic", synthetic_samples=300, epochs=1, learning_rate=2e-3,
                    batch_size=16, eval_batch_size=32, max_length=32, checkpoint_every=0, log_every=5)
    return TrainConfig(**{**defaults, **overrides})


@pytest.fixture(scope="session")
def tiny():
    """Factory: a tiny model on a small synthetic set (a training run takes a second or two on CPU)."""
    return _tiny


@pytest.fixture
def context(tmp_path: Path) -> TrialContext:
    """A standalone trial writing under a temporary output root."""
    return TrialContext.from_env({}, output_dir=str(tmp_path / "outputs"))


@pytest.fixture
def trial_context(tmp_path: Path):
    """Factory: a dispatcher-launched trial (sweep id, index, attempt) under a temporary output root."""

    def make(sweep_id: str = "bert-lr-1a2b3c4d", index: int = 3, attempt: int = 1, **env: str) -> TrialContext:
        environ = {"SWEEP_ID": sweep_id, "TRIAL_INDEX": str(index), "TRIAL_ID": f"{sweep_id}-{index}",
                   "SWEEPQ_ATTEMPT": str(attempt), "SWEEPQ_OUTPUT_DIR": str(tmp_path / "outputs"), **env}
        return TrialContext.from_env(environ)

    return make


@pytest.fixture(scope="session")
def child_env():
    """Factory: the environment for a trainer subprocess (contract variables removed, ``extra`` added)."""
    return _child_env


def _child_env(**extra: str) -> dict[str, str]:
    """The test process's environment without contract variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CONTRACT_PREFIXES)}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "WANDB_SILENT": "true"})
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def torchrun():
    """Runner: ``torchrun(config, env=..., nproc=2, max_restarts=0)`` → CompletedProcess (raises on failure)."""
    return _torchrun


def _torchrun(config: TrainConfig, *, env: dict[str, str], nproc: int = 2, max_restarts: int = 0,
              timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``torchrun_command`` to the end; with ``check`` a failure raises with the output's tail."""
    command = torchrun_command(config, nproc=nproc, max_restarts=max_restarts)
    completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and completed.returncode != 0:
        raise AssertionError(f"torchrun failed ({completed.returncode}):\n{completed.stdout[-4000:]}\n"
                             f"{completed.stderr[-8000:]}")
    return completed

