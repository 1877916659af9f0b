"""Metrics from counts equal scikit-learn's on the same predictions; sharding does not change them."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from trainer.evaluate import metrics_from_counts


def _confusion(labels, predicted, classes):
    confusion = torch.zeros(classes, classes, dtype=torch.float64)
    for t, p in zip(labels, predicted, strict=True):
        confusion[t, p] += 1
    return confusion


@pytest.mark.parametrize("labels, predicted", [
    ([0, 1, 2, 2, 1, 0, 0], [0, 2, 2, 1, 1, 0, 1]),
    ([0, 0, 1, 1], [0, 0, 0, 0]),  # a class never predicted
    ([0, 0, 0], [0, 0, 0]),  # classes 1 and 2 absent everywhere
], ids=["mixed", "never-predicted", "absent-classes"])
def test_accuracy_and_macro_f1_match_sklearn(labels, predicted):
    metrics = metrics_from_counts(3.5, _confusion(labels, predicted, 3))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0))
    assert metrics["loss"] == pytest.approx(3.5 / len(labels)) and metrics["examples"] == len(labels)


def test_summed_shards_equal_the_whole_set_not_the_mean_of_shard_means():
    # GIVEN uneven shards (what a 2-rank evaluation of 5 examples gives)
    labels, predicted = [0, 1, 1, 2, 2], [0, 1, 0, 2, 1]
    shard_a, shard_b = _confusion(labels[0::2], predicted[0::2], 3), _confusion(labels[1::2], predicted[1::2], 3)
    # WHEN the counts are summed (the all-reduce)
    summed = metrics_from_counts(1.0 + 4.0, shard_a + shard_b)
    # THEN they equal the single-process numbers, which an average of shard averages would not
    assert summed == metrics_from_counts(5.0, _confusion(labels, predicted, 3))
    mean_of_means = (metrics_from_counts(1.0, shard_a)["accuracy"] + metrics_from_counts(4.0, shard_b)["accuracy"]) / 2
    assert summed["accuracy"] == 0.6 != mean_of_means


def test_empty_evaluation_set_is_an_error():
    with pytest.raises(ValueError, match="evaluation set is empty"):
        metrics_from_counts(0.0, torch.zeros(3, 3))
