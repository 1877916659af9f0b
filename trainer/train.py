"""The training workload: ``training_function`` reads top to bottom, ``run`` wraps it for torchrun.

Data → tokenizer → seeded model → optimizer and schedule → resume from this trial's checkpoint →
epochs (train, checkpoint every N steps, evaluate, checkpoint, report) → test → results. Side
effects that must happen once (checkpoints, W&B, result files, DynamoDB, wake message) happen on
global rank 0; collectives (metric all-reduces, RNG gathering) involve every rank.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint as ckpt
from trainer.config import ConfigError, TrainConfig
from trainer.context import STANDALONE, TrialContext
from trainer.data import DataSplits, EncodedSplit, PadCollator, ResumableDistributedSampler, eval_loader, load_splits, \
    train_loader
from trainer.distributed import DistInfo, all_gather_object, all_reduce_sum, barrier, init_distributed, shutdown
from trainer.evaluate import evaluate
from trainer.model import build_model, build_tokenizer, max_positions
from trainer.optim import accumulation_window, build_optimizer, build_scheduler, optimizer_step, set_seed, \
    steps_per_epoch
from trainer.report import PREDICTIONS_FILE, RESULT_FILE, RESULT_SCHEMA, TrialTableReporter, send_wake, \
    write_json_atomic, write_predictions
from trainer.tracking import Tracker

logger = logging.getLogger(__name__)

# Test-only fault injection: global rank SWEEPQ_TEST_CRASH_RANK (default 1) exits hard right after
# optimizer step N of the first torchrun attempt (TORCHELASTIC_RESTART_COUNT=0).
TEST_CRASH_AT_STEP = "SWEEPQ_TEST_CRASH_AT_STEP"
TEST_CRASH_RANK = "SWEEPQ_TEST_CRASH_RANK"
BEST_METRIC = "eval/accuracy"  # the sweep files' metric (goal: maximize)


@dataclass
class Components:
    """Everything ``training_function`` trains with; built by ``build_components``."""

    splits: DataSplits
    tokenizer: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ResumableDistributedSampler
    train: torch.utils.data.DataLoader
    validation: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    batches_per_epoch: int
    total_steps: int
    autocast: Callable[[], contextlib.AbstractContextManager]


def build_components(config: TrainConfig, dist: DistInfo, context: TrialContext) -> Components:
    """Data, tokenizer, seeded model, optimizer and schedule: where each hyperparameter takes effect."""
    set_seed(config.seed)
    splits = load_splits(config)
    tokenizer = build_tokenizer(config, splits.train.texts, run_dir=context.run_dir, dist=dist)
    model = build_model(config, tokenizer, splits.label_names, dist=dist).to(dist.device)
    if config.max_length > max_positions(model):
        raise ConfigError(f"--max_length={config.max_length} exceeds the model's {max_positions(model)} positions")
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"--model={config.model!r}: its tokenizer has no padding token; use a BERT-style model")
    cuda = dist.device.type == "cuda"
    collator = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if cuda else None)
    encoded = {name: EncodedSplit(getattr(splits, name), tokenizer, config.max_length)
               for name in ("train", "validation", "test")}
    sampler = ResumableDistributedSampler(encoded["train"], num_replicas=dist.world_size, rank=dist.rank,
                                          seed=config.seed)
    loaders = {name: eval_loader(encoded[name], batch_size=config.eval_batch_size, collator=collator,
                                 num_replicas=dist.world_size, rank=dist.rank, num_workers=config.num_workers,
                                 pin_memory=cuda) for name in ("validation", "test")}
    batches_per_epoch = -(-sampler.num_samples // config.batch_size)
    total_steps = config.epochs * steps_per_epoch(batches_per_epoch, config.gradient_accumulation_steps)
    optimizer = build_optimizer(config, model)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda)
    return Components(
        splits=splits, tokenizer=tokenizer, model=model, optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, total_steps), sampler=sampler,
        train=train_loader(encoded["train"], sampler, batch_size=config.batch_size, collator=collator,
                           num_workers=config.num_workers, seed=config.seed, pin_memory=cuda),
        validation=loaders["validation"], test=loaders["test"],
        batches_per_epoch=batches_per_epoch, total_steps=total_steps,
        autocast=(lambda: torch.autocast(dist.device.type, dtype=torch.bfloat16)) if use_bf16
        else contextlib.nullcontext,
    )


def training_function(config: TrainConfig, context: TrialContext, dist: DistInfo) -> dict[str, Any]:
    started = time.monotonic()
    trial_id = context.trial_id or STANDALONE
    parts = build_components(config, dist, context)
    num_labels = len(parts.splits.label_names)

    # Resume: every rank loads the trial's latest checkpoint (if any) and continues exactly there.
    path = ckpt.checkpoint_path(context.run_dir)
    progress, loss_sums, resumed_from = ckpt.Progress(), torch.zeros(2, dtype=torch.float64), None
    payload = ckpt.load_checkpoint(path, trial_id=trial_id, hyperparameters=config.hyperparameters()) \
        if config.resume else None
    if payload is not None:
        progress, loss_sums = _restore(payload, parts, dist)
        resumed_from = {"epoch": progress.epoch, "batches_in_epoch": progress.batches_in_epoch,
                        "global_step": progress.global_step}
        logger.info("resuming trial %s from %s: epoch %d, batch %d, step %d",
                    trial_id, path, progress.epoch, progress.batches_in_epoch, progress.global_step)
    # One W&B run per trial: the trial id; for a standalone run, the id its checkpoint remembers.
    progress.wandb_run_id = progress.wandb_run_id or context.trial_id or context.wandb_run_id \
        or f"standalone-{int(time.time())}"
    model = DistributedDataParallel(parts.model, device_ids=[dist.local_rank] if dist.device.type == "cuda"
                                    else None) if dist.is_distributed else parts.model

    tracker = Tracker.start(is_main=dist.is_main, run_id=progress.wandb_run_id, group=context.sweep_id,
                            project=context.wandb_project, run_dir=context.run_dir,
                            config={**asdict(config), "world_size": dist.world_size})
    reporter = TrialTableReporter(context) if dist.is_main and context.reports_to_table else None
    ok = False
    try:
        def save() -> None:
            rank_states = all_gather_object({"rng": ckpt.capture_rng_state(), "loss_sums": loss_sums.tolist()}, dist)
            if dist.is_main:
                ckpt.save_checkpoint(path, trial_id=trial_id, hyperparameters=config.hyperparameters(),
                                     model=parts.model, optimizer=parts.optimizer, scheduler=parts.scheduler,
                                     progress=progress, rank_states=rank_states)
            barrier(dist)

        for epoch in range(progress.epoch, config.epochs):
            _train_epoch(config, parts, model, dist, progress, loss_sums, tracker, save, epoch)
            train_loss = all_reduce_sum(loss_sums.to(dist.device, copy=True), dist).cpu()
            validation = evaluate(parts.model, parts.validation, num_labels=num_labels, dist=dist,
                                  autocast=parts.autocast())
            record = {"epoch": epoch + 1, "global_step": progress.global_step,
                      "train/loss": float(train_loss[0] / max(train_loss[1], 1)),
                      **{f"eval/{k}": v for k, v in validation.metrics.items() if k != "examples"}}
            if progress.best_metric is None or record[BEST_METRIC] > progress.best_metric:
                progress.best_metric, progress.best_epoch = record[BEST_METRIC], epoch + 1
            progress.history.append(record)
            progress.epoch, progress.batches_in_epoch, progress.samples_in_epoch = epoch + 1, 0, 0
            loss_sums.zero_()
            save()
            logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, _fmt(record))
            tracker.log({("train/epoch_loss" if k == "train/loss" else k): v for k, v in record.items()},
                        global_step=progress.global_step)
            if reporter is not None:
                reporter.report(_summary(progress), now=time.time(), final=False)

        test = evaluate(parts.model, parts.test, num_labels=num_labels, dist=dist, autocast=parts.autocast(),
                        collect_predictions=True)
        metrics = _summary(progress, test={f"test/{k}": v for k, v in test.metrics.items() if k != "examples"})
        result = {
            "schema": RESULT_SCHEMA, "status": "completed", "trial_id": context.trial_id,
            "sweep_id": context.sweep_id, "trial_index": context.trial_index, "attempt": context.attempt,
            "restart_count": dist.restart_count, "world_size": dist.world_size, "config": asdict(config),
            "metrics": metrics, "best": {"metric": BEST_METRIC, "value": progress.best_metric,
                                         "epoch": progress.best_epoch},
            "history": progress.history, "global_step": progress.global_step,
            "samples_per_s": metrics["samples_per_s"], "train_time_s": progress.train_seconds,
            "wall_time_s": time.monotonic() - started, "resumed_from": resumed_from,
        }
        if dist.is_main:
            write_predictions(context.run_dir / PREDICTIONS_FILE, test.predictions,
                              texts=parts.splits.test.texts, label_names=parts.splits.label_names)
            write_json_atomic(context.run_dir / RESULT_FILE, result)
            tracker.summarize(metrics)
            if reporter is not None:
                reporter.report(metrics, now=time.time(), final=True)
            logger.info("trial %s finished: %s", trial_id, _fmt(metrics))
        ok = True
        return result
    finally:
        tracker.finish(ok=ok)


def _train_epoch(config: TrainConfig, parts: Components, model: torch.nn.Module, dist: DistInfo,
                 progress: ckpt.Progress, loss_sums: torch.Tensor, tracker: Tracker,
                 save: Callable[[], None], epoch: int) -> None:
    """One epoch from wherever ``progress`` says it stands; advances ``progress`` and ``loss_sums``."""
    parts.sampler.set_epoch(epoch, consumed=progress.samples_in_epoch)
    # Batches of this epoch as counted from its start (differs from parts.batches_per_epoch only when a
    # checkpoint of another world size was resumed); accumulation windows and the epoch end use it.
    epoch_batches = progress.batches_in_epoch + len(parts.train)
    model.train()
    accumulation = config.gradient_accumulation_steps
    window = torch.zeros(2, dtype=torch.float64, device=dist.device)  # loss sum, samples since last log
    epoch_sums = loss_sums.to(dist.device, copy=True)
    clock = time.perf_counter()
    for batch in parts.train:
        window_size, ends_window = accumulation_window(progress.batches_in_epoch, epoch_batches, accumulation)
        batch = {key: value.to(dist.device, non_blocking=True) for key, value in batch.items()}
        sync = contextlib.nullcontext() if ends_window or not dist.is_distributed else model.no_sync()
        with sync:
            with parts.autocast():
                loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             labels=batch["labels"]).loss
            (loss / window_size).backward()
        size = batch["labels"].shape[0]
        sample_loss = torch.stack([loss.detach().double() * size, torch.tensor(size, device=dist.device).double()])
        window += sample_loss
        epoch_sums += sample_loss
        progress.batches_in_epoch += 1
        progress.samples_in_epoch += size * dist.world_size
        progress.train_samples += size * dist.world_size
        if not ends_window:
            continue
        optimizer_step(parts.model, parts.optimizer, parts.scheduler, config.max_grad_norm)
        progress.global_step += 1
        _maybe_crash_for_test(progress.global_step, dist)
        if progress.global_step % config.log_every == 0:
            totals = all_reduce_sum(window, dist).cpu()
            tracker.log({"train/loss": float(totals[0] / totals[1]), "train/lr": parts.scheduler.get_last_lr()[0],
                         "epoch": epoch + progress.batches_in_epoch / epoch_batches},
                        global_step=progress.global_step)
            window.zero_()
        at_epoch_end = progress.batches_in_epoch == epoch_batches
        if config.checkpoint_every and progress.global_step % config.checkpoint_every == 0 and not at_epoch_end:
            progress.train_seconds += _elapsed(clock, dist)
            loss_sums.copy_(epoch_sums.cpu())
            save()
            clock = time.perf_counter()
    progress.train_seconds += _elapsed(clock, dist)
    loss_sums.copy_(epoch_sums.cpu())


def _restore(payload: dict[str, Any], parts: Components, dist: DistInfo) -> tuple[ckpt.Progress, torch.Tensor]:
    """Load weights, optimizer, schedule, progress; then this rank's RNG and loss sums (last, as they were)."""
    parts.model.load_state_dict(payload["model"])
    parts.optimizer.load_state_dict(payload["optimizer"])
    parts.scheduler.load_state_dict(payload["scheduler"])
    progress = ckpt.progress_from(payload)
    rank_states = payload["rank_states"]
    if len(rank_states) == dist.world_size:
        own = rank_states[dist.rank]
        loss_sums = torch.tensor(own["loss_sums"], dtype=torch.float64)
    else:
        logger.warning("checkpoint was written by %d ranks, now %d: data order continues exactly, but RNG "
                       "streams restart from rank 0's, so the result is not bit-identical",
                       len(rank_states), dist.world_size)
        own = rank_states[0]
        total = torch.tensor([s["loss_sums"] for s in rank_states], dtype=torch.float64).sum(dim=0)
        loss_sums = total if dist.is_main else torch.zeros(2, dtype=torch.float64)
    ckpt.restore_rng_state(own["rng"])
    return progress, loss_sums


