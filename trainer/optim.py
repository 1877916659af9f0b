"""Optimizer, learning-rate schedule and the optimizer step, built from the swept hyperparameters.

Every number here comes from ``TrainConfig``: nothing is hard-coded between the sweep and the
optimizer (the seed project swept ``learning_rate`` and never passed it on).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import TrainConfig
from trainer.recipe import Recipe


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int, global_step: int = 0) -> int:
    """A seed for rank ``rank``'s random streams (dropout) from optimizer step ``global_step`` on.

    Distinct per rank (identical dropout masks on every rank would make the ranks' examples share
    one mask pattern) and a pure function of (seed, rank, step), so a resume at another world size
    — where no saved stream belongs to the new ranks — is still reproducible.
    """
    return int(np.random.SeedSequence([seed % 2**63, rank, global_step]).generate_state(1, dtype=np.uint64)[0]
               % 2**63)


def seed_rank_streams(seed: int, rank: int, global_step: int = 0) -> None:
    """Seed Python, numpy and torch with ``rank_seed``; call after the (identically seeded) model init."""
    set_seed(rank_seed(seed, rank, global_step))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and LayerNorm weights (1-D tensors) get no weight decay."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: TrainConfig, model: torch.nn.Module, **options: Any) -> torch.optim.Optimizer:
    """AdamW or SGD over ``parameter_groups``; ``options`` (e.g. ``fused=True`` on CUDA) go to the constructor."""
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.learning_rate, **options)
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum, **options)


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``step``: 0 → 1 over ``warmup``, then → 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe) -> LambdaLR:
    """Linear warmup then linear decay over the recipe's steps, stepped once per optimizer step."""
    return LambdaLR(optimizer, linear_warmup_decay(recipe.warmup_steps, recipe.total_steps))


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                   max_grad_norm: float, scaler: torch.amp.GradScaler | None = None) -> torch.Tensor | None:
    """Clip (if ``max_grad_norm`` > 0), step the optimizer and the schedule, clear the gradients.

    With a ``GradScaler`` (fp16) the gradients are unscaled before clipping and a step with inf/NaN
    gradients is skipped by the scaler; the schedule still advances, so the learning rate stays a
    function of the optimizer step alone. Returns the gradient norm before clipping (a tensor:
    reading it synchronises), or None.
    """
    norm = None
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
