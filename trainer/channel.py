"""The trial metrics channel (CONTRACTS C1): this pod's item in the metrics table, and wake triggers.

Trials never write the dispatcher's sweep table. On every pod the process with ``LOCAL_RANK`` 0
writes the item keyed by its own ``POD_NAME`` in ``SWEEPQ_METRICS_TABLE``, with exactly the
attributes the trainer's IAM policy allows (``ATTRIBUTES``); evaluation metrics are all-reduced,
so every pod's item holds the same values. Global rank 0 also sends ``sweepq.wake/v1`` triggers to
``SWEEPQ_WAKE_QUEUE_URL``, always *after* its item write, so a woken dispatcher reads the new item.
Without ``POD_NAME`` or the table (a plain local run) nothing is written and training is unchanged.

``history`` maps the evaluation position (0-based, over the trial's whole life: ``recipe.py``) to
that evaluation's values. It is restored from the checkpoint, so a restart (torchrun's, or the pod
container's, same attempt) re-writes the same positions with the same meaning. The guard that
position never goes backwards for an attempt is a condition on the item itself — the IAM policy
grants ``PutItem``/``UpdateItem`` only, no reads:

- first write of a process: ``SET history = :all`` if the item is new, or has this attempt and at
  most as many positions (``size(history) <= :n``); a restarted process that is behind the item
  (it resumed from an older checkpoint) leaves it alone until it has caught up;
- later writes append: ``SET history.#p = :point`` only if the item still has exactly the
  positions this process wrote (``size(history) = :synced``), else the full write again;
- a stop or failure marker that finds the item ahead still sets ``status`` (``attempt = :a``).

Numbers are DynamoDB numbers; NaN/inf are written as NULL. Writes happen on a background thread
(one pending snapshot, newest wins: each snapshot is the whole state), so a slow or throttled
DynamoDB never stalls the GPUs; ``flush`` waits for the last one. Progress writes that fail only
warn; a failed final write is raised by ``flush(raise_errors=True)`` (the attempt fails visibly
and its restart reports again from the final checkpoint).

Wake triggers: ``trial-progress`` after a new history position (at most one per
``WAKE_MIN_INTERVAL_S``, the dispatcher's Hyperband check needs no more), and always
``trial-finished`` / ``trial-stopped`` / ``trial-failed``. Best effort: the dispatcher also ticks
on its own schedule.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trainer.context import TrialContext

logger = logging.getLogger(__name__)

ATTRIBUTES = ("pod", "job", "trial_id", "attempt", "world_size", "metrics", "history", "status", "final",
              "updated_at")
STATUSES = ("running", "finished", "stopped", "preempted", "failed")
WAKE_SCHEMA = "sweepq.wake/v1"
WAKE_MIN_INTERVAL_S = 30.0
_SMALLEST = Decimal("1e-130")  # DynamoDB numbers: magnitudes from 1e-130 to 1e125
_NAMES = {f"#{name}": name for name in ATTRIBUTES}


@dataclass(frozen=True)
class Snapshot:
    """Everything this pod's item should say now (each write carries the whole state)."""

    status: str
    metrics: Mapping[str, float]
    history: Sequence[Mapping[str, float]]
    world_size: int
    final: Mapping[str, float] | None = None
    wake: str | None = None  # wake event to send after the write (global rank 0 only)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}")


def number(value: float) -> dict[str, Any]:
    """A DynamoDB number, or NULL for NaN/inf; magnitudes below DynamoDB's smallest become 0."""
    value = float(value)
    if not math.isfinite(value):
        return {"NULL": True}
    decimal = Decimal(repr(value))
    if decimal != 0 and abs(decimal) < _SMALLEST:
        decimal = Decimal(0)
    return {"N": str(decimal)}


def number_map(values: Mapping[str, float]) -> dict[str, Any]:
    return {"M": {str(key): number(value) for key, value in values.items()}}


