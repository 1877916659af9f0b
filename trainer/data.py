"""Data: CSV splits or synthetic headlines, tokenised once, dynamically padded, sharded per rank.

Sampling is what makes exact resume possible:

- ``GlobalBatchSampler`` yields this rank's micro-batches of each global batch (``recipe.py``):
  an optimizer step is the same examples at every world size, so a restart — at the same or
  another world size — skips the steps already taken without loading or collating anything.
- ``ShardedEvalSampler`` shards without padding, so every evaluation example is counted once and
  the all-reduced metrics equal a single-process evaluation.
- Every DataLoader has its own ``torch.Generator``; otherwise creating an iterator draws from the
  global RNG (DataLoader's base seed) and a resumed run's dropout masks would drift.
"""

from __future__ import annotations

import csv
import json
import math
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainer.config import ConfigError, TrainConfig
from trainer.recipe import RankPlan
from trainer.synthetic import LABEL_NAMES, synthetic_splits

SPLITS = ("train", "validation", "test")
LABELS_FILE = "labels.json"


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]


@dataclass(frozen=True)
class DataSplits:
    train: Split
    validation: Split
    test: Split
    label_names: tuple[str, ...]


def load_splits(config: TrainConfig) -> DataSplits:
    """``--data=synthetic`` or a directory with train.csv / validation.csv / test.csv (text, label)."""
    if config.data == "synthetic":
        parts = synthetic_splits(config.synthetic_samples, config.data_seed)
        splits = {name: Split([t for t, _ in rows], [y for _, y in rows]) for name, rows in parts.items()}
        return DataSplits(**splits, label_names=LABEL_NAMES)
    return load_csv_splits(Path(config.data))


def load_csv_splits(directory: Path) -> DataSplits:
    """Read the three CSVs; labels are names (or ids) mapped through labels.json when present."""
    if not directory.is_dir():
        raise ConfigError(f"--data={str(directory)!r} is not a directory: give 'synthetic' or a directory "
                          "with train.csv, validation.csv and test.csv (make one with `trainer prepare`)")
    raw = {name: _read_csv(directory / f"{name}.csv") for name in SPLITS}
    label_names = _label_names(directory, [label for rows in raw.values() for _, label in rows])
    index = {name: i for i, name in enumerate(label_names)}
    splits = {}
    for name, rows in raw.items():
        unknown = sorted({label for _, label in rows if label not in index})
        if unknown:
            raise ConfigError(f"{directory / f'{name}.csv'}: labels {unknown[:5]} are not in {LABELS_FILE} "
                              f"{list(label_names)}: fix the file or regenerate the split")
        splits[name] = Split([text for text, _ in rows], [index[label] for _, label in rows])
    return DataSplits(**splits, label_names=label_names)


def _read_csv(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        raise ConfigError(f"{path} is missing: a data directory needs train.csv, validation.csv and test.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ConfigError(f"{path}: columns {sorted(missing)} missing (has {reader.fieldnames}); "
                              "the split files need 'text' and 'label' — `trainer prepare` writes them")
        rows = [(row["text"], row["label"].strip()) for row in reader]
    if not rows:
        raise ConfigError(f"{path} has no rows")
    return rows


def _label_names(directory: Path, labels: list[str]) -> tuple[str, ...]:
    labels_file = directory / LABELS_FILE
    if labels_file.exists():
        return tuple(str(name) for name in json.loads(labels_file.read_text(encoding="utf-8")))
    distinct = set(labels)
    if all(label.isdigit() for label in distinct):  # ids: 0..max, names are the ids
        return tuple(str(i) for i in range(max(int(label) for label in distinct) + 1))
    return tuple(sorted(distinct))


class EncodedSplit(Dataset):
    """Token ids (unpadded, truncated to ``max_length``) and labels; items carry their index."""

    def __init__(self, split: Split, tokenizer: Any, max_length: int) -> None:
        encoded = tokenizer(split.texts, truncation=True, max_length=max_length, padding=False)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, list[int], int]:
        return index, self.input_ids[index], self.labels[index]


class PadCollator:
    """Pads each batch to its own longest sequence (dynamic padding), optionally to a multiple of 8."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[tuple[int, list[int], int]]) -> dict[str, torch.Tensor]:
        longest = max(len(ids) for _, ids, _ in items)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, (_, ids, _) in enumerate(items):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([label for _, _, label in items], dtype=torch.long),
            "index": torch.tensor([index for index, _, _ in items], dtype=torch.long),
        }


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's micro-batches of every global batch of an epoch, from any optimizer step on.

    The epoch's global order is ``DistributedSampler``'s seeded permutation (``seed + epoch``),
    padded by repeating its head to ``steps_per_epoch`` whole global batches; the rank's share of
    each is given by ``plan`` (see ``trainer/recipe.py``). ``set_epoch(epoch, start_step=k)``
    begins after ``k`` optimizer steps of the epoch: a resume skips them without loading anything,
    at the same or another world size, because a step is the same global batch at every world size.
    Index lists are built in the main process, so persistent DataLoader workers follow ``set_epoch``.
    """

    def __init__(self, dataset_size: int, *, steps_per_epoch: int, plan: RankPlan, seed: int) -> None:
        self.dataset_size = dataset_size
        self.steps_per_epoch = steps_per_epoch
        self.plan = plan
        self.seed = seed
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step={start_step} is outside the epoch's {self.steps_per_epoch} steps")
        self.epoch, self.start_step = epoch, start_step

    def global_order(self) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.dataset_size, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order, n = self.global_order(), self.dataset_size
        g, w, r = self.plan.global_batch_size, self.plan.world_size, self.plan.rank
        for step in range(self.start_step, self.steps_per_epoch):
            positions = range(step * g + r, (step + 1) * g, w)
            indices = [order[position % n] for position in positions]
            start = 0
            for size in self.plan.micro_batch_sizes:
                yield indices[start:start + size]
                start += size

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.plan.accumulation


class ShardedEvalSampler(Sampler[int]):
    """Rank *r* of *W* gets indices r, r+W, ...: no padding, so nothing is counted twice."""

    def __init__(self, size: int, *, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(dataset: EncodedSplit, sampler: GlobalBatchSampler, *, collator: PadCollator, num_workers: int,
                 seed: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collator, generator=_generator(seed),
                      **_worker_options(num_workers, pin_memory))


def eval_loader(dataset: EncodedSplit, *, batch_size: int, collator: PadCollator, num_replicas: int, rank: int,
                num_workers: int, pin_memory: bool) -> DataLoader:
    sampler = ShardedEvalSampler(len(dataset), num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      generator=_generator(0), **_worker_options(num_workers, pin_memory))


def _worker_options(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """Workers live as long as the loader (no re-fork per epoch or evaluation) and ignore stop signals:
    the training process decides when to stop and shuts them down; a SIGTERM sent to every process
    of a trial (the local backend does) must not kill a worker under a batch and fail the stop."""
    if num_workers == 0:
        return {"num_workers": 0, "pin_memory": pin_memory}
    return {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": True,
            "worker_init_fn": ignore_stop_signals}


def ignore_stop_signals(worker_id: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