def _summary(progress: ckpt.Progress, test: dict[str, float] | None = None) -> dict[str, float]:
    """The W&B summary / DynamoDB metrics: the last epoch's, the best, the test set's, throughput."""
    last = progress.history[-1] if progress.history else {}
    metrics = {key: float(value) for key, value in last.items()}
    metrics.update(test or {})
    metrics["epoch"] = float(progress.epoch)
    metrics["global_step"] = float(progress.global_step)
    metrics["samples_per_s"] = progress.train_samples / progress.train_seconds if progress.train_seconds else 0.0
    if progress.best_metric is not None:
        metrics[f"best/{BEST_METRIC}"] = float(progress.best_metric)
        metrics["best/epoch"] = float(progress.best_epoch or 0)
    return metrics


def _elapsed(since: float, dist: DistInfo) -> float:
    if dist.device.type == "cuda":
        torch.cuda.synchronize(dist.device)
    return time.perf_counter() - since


def _maybe_crash_for_test(global_step: int, dist: DistInfo) -> None:
    at_step = os.environ.get(TEST_CRASH_AT_STEP)
    if at_step and dist.restart_count == 0 and global_step == int(at_step) \
            and dist.rank == int(os.environ.get(TEST_CRASH_RANK, "1")):
        logger.error("%s=%s: rank %d exits hard at step %d (test fault injection)",
                     TEST_CRASH_AT_STEP, at_step, dist.rank, global_step)
        os._exit(13)


def _fmt(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in metrics.items())


def run(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Entry point under torchrun or plain python: join the group, train, tell the dispatcher."""
    context = TrialContext.from_env(environ, output_dir=config.output_dir)
    dist = init_distributed(environ)
    try:
        result = training_function(config, context, dist)
    except BaseException:
        # torchrun restarts the workers while restarts are left: the trial has not finished yet.
        if dist.is_main and dist.last_restart:
            send_wake(context, ok=False)
        raise
    else:
        if dist.is_main:
            send_wake(context, ok=True)
        return result
    finally:
        shutdown(dist)
