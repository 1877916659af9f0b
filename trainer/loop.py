"""One trial's training state and its step loop; ``train.py`` drives it epoch by epoch.

Per optimizer step every rank runs ``plan.accumulation`` micro-batches (DDP synchronises on the
last), then one optimizer step. Nothing in a step reads a device value on the host: example
counts are Python ints from tensor shapes, loss sums stay on the device and are all-reduced and
read only every ``log_every`` steps and at evaluations, the stop check is an asynchronous CPU
all-reduce (``stop.py``). A step boundary may then log, evaluate (a history position:
``recipe.py``), checkpoint, and agree to stop — in that order, so a checkpoint always contains
the evaluations up to its step, and the metrics item gets each evaluation before the checkpoint
that contains it is written (a crash in between re-evaluates the same position after resume;
a restart publishes the checkpoint's whole history first, so no position is ever lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint as ckpt
from trainer.channel import Channel, Snapshot
from trainer.config import TrainConfig
from trainer.context import TrialContext
from trainer.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier
from trainer.evaluate import evaluate
from trainer.optim import optimizer_step
from trainer.report import TRAIN_LOG_FILE, append_jsonl
from trainer.stop import StopRequests
from trainer.tracking import Tracker

logger = logging.getLogger(__name__)

BEST_METRIC = "eval/accuracy"  # the sweep files' metric (goal: maximize)

# Test-only fault injection (first torchrun attempt only, TORCHELASTIC_RESTART_COUNT=0):
# - global rank SWEEPQ_TEST_CRASH_RANK (default 1) exits hard right after optimizer step N;
# - every rank, after step N, waits until it receives a stop signal (after creating
#   <run dir>/.test-waiting-rank<R>, so a test knows when to send it);
# - every rank sends itself SIGTERM right after step N.
TEST_CRASH_AT_STEP = "SWEEPQ_TEST_CRASH_AT_STEP"
TEST_CRASH_RANK = "SWEEPQ_TEST_CRASH_RANK"
TEST_WAIT_AT_STEP = "SWEEPQ_TEST_WAIT_AT_STEP"
TEST_SIGNAL_AT_STEP = "SWEEPQ_TEST_SIGNAL_AT_STEP"
_TEST_WAIT_LIMIT_S = 300.0


@dataclass
class TrainingRun:
    """The state of one process of a trial while it trains (built in ``train.training_function``)."""

    config: TrainConfig
    context: TrialContext
    dist: DistInfo
    parts: Any  # train.Components
    model: torch.nn.Module  # DDP-wrapped when distributed (its no_sync), else the module
    train_model: Callable[..., Any]  # what the forward goes through (the compiled model with --compile)
    progress: ckpt.Progress
    tracker: Tracker
    channel: Channel | None
    stop: StopRequests
    clock: Callable[[], float]
    eval_sums: torch.Tensor  # [training loss sum, examples] of this rank since the last evaluation (as restored)
    saved_at_step: int | None = None
    # Since the last evaluation: the loss sum stays on the device (one add per micro-batch), the example
    # count is a Python int; the values at the last log line give the log window by difference.
    loss_sum: torch.Tensor = field(init=False)
    examples: int = field(init=False)
    _logged: tuple[torch.Tensor, int] = field(init=False)

    def __post_init__(self) -> None:
        self.loss_sum = self.eval_sums[0].to(self.dist.device, dtype=torch.float64, copy=True)
        self.examples = int(self.eval_sums[1])
        self._logged = (self.loss_sum.clone(), self.examples)

    # -- one epoch --------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> bool:
        """Train ``epoch`` from where ``progress`` stands; True if every rank agreed to stop inside it."""
        parts, p, dist = self.parts, self.progress, self.dist
        parts.sampler.set_epoch(epoch, start_step=p.step_in_epoch)
        self.model.train()
        accumulation, micro = parts.plan.accumulation, 0
        clock = time.perf_counter()
        for batch in parts.train:
            examples = int(batch["labels"].shape[0])  # from the shape: no device read
            inputs = {key: batch[key].to(dist.device, non_blocking=True)
                      for key in ("input_ids", "attention_mask", "labels")}
            last = micro == accumulation - 1
            # distributed: the model is DDP-wrapped (train.py), whose no_sync() defers the all-reduce
            sync = (cast(DistributedDataParallel, self.model).no_sync() if dist.is_distributed and not last
                    else contextlib.nullcontext())
            with sync:
                with parts.precision.autocast():
                    loss = self.train_model(**inputs).loss
                weighted = loss * parts.plan.loss_weight(examples)
                (parts.scaler.scale(weighted) if parts.scaler is not None else weighted).backward()
            self.loss_sum.add_(loss.detach().double() * examples)
            self.examples += examples
            micro += 1
            if not last:
                continue
            micro = 0
            optimizer_step(parts.model, parts.optimizer, parts.scheduler, self.config.max_grad_norm, parts.scaler)
            p.global_step += 1
            p.step_in_epoch += 1
            p.train_samples += parts.recipe.global_batch_size
            self._test_hooks()
            if p.global_step % self.config.log_every == 0:
                self.log_train()
            if p.step_in_epoch == parts.recipe.steps_per_epoch:
                break  # the epoch end evaluates, checkpoints and agrees on a stop (train.py)
            position = parts.recipe.position_of(p.global_step)
            checkpoint_due = bool(self.config.checkpoint_every) and p.global_step % self.config.checkpoint_every == 0
            if position is not None or checkpoint_due:
                p.train_seconds += self._elapsed(clock)
                if position is not None:
                    self.evaluate_point(position)
                if checkpoint_due:
                    self.save()
                clock = time.perf_counter()
                if self.stop.agree_now():
                    return True
            elif self.stop.poll():
                p.train_seconds += self._elapsed(clock)
                return True
        p.train_seconds += self._elapsed(clock)
        return False

    # -- what happens at step boundaries ---------------------------------------------------------
    def log_train(self) -> None:
        logged_loss, logged_examples = self._logged
        window = torch.stack([self.loss_sum - logged_loss, self._count(self.examples - logged_examples)])
        totals = all_reduce_sum(window, self.dist).cpu()  # the only device read every log_every steps
        self._logged = (self.loss_sum.clone(), self.examples)
        p, recipe = self.progress, self.parts.recipe
        record = {"train/loss": float(totals[0] / max(float(totals[1]), 1.0)),
                  "train/lr": self.parts.scheduler.get_last_lr()[0], "epoch": p.global_step / recipe.steps_per_epoch}
        self.tracker.log(record, global_step=p.global_step)
        if self.dist.is_main:
            append_jsonl(self.context.run_dir / TRAIN_LOG_FILE,
                         {**record, "global_step": p.global_step, "world_size": self.dist.world_size,
                          "attempt": self.context.attempt, "restart": self.dist.restart_count})

    def evaluate_point(self, position: int) -> dict[str, float]:
        """Evaluate, append history position ``position``, log it and publish it."""
        p, parts = self.progress, self.parts
        if position != len(p.history):
            raise RuntimeError(f"evaluation position {position} after step {p.global_step}, but the history has "
                               f"{len(p.history)} positions: the recipe and the checkpoint disagree")
        train_loss = all_reduce_sum(torch.stack([self.loss_sum, self._count(self.examples)]), self.dist).cpu()
        validation = evaluate(parts.model, parts.validation, num_labels=len(parts.splits.label_names),
                              dist=self.dist, autocast=parts.precision.autocast())
        record = {"epoch": p.global_step / parts.recipe.steps_per_epoch, "global_step": p.global_step,
                  "train/loss": float(train_loss[0] / max(float(train_loss[1]), 1.0)),
                  **{f"eval/{key}": value for key, value in validation.metrics.items() if key != "examples"}}
        if p.best_metric is None or record[BEST_METRIC] > p.best_metric:
            p.best_metric, p.best_position = record[BEST_METRIC], position
        p.history.append(record)
        self.loss_sum.zero_()
        self.examples = 0
        self._logged = (self.loss_sum.clone(), 0)
        logger.info("evaluation %d (step %d/%d): %s", position, p.global_step, parts.recipe.total_steps,
                    " ".join(f"{k}={v:.4g}" for k, v in record.items()))
        self.log_evaluation(record)
        self.publish("running", wake="trial-progress")
        return record

    def log_evaluation(self, record: dict[str, float]) -> None:
        """An evaluation to W&B; its training loss is named apart from the per-step ``train/loss`` series."""
        self.tracker.log({**{k: v for k, v in record.items() if k not in ("train/loss", "global_step")},
                          "train/loss_since_last_eval": record["train/loss"]}, global_step=int(record["global_step"]))

    def save(self) -> None:
        """Gather every rank's RNG and loss sums; rank 0 writes the checkpoint; all wait for it."""
        parts, p = self.parts, self.progress
        rank_states = all_gather_object({"rng": ckpt.capture_rng_state(),
                                         "loss_sums": [float(self.loss_sum), float(self.examples)]}, self.dist)
        if self.dist.is_main:
            ckpt.save_checkpoint(ckpt.checkpoint_path(self.context.run_dir), trial_id=self.context.trial_id or
                                 "standalone", hyperparameters=self.config.hyperparameters(),
                                 recipe=parts.recipe.to_dict(), model=parts.model, optimizer=parts.optimizer,
                                 scheduler=parts.scheduler, scaler=parts.scaler, precision=parts.precision.name,
                                 progress=p, rank_states=rank_states, now=self.clock())
        barrier(self.dist)
        self.saved_at_step = p.global_step

    def publish(self, status: str, *, wake: str | None = None, final: dict[str, float] | None = None) -> None:
        """Hand this pod's item state to the channel: ``metrics`` = the summary (``final`` once finished)."""
        if self.channel is not None:
            metrics = final if final is not None else summary(self.progress, self.parts.recipe)
            self.channel.publish(Snapshot(status=status, metrics=metrics, final=final, wake=wake,
                                          history=[dict(point) for point in self.progress.history],
                                          world_size=self.dist.world_size))

    # -- helpers ---------------------------------------------------------------------------------
    def _count(self, examples: int) -> torch.Tensor:
        return torch.tensor(float(examples), dtype=torch.float64, device=self.dist.device)

    def _elapsed(self, since: float) -> float:
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        return time.perf_counter() - since

    def _test_hooks(self) -> None:
        step, dist = self.progress.global_step, self.dist
        if dist.restart_count != 0:
            return
        crash_rank = _env_int(TEST_CRASH_RANK)
        if _env_int(TEST_CRASH_AT_STEP) == step and dist.rank == (1 if crash_rank is None else crash_rank):
            logger.error("%s=%d: rank %d exits hard at step %d (test fault injection)", TEST_CRASH_AT_STEP, step,
                         dist.rank, step)
            os._exit(13)
        if _env_int(TEST_SIGNAL_AT_STEP) == step:
            os.kill(os.getpid(), signal.SIGTERM)
        if _env_int(TEST_WAIT_AT_STEP) == step:
            marker = Path(self.context.run_dir) / f".test-waiting-rank{dist.rank}"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
            deadline = time.monotonic() + _TEST_WAIT_LIMIT_S
            while not self.stop.received:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{TEST_WAIT_AT_STEP}={step}: no stop signal within {_TEST_WAIT_LIMIT_S:.0f} s")
                time.sleep(0.02)


def summary(progress: ckpt.Progress, recipe: Any, test: dict[str, float] | None = None) -> dict[str, float]:
    """The W&B summary / metrics item ``metrics``: the last evaluation's values, the best, throughput, test."""
    last = progress.history[-1] if progress.history else {}
    metrics = {key: float(value) for key, value in last.items()}
    metrics.update(test or {})
    metrics["epoch"] = progress.global_step / recipe.steps_per_epoch
    metrics["global_step"] = float(progress.global_step)
    metrics["samples_per_s"] = progress.train_samples / progress.train_seconds if progress.train_seconds else 0.0
    if progress.best_metric is not None and progress.best_position is not None:
        best = progress.history[progress.best_position]
        metrics[f"best/{BEST_METRIC}"] = float(progress.best_metric)
        metrics["best/epoch"] = float(best["epoch"])
        metrics["best/position"] = float(progress.best_position)
    return metrics


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None
