"""The wake queue (CONTRACTS C1): "a trial finished, top up now" triggers from trainers, apart
from the sweep queue. ``client`` is an injected ``boto3.client("sqs")``.

Trials may send to this queue and to nothing else, so whatever is on it is only ever a
*trigger*: a ``sweepq.wake/v1`` body (``{"schema", "event", "sweep_id", "job", "pod"}``) makes
the dispatcher tick; its fields are informational. A body that is anything else (a submit or a
cancel envelope, garbage) is dropped with a warning and never processed — it could only have
come from a trial trying to use the dispatcher's authority.

* :func:`create_wake_queue` — idempotent (``dispatcher bootstrap``; the stack makes its own);
* :meth:`WakeQueue.drain` — receive up to N messages, delete them with DeleteMessageBatch;
* :func:`split_event` — the Lambda path: the records an SQS event source delivered from the wake
  queue become triggers (the event source deletes them once the handler returns them as not
  failed); the other records go on to intake.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.adapters.queue import translate_sqs
from dispatcher.core.errors import SweepqError
from dispatcher.core.identity import is_sweep_id, parse_job_name

log = logging.getLogger(__name__)

WAKE_SCHEMA = "sweepq.wake/v1"
MAX_WAKE_BODY = 2048  # a wake body is ~200 bytes; anything larger is not one
RETENTION_S = 3600  # a trigger older than an hour is worthless: scheduled ticks have run since
VISIBILITY_S = 30
_RECEIVE_MAX = 10  # SQS's ReceiveMessage / DeleteMessageBatch maximum


def _translate(exc: Exception, what: str) -> SweepqError:
    """As the sweep queue's errors (:func:`dispatcher.adapters.queue.translate_sqs`), naming this queue."""
    return translate_sqs(exc, what, missing="the wake queue does not exist — run `dispatcher bootstrap` or set "
                                            "SWEEPQ_WAKE_QUEUE_URL")


class NotAWake(ValueError):
    """A body on the wake queue that is not a wake trigger (the message says why)."""


@dataclass(frozen=True)
class WakeEvent:
    """One trigger. The fields are the sender's word: use them for logs, never for decisions."""

    message_id: str
    event: str
    sweep_id: str | None = None
    job: str | None = None
    pod: str | None = None


@dataclass(frozen=True)
class WakeDrain:
    """What one drain took off the queue: the triggers, how many bodies were dropped as not
    wakes, and how many messages could not be deleted (they come back and are drained again)."""

    wakes: tuple[WakeEvent, ...] = ()
    dropped: int = 0
    not_deleted: int = 0

    @property
    def received(self) -> int:
        return len(self.wakes) + self.dropped


def parse_wake(body: Any, *, message_id: str = "") -> WakeEvent:
    """A ``sweepq.wake/v1`` body → :class:`WakeEvent`; raises :class:`NotAWake` otherwise.
    Fields that are not what the contract says are dropped (``None``), not trusted."""
    if not isinstance(body, str):
        raise NotAWake(f"body is a {type(body).__name__}, not text")
    if len(body.encode("utf-8", "surrogatepass")) > MAX_WAKE_BODY:
        raise NotAWake(f"body is over {MAX_WAKE_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise NotAWake(f"body is not JSON ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise NotAWake(f"body is JSON {type(data).__name__}, not an object")
    schema = data.get("schema")
    if schema != WAKE_SCHEMA:
        raise NotAWake(f"schema {str(schema)[:40]!r} is not {WAKE_SCHEMA!r} — only wake triggers belong on this queue")
    event = data.get("event")
    job, pod, sweep_id = data.get("job"), data.get("pod"), data.get("sweep_id")
    return WakeEvent(
        message_id=message_id,
        event=event[:64] if isinstance(event, str) else "",
        sweep_id=sweep_id if is_sweep_id(sweep_id) else None,
        job=job if isinstance(job, str) and parse_job_name(job) is not None else None,
        pod=pod[:253] if isinstance(pod, str) and pod else None,
    )


def _drop(message_id: str, reason: str) -> None:
    log.warning(json.dumps({"event": "wake-dropped", "message_id": message_id, "reason": reason}))


def create_wake_queue(client: Any, name: str) -> str:
    """Idempotently create the wake queue ``name`` (SSE, an hour's retention, no DLQ: every body
    is consumed, wakes and others alike). Returns its URL; an existing queue is kept as it is."""
    attributes = {"MessageRetentionPeriod": str(RETENTION_S), "VisibilityTimeout": str(VISIBILITY_S),
                  "SqsManagedSseEnabled": "true"}
    try:
        return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("QueueAlreadyExists", "QueueNameExists"):
            raise _translate(exc, f"create wake queue {name!r}") from exc
        log.info("wake queue %s exists with other attributes; kept as it is", name)
    except BotoCoreError as exc:
        raise _translate(exc, f"create wake queue {name!r}") from exc
    try:
        return str(client.get_queue_url(QueueName=name)["QueueUrl"])
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, f"find wake queue {name!r}") from exc


