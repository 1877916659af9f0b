"""Sharded evaluation with globally correct metrics.

Each rank evaluates its shard (``ShardedEvalSampler``: every example exactly once) and keeps sums,
not averages: the summed loss, the example count and the confusion matrix. One all-reduce of those
counts gives every rank the same loss, accuracy and macro F1 as a single-process evaluation of the
whole set — never an average of per-batch or per-rank averages.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainer.distributed import DistInfo, all_gather_object, all_reduce_sum


@dataclass(frozen=True)
class Prediction:
    index: int
    label: int
    predicted: int
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]  # loss, accuracy, f1 (macro), examples
    predictions: list[Prediction] = field(default_factory=list)  # all ranks', sorted by index, if collected


def metrics_from_counts(loss_sum: float, confusion: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and macro F1 from summed loss and a confusion matrix ``[true, predicted]``.

    Purely computational. Macro F1 averages per-class F1 = 2TP / (2TP + FP + FN) over the classes
    that occur in the labels or the predictions (as scikit-learn does with its default labels).
    """
    confusion = confusion.to(torch.float64)
    examples = float(confusion.sum())
    if examples == 0:
        raise ValueError("evaluation set is empty: no metrics can be computed")
    true_positive = confusion.diagonal()
    false_positive = confusion.sum(dim=0) - true_positive
    false_negative = confusion.sum(dim=1) - true_positive
    denominator = 2 * true_positive + false_positive + false_negative
    present = denominator > 0
    f1 = (2 * true_positive[present] / denominator[present]).mean()
    return {
        "loss": loss_sum / examples,
        "accuracy": float(true_positive.sum()) / examples,
        "f1": float(f1),
        "examples": examples,
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, *, num_labels: int, dist: DistInfo,
             autocast: contextlib.AbstractContextManager | None = None,
             collect_predictions: bool = False) -> EvalResult:
    """Evaluate ``model`` (the unwrapped module: no collectives in its forward) on this rank's shard."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=dist.device)
    confusion = torch.zeros((num_labels, num_labels), dtype=torch.float64, device=dist.device)
    local_predictions: list[Prediction] = []
    for batch in loader:
        batch = {key: value.to(dist.device, non_blocking=True) for key, value in batch.items()}
        with autocast or contextlib.nullcontext():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits = logits.float()
        labels = batch["labels"]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").to(torch.float64)
        predicted = logits.argmax(dim=-1)
        confusion.index_put_((labels, predicted), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
        if collect_predictions:
            probabilities = logits.softmax(dim=-1).cpu().tolist()
            for index, label, guess, probs in zip(batch["index"].tolist(), labels.tolist(), predicted.tolist(),
                                                  probabilities, strict=True):
                local_predictions.append(Prediction(index, label, guess, tuple(probs)))
    counts = all_reduce_sum(torch.cat([loss_sum.reshape(1), confusion.flatten()]), dist).cpu()
    metrics = metrics_from_counts(float(counts[0]), counts[1:].reshape(num_labels, num_labels))
    predictions: list[Prediction] = []
    if collect_predictions:
        gathered = all_gather_object(local_predictions, dist)
        predictions = sorted((p for part in gathered for p in part), key=lambda p: p.index)
    model.train(was_training)
    return EvalResult(metrics, predictions)
