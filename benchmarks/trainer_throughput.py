"""Training throughput of sweepq's trainer vs Hugging Face ``Trainer``, side by side in one run.

Same model (same seeded init), same data, same tokenizer, batch size, sequence length, precision,
optimizer and schedule; dynamic padding in both. Runs alternate (ours, HF, ours, HF, ...) so
background load hits both alike; the median samples/s of each is compared.

Measured: training steps only — from the first batch to the end of the epoch, neither
evaluation nor checkpoint writes (ours writes one at the epoch end, HF is told to save nothing).
Single process; under torchrun the per-rank figure scales with the ranks for both alike.

    python benchmarks/trainer_throughput.py                          # CPU, tiny model
    python benchmarks/trainer_throughput.py --model=bert-base-random # GPU: bert-base-cased's shape,
                                                                     # random init, no download
Needs ``accelerate`` (Hugging Face Trainer requires it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainer.config import TrainConfig
from trainer.context import TrialContext
from trainer.data import EncodedSplit, load_splits
from trainer.distributed import DistInfo, init_distributed
from trainer.model import build_model, build_tokenizer
from trainer.optim import set_seed
from trainer.train import training_function


def ours(config: TrainConfig, workdir: Path) -> float:
    """Samples/s of ``training_function``'s training steps (its own accounting)."""
    context = TrialContext.from_env({}, output_dir=str(workdir / f"ours-{time.monotonic_ns()}"))
    result = training_function(config, context, init_distributed({}))
    return float(result["samples_per_s"])


def hugging_face(config: TrainConfig, workdir: Path) -> float:
    """Samples/s of ``transformers.Trainer`` on the same model, data and settings."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    dist = DistInfo(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    splits = load_splits(config)
    tokenizer = build_tokenizer(config, splits.train.texts, run_dir=workdir / "hf-tokenizer", dist=dist)
    set_seed(config.seed)
    model = build_model(config, tokenizer, splits.label_names, dist=dist)
    encoded = EncodedSplit(splits.train, tokenizer, config.max_length)
    train = [{"input_ids": ids, "labels": label} for ids, label in zip(encoded.input_ids, encoded.labels)]
    cuda = dist.device.type == "cuda"

    class StepClock(TrainerCallback):
        started = ended = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            StepClock.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            StepClock.ended = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=config.batch_size, num_train_epochs=config.epochs,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=float(config.warmup_ratio),  # a float < 1 is a ratio
        max_grad_norm=config.max_grad_norm, optim="adamw_torch", lr_scheduler_type="linear", seed=config.seed,
        bf16=cuda, use_cpu=not cuda, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", dataloader_num_workers=config.num_workers, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[StepClock()],
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None))
    trainer.train()
    return len(train) * config.epochs / (StepClock.ended - StepClock.started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (CPU) or bert-base-random (GPU)")
    parser.add_argument("--samples", type=int, default=6000, help="synthetic examples (80%% are trained on)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each trainer")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    options = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING)
    if options.threads:
        torch.set_num_threads(options.threads)
    config = TrainConfig(model=options.model, data="synthetic", synthetic_samples=options.samples, epochs=1,
                         batch_size=options.batch_size, max_length=options.max_length, learning_rate=1e-3,
                         checkpoint_every=0, log_every=10**9, resume=False)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    figures: dict[str, list[float]] = {"sweepq": [], "hf_trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(options.repeats):
            figures["sweepq"].append(ours(config, Path(tmp)))
            figures["hf_trainer"].append(hugging_face(config, Path(tmp) / f"hf-{repeat}"))
            print(f"run {repeat + 1}/{options.repeats}: sweepq {figures['sweepq'][-1]:.1f} samples/s, "
                  f"HF Trainer {figures['hf_trainer'][-1]:.1f} samples/s", flush=True)
    median = {name: statistics.median(values) for name, values in figures.items()}
    ratio = median["sweepq"] / median["hf_trainer"]
    precision = "bf16 autocast" if torch.cuda.is_available() else "fp32"
    print(f"\n{options.model} on {device}, batch {options.batch_size}, max_length {options.max_length}, {precision}")
    print(f"  sweepq trainer : {median['sweepq']:8.1f} samples/s (median of {options.repeats})")
    print(f"  HF Trainer     : {median['hf_trainer']:8.1f} samples/s (median of {options.repeats})")
    print(f"  ratio sweepq/HF: {ratio:.3f}")
    print(json.dumps({"model": options.model, "device": device, "batch_size": options.batch_size,
                      "precision": precision, "runs": figures, "median": median, "ratio": ratio}))


if __name__ == "__main__":
    main()