class WakeQueue:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def depth(self) -> int:
        """Messages waiting (a cheap attribute read: ``dispatcher run`` polls it as a wake source)."""
        try:
            attrs = self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"])
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "read the wake queue's depth") from exc
        return int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0))

    def drain(self, *, max_messages: int = 100) -> WakeDrain:
        """Receive up to ``max_messages`` (batches of 10, no long poll) and delete each batch with
        one DeleteMessageBatch. Every body is consumed: wakes are returned, others dropped."""
        wakes: list[WakeEvent] = []
        dropped = not_deleted = 0
        while len(wakes) + dropped < max_messages:
            want = min(_RECEIVE_MAX, max_messages - len(wakes) - dropped)
            try:
                out = self.client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=want, WaitTimeSeconds=0,
                                                  VisibilityTimeout=VISIBILITY_S)
            except (ClientError, BotoCoreError) as exc:
                raise _translate(exc, "receive from the wake queue") from exc
            messages = out.get("Messages", [])
            if not messages:
                break
            for message in messages:
                try:
                    wakes.append(parse_wake(message.get("Body", ""), message_id=message["MessageId"]))
                except NotAWake as exc:
                    dropped += 1
                    _drop(message["MessageId"], str(exc))
            not_deleted += self._delete([m["ReceiptHandle"] for m in messages])
        return WakeDrain(wakes=tuple(wakes), dropped=dropped, not_deleted=not_deleted)

    def _delete(self, receipts: list[str]) -> int:
        entries = [{"Id": str(i), "ReceiptHandle": receipt} for i, receipt in enumerate(receipts)]
        try:
            out = self.client.delete_message_batch(QueueUrl=self.url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "delete wake messages") from exc
        failed = out.get("Failed", [])
        for entry in failed:
            log.warning("wake message not deleted (%s: %s); it is drained again later",
                        entry.get("Code"), entry.get("Message"))
        return len(failed)


def _same_queue(event_source_arn: str, url: str) -> bool:
    """``arn:aws:sqs:<region>:<account>:<name>`` names the queue at ``…/<account>/<name>``."""
    arn = event_source_arn.split(":")
    path = url.rstrip("/").split("/")
    return len(arn) == 6 and len(path) >= 2 and arn[5] == path[-1] and arn[4] == path[-2]


def split_event(event: Mapping[str, Any], *, wake_queue_url: str | None) -> tuple[dict[str, Any], WakeDrain]:
    """Split an SQS event source's event: the records from the wake queue become triggers (the
    handler must not report them as failures: the event source then deletes them); the event
    returned holds the other records, for intake. Without a wake queue nothing is split."""
    records = list(event.get("Records", []) or [])
    if not wake_queue_url:
        return dict(event), WakeDrain()
    rest, wakes, dropped = [], [], 0
    for record in records:
        if record.get("eventSource") == "aws:sqs" and _same_queue(str(record.get("eventSourceARN", "")), wake_queue_url):
            message_id = str(record.get("messageId", ""))
            try:
                wakes.append(parse_wake(record.get("body", ""), message_id=message_id))
            except NotAWake as exc:
                dropped += 1
                _drop(message_id, str(exc))
        else:
            rest.append(record)
    out = dict(event)
    if "Records" in event:
        out["Records"] = rest
    return out, WakeDrain(wakes=tuple(wakes), dropped=dropped)
