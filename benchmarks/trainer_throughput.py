"""Training throughput of sweepq's trainer vs Hugging Face ``Trainer``, side by side in one run.

Same model (same seeded init), data, tokenizer, sequence length, global batch, optimizer and
schedule; dynamic padding in all. Three trainers, alternated run by run (ours, HF matched, HF
defaults, ours, ...) so background load hits all alike:

- ``sweepq``: ``training_function`` as a trial runs it (``--precision=auto``: bf16 on GPUs with bf16
  tensor cores, fp16 + loss scaling on older ones, fp32 on CPU; TF32 and fused AdamW on CUDA);
- ``hf_matched``: ``transformers.Trainer`` told the same (precision, TF32, fused AdamW on CUDA /
  ``adamw_torch`` on CPU, workers, pinned memory, padding to a multiple of 8 on GPU);
- ``hf_defaults``: ``transformers.Trainer`` with its own defaults for everything but the workload
  (batch, epochs, learning rate, warmup, weight decay): fp32 without TF32 on a GPU, fused AdamW.

Measured: training steps only — from the first batch to the end of the epoch, neither evaluation
nor checkpoint writes (ours writes one at the epoch end, outside its step clock; HF saves nothing).
Reported per trainer: every run's samples/s, the median, min–max and the spread (max/min − 1),
and the per-round ratio sweepq/HF (median, min–max). On a GPU also the model FLOPs utilisation
(6·params + 12·layers·hidden·length FLOPs per real token, against the device's dense bf16/fp16
peak from ``PEAK_TFLOPS``). Under torchrun all ranks train (DDP for both trainers; ``--batch_size``
is per device) and rank 0 prints.

    python benchmarks/trainer_throughput.py                     # CPU, tiny, 1 thread (stable on shared cores)
    python benchmarks/trainer_throughput.py --threads=2         # all cores: noisier
    python benchmarks/trainer_throughput.py --model=bert-base-random --samples=20000 --batch_size=32
                                                                # one GPU: bert-base-cased's shape, random init
    torchrun --standalone --nproc-per-node=8 benchmarks/trainer_throughput.py --model=bert-base-random \\
        --samples=80000 --batch_size=32                         # DDP on 8 GPUs
Needs ``accelerate`` (Hugging Face Trainer requires it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.accel import configure_math, device_precision  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.context import TrialContext  # noqa: E402
from trainer.data import EncodedSplit, load_splits  # noqa: E402
from trainer.distributed import DistInfo, init_distributed  # noqa: E402
from trainer.model import build_model, build_tokenizer  # noqa: E402
from trainer.optim import set_seed  # noqa: E402
from trainer.train import training_function  # noqa: E402

# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s per GPU, from the vendors' datasheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
               "V100": 125.0, "T4": 65.0}
TRAINERS = ("sweepq", "hf_matched", "hf_defaults")


def ours(config: TrainConfig, workdir: Path, dist: DistInfo) -> float:
    """Samples/s (all ranks) of ``training_function``'s training steps, by its own accounting."""
    context = TrialContext.from_env({}, output_dir=str(workdir / f"ours-{time.monotonic_ns()}"))
    return float(training_function(config, context, dist)["samples_per_s"])


