"""Data: synthetic set, CSV splits, prepare, dynamic padding and the resumable sharded samplers."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from trainer.config import ConfigError
from trainer.data import (PadCollator, ResumableDistributedSampler, ShardedEvalSampler, load_csv_splits,
                          load_splits)
from trainer.prepare import PrepareConfig, main as prepare_main, prepare, stratified_split
from trainer.synthetic import LABEL_NAMES, synthetic_examples, synthetic_splits


def test_synthetic_is_deterministic_balanced_and_seeded():
    assert synthetic_examples(200, seed=1) == synthetic_examples(200, seed=1)
    assert synthetic_examples(200, seed=1) != synthetic_examples(200, seed=2)
    counts = Counter(label for _, label in synthetic_examples(3000, seed=1))
    assert set(counts) == {0, 1, 2} and min(counts.values()) > 900


def test_synthetic_splits_are_80_10_10_and_disjoint_slices():
    splits = synthetic_splits(1000, seed=5)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [800, 100, 100]
    assert splits["train"] + splits["validation"] + splits["test"] == synthetic_examples(1000, seed=5)


def _write_split_dir(directory: Path, rows: dict[str, list[tuple[str, str]]], labels: list[str] | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, members in rows.items():
        with (directory / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(members)
    if labels is not None:
        (directory / "labels.json").write_text(json.dumps(labels))


def test_csv_directory_with_label_names(tmp_path, tiny):
    rows = {"train": [("up", "positive"), ("down", "negative")], "validation": [("flat", "neutral")],
            "test": [("up up", "positive")]}
    _write_split_dir(tmp_path, rows, ["negative", "neutral", "positive"])
    splits = load_splits(tiny(data=str(tmp_path)))
    assert splits.label_names == ("negative", "neutral", "positive")
    assert splits.train.labels == [2, 0] and splits.validation.labels == [1]


def test_csv_directory_with_integer_labels_and_no_labels_file(tmp_path):
    _write_split_dir(tmp_path, {"train": [("a", "0"), ("b", "2")], "validation": [("c", "1")],
                                "test": [("d", "0")]}, None)
    splits = load_csv_splits(tmp_path)
    assert splits.label_names == ("0", "1", "2") and splits.train.labels == [0, 2]


@pytest.mark.parametrize("breakage, fragment", [
    ("missing-file", "test.csv is missing"),
    ("bad-column", "columns ['label'] missing"),
    ("unknown-label", "labels ['bullish'] are not in labels.json"),
])
def test_csv_directory_errors_name_the_file_and_fix(tmp_path, breakage, fragment):
    rows = {"train": [("up", "positive")], "validation": [("x", "negative")], "test": [("y", "positive")]}
    if breakage == "unknown-label":
        rows["test"] = [("y", "bullish")]
    _write_split_dir(tmp_path, rows, ["negative", "positive"])
    if breakage == "missing-file":
        (tmp_path / "test.csv").unlink()
    if breakage == "bad-column":
        (tmp_path / "test.csv").write_text("text,sentiment\nhello,positive\n")
    with pytest.raises(ConfigError) as error:
        load_csv_splits(tmp_path)
    assert fragment in str(error.value)


def test_data_that_is_not_a_directory(tmp_path, tiny):
    with pytest.raises(ConfigError, match="is not a directory"):
        load_splits(tiny(data=str(tmp_path / "nope")))


def test_stratified_split_keeps_label_proportions_and_is_seeded():
    rows = [(f"text {i}", "rare" if i % 10 == 0 else "common") for i in range(500)]
    splits = stratified_split(rows, validation_fraction=0.2, test_fraction=0.2, seed=7)
    assert splits == stratified_split(rows, validation_fraction=0.2, test_fraction=0.2, seed=7)
    for name, expected_rare in (("train", 30), ("validation", 10), ("test", 10)):
        assert Counter(label for _, label in splits[name])["rare"] == expected_rare
    assert sorted(sum(splits.values(), [])) == sorted(rows)


def test_prepare_writes_a_directory_the_trainer_reads(tmp_path):
    # GIVEN a raw CSV with other column names and some empty rows
    raw = tmp_path / "raw.csv"
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "headline", "sentiment"])
        for i, (text, label) in enumerate(synthetic_examples(200, seed=3)):
            writer.writerow([i, text, LABEL_NAMES[label]])
        writer.writerow([999, "", "positive"])
    # WHEN prepared through the CLI
    out = tmp_path / "data"
    assert prepare_main([f"--input={raw}", f"--output_dir={out}", "--text_column=headline",
                         "--label_column=sentiment"]) == 0
    # THEN the trainer loads it with the label names in order
    splits = load_csv_splits(out)
    assert splits.label_names == LABEL_NAMES
    assert len(splits.train.texts) + len(splits.validation.texts) + len(splits.test.texts) == 200


def test_prepare_names_a_wrong_column(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("headline,sentiment\nup,positive\n")
    with pytest.raises(ConfigError, match="--text_column='text' is not a column"):
        prepare(PrepareConfig(input=str(raw), output_dir=str(tmp_path / "o")))
    assert prepare_main([f"--input={raw}"]) == 2  # --output_dir is required


def test_collator_pads_each_batch_to_its_own_longest():
    collate = PadCollator(pad_token_id=0)
    batch = collate([(4, [2, 7, 3], 1), (9, [2, 3], 0)])
    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["index"].tolist() == [4, 9]
    assert PadCollator(0, pad_to_multiple_of=8)([(0, [1, 2, 3], 0)])["input_ids"].shape == (1, 8)


def _batches(sampler, batch_size):
    indices = list(sampler)
    return [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]


@pytest.mark.parametrize("size", [37, 40])
def test_resumed_sampler_continues_exactly_where_the_epoch_stopped(size):
    # GIVEN two ranks, batches of 4, epoch 3 interrupted after 2 batches on every rank
    dataset = list(range(size))
    full = [ResumableDistributedSampler(dataset, num_replicas=2, rank=r, seed=11) for r in (0, 1)]
    for sampler in full:
        sampler.set_epoch(3)
    uninterrupted = [_batches(s, 4) for s in full]
    # WHEN resumed with the global samples consumed so far (2 batches x 4 x 2 ranks)
    resumed = [ResumableDistributedSampler(dataset, num_replicas=2, rank=r, seed=11) for r in (0, 1)]
    for sampler in resumed:
        sampler.set_epoch(3, consumed=2 * 4 * 2)
    # THEN every rank sees exactly the batches it had not consumed yet
    for rank in (0, 1):
        assert _batches(resumed[rank], 4) == uninterrupted[rank][2:]
        assert len(resumed[rank]) == len(full[rank]) - 8


def test_resumable_sampler_matches_torch_distributed_sampler_order():
    dataset = list(range(23))
    ours = ResumableDistributedSampler(dataset, num_replicas=3, rank=1, seed=5)
    theirs = torch.utils.data.DistributedSampler(dataset, num_replicas=3, rank=1, shuffle=True, seed=5)
    ours.set_epoch(2)
    theirs.set_epoch(2)
    assert list(ours) == list(theirs)


def test_resume_with_another_world_size_still_covers_the_rest_of_the_epoch():
    # GIVEN an epoch of 30 started on 2 ranks, 8 samples of its global order consumed
    dataset = list(range(30))
    two = [list(ResumableDistributedSampler(dataset, num_replicas=2, rank=r, seed=1)) for r in (0, 1)]
    global_order = [index for pair in zip(*two) for index in pair]
    # WHEN resumed on 3 ranks
    after = [ResumableDistributedSampler(dataset, num_replicas=3, rank=r, seed=1) for r in range(3)]
    for sampler in after:
        sampler.set_epoch(0, consumed=8)
    seen = [index for sampler in after for index in sampler]
    # THEN every unconsumed sample is seen once, plus DistributedSampler-style padding from the
    # head of the order (2 samples) so the 3 ranks get equal shares
    assert sorted(seen) == sorted(global_order[8:] + global_order[:2])
    assert len(seen) == 3 * len(after[0])


def test_eval_shards_cover_every_example_once():
    shards = [list(ShardedEvalSampler(10, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