def history_map(history: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    return {"M": {str(position): number_map(point) for position, point in enumerate(history)}}


class MetricsTableWriter:
    """Synchronous writes of this pod's item. ``write`` returns ``written`` / ``behind`` / ``marked``."""

    def __init__(self, context: TrialContext, *, client: Any = None) -> None:
        if not context.publishes_metrics:
            raise ValueError("MetricsTableWriter needs POD_NAME and SWEEPQ_METRICS_TABLE in the environment")
        self.context = context
        self._client = client
        self.synced: int | None = None  # positions the item is known to hold from this process

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("dynamodb", config=Config(
                retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=10))
        return self._client

    def write(self, snapshot: Snapshot, *, now: float) -> str:
        from botocore.exceptions import ClientError

        n = len(snapshot.history)
        if self.synced is not None and self.synced <= n:
            try:
                self._update(snapshot, now=now, positions=range(self.synced, n),
                             condition="#attempt = :a AND size(#history) = :synced", synced=self.synced)
                self.synced = n
                return "written"
            except ClientError as error:
                if _code(error) != "ConditionalCheckFailedException":
                    raise
                self.synced = None
        try:
            self._update(snapshot, now=now, positions=None,
                         condition="attribute_not_exists(#pod) OR (#attempt = :a AND size(#history) <= :n)")
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
        else:
            self.synced = n
            return "written"
        if snapshot.status == "running":
            logger.info("pod %s: the metrics item is ahead of this process (it resumed from an older checkpoint); "
                        "left as it is until this run catches up", self.context.pod_name)
            return "behind"
        return self._mark(snapshot.status, now=now)

    def _update(self, snapshot: Snapshot, *, now: float, positions: range | None, condition: str,
                synced: int | None = None) -> None:
        ctx = self.context
        values: dict[str, Any] = {
            ":trial": {"S": ctx.trial_id or ""}, ":a": {"N": str(ctx.attempt)},
            ":w": {"N": str(snapshot.world_size)}, ":m": number_map(snapshot.metrics),
            ":s": {"S": snapshot.status}, ":t": {"N": str(int(now))},
        }
        assignments = ["#trial_id = :trial", "#attempt = :a", "#world_size = :w", "#metrics = :m",
                       "#status = :s", "#updated_at = :t"]
        names: dict[str, str] = {}
        if ctx.job_name:
            assignments.append("#job = :job")
            values[":job"] = {"S": ctx.job_name}
        if positions is None:
            assignments.append("#history = :h")
            values[":h"] = history_map(snapshot.history)
            values[":n"] = {"N": str(len(snapshot.history))}
        else:
            for position in positions:
                assignments.append(f"#history.#p{position} = :p{position}")
                names[f"#p{position}"] = str(position)
                values[f":p{position}"] = number_map(snapshot.history[position])
            values[":synced"] = {"N": str(synced)}
        if snapshot.final is not None:
            assignments.append("#final = :f")
            values[":f"] = number_map(snapshot.final)
        expression = "SET " + ", ".join(assignments)
        used = set(re.findall(r"#\w+", expression + " " + condition))
        names.update({key: value for key, value in _NAMES.items() if key in used})
        self.client.update_item(
            TableName=ctx.metrics_table, Key={"pod": {"S": ctx.pod_name}}, UpdateExpression=expression,
            ConditionExpression=condition, ExpressionAttributeNames=names, ExpressionAttributeValues=values)

    def _mark(self, status: str, *, now: float) -> str:
        """Only ``status`` and ``updated_at`` on an item that is ahead of this process (same attempt)."""
        from botocore.exceptions import ClientError

        ctx = self.context
        try:
            self.client.update_item(
                TableName=ctx.metrics_table, Key={"pod": {"S": ctx.pod_name}},
                UpdateExpression="SET #status = :s, #updated_at = :t", ConditionExpression="#attempt = :a",
                ExpressionAttributeNames={"#status": "status", "#updated_at": "updated_at", "#attempt": "attempt"},
                ExpressionAttributeValues={":s": {"S": status}, ":t": {"N": str(int(now))},
                                           ":a": {"N": str(ctx.attempt)}})
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
            logger.warning("pod %s: the metrics item belongs to another attempt than %d: %s not recorded",
                           ctx.pod_name, ctx.attempt, status)
            return "stale"
        return "marked"


def wake_body(context: TrialContext, event: str) -> dict[str, Any]:
    return {"schema": WAKE_SCHEMA, "event": event, "sweep_id": context.sweep_id, "job": context.job_name,
            "pod": context.pod_name}


def send_wake(context: TrialContext, event: str, *, client: Any = None) -> bool:
    """One trigger to ``SWEEPQ_WAKE_QUEUE_URL``. Best effort: failures only warn."""
    if context.wake_queue_url is None:
        return False
    request: dict[str, Any] = {"QueueUrl": context.wake_queue_url, "MessageBody": json.dumps(wake_body(context, event))}
    if context.wake_queue_url.endswith(".fifo"):
        request["MessageGroupId"] = context.sweep_id or "sweepq-wake"
        request["MessageDeduplicationId"] = f"{context.pod_name or context.trial_id or 'standalone'}-{event}"[:128]
    try:
        if client is None:
            import boto3

            client = boto3.client("sqs")
        client.send_message(**request)
    except Exception as error:  # best effort by contract: the dispatcher also ticks on its own schedule
        logger.warning("trial %s: wake message (%s) to %s not sent (%s: %s); the dispatcher will notice on its next "
                       "tick", context.trial_id, event, context.wake_queue_url, type(error).__name__, error)
        return False
    logger.info("trial %s: wake message sent (%s)", context.trial_id, event)
    return True


@dataclass
class _Outcome:
    ok: bool = True
    error: BaseException | None = None


@dataclass
class Channel:
    """Background publisher: ``publish`` hands over a snapshot, a thread writes it, then wakes."""

    context: TrialContext
    writer: MetricsTableWriter | None
    wakes: bool  # global rank 0 sends the wake triggers
    clock: Callable[[], float]
    sqs_client: Any = None
    _pending: Snapshot | None = field(default=None, init=False)
    _busy: bool = field(default=False, init=False)
    _outcome: _Outcome = field(default_factory=_Outcome, init=False)
    _last_progress_wake: float | None = field(default=None, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    @classmethod
    def for_process(cls, context: TrialContext, *, local_rank: int, is_main: bool, clock: Callable[[], float],
                    dynamodb_client: Any = None, sqs_client: Any = None) -> Channel | None:
        """The channel of this process: LOCAL_RANK 0 writes its pod's item, global rank 0 also wakes."""
        writer = MetricsTableWriter(context, client=dynamodb_client) \
            if local_rank == 0 and context.publishes_metrics else None
        wakes = is_main and context.wake_queue_url is not None
        if writer is None and not wakes:
            return None
        if writer is not None and not context.job_name:
            logger.warning("POD_NAME is set but SWEEPQ_JOB_NAME is not: the metrics item has no job and the "
                           "dispatcher cannot match it to its job")
        return cls(context=context, writer=writer, wakes=wakes, clock=clock, sqs_client=sqs_client)

    def publish(self, snapshot: Snapshot) -> None:
        if snapshot.wake == "trial-progress" and self.wakes:
            now = self.clock()
            if self._last_progress_wake is not None and now - self._last_progress_wake < WAKE_MIN_INTERVAL_S:
                snapshot = dataclasses.replace(snapshot, wake=None)
            else:
                self._last_progress_wake = now
        with self._cond:
            if self._closed:
                raise RuntimeError("the metrics channel is closed")
            pending = self._pending
            if pending is not None and pending.wake and not snapshot.wake:
                snapshot = dataclasses.replace(snapshot, wake=pending.wake)  # a trigger is never dropped
            self._pending = snapshot
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sweepq-metrics", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None, *, raise_errors: bool = False) -> bool:
        """Wait until every published snapshot is written; False on timeout or a failed last write
        (``raise_errors``: both raise :class:`MetricsReportError` instead, so the attempt fails visibly)."""
        with self._cond:
            done = self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout=timeout)
            outcome = self._outcome
        if not done:
            if raise_errors:  # the final write may still be in flight: the attempt must not end as if it landed
                raise MetricsReportError(f"pod {self.context.pod_name}: the final metrics write to "
                                         f"{self.context.metrics_table} did not finish within {timeout or 0:.0f} s")
            logger.warning("metrics channel: not flushed within %.0f s", timeout or 0)
            return False
        if raise_errors and outcome.error is not None:
            raise MetricsReportError(f"pod {self.context.pod_name}: the final metrics write to "
                                     f"{self.context.metrics_table} failed: {outcome.error}") from outcome.error
        return outcome.ok

    def close(self, timeout: float | None = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                snapshot, self._pending, self._busy = self._pending, None, True
            outcome = self._deliver(snapshot)
            with self._cond:
                self._outcome, self._busy = outcome, False
                self._cond.notify_all()

    def _deliver(self, snapshot: Snapshot) -> _Outcome:
        outcome = _Outcome()
        if self.writer is not None:
            try:
                self.writer.write(snapshot, now=self.clock())
            except Exception as error:  # reported through flush(); progress writes only warn
                logger.warning("pod %s: metrics write (%s) to %s failed: %s", self.context.pod_name, snapshot.status,
                               self.context.metrics_table, error)
                outcome = _Outcome(ok=False, error=error)
        if self.wakes and snapshot.wake:
            send_wake(self.context, snapshot.wake, client=self.sqs_client)
        return outcome


class MetricsReportError(RuntimeError):
    """The final metrics of a trial could not be written."""


def _code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))
