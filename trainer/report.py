"""The run's files, written by global rank 0: ``result.json``, ``predictions.csv``, ``train_log.jsonl``.

``result.json`` says how the run ended: ``status`` ``completed``, or ``stopped`` / ``preempted``
(a graceful stop on SIGTERM: the checkpoint is at ``global_step``, ``resumable`` is true), with
the metrics, the evaluation history and the recipe. ``train_log.jsonl`` has one line per
``--log_every`` optimizer steps (step, learning rate, training loss, world size) for runs without
W&B. The trial's metrics for the dispatcher go through ``trainer/channel.py``, never here.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.evaluate import Prediction

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"
TRAIN_LOG_FILE = "train_log.jsonl"
RESULT_SCHEMA = "sweepq.trainer-result/v2"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    text = json.dumps(_finite_or_null(payload), indent=2, sort_keys=True, allow_nan=False)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _finite_or_null(value: Any) -> Any:
    """JSON has no NaN: a diverged run's NaN loss is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def write_predictions(path: Path, predictions: Sequence[Prediction], *, texts: Sequence[str],
                      label_names: Sequence[str]) -> None:
    """One row per test example: its index and text, true and predicted label, class probabilities."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "text", "label", "predicted", "confidence", *(f"p_{n}" for n in label_names)])
        for p in predictions:
            writer.writerow([p.index, texts[p.index], label_names[p.label], label_names[p.predicted],
                             f"{max(p.probabilities):.6f}", *(f"{q:.6f}" for q in p.probabilities)])
    os.replace(tmp, path)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (the step log); a restart's replayed steps appear again, the last one counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(_finite_or_null(record), sort_keys=True, allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