def hugging_face(config: TrainConfig, workdir: Path, dist: DistInfo, *, matched: bool) -> float:
    """Samples/s (all ranks) of ``transformers.Trainer`` on the same model, data and workload."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    cuda = dist.device.type == "cuda"
    splits = load_splits(config)
    tokenizer = build_tokenizer(config, splits.train.texts, run_dir=workdir / "hf-tokenizer", dist=dist)
    set_seed(config.seed)
    model = build_model(config, tokenizer, splits.label_names, dist=dist)
    encoded = EncodedSplit(splits.train, tokenizer, config.max_length)
    train = [{"input_ids": ids, "labels": label} for ids, label in zip(encoded.input_ids, encoded.labels, strict=True)]

    class StepClock(TrainerCallback):
        started = ended = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            StepClock.started = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            StepClock.ended = time.perf_counter()

    workload = dict(output_dir=str(workdir / "hf"), per_device_train_batch_size=config.batch_size // dist.world_size,
                    num_train_epochs=config.epochs, learning_rate=config.learning_rate,
                    weight_decay=config.weight_decay, warmup_steps=float(config.warmup_ratio),  # < 1: a ratio
                    seed=config.seed, logging_strategy="no", save_strategy="no", eval_strategy="no",
                    report_to="none", disable_tqdm=True, use_cpu=not cuda)
    pad_to = None
    if matched:
        precision = device_precision(config.precision, dist.device).name
        workload.update(bf16=precision == "bf16", fp16=precision == "fp16", tf32=cuda or None,
                        optim="adamw_torch_fused" if cuda else "adamw_torch", max_grad_norm=config.max_grad_norm,
                        dataloader_num_workers=config.num_workers, dataloader_pin_memory=cuda,
                        dataloader_persistent_workers=config.num_workers > 0, torch_compile=config.compile)
        pad_to = 8 if cuda else None
    trainer = Trainer(model=model, args=TrainingArguments(**workload), train_dataset=train, callbacks=[StepClock()],
                      data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to))
    trainer.train()
    return len(train) * config.epochs / (StepClock.ended - StepClock.started)


def model_flops_per_token(config: TrainConfig, dist: DistInfo) -> tuple[float, float]:
    """(training FLOPs per real token, mean real tokens per example) of this model and data."""
    splits = load_splits(config)
    tokenizer = build_tokenizer(config, splits.train.texts, run_dir=Path(tempfile.mkdtemp()), dist=dist)
    model = build_model(config, tokenizer, splits.label_names, dist=dist)
    encoded = EncodedSplit(splits.train, tokenizer, config.max_length)
    length = statistics.fmean(len(ids) for ids in encoded.input_ids)
    embeddings = sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    params = sum(p.numel() for p in model.parameters()) - embeddings
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    return 6.0 * params + 12.0 * layers * hidden * length, length


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "spread": max(values) / min(values) - 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny (CPU) or bert-base-random (GPU)")
    parser.add_argument("--samples", type=int, default=6000, help="synthetic examples (80%% are trained on)")
    parser.add_argument("--batch_size", type=int, default=32, help="per device (the global batch is x world size)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (one run of each trainer per round)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on shared cores more threads gave ratios from 0.8 to 1.1)")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="torch.compile (ours and HF matched)")
    parser.add_argument("--trainers", default=",".join(TRAINERS), help=f"subset of {','.join(TRAINERS)}")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(options.threads)
    dist = init_distributed(os.environ)
    configure_math(dist.device)
    config = TrainConfig(model=options.model, data="synthetic", synthetic_samples=options.samples, epochs=1,
                         batch_size=options.batch_size * dist.world_size, max_length=options.max_length,
                         learning_rate=1e-3, checkpoint_every=0, log_every=10**9, resume=False,
                         num_workers=options.num_workers, compile=options.compile)
    trainers = [name for name in options.trainers.split(",") if name]
    runs: dict[str, list[float]] = {name: [] for name in trainers}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(options.repeats):
            for name in trainers:
                workdir = Path(tmp) / f"{name}-{repeat}"
                runs[name].append(ours(config, workdir, dist) if name == "sweepq"
                                  else hugging_face(config, workdir, dist, matched=name == "hf_matched"))
            if dist.is_main:
                print(f"round {repeat + 1}/{options.repeats}: " + ", ".join(
                    f"{name} {runs[name][-1]:.1f}" for name in trainers) + " samples/s", flush=True)
    if not dist.is_main:
        return
    device = torch.cuda.get_device_name(dist.device) if dist.device.type == "cuda" \
        else f"CPU ({torch.get_num_threads()} torch threads of {os.cpu_count()} cores)"
    precision = device_precision(config.precision, dist.device).name
    figures = {name: spread(values) for name, values in runs.items()}
    ratios = {name: spread([a / b for a, b in zip(runs["sweepq"], runs[name], strict=True)])
              for name in trainers if name != "sweepq" and "sweepq" in runs}
    flops, length = model_flops_per_token(config, dist)
    peak = peak_flops(dist.device)
    print(f"\n{options.model} on {device} x{dist.world_size}, global batch {config.batch_size}, max_length "
          f"{options.max_length} (mean {length:.1f} tokens), sweepq precision {precision}, {options.repeats} rounds")
    for name in trainers:
        f = figures[name]
        mfu = f"  MFU {f['median'] * length * flops / (peak * dist.world_size):.1%}" if peak else ""
        print(f"  {name:12s}: {f['median']:9.1f} samples/s median, {f['min']:.1f}-{f['max']:.1f} "
              f"(spread {f['spread']:.0%}){mfu}")
    for name, r in ratios.items():
        print(f"  sweepq/{name}: {r['median']:.3f} median, {r['min']:.3f}-{r['max']:.3f} over the rounds")
    result = {"model": options.model, "device": device, "world_size": dist.world_size, "precision": precision,
              "global_batch": config.batch_size, "threads": options.threads, "runs": runs, "figures": figures,
              "ratios": ratios, "flops_per_token": flops, "mean_tokens": length, "peak_flops": peak,
              "command": " ".join(["python", *sys.argv])}
    print(json.dumps(result))
    if options.json:
        Path(options.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
