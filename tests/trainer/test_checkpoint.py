"""Checkpoints: atomic writes, RNG round trips, and refusing anything that is not this trial's."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from trainer import checkpoint as ckpt
from trainer.config import ConfigError


def _save(path, *, trial_id="s-1", hyper=None, progress=None):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    ckpt.save_checkpoint(path, trial_id=trial_id, hyperparameters=hyper or {"learning_rate": 0.1}, model=model,
                         optimizer=optimizer, scheduler=scheduler, progress=progress or ckpt.Progress(global_step=1),
                         rank_states=[{"rng": ckpt.capture_rng_state(), "loss_sums": [1.0, 2.0]}])
    return model


def test_round_trip_of_model_optimizer_progress_and_rng(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    progress = ckpt.Progress(epoch=1, batches_in_epoch=4, samples_in_epoch=128, global_step=19, best_metric=0.5,
                             best_epoch=1, history=[{"epoch": 1, "eval/accuracy": 0.5}], wandb_run_id="s-1")
    model = _save(path, progress=progress)
    payload = ckpt.load_checkpoint(path, trial_id="s-1", hyperparameters={"learning_rate": 0.1})
    assert ckpt.progress_from(payload) == progress
    assert torch.equal(payload["model"]["weight"], model.weight.detach())
    assert payload["optimizer"]["state"][0]["step"] == 1 and payload["scheduler"]["last_epoch"] == 1
    assert payload["world_size"] == 1


def test_rng_state_restores_every_generator():
    state = ckpt.capture_rng_state()
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    ckpt.restore_rng_state(state)
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    _save(path)
    _save(path, progress=ckpt.Progress(global_step=2))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]
    assert ckpt.progress_from(ckpt.load_checkpoint(path, trial_id="s-1", hyperparameters={})).global_step == 2


def test_missing_checkpoint_is_none(tmp_path):
    assert ckpt.load_checkpoint(tmp_path / "none.pt", trial_id="s-1", hyperparameters={}) is None


def test_another_trials_checkpoint_is_refused(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    _save(path, trial_id="sweep-a-1")
    with pytest.raises(ConfigError, match="belongs to trial 'sweep-a-1', not 'sweep-a-2'"):
        ckpt.load_checkpoint(path, trial_id="sweep-a-2", hyperparameters={"learning_rate": 0.1})


def test_other_hyperparameters_are_refused_with_the_difference(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    _save(path, hyper={"learning_rate": 0.1, "seed": 1})
    with pytest.raises(ConfigError) as error:
        ckpt.load_checkpoint(path, trial_id="s-1", hyperparameters={"learning_rate": 0.2, "seed": 1})
    assert "learning_rate: 0.1 -> 0.2" in str(error.value) and "--resume=False" in str(error.value)
