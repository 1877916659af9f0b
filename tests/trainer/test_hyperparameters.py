"""Every hyperparameter reaches the object where it acts (the seed swept learning_rate into nothing).

Each case goes from the command line (as a W&B agent writes it) through ``parse_args`` and
``build_components`` — the same function ``training_function`` trains with — to the optimizer,
schedule, data loader, tokenised data or model where the value must show up.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trainer.config import parse_args
from trainer.distributed import DistInfo
from trainer.optim import optimizer_step
from trainer.recipe import plan_rank
from trainer.train import build_components

BASE = ["--model=tiny", "--data=synthetic", "--synthetic_samples=300", "--max_length=32", "--epochs=1"]


def argv_with(*overrides: str) -> list[str]:
    names = {arg.split("=")[0] for arg in overrides}
    return [arg for arg in BASE if arg.split("=")[0] not in names] + list(overrides)


@pytest.fixture
def build(context):
    def make(*overrides: str):
        return build_components(parse_args(argv_with(*overrides)), DistInfo(), context)

    return make


def test_learning_rate_is_the_peak_of_the_schedule(build):
    parts = build("--learning_rate=0.0037", "--warmup_ratio=0")
    assert parts.scheduler.base_lrs == [0.0037, 0.0037]
    assert [group["lr"] for group in parts.optimizer.param_groups] == [0.0037, 0.0037]


def test_weight_decay_applies_to_matrices_only(build):
    decay, no_decay = build("--weight_decay=0.123").optimizer.param_groups
    assert decay["weight_decay"] == 0.123 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])


def test_optimizer_choice_and_momentum(build):
    assert isinstance(build("--optimizer=adamw").optimizer, torch.optim.AdamW)
    sgd = build("--optimizer=sgd", "--momentum=0.7").optimizer
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.7


def test_batch_size_is_the_global_batch_and_sets_the_step_count(build):
    parts = build("--batch_size=7")  # 240 training examples, one process
    first = next(iter(parts.train))
    assert first["input_ids"].shape[0] == 7 and parts.recipe.steps_per_epoch == math.ceil(240 / 7)
    assert parts.recipe.global_batch_size == 7 and parts.plan.micro_batch_sizes == (7,)


def test_batch_size_is_shared_by_the_ranks(build):
    # rank 1 of 3 of a global batch of 10: 3 examples per step, the step count of the whole batch
    recipe = build("--batch_size=10").recipe
    plan = plan_rank(global_batch_size=recipe.global_batch_size, world_size=3, rank=1, micro_batch_size=0)
    assert plan.micro_batch_sizes == (3,) and recipe.steps_per_epoch == 24


def test_eval_batch_size(build):
    assert next(iter(build("--eval_batch_size=9").validation))["labels"].shape[0] == 9


@pytest.mark.parametrize("argv, expected_total", [
    (["--epochs=1", "--batch_size=16"], 15),
    (["--epochs=3", "--batch_size=16"], 45),
    (["--epochs=2", "--batch_size=64"], 2 * math.ceil(240 / 64)),
    (["--epochs=2", "--batch_size=64", "--micro_batch_size=16"], 2 * math.ceil(240 / 64)),  # memory only
], ids=["1-epoch", "3-epochs", "larger-batch", "micro-batches"])
def test_epochs_and_batch_size_set_the_schedule_length(build, argv, expected_total):
    parts = build(*argv)
    assert parts.total_steps == expected_total
    factor = parts.scheduler.lr_lambdas[0]
    assert factor(expected_total) == 0.0 and factor(expected_total - 1) > 0.0


def test_warmup_ratio_shapes_the_schedule(build):
    parts = build("--epochs=2", "--batch_size=16", "--warmup_ratio=0.2")  # 30 steps, 6 of warmup
    factor = parts.scheduler.lr_lambdas[0]
    assert [factor(step) for step in (0, 3, 6)] == [0.0, 0.5, 1.0]
    assert factor(18) == pytest.approx(0.5)


def test_micro_batch_size_splits_a_step_without_changing_it(build):
    parts = build("--batch_size=64", "--micro_batch_size=16")
    assert parts.plan.accumulation == 4 and parts.plan.micro_batch_sizes == (16, 16, 16, 16)
    assert [len(b) for b in list(parts.sampler)[:4]] == [16] * 4
    whole = build("--batch_size=64")
    assert sum(list(parts.sampler)[:4], []) == list(whole.sampler)[0]  # the same 64 examples in step 1


def test_scheduler_steps_per_optimizer_step_not_per_batch(build):
    parts = build("--batch_size=80", "--micro_batch_size=16", "--warmup_ratio=0",
                  "--learning_rate=0.01")  # 240 examples: 3 optimizer steps of 5 micro-batches
    for _ in range(2):
        parts.optimizer.zero_grad()
        optimizer_step(parts.model, parts.optimizer, parts.scheduler, max_grad_norm=1.0)
    assert parts.scheduler.get_last_lr()[0] == pytest.approx(0.01 / 3)


def test_max_length_truncates_and_padding_is_dynamic(build):
    parts = build("--max_length=8")
    lengths = [len(ids) for ids in parts.train.dataset.input_ids]
    assert max(lengths) == 8
    long_parts = build("--max_length=64")
    batch = next(iter(long_parts.train))
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(dim=1).max()) < 64


def test_dropout_reaches_every_dropout_layer(build):
    model = build("--dropout=0.37").model
    rates = {module.p for module in model.modules() if isinstance(module, torch.nn.Dropout)}
    assert rates == {0.37} and model.config.attention_probs_dropout_prob == 0.37


def test_seed_sets_the_initial_weights_and_the_data_order(build):
    a, b, c = build("--seed=1"), build("--seed=1"), build("--seed=2")
    weights = [dict(p.model.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"] for p in (a, b, c)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    first = [next(iter(p.train))["index"].tolist() for p in (a, b, c)]
    assert first[0] == first[1] != first[2]


def test_data_seed_and_size_choose_the_synthetic_set(build):
    a, b = build("--data_seed=1", "--synthetic_samples=500"), build("--data_seed=2", "--synthetic_samples=500")
    assert len(a.splits.train.texts) == 400 and a.splits.train.texts != b.splits.train.texts


def test_max_grad_norm_clips_the_update(context):
    # GIVEN plain SGD with lr 1, so the update equals the (clipped) gradient
    config = parse_args(argv_with("--optimizer=sgd", "--momentum=0", "--weight_decay=0", "--warmup_ratio=0",
                                  "--learning_rate=1", "--max_grad_norm=0.05"))
    parts = build_components(config, DistInfo(), context)
    before = [p.detach().clone() for p in parts.model.parameters()]
    batch = next(iter(parts.train))
    loss = parts.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss
    (loss * 100).backward()
    # WHEN stepped as the training loop does
    norm = optimizer_step(parts.model, parts.optimizer, parts.scheduler, config.max_grad_norm)
    # THEN the raw gradient was larger than the limit and the update is exactly the limit
    update = torch.sqrt(sum(((p.detach() - q) ** 2).sum() for p, q in zip(parts.model.parameters(), before, strict=True)))
    assert float(norm) > 0.05 and float(update) == pytest.approx(0.05, rel=1e-3)


@pytest.mark.parametrize("precision, dtype, scaled", [
    ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True), ("fp32", torch.float32, False),
    ("auto", torch.float32, False),  # on CPU; the GPU choices: test_accel.py
])
def test_precision_sets_autocast_and_loss_scaling(build, precision, dtype, scaled):
    parts = build(f"--precision={precision}")
    batch = next(iter(parts.validation))
    with parts.precision.autocast():
        logits = parts.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.dtype == dtype
    assert (parts.scaler is not None) is scaled


def test_eval_every_sets_the_evaluation_positions(build):
    assert build("--epochs=2", "--batch_size=16").recipe.eval_steps() == (15, 30)
    assert build("--epochs=2", "--batch_size=16", "--eval_every=8").recipe.eval_steps() == (8, 16, 24, 30)


def test_every_hyperparameter_is_covered_here():
    """A new hyperparameter must get a case above (or be declared operational in config.py)."""
    covered = {"model", "data", "learning_rate", "weight_decay", "batch_size", "epochs", "warmup_ratio", "optimizer",
               "momentum", "max_grad_norm", "max_length", "dropout", "seed", "data_seed", "synthetic_samples",
               "precision", "eval_every"}
    hyperparameters = set(parse_args([]).hyperparameters())
    assert hyperparameters == covered, f"untested hyperparameters: {sorted(hyperparameters - covered)}"
    # operational fields with a case here too: eval_batch_size, micro_batch_size (above), compile (test_accel.py)
    assert {"eval_batch_size", "micro_batch_size", "compile"} <= {f.name for f in dataclasses.fields(parse_args([]))}
