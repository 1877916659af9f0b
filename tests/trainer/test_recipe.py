"""The world-size-invariant recipe: steps, warmup, evaluation positions, each rank's share. Pure."""

from __future__ import annotations

import pytest
import torch

from trainer.config import ConfigError
from trainer.recipe import MAX_HISTORY_POSITIONS, Recipe, plan_rank


def recipe(**overrides) -> Recipe:
    args = dict(global_batch_size=32, train_examples=480, epochs=2, warmup_ratio=0.1, eval_every=0)
    return Recipe.build(**{**args, **overrides})


def test_steps_and_warmup_come_from_the_global_batch_alone():
    r = recipe()
    assert (r.steps_per_epoch, r.total_steps, r.warmup_steps) == (15, 30, 3)
    assert recipe(train_examples=481).steps_per_epoch == 16  # a partial last batch is padded to a whole one
    assert recipe(global_batch_size=1000).steps_per_epoch == 1


@pytest.mark.parametrize("eval_every, steps", [
    (0, (15, 30)),  # epoch ends
    (10, (10, 20, 30)),  # divides the total
    (7, (7, 14, 21, 28, 30)),  # plus the last step
    (100, (30,)),  # longer than the run: the end only
])
def test_evaluation_positions(eval_every, steps):
    r = recipe(eval_every=eval_every)
    assert r.eval_steps() == steps
    assert [r.position_of(step) for step in range(1, 31) if r.position_of(step) is not None] == list(range(len(steps)))
    assert [step for step in range(1, 31) if r.position_of(step) is not None] == list(steps)


def test_history_length_is_bounded_with_the_fix_in_the_message():
    with pytest.raises(ConfigError, match=r"--eval_every=1 gives 3000 evaluations .* use --eval_every=3 or more"):
        recipe(train_examples=48_000, epochs=2, eval_every=1)
    assert len(recipe(train_examples=MAX_HISTORY_POSITIONS * 32, epochs=1, eval_every=1).eval_steps()) == \
        MAX_HISTORY_POSITIONS


def test_round_trip_and_resume_check():
    r = recipe()
    assert Recipe.from_dict(r.to_dict()) == r
    r.check_resumable(recipe(), source="ckpt")
    with pytest.raises(ConfigError, match="trained on 480 training examples, the data now has 500"):
        r.check_resumable(recipe(train_examples=500), source="ckpt")


@pytest.mark.parametrize("g, w, micro, shares, accumulation", [
    (32, 2, 0, [16, 16], 1),
    (32, 2, 5, [16, 16], 4),  # 16 in 4 micro-batches of 4
    (10, 4, 0, [3, 3, 2, 2], 1),  # uneven shares
    (10, 4, 2, [3, 3, 2, 2], 2),
    (8, 8, 0, [1] * 8, 1),
])
def test_rank_shares_sum_to_the_global_batch_with_one_accumulation_for_all(g, w, micro, shares, accumulation):
    plans = [plan_rank(global_batch_size=g, world_size=w, rank=r, micro_batch_size=micro) for r in range(w)]
    assert [p.share for p in plans] == shares and sum(shares) == g
    assert {p.accumulation for p in plans} == {accumulation}
    assert all(max(p.micro_batch_sizes) <= (micro or g) and min(p.micro_batch_sizes) >= 1 for p in plans)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(global_batch_size=8, world_size=16, micro_batch_size=0), "--batch_size=8 is the global batch"),
    (dict(global_batch_size=9, world_size=4, micro_batch_size=1), "--micro_batch_size=1: with --batch_size=9 on 4"),
])
def test_shares_that_cannot_work_are_refused_with_the_fix(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        plan_rank(rank=0, **kwargs)


@pytest.mark.parametrize("world, micro", [(1, 0), (2, 0), (3, 0), (3, 2), (5, 1)])
def test_weighted_micro_batch_losses_averaged_over_ranks_give_the_global_mean_gradient(world, micro):
    # GIVEN a linear model and one global batch of 10 examples
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(0, 3, (10,))
    reference = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), model.weight)[0]
    # WHEN every rank back-propagates its micro-batches' mean losses times loss_weight and DDP averages
    gradients = []
    for rank in range(world):
        plan = plan_rank(global_batch_size=10, world_size=world, rank=rank, micro_batch_size=micro)
        positions = list(range(rank, 10, world))
        total, start = torch.zeros_like(model.weight), 0
        for size in plan.micro_batch_sizes:
            part = positions[start:start + size]
            start += size
            loss = torch.nn.functional.cross_entropy(model(x[part]), y[part]) * plan.loss_weight(size)
            total += torch.autograd.grad(loss, model.weight)[0]
        gradients.append(total)
    # THEN the average over ranks is the global batch's mean gradient
    assert torch.allclose(sum(gradients) / world, reference, atol=1e-12)
