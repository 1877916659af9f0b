"""Data: CSV splits or synthetic headlines, tokenised once, dynamically padded, sharded per rank.

Sampling is what makes exact resume possible:

- ``ResumableDistributedSampler`` is a ``DistributedSampler`` (same seeded permutation per epoch,
  same padding) that can begin an epoch after ``consumed`` samples of the global order. Rank *r*
  takes every *W*-th position, so *k* batches of *B* on every rank consume exactly the next
  ``k * B * W`` positions: a restart skips them without loading or collating anything.
- ``ShardedEvalSampler`` shards without padding, so every evaluation example is counted once and
  the all-reduced metrics equal a single-process evaluation.
- Every DataLoader has its own ``torch.Generator``; otherwise creating an iterator draws from the
  global RNG (DataLoader's base seed) and a resumed run's dropout masks would drift.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from trainer.config import ConfigError, TrainConfig
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


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, padded) that can start an epoch after ``consumed`` samples."""

    def __init__(self, dataset: Dataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.consumed = 0

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Start ``epoch`` after the first ``consumed`` samples of its global order."""
        super().set_epoch(epoch)
        self.consumed = consumed

    def _global_order(self) -> list[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()
        order += order[: self.total_size - len(order)]  # DistributedSampler's padding
        remaining = order[self.consumed:]
        short = -len(remaining) % self.num_replicas  # only when the world size changed mid-epoch
        return remaining + order[:short]

    def __iter__(self) -> Iterator[int]:
        return iter(self._global_order()[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return math.ceil(max(self.total_size - self.consumed, 0) / self.num_replicas)


class ShardedEvalSampler(Sampler[int]):
    """Rank *r* of *W* gets indices r, r+W, ...: no padding, so nothing is counted twice."""

    def __init__(self, size: int, *, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(dataset: EncodedSplit, sampler: Sampler, *, batch_size: int, collator: PadCollator,
                 num_workers: int, seed: int, pin_memory: bool) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, pin_memory=pin_memory, generator=_generator(seed))


def eval_loader(dataset: EncodedSplit, *, batch_size: int, collator: PadCollator, num_replicas: int, rank: int,
                num_workers: int, pin_memory: bool) -> DataLoader:
    sampler = ShardedEvalSampler(len(dataset), num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, pin_memory=pin_memory, generator=_generator(0))


def _generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
