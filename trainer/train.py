"""The training workload: ``training_function`` reads top to bottom, ``run`` wraps it for torchrun.

Resume agreement (``resume.py``) → data → tokenizer → seeded model → the recipe (fixed at the first
start, then the checkpoint's: ``recipe.py``) → this rank's share, optimizer, schedule, precision →
restore → epochs (``loop.py``: steps, evaluations, checkpoints, the stop check) → test → results.
Side effects that happen once (checkpoints, W&B, result files, wake triggers) are on global rank
0; every pod's LOCAL_RANK 0 writes its metrics item (``channel.py``); collectives involve every
rank. A graceful stop (``stop.py``) returns a ``stopped``/``preempted`` result after checkpointing,
and ``run`` turns it into the signal's exit code.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint as ckpt
from trainer.accel import PrecisionPlan, configure_math, device_precision, maybe_compile, optimizer_options
from trainer.channel import Channel
from trainer.config import ConfigError, TrainConfig
from trainer.context import STANDALONE, TrialContext
from trainer.data import (
    DataSplits,
    EncodedSplit,
    GlobalBatchSampler,
    PadCollator,
    eval_loader,
    load_splits,
    train_loader,
)
from trainer.distributed import DistInfo, init_distributed, shutdown
from trainer.evaluate import evaluate
from trainer.loop import BEST_METRIC, TrainingRun, summary
from trainer.model import build_model, build_tokenizer, max_positions
from trainer.optim import build_optimizer, build_scheduler, seed_rank_streams, set_seed
from trainer.paths import check_output_writable, prepare_writable_paths
from trainer.recipe import RankPlan, Recipe, plan_rank
from trainer.report import PREDICTIONS_FILE, RESULT_FILE, RESULT_SCHEMA, write_json_atomic, write_predictions
from trainer.resume import load_agreed, restore
from trainer.stop import StopRequests
from trainer.tracking import Tracker

logger = logging.getLogger(__name__)

STOP_FLUSH_S = 20.0  # how long a stopping pod waits for its metrics item write (inside the grace period)
FINAL_FLUSH_S = 120.0


@dataclass
class Components:
    """Everything ``training_function`` trains with; built by ``build_components``."""

    splits: DataSplits
    tokenizer: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    sampler: GlobalBatchSampler
    train: torch.utils.data.DataLoader
    validation: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    recipe: Recipe
    plan: RankPlan
    precision: PrecisionPlan

    @property
    def total_steps(self) -> int:
        return self.recipe.total_steps


def build_components(config: TrainConfig, dist: DistInfo, context: TrialContext, *,
                     recipe: Recipe | None = None) -> Components:
    """Data, tokenizer, seeded model, recipe, optimizer and schedule: where each hyperparameter takes effect.

    ``recipe``: the one stored in the checkpoint being resumed (checked against the data); else a new one.
    """
    set_seed(config.seed)
    splits = load_splits(config)
    tokenizer = build_tokenizer(config, splits.train.texts, run_dir=context.run_dir, dist=dist)
    model = build_model(config, tokenizer, splits.label_names, dist=dist).to(dist.device)
    if config.max_length > max_positions(model):
        raise ConfigError(f"--max_length={config.max_length} exceeds the model's {max_positions(model)} positions")
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"--model={config.model!r}: its tokenizer has no padding token; use a BERT-style model")
    seed_rank_streams(config.seed, dist.rank)  # the same init on every rank, then per-rank dropout streams
    precision = device_precision(config.precision, dist.device)
    configure_math(dist.device)
    cuda = dist.device.type == "cuda"
    collator = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if cuda else None)
    encoded = {name: EncodedSplit(getattr(splits, name), tokenizer, config.max_length)
               for name in ("train", "validation", "test")}
    fresh = Recipe.build(global_batch_size=config.batch_size, train_examples=len(encoded["train"]),
                         epochs=config.epochs, warmup_ratio=config.warmup_ratio, eval_every=config.eval_every)
    if recipe is not None:
        recipe.check_resumable(fresh, source="the checkpoint")
    recipe = recipe or fresh
    plan = plan_rank(global_batch_size=recipe.global_batch_size, world_size=dist.world_size, rank=dist.rank,
                     micro_batch_size=config.micro_batch_size)
    if recipe.global_batch_size % dist.world_size:
        logger.info("global batch %d over %d ranks: shares of %d or %d examples (same result, uneven load)",
                    recipe.global_batch_size, dist.world_size, -(-recipe.global_batch_size // dist.world_size),
                    recipe.global_batch_size // dist.world_size)
    sampler = GlobalBatchSampler(len(encoded["train"]), steps_per_epoch=recipe.steps_per_epoch, plan=plan,
                                 seed=config.seed)
    loaders = {name: eval_loader(encoded[name], batch_size=config.eval_batch_size, collator=collator,
                                 num_replicas=dist.world_size, rank=dist.rank, num_workers=config.num_workers,
                                 pin_memory=cuda) for name in ("validation", "test")}
    optimizer = build_optimizer(config, model, **optimizer_options(dist.device))
    return Components(
        splits=splits, tokenizer=tokenizer, model=model, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, recipe), scaler=precision.grad_scaler(), sampler=sampler,
        train=train_loader(encoded["train"], sampler, collator=collator, num_workers=config.num_workers,
                           seed=config.seed, pin_memory=cuda),
        validation=loaders["validation"], test=loaders["test"], recipe=recipe, plan=plan, precision=precision,
    )


def training_function(config: TrainConfig, context: TrialContext, dist: DistInfo, *,
                      stop: StopRequests | None = None, clock: Callable[[], float] = time.time,
                      dynamodb_client: Any = None, sqs_client: Any = None) -> dict[str, Any]:
    started = time.monotonic()
    trial_id = context.trial_id or STANDALONE
    # Resume: every rank continues from the same checkpoint (the newest any rank sees), or all start fresh.
    payload = load_agreed(ckpt.checkpoint_path(context.run_dir), trial_id=trial_id,
                          hyperparameters=config.hyperparameters(), dist=dist, enabled=config.resume)
    parts = build_components(config, dist, context,
                             recipe=Recipe.from_dict(payload["recipe"]) if payload is not None else None)
    progress, eval_sums, resumed_from = ckpt.Progress(), torch.zeros(2, dtype=torch.float64), None
    if payload is not None:
        progress, eval_sums = restore(payload, model=parts.model, optimizer=parts.optimizer,
                                      scheduler=parts.scheduler, scaler=parts.scaler, seed=config.seed, dist=dist)
        if payload.get("precision") not in (None, parts.precision.name):
            logger.warning("checkpoint trained in %s, this device runs %s (--precision=%s)", payload["precision"],
                           parts.precision.name, config.precision)
        resumed_from = {"epoch": progress.epoch, "step_in_epoch": progress.step_in_epoch,
                        "global_step": progress.global_step, "world_size": payload["world_size"]}
        logger.info("resuming trial %s: epoch %d, step %d of the epoch, step %d (written by %d ranks, now %d)",
                    trial_id, progress.epoch, progress.step_in_epoch, progress.global_step, payload["world_size"],
                    dist.world_size)
    # One W&B run per trial: the trial id; for a standalone run, the id its checkpoint remembers.
    progress.wandb_run_id = progress.wandb_run_id or context.trial_id or context.wandb_run_id \
        or f"standalone-{int(time.time())}"
    model = DistributedDataParallel(parts.model, device_ids=[dist.local_rank] if dist.device.type == "cuda"
                                    else None) if dist.is_distributed else parts.model
    tracker = Tracker.start(is_main=dist.is_main, run_id=progress.wandb_run_id, group=context.sweep_id,
                            project=context.wandb_project, run_dir=context.run_dir,
                            config={**asdict(config), "world_size": dist.world_size, **parts.recipe.to_dict(),
                                    "resolved_precision": parts.precision.name})
    channel = Channel.for_process(context, local_rank=dist.local_rank, is_main=dist.is_main, clock=clock,
                                  dynamodb_client=dynamodb_client, sqs_client=sqs_client)
    state = TrainingRun(config=config, context=context, dist=dist, parts=parts, model=model,
                        train_model=maybe_compile(model, config.compile), progress=progress, tracker=tracker,
                        channel=channel, stop=stop or StopRequests(dist), clock=clock, eval_sums=eval_sums,
                        saved_at_step=progress.global_step if payload is not None else None)
    status = "failed"
    try:
        # The whole restored history first, written before training goes on: an evaluation checkpointed but
        # never reported (a crash between the two) reaches the item now.
        state.publish("running")
        if channel is not None:
            channel.flush(STOP_FLUSH_S)
        if resumed_from is not None and progress.history:  # W&B may have lost it in its buffer at a crash
            state.log_evaluation(progress.history[-1])
        stopped = False
        for epoch in range(progress.epoch, config.epochs):
            stopped = state.train_epoch(epoch)
            if stopped:
                break
            position = parts.recipe.position_of(progress.global_step)
            if position is not None:
                state.evaluate_point(position)
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            state.save()
            logger.info("epoch %d/%d done (step %d)", epoch + 1, config.epochs, progress.global_step)
            if state.stop.agree_now():
                stopped = True
                break
        state.stop.drain()
        if stopped:
            result = _stopped(state, started, resumed_from)
            status = result["status"]
            return result
        result = _completed(state, started, resumed_from)
        status = "completed"
        return result
    finally:
        if status == "failed" and channel is not None and dist.last_restart:
            state.publish("failed", wake="trial-failed")
            channel.flush(STOP_FLUSH_S)
        if channel is not None:
            channel.close(timeout=STOP_FLUSH_S)
        if status == "failed":
            tracker.finish("failed", exit_code=1)


def _completed(state: TrainingRun, started: float, resumed_from: dict[str, Any] | None) -> dict[str, Any]:
    parts, progress, dist, context = state.parts, state.progress, state.dist, state.context
    test = evaluate(parts.model, parts.test, num_labels=len(parts.splits.label_names), dist=dist,
                    autocast=parts.precision.autocast(), collect_predictions=True)
    metrics = summary(progress, parts.recipe, test={f"test/{k}": v for k, v in test.metrics.items() if k != "examples"})
    result = _result(state, "completed", metrics, started, resumed_from)
    state.publish("finished", wake="trial-finished", final=metrics)
    if dist.is_main:
        write_predictions(context.run_dir / PREDICTIONS_FILE, test.predictions,
                          texts=parts.splits.test.texts, label_names=parts.splits.label_names)
        write_json_atomic(context.run_dir / RESULT_FILE, result)
        state.tracker.summarize(metrics)
        logger.info("trial %s finished: %s", context.trial_id or STANDALONE,
                    " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    if state.channel is not None:
        state.channel.flush(FINAL_FLUSH_S, raise_errors=True)
    state.tracker.finish("completed")
    return result


def _stopped(state: TrainingRun, started: float, resumed_from: dict[str, Any] | None) -> dict[str, Any]:
    """Checkpoint (unless this step's is written), metrics with the marker, result.json, W&B ended as stopped."""
    decision, progress, dist = state.stop.decision, state.progress, state.dist
    assert decision is not None
    if state.saved_at_step != progress.global_step:
        state.save()
    metrics = summary(progress, state.parts.recipe)
    result = _result(state, decision.status, metrics, started, resumed_from)
    result.update(exit_code=decision.exit_code,
                  stop={"signal": decision.signal_name, "received_here": decision.local,
                        "at_step": progress.global_step})
    state.publish(decision.status, wake="trial-stopped")
    if state.channel is not None:
        state.channel.flush(STOP_FLUSH_S)
    if dist.is_main:
        write_json_atomic(state.context.run_dir / RESULT_FILE, result)
        state.tracker.summarize(metrics)
    logger.warning("trial %s %s at step %d/%d on %s: checkpoint written, exit code %d",
                   state.context.trial_id or STANDALONE, decision.status, progress.global_step,
                   state.parts.recipe.total_steps, decision.signal_name, decision.exit_code)
    state.tracker.finish(decision.status, exit_code=decision.exit_code)
    return result


def _result(state: TrainingRun, status: str, metrics: dict[str, float], started: float,
            resumed_from: dict[str, Any] | None) -> dict[str, Any]:
    context, dist, progress, parts = state.context, state.dist, state.progress, state.parts
    best = progress.history[progress.best_position] if progress.best_position is not None else {}
    return {
        "schema": RESULT_SCHEMA, "status": status, "trial_id": context.trial_id, "sweep_id": context.sweep_id,
        "trial_index": context.trial_index, "attempt": context.attempt, "job": context.job_name,
        "pod": context.pod_name, "restart_count": dist.restart_count, "world_size": dist.world_size,
        "config": asdict(state.config), "recipe": parts.recipe.to_dict(), "precision": parts.precision.name,
        "metrics": metrics, "best": {"metric": BEST_METRIC, "value": progress.best_metric,
                                     "position": progress.best_position, "epoch": best.get("epoch"),
                                     "global_step": best.get("global_step")},
        "history": progress.history, "global_step": progress.global_step,
        "samples_per_s": metrics["samples_per_s"], "train_time_s": progress.train_seconds,
        "wall_time_s": time.monotonic() - started, "resumed_from": resumed_from, "resumable": status != "completed",
    }


def run(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Entry point under torchrun or plain python: writable paths, join the group, stop handling, train."""
    context = TrialContext.from_env(environ, output_dir=config.output_dir)
    if environ is os.environ:
        prepare_writable_paths(os.environ, output_root=context.output_root)
    check_output_writable(context.run_dir)
    dist = init_distributed(environ)
    stop = StopRequests(dist).install()
    try:
        return training_function(config, context, dist, stop=stop)
    finally:
        stop.uninstall()
        shutdown(dist)


def exit_code(result: Mapping[str, Any]) -> int:
    """0 for a completed run; the stop signal's code (128 + signal) for a graceful stop."""
    return 0 if result.get("status") == "completed" else int(result.get("exit_code", 1))
