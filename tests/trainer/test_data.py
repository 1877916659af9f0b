"""Data: synthetic set, CSV splits, prepare, dynamic padding and the resumable sharded samplers."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from trainer.config import ConfigError
from trainer.data import GlobalBatchSampler, PadCollator, ShardedEvalSampler, load_csv_splits, load_splits
from trainer.prepare import PrepareConfig, prepare, stratified_split
from trainer.prepare import main as prepare_main
from trainer.recipe import plan_rank
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


def _sampler(size, *, global_batch, world, rank, micro=0, seed=11):
    plan = plan_rank(global_batch_size=global_batch, world_size=world, rank=rank, micro_batch_size=micro)
    return GlobalBatchSampler(size, steps_per_epoch=math.ceil(size / global_batch), plan=plan, seed=seed)


def _steps(sampler):
    """The sampler's micro-batches grouped per optimizer step (its plan's accumulation)."""
    batches = list(sampler)
    a = sampler.plan.accumulation
    return [sum(batches[i:i + a], []) for i in range(0, len(batches), a)]


@pytest.mark.parametrize("size", [37, 40])
def test_resumed_sampler_continues_exactly_where_the_epoch_stopped(size):
    # GIVEN two ranks, global batches of 8 in micro-batches of 2, epoch 3 interrupted after 2 optimizer steps
    full = [_sampler(size, global_batch=8, world=2, rank=r, micro=2) for r in (0, 1)]
    for sampler in full:
        sampler.set_epoch(3)
    uninterrupted = [list(s) for s in full]
    # WHEN resumed at step 2
    resumed = [_sampler(size, global_batch=8, world=2, rank=r, micro=2) for r in (0, 1)]
    for sampler in resumed:
        sampler.set_epoch(3, start_step=2)
    # THEN every rank sees exactly the micro-batches it had not consumed yet (2 steps x 2 micro-batches)
    for rank in (0, 1):
        assert list(resumed[rank]) == uninterrupted[rank][4:]
        assert len(resumed[rank]) == len(full[rank]) - 4


def test_sampler_matches_distributed_sampler_order_when_the_world_divides_the_batch():
    # 48 examples, global batch 12 on 3 ranks: rank r's examples are DistributedSampler's r::3, in order
    theirs = torch.utils.data.DistributedSampler(list(range(48)), num_replicas=3, rank=1, shuffle=True, seed=5)
    theirs.set_epoch(2)
    ours = _sampler(48, global_batch=12, world=3, rank=1, seed=5)
    ours.set_epoch(2)
    assert sum(list(ours), []) == list(theirs)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_an_optimizer_step_is_the_same_global_batch_at_every_world_size(world):
    # GIVEN 30 examples in global batches of 8 (4 steps, the last padded from the head of the order)
    reference = _steps(_sampler(30, global_batch=8, world=1, rank=0))
    # WHEN the ranks of another world size (5 does not divide 8: shares of 2 and 1) take their shares
    per_rank = [_steps(_sampler(30, global_batch=8, world=world, rank=r)) for r in range(world)]
    # THEN each step's examples, all ranks together, are exactly the reference step's
    for step, expected in enumerate(reference):
        assert sorted(sum((steps[step] for steps in per_rank), [])) == sorted(expected)
    order = _sampler(30, global_batch=8, world=1, rank=0).global_order()
    assert sum(reference, []) == order + order[:2]  # every example once, padded to whole global batches


def test_eval_shards_cover_every_example_once():
    shards = [list(ShardedEvalSampler(10, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
