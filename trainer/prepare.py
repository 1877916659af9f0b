"""``trainer prepare``: a raw labelled CSV → a seeded, stratified train/validation/test split.

    python -m trainer.prepare --input=raw.csv --output_dir=data/headlines \\
        --text_column=headline --label_column=sentiment --validation_fraction=0.1 --test_fraction=0.1

Writes ``train.csv``, ``validation.csv``, ``test.csv`` (columns ``text``, ``label``) and
``labels.json`` (label names in id order) — the directory ``trainer --data=...`` reads. Rows with
an empty text or label are dropped and counted. Each label is split in the same proportions, so
rare classes appear in every split; the same input and seed always give the same files.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import ConfigError, parse_args, usage
from trainer.data import LABELS_FILE, SPLITS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    """Split a raw labelled CSV into train/validation/test for `trainer --data=DIR`."""

    input: str = field(metadata={"help": "raw CSV with a text column and a label column"})
    output_dir: str = field(metadata={"help": "directory to write train.csv, validation.csv, test.csv, labels.json"})
    text_column: str = field(default="text", metadata={"help": "name of the text column"})
    label_column: str = field(default="label", metadata={"help": "name of the label column"})
    validation_fraction: float = field(default=0.1, metadata={"help": "share of each label for validation"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of each label for test"})
    seed: int = field(default=42, metadata={"help": "seed of the shuffle"})

    def __post_init__(self) -> None:
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"--{name}={getattr(self, name)!r} is out of range: expected a fraction in (0, 1)")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ConfigError(f"--validation_fraction + --test_fraction = "
                              f"{self.validation_fraction + self.test_fraction:g} leaves no training data: keep it < 1")


def stratified_split(rows: list[tuple[str, str]], *, validation_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, list[tuple[str, str]]]:
    """Split (text, label) rows per label in the given proportions. Purely computational."""
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        by_label[row[1]].append(row)
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        members = by_label[label]
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction)
        n_validation = round(len(members) * validation_fraction)
        splits["test"] += members[:n_test]
        splits["validation"] += members[n_test:n_test + n_validation]
        splits["train"] += members[n_test + n_validation:]
    for members in splits.values():
        rng.shuffle(members)
    return splits


def read_raw(path: Path, *, text_column: str, label_column: str) -> tuple[list[tuple[str, str]], int]:
    """(text, label) rows and the number of rows dropped for an empty text or label."""
    if not path.is_file():
        raise ConfigError(f"--input={str(path)!r} is not a file: give the raw labelled CSV")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for option, column in (("text_column", text_column), ("label_column", label_column)):
            if column not in columns:
                raise ConfigError(f"--{option}={column!r} is not a column of {path}: it has {columns}")
        rows, dropped = [], 0
        for record in reader:
            text, label = (record.get(text_column) or "").strip(), (record.get(label_column) or "").strip()
            if text and label:
                rows.append((text, label))
            else:
                dropped += 1
    return rows, dropped


def prepare(config: PrepareConfig) -> dict[str, dict[str, int]]:
    """Read, split and write; returns the row count per split and label."""
    rows, dropped = read_raw(Path(config.input), text_column=config.text_column, label_column=config.label_column)
    if not rows:
        raise ConfigError(f"{config.input} has no rows with both {config.text_column!r} and {config.label_column!r}")
    splits = stratified_split(rows, validation_fraction=config.validation_fraction,
                              test_fraction=config.test_fraction, seed=config.seed)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for name, members in splits.items():
        with (output / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(members)
    (output / LABELS_FILE).write_text(json.dumps(sorted({label for _, label in rows})) + "\n", encoding="utf-8")
    counts = {name: dict(sorted(Counter(label for _, label in members).items())) for name, members in splits.items()}
    logger.info("prepared %s from %s (%d rows, %d dropped): %s", output, config.input, len(rows), dropped, counts)
    return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage(PrepareConfig, prog="trainer prepare"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        counts = prepare(parse_args(argv, PrepareConfig))
    except ConfigError as error:
        print(f"trainer prepare: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(counts, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
