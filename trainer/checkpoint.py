"""Checkpoints of one trial: written atomically by global rank 0, loaded by every rank on (re)start.

The file lives in the trial's own run directory (``<output_root>/<trial_id>/checkpoints/``) and
records the trial id and the hyperparameters it was trained with; loading refuses a checkpoint of
another trial or of other hyperparameters, so a restart can never continue someone else's run.

Contents: model, optimizer, scheduler (and fp16 loss-scaler) state, the ``Recipe`` fixed at the
trial's first start (global batch, steps, warmup: see ``recipe.py``), the progress counters of
``Progress`` (epoch, optimizer steps taken in it and in all, best metric, the evaluation history)
and, per rank, the RNG states and running loss sums, gathered to rank 0 before writing. Each file
gets a random ``checkpoint_id`` so ranks can tell whether they loaded the same one (``resume.py``).

Temporary files are named ``.checkpoint.pt.<host>.<pid>.tmp``; one left behind by a kill (1.3 GB
for bert-base with AdamW state) is removed by the next writer once it is ``STALE_TMP_S`` old (a
younger one may be another process's write in progress: an attempt still in its grace period).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 2  # 2: world-size-invariant recipe, progress counted in optimizer steps
STALE_TMP_S = 600.0


@dataclass
class Progress:
    """Where training stands. Mutable: the training loop advances it; checkpoints snapshot it.

    Everything is counted in optimizer steps (global batches), never in per-rank batches, so the
    same progress means the same point of the recipe at every world size.
    """

    epoch: int = 0  # epoch being trained (== epochs once training is complete)
    step_in_epoch: int = 0  # optimizer steps taken in ``epoch``
    global_step: int = 0  # optimizer steps in all
    train_samples: int = 0  # examples trained on (all ranks), for throughput
    train_seconds: float = 0.0  # time spent in training steps, for throughput
    best_metric: float | None = None
    best_position: int | None = None  # history position of the best metric
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per evaluation position
    wandb_run_id: str | None = None


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch and (if present) this device's CUDA RNG states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's stubs give get_state() (legacy=True) the dict overload; it returns the legacy tuple of MT19937
        "numpy": _numpy_state_to_plain(np.random.get_state()),  # type: ignore[arg-type]
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


def save_checkpoint(path: Path, *, trial_id: str, hyperparameters: dict[str, Any], recipe: dict[str, Any],
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress,
                    rank_states: list[dict[str, Any]], scaler: Any = None, precision: str = "fp32",
                    now: float | None = None) -> str:
    """Write atomically: a temporary file in the same directory, fsync, then rename over the old one.

    Returns the new file's ``checkpoint_id``. Stale temporary files of killed writers are removed after.
    """
    checkpoint_id = uuid.uuid4().hex
    payload = {
        "format": FORMAT_VERSION,
        "checkpoint_id": checkpoint_id,
        "trial_id": trial_id,
        "hyperparameters": hyperparameters,
        "recipe": recipe,
        "precision": precision,
        "world_size": len(rank_states),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "progress": dataclasses.asdict(progress),
        "rank_states": rank_states,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(_tmp_name(path))
    with tmp.open("wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    logger.info("checkpoint written: epoch %d, step %d of the epoch, step %d -> %s",
                progress.epoch, progress.step_in_epoch, progress.global_step, path)
    remove_stale_temporaries(path, now=now)
    return checkpoint_id


def _tmp_name(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp"


def remove_stale_temporaries(path: Path, *, now: float | None = None, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Delete ``.checkpoint.pt.*.tmp`` files next to ``path`` not modified for ``max_age_s``; returns them."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime < max_age_s:
                continue
            tmp.unlink()
        except FileNotFoundError:  # another writer renamed or removed it meanwhile: nothing left to clean
            continue
        removed.append(tmp)
        logger.warning("removed a temporary checkpoint left by a killed writer: %s", tmp)
    return removed


def load_checkpoint(path: Path, *, trial_id: str, hyperparameters: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one, after checking it belongs to this trial."""
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"{path}: checkpoint format {found!r} is not {FORMAT_VERSION}: "
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
