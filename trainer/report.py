"""Where results go: result.json and predictions.csv, the trial's DynamoDB item, the SQS wake message.

All of it runs on global rank 0 only. Clients are injectable (``client=None`` builds a boto3 client
from the default chain, so ``AWS_ENDPOINT_URL`` points it at moto).

- ``TrialTableReporter`` writes the metrics (the W&B summary keys) to the trial's item with a
  conditional update that only the current attempt can pass; a stale attempt is logged, not
  raised. Progress reports after each epoch only warn on other errors; the final report raises
  them, so the attempt fails visibly (a restart resumes from the final checkpoint and reports again).
- ``send_wake`` tells the dispatcher a trial finished; best effort, never fails training.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from trainer.context import TrialContext
from trainer.evaluate import Prediction

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"
RESULT_SCHEMA = "sweepq.trainer-result/v1"
WAKE_SCHEMA = "sweepq.wake/v1"
# "SET metrics = :m, metrics_at = :t, metrics_attempt = :a" — but METRICS is a DynamoDB reserved
# word, so the attribute is named through a placeholder (same item, same attribute).
UPDATE_EXPRESSION = "SET #metrics = :m, metrics_at = :t, metrics_attempt = :a"
CONDITION_EXPRESSION = "attribute_exists(pk) AND attempt = :a"


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


def trial_key(sweep_id: str, trial_index: int) -> dict[str, dict[str, str]]:
    """The dispatcher's single-table key of a trial item, in DynamoDB's typed form."""
    return {"pk": {"S": f"SWEEP#{sweep_id}"}, "sk": {"S": f"TRIAL#{trial_index:010d}"}}


def metrics_attribute(metrics: dict[str, float]) -> dict[str, Any]:
    """A DynamoDB Map of Numbers; non-finite values (a diverged run's NaN loss) cannot be stored."""
    numbers = {}
    for key, value in metrics.items():
        if not math.isfinite(value):
            logger.warning("metric %s=%s is not finite and is left out of the DynamoDB report", key, value)
            continue
        numbers[key] = {"N": str(Decimal(repr(float(value))))}
    return {"M": numbers}


class TrialTableReporter:
    """Reports metrics to the trial's DynamoDB item, guarded by the attempt number."""

    def __init__(self, context: TrialContext, client: Any = None) -> None:
        if not context.reports_to_table:
            raise ValueError("TrialTableReporter needs SWEEPQ_TABLE, SWEEP_ID and TRIAL_INDEX in the environment")
        self.context = context
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("dynamodb", config=Config(retries={"mode": "standard", "max_attempts": 5}))
        return self._client

    def report(self, metrics: dict[str, float], *, now: float, final: bool) -> bool:
        """True when written; False for a stale attempt (or, before the end, a failed progress report)."""
        from botocore.exceptions import BotoCoreError, ClientError

        ctx = self.context
        assert ctx.table is not None and ctx.sweep_id is not None and ctx.trial_index is not None
        try:
            self.client.update_item(
                TableName=ctx.table,
                Key=trial_key(ctx.sweep_id, ctx.trial_index),
                UpdateExpression=UPDATE_EXPRESSION,
                ConditionExpression=CONDITION_EXPRESSION,
                ExpressionAttributeNames={"#metrics": "metrics"},
                ExpressionAttributeValues={
                    ":m": metrics_attribute(metrics),
                    ":t": {"N": str(int(now))},
                    ":a": {"N": str(ctx.attempt)},
                },
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                logger.warning("trial %s: DynamoDB item missing or attempt is no longer %d (a newer attempt "
                               "owns it): metrics not recorded", ctx.trial_id, ctx.attempt)
                return False
            if final:
                raise
            logger.warning("trial %s: progress report to %s failed: %s", ctx.trial_id, ctx.table, error)
            return False
        except BotoCoreError as error:
            if final:
                raise
            logger.warning("trial %s: progress report to %s failed: %s", ctx.trial_id, ctx.table, error)
            return False
        logger.debug("trial %s: metrics reported to %s (final=%s)", ctx.trial_id, ctx.table, final)
        return True


def wake_body(context: TrialContext, *, ok: bool) -> dict[str, Any]:
    return {
        "schema": WAKE_SCHEMA,
        "event": "trial-finished",
        "sweep_id": context.sweep_id,
        "trial_id": context.trial_id,
        "trial_index": context.trial_index,
        "attempt": context.attempt,
        "ok": ok,
    }


def send_wake(context: TrialContext, *, ok: bool, client: Any = None) -> bool:
    """Send one "trial finished" message to ``SWEEPQ_QUEUE_URL``. Best effort: failures only warn."""
    if context.queue_url is None:
        return False
    request: dict[str, Any] = {"QueueUrl": context.queue_url, "MessageBody": json.dumps(wake_body(context, ok=ok))}
    if context.queue_url.endswith(".fifo"):
        request["MessageGroupId"] = context.sweep_id or "sweepq-wake"
        request["MessageDeduplicationId"] = f"{context.trial_id or 'standalone'}-{context.attempt}-{ok}"
    try:
        if client is None:
            import boto3

            client = boto3.client("sqs")
        client.send_message(**request)
    except Exception as error:  # best effort by contract: the dispatcher also polls on its own schedule
        logger.warning("trial %s: wake message to %s not sent (%s: %s); the dispatcher will notice on its "
                       "next tick", context.trial_id, context.queue_url, type(error).__name__, error)
        return False
    logger.info("trial %s: wake message sent (ok=%s)", context.trial_id, ok)
    return True
