"""The training recipe, fixed at a trial's first start, and how one rank takes its share of it. Pure.

A sweep's hyperparameters say what is trained; the world size only says how many processes share
the work. So the recipe is defined without the world size:

- ``batch_size`` is the **global** batch: the examples of one optimizer step, all ranks together.
- An epoch is the seeded permutation of the ``N`` training examples, padded (by repeating its head,
  as ``DistributedSampler`` pads to a whole number of ranks) to ``steps_per_epoch = ceil(N / G)``
  whole global batches; global batch *k* is positions ``[k·G, (k+1)·G)`` of that order.
- ``total_steps = epochs · steps_per_epoch`` and ``warmup_steps = ceil(total · warmup_ratio)``;
  the learning rate is a function of the optimizer step alone.

These numbers are computed once, at the trial's first start, and stored in its checkpoint; every
resume uses the stored recipe, at whatever world size it runs.

How one of ``W`` ranks takes its share (``RankPlan``): rank *r* gets positions ``k·G + r + j·W``
of global batch *k* (``ceil(G/W)`` or ``floor(G/W)`` examples; when ``W`` divides ``G`` this is
exactly ``DistributedSampler``'s ``r::W``), split into ``A`` micro-batches of at most
``micro_batch_size``, with ``A`` the same on every rank (DDP all-reduces once per step). A
micro-batch of ``m`` examples back-propagates ``mean loss · m · W / G``; DDP's average over ranks
then gives exactly the mean gradient over the ``G`` examples — at any world size, even when ``W``
does not divide ``G``. Refused, with the fix in the message: more ranks than examples in a global
batch, and a ``micro_batch_size`` so small that some rank's share cannot fill ``A`` micro-batches.

Evaluation positions (the metric history, CONTRACTS C1): with ``eval_every = 0`` position *p* is
the end of epoch *p+1* (step ``(p+1)·steps_per_epoch``); with ``eval_every = n`` position *p* is
step ``(p+1)·n``, plus one last position at ``total_steps`` when ``n`` does not divide it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from trainer.config import ConfigError

# The metrics item holds the whole history (CONTRACTS C1) and DynamoDB items stop at 400 KB: a
# position with the usual six values takes ~130 bytes, so this many positions stay well inside.
MAX_HISTORY_POSITIONS = 1000


@dataclass(frozen=True)
class Recipe:
    """What one optimizer step is and how many there are: independent of the world size."""

    global_batch_size: int
    train_examples: int
    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    eval_every: int

    @classmethod
    def build(cls, *, global_batch_size: int, train_examples: int, epochs: int, warmup_ratio: float,
              eval_every: int) -> Recipe:
        if train_examples < 1:
            raise ConfigError("the training set is empty: nothing to train on")
        steps_per_epoch = math.ceil(train_examples / global_batch_size)
        total = epochs * steps_per_epoch
        recipe = cls(global_batch_size=global_batch_size, train_examples=train_examples, epochs=epochs,
                     steps_per_epoch=steps_per_epoch, total_steps=total,
                     warmup_steps=math.ceil(total * warmup_ratio), eval_every=eval_every)
        positions = len(recipe.eval_steps())
        if positions > MAX_HISTORY_POSITIONS:
            raise ConfigError(
                f"--eval_every={eval_every} gives {positions} evaluations over {total} optimizer steps; the metric "
                f"history holds at most {MAX_HISTORY_POSITIONS}: use --eval_every={math.ceil(total / MAX_HISTORY_POSITIONS)}"
                " or more")
        return recipe

    def eval_steps(self) -> tuple[int, ...]:
        """The optimizer steps after which an evaluation (one history position) happens, in order."""
        if self.eval_every == 0:
            return tuple(self.steps_per_epoch * (epoch + 1) for epoch in range(self.epochs))
        steps = list(range(self.eval_every, self.total_steps + 1, self.eval_every))
        if not steps or steps[-1] != self.total_steps:
            steps.append(self.total_steps)
        return tuple(steps)

    def position_of(self, global_step: int) -> int | None:
        """The history position evaluated after ``global_step``, or None if no evaluation happens there."""
        if self.eval_every == 0:
            epoch, rest = divmod(global_step, self.steps_per_epoch)
            return epoch - 1 if rest == 0 and 1 <= epoch <= self.epochs else None
        if global_step == self.total_steps:
            return -(-self.total_steps // self.eval_every) - 1
        position, rest = divmod(global_step, self.eval_every)
        return position - 1 if rest == 0 and position >= 1 else None

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        return cls(**{key: int(data[key]) for key in cls.__dataclass_fields__})

    def check_resumable(self, current: Recipe, *, source: str) -> None:
        """A stored recipe continues only on the same data: its size fixes the order and the step count."""
        if current.train_examples != self.train_examples:
            raise ConfigError(
                f"{source} was trained on {self.train_examples} training examples, the data now has "
                f"{current.train_examples}: the data changed under the trial; restore it, or pass --resume=False "
                "to start this trial over")


@dataclass(frozen=True)
class RankPlan:
    """One rank's share of every global batch: how many examples, in how many micro-batches."""

    global_batch_size: int
    world_size: int
    rank: int
    accumulation: int  # micro-batches per optimizer step, the same on every rank
    micro_batch_sizes: tuple[int, ...]  # this rank's, summing to its share

    @property
    def share(self) -> int:
        return sum(self.micro_batch_sizes)

    def loss_weight(self, micro_batch_examples: int) -> float:
        """Factor of a micro-batch's mean loss so that DDP's average over ranks is the global-batch mean."""
        return micro_batch_examples * self.world_size / self.global_batch_size


def plan_rank(*, global_batch_size: int, world_size: int, rank: int, micro_batch_size: int) -> RankPlan:
    """Split the global batch over ``world_size`` ranks and into micro-batches (see the module docstring)."""
    g, w = global_batch_size, world_size
    if w > g:
        raise ConfigError(
            f"--batch_size={g} is the global batch (all ranks, one optimizer step) and cannot feed {w} ranks: each "
            f"rank needs at least one example per step; use --batch_size={w} or more (a multiple of {w} gives "
            "every rank the same share), or run on fewer ranks")
    largest = math.ceil(g / w)
    accumulation = math.ceil(largest / micro_batch_size) if micro_batch_size else 1
    smallest = g // w
    if smallest < accumulation:
        raise ConfigError(
            f"--micro_batch_size={micro_batch_size}: with --batch_size={g} on {w} ranks the ranks get {largest} or "
            f"{smallest} examples per step, which cannot all be cut into the same {accumulation} micro-batches; "
            f"use a --batch_size divisible by {w} or --micro_batch_size={largest}")
    share = math.ceil((g - rank) / w)
    base, extra = divmod(share, accumulation)
    sizes = tuple(base + (1 if i < extra else 0) for i in range(accumulation))
    return RankPlan(global_batch_size=g, world_size=w, rank=rank, accumulation=accumulation, micro_batch_sizes=sizes)
