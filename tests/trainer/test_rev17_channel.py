"""rev17 — adversarial review of the trainer's metrics channel (issue 17, CONTRACTS C1).

The trainer trains in this process (``training_function``, a tiny model on CPU) and writes its
pod's item into moto's metrics table through the real ``Channel``. DynamoDB being slow is played
by delaying the real client's UpdateItem call (a botocore ``before-parameter-build`` hook at the external
boundary: nothing of the trainer is replaced). A failing test is a finding (see
/work/coord/reports/rev17.md).
"""

from __future__ import annotations

import json
import time

from trainer_support import create_metrics_table, plain_item

from trainer import train
from trainer.channel import MetricsReportError
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.train import exit_code, training_function

TABLE = "rev17-metrics"
JOB = "rev17-1a2b3c4d-0-a1"
POD = f"{JOB}-worker-0"


def _context(root) -> TrialContext:
    return TrialContext.from_env({
        "SWEEP_ID": "rev17-1a2b3c4d", "TRIAL_INDEX": "0", "TRIAL_ID": "rev17-1a2b3c4d-0", "SWEEPQ_ATTEMPT": "1",
        "SWEEPQ_JOB_NAME": JOB, "POD_NAME": POD, "SWEEPQ_METRICS_TABLE": TABLE, "SWEEPQ_OUTPUT_DIR": str(root)})


def test_rev17_a_final_write_that_outlasts_the_flush_timeout_still_exits_0_without_final_metrics(
        aws, tmp_path, tiny, monkeypatch):
    """``train._completed`` calls ``channel.flush(FINAL_FLUSH_S, raise_errors=True)`` and ignores
    its result: on a *timeout* ``flush`` returns False instead of raising, so the process returns
    "completed" (exit 0) while the final write is still in the daemon thread, which dies with the
    process. The job is SUCCEEDED and the dispatcher reads an item that says ``running`` (it then
    records no metrics for ever: tests/review/test_rev17_metrics_tick.py). The channel's docstring
    promises "a failed final write is raised by flush(raise_errors=True) (the attempt fails
    visibly and its restart reports again from the final checkpoint)".

    The time limits are scaled down (120 s → 1 s); DynamoDB taking longer than 120 s for the
    writer's sequence of UpdateItem calls is botocore's standard retry mode (5 attempts, 5 s
    connect + 10 s read timeouts, backoff) against a throttled or unreachable endpoint."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(train, "FINAL_FLUSH_S", 1.0)
    monkeypatch.setattr(train, "STOP_FLUSH_S", 0.5)
    dynamodb = aws.client("dynamodb")
    create_metrics_table(dynamodb, TABLE)

    def slow_final_write(params, **_):
        if json.dumps(params.get("ExpressionAttributeValues", {})).find('"finished"') >= 0:
            time.sleep(4.0)  # DynamoDB throttling / retrying: longer than the (scaled) flush limit

    dynamodb.meta.events.register("before-parameter-build.dynamodb.UpdateItem", slow_final_write)
    try:
        result = training_function(tiny(epochs=1), _context(tmp_path), DistInfo(), dynamodb_client=dynamodb)
    except MetricsReportError:
        return  # the attempt fails visibly (the process exits non-zero; its restart reports again)
    item_when_the_process_exits = plain_item(dynamodb, TABLE, POD)
    # THEN either the attempt fails visibly (raises / non-zero exit) or its final item is written
    finished = item_when_the_process_exits is not None and item_when_the_process_exits["status"] == "finished"
    assert finished or exit_code(result) != 0, (
        f"exit code {exit_code(result)} ({result['status']}) while the item says "
        f"{item_when_the_process_exits and item_when_the_process_exits['status']!r}")
