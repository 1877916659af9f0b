"""Optimizer, learning-rate schedule and the optimizer step, built from the swept hyperparameters.

Every number here comes from ``TrainConfig``: nothing is hard-coded between the sweep and the
optimizer (the seed project swept ``learning_rate`` and never passed it on).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import TrainConfig


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and LayerNorm weights (1-D tensors) get no weight decay."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.learning_rate)
    return torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)


def warmup_steps(config: TrainConfig, total_steps: int) -> int:
    return math.ceil(total_steps * config.warmup_ratio)


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step ``step``: 0 → 1 over ``warmup``, then → 0 at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> LambdaLR:
    """Linear warmup then linear decay, stepped once per optimizer step (not per micro-batch)."""
    return LambdaLR(optimizer, linear_warmup_decay(warmup_steps(config, total_steps), total_steps))


def steps_per_epoch(batches_per_epoch: int, accumulation: int) -> int:
    """Optimizer steps in an epoch: a short last accumulation window still makes a step."""
    return math.ceil(batches_per_epoch / accumulation)


def accumulation_window(batch_in_epoch: int, batches_per_epoch: int, accumulation: int) -> tuple[int, bool]:
    """(micro-batches in the window containing this batch, whether this batch ends the window)."""
    start = (batch_in_epoch // accumulation) * accumulation
    size = min(accumulation, batches_per_epoch - start)
    return size, batch_in_epoch + 1 == start + size


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                   max_grad_norm: float) -> torch.Tensor | None:
    """Clip (if ``max_grad_norm`` > 0), step the optimizer and the schedule, clear the gradients.

    Returns the gradient norm before clipping (a tensor; reading it synchronises), or None.
    """
    norm = None
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm
