"""Checkpoints of one trial: written atomically by global rank 0, loaded by every rank on (re)start.

The file lives in the trial's own run directory (``<output_root>/<trial_id>/checkpoints/``) and
records the trial id and the hyperparameters it was trained with; loading refuses a checkpoint of
another trial or of other hyperparameters, so a restart can never continue someone else's run.

Contents: model, optimizer and scheduler state, the progress counters of ``Progress`` (epoch,
batches and samples consumed in it, optimizer steps, best metric, history) and, per rank, the RNG
states and running loss sums, gathered to rank 0 before writing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


@dataclass
class Progress:
    """Where training stands. Mutable: the training loop advances it; checkpoints snapshot it."""

    epoch: int = 0  # epoch being trained (== epochs once training is complete)
    batches_in_epoch: int = 0  # batches every rank has consumed in ``epoch``
    samples_in_epoch: int = 0  # positions of the epoch's global order consumed (all ranks)
    global_step: int = 0  # optimizer steps
    train_samples: int = 0  # samples trained on (all ranks), for throughput
    train_seconds: float = 0.0  # time spent in training steps, for throughput
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    wandb_run_id: str | None = None


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch and (if present) this device's CUDA RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / CHECKPOINT_FILE


def save_checkpoint(path: Path, *, trial_id: str, hyperparameters: dict[str, Any], model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress,
                    rank_states: list[dict[str, Any]]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename over the old one."""
    payload = {
        "format": FORMAT_VERSION,
        "trial_id": trial_id,
        "hyperparameters": hyperparameters,
        "world_size": len(rank_states),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": dataclasses.asdict(progress),
        "rank_states": rank_states,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    logger.info("checkpoint written: epoch %d, batch %d, step %d -> %s",
                progress.epoch, progress.batches_in_epoch, progress.global_step, path)


def load_checkpoint(path: Path, *, trial_id: str, hyperparameters: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, after checking it belongs to this trial."""
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT_VERSION:
        raise ConfigError(f"{path}: checkpoint format {payload.get('format')!r} is not {FORMAT_VERSION}: "
                          "it was written by another trainer version; pass --resume=False to start over")
    if payload["trial_id"] != trial_id:
        raise ConfigError(f"{path} belongs to trial {payload['trial_id']!r}, not {trial_id!r}: "
                          "it is not loaded; use this trial's own output directory")
    changed = {key: (payload["hyperparameters"].get(key), value) for key, value in hyperparameters.items()
               if payload["hyperparameters"].get(key) != value}
    if changed:
        described = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in sorted(changed.items()))
        raise ConfigError(f"{path} was trained with other hyperparameters ({described}): pass --resume=False "
                          "to start this run over, or use another --output_dir")
    return payload


def progress_from(payload: dict[str, Any]) -> Progress:
    return Progress(**payload["progress"])


def _numpy_state_to_plain(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return kind, keys.tolist(), int(pos), int(has_gauss), float(cached)


def _to_tuple(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; serialisation may have turned them into lists."""
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
