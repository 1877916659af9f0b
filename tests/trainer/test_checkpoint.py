"""Checkpoints: atomic writes, RNG round trips, and refusing anything that is not this trial's."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from trainer import checkpoint as ckpt
from trainer.config import ConfigError

RECIPE = {"global_batch_size": 32, "train_examples": 480, "epochs": 2, "steps_per_epoch": 15, "total_steps": 30,
          "warmup_steps": 3, "eval_every": 0}


def _save(path, *, trial_id="s-1", hyper=None, progress=None, now=None):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    checkpoint_id = ckpt.save_checkpoint(
        path, trial_id=trial_id, hyperparameters=hyper or {"learning_rate": 0.1}, recipe=RECIPE, model=model,
        optimizer=optimizer, scheduler=scheduler, progress=progress or ckpt.Progress(global_step=1),
        rank_states=[{"rng": ckpt.capture_rng_state(), "loss_sums": [1.0, 2.0]}], now=now)
    return model, checkpoint_id


def test_round_trip_of_model_optimizer_progress_and_rng(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    progress = ckpt.Progress(epoch=1, step_in_epoch=4, global_step=19, best_metric=0.5, best_position=0,
                             history=[{"epoch": 1, "eval/accuracy": 0.5}], wandb_run_id="s-1")
    model, checkpoint_id = _save(path, progress=progress)
    payload = ckpt.load_checkpoint(path, trial_id="s-1", hyperparameters={"learning_rate": 0.1})
    assert ckpt.progress_from(payload) == progress
    assert torch.equal(payload["model"]["weight"], model.weight.detach())
    assert payload["optimizer"]["state"][0]["step"] == 1 and payload["scheduler"]["last_epoch"] == 1
    assert (payload["world_size"], payload["recipe"], payload["checkpoint_id"]) == (1, RECIPE, checkpoint_id)
    assert _save(path)[1] != checkpoint_id  # every file has its own id


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


def test_temporary_files_of_killed_writers_are_removed_once_stale(tmp_path):
    # GIVEN a temporary file a killed writer left, and one another process is writing right now
    path = ckpt.checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    left, busy = path.parent / ".checkpoint.pt.node-a.41.tmp", path.parent / ".checkpoint.pt.node-b.77.tmp"
    for tmp in (left, busy):
        tmp.write_bytes(b"partial")
    os.utime(left, (1_000.0, 1_000.0))
    os.utime(busy, (1_000.0 + ckpt.STALE_TMP_S, 1_000.0 + ckpt.STALE_TMP_S))
    # WHEN a checkpoint is written "now" = 1 s after the busy file was last modified
    _save(path, now=1_001.0 + ckpt.STALE_TMP_S)
    # THEN only the stale one is gone
    assert sorted(p.name for p in path.parent.iterdir()) == [busy.name, "checkpoint.pt"]


def test_checkpoint_of_an_older_trainer_version_is_refused(tmp_path):
    path = ckpt.checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "trial_id": "s-1"}, path)
    with pytest.raises(ConfigError, match="checkpoint format 1 is not 2.*--resume=False"):
        ckpt.load_checkpoint(path, trial_id="s-1", hyperparameters={})


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
