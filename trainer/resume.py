"""Resume: every rank continues from the same checkpoint, at the same or another world size.

Every rank reads the trial's checkpoint from its own view of the output directory. Views can
differ — nodes without a shared volume, or an elastic restart that made another node rank 0 —
so before anything is restored the ranks compare what they found (its ``checkpoint_id`` and
step): when they disagree, the newest checkpoint any rank holds is broadcast from that rank to
all, and a warning says the output directory is not shared. A checkpoint of another trial or of
other hyperparameters on any rank stops every rank with that rank's error, instead of one rank
failing while the others wait in a collective. After restoring, the ranks check that they stand
at the same position (epoch, step in epoch, optimizer step) — a mismatch is an error, never a
silently diverged run.

RNG: at the same world size each rank gets back exactly its own streams (a resume is
bit-identical to an uninterrupted run); at another world size the saved streams belong to other
ranks, so each rank seeds its streams from (seed, rank, optimizer step) — reproducible, distinct
per rank. The training-loss sums since the last evaluation are summed onto rank 0 then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer import checkpoint as ckpt
from trainer.config import ConfigError
from trainer.distributed import DistInfo, all_gather_object, broadcast_object
from trainer.optim import seed_rank_streams

logger = logging.getLogger(__name__)


class ResumeMismatchError(RuntimeError):
    """The ranks restored different positions: continuing would train diverged replicas."""


@dataclass(frozen=True)
class Found:
    """What one rank found at the checkpoint path."""

    checkpoint_id: str | None
    global_step: int
    error: str | None = None


def load_agreed(path: Path, *, trial_id: str, hyperparameters: dict[str, Any], dist: DistInfo,
                enabled: bool) -> dict[str, Any] | None:
    """The checkpoint every rank resumes from (the same payload on all ranks), or None to start fresh."""
    payload, found = None, Found(None, -1)
    if enabled:
        try:
            payload = ckpt.load_checkpoint(path, trial_id=trial_id, hyperparameters=hyperparameters)
        except ConfigError as error:
            found = Found(None, -1, error=str(error))
        else:
            if payload is not None:
                found = Found(payload["checkpoint_id"], int(payload["progress"]["global_step"]))
    views = all_gather_object(found, dist)
    errors = [(rank, view.error) for rank, view in enumerate(views) if view.error]
    if errors:
        rank, message = errors[0]
        raise ConfigError(message if rank == dist.rank else f"rank {rank}: {message}")
    if len({view.checkpoint_id for view in views}) == 1:
        return payload
    source = max(range(len(views)), key=lambda rank: (views[rank].global_step, -rank))
    described = ", ".join(f"rank {rank}: " + (f"step {view.global_step}" if view.checkpoint_id else "none")
                          for rank, view in enumerate(views))
    logger.warning("ranks found different checkpoints at %s (%s): all resume from rank %d's; give every node the "
                   "same output volume (a ReadWriteMany PVC) so this transfer is not needed", path, described, source)
    return broadcast_object(payload, dist, src=source)


def restore(payload: dict[str, Any], *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            scaler: Any, seed: int, dist: DistInfo) -> tuple[ckpt.Progress, torch.Tensor]:
    """Weights, optimizer, schedule, loss scale and progress; then this rank's RNG streams and loss sums."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    progress = ckpt.progress_from(payload)
    rank_states = payload["rank_states"]
    if len(rank_states) == dist.world_size:
        own = rank_states[dist.rank]
        ckpt.restore_rng_state(own["rng"])
        loss_sums = torch.tensor(own["loss_sums"], dtype=torch.float64)
    else:
        logger.info("checkpoint written by %d ranks, resumed by %d: same recipe and data order; each rank's RNG "
                    "streams are seeded from (seed, rank, step %d)", len(rank_states), dist.world_size,
                    progress.global_step)
        seed_rank_streams(seed, dist.rank, progress.global_step)
        total = torch.tensor([state["loss_sums"] for state in rank_states], dtype=torch.float64).sum(dim=0)
        loss_sums = total if dist.is_main else torch.zeros(2, dtype=torch.float64)
    check_same_position(progress, dist)
    return progress, loss_sums


def check_same_position(progress: ckpt.Progress, dist: DistInfo) -> None:
    """Every rank must stand at the same (epoch, step in epoch, optimizer step)."""
    positions = all_gather_object((progress.epoch, progress.step_in_epoch, progress.global_step), dist)
    if len(set(positions)) > 1:
        described = ", ".join(f"rank {rank}: epoch {e} step {s} (global {g})" for rank, (e, s, g) in enumerate(positions))
        raise ResumeMismatchError(f"ranks resumed at different positions ({described}): refusing to train diverged "
                                  "replicas; check that every node reads the same checkpoint")
