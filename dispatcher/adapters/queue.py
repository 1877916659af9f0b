"""SQS adapter: the team's sweep queue, its dead-letter queue, and the wake queue. ``client`` is injected.

The **wake queue** (``SWEEPQ_WAKE_QUEUE_URL`` / ``<queue>-wake``) carries only triggers: trainers
send "trial finished" to it; the dispatcher deletes what it receives there without ever parsing
a body, so nothing a trial sends can act as a submit or a cancel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.core.errors import ConfigError, SweepqError, TransientError

log = logging.getLogger(__name__)
DLQ_MAX_RECEIVES = 5  # AWS advises >= 5 for event sources: a few throttled deliveries never dead-letter a valid sweep


@dataclass(frozen=True)
class Received:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sender_id: str = ""  # SQS SenderId (IAM user id / role id:session) of who sent it; C4 groundwork


MISSING_SWEEP_QUEUE = "the queue does not exist — run `dispatcher bootstrap` or set SWEEPQ_QUEUE_URL"


def translate_sqs(exc: Exception, what: str, *, missing: str = MISSING_SWEEP_QUEUE) -> SweepqError:
    """A botocore error → our typed error: throttling/5xx/network → transient (next tick); a queue
    that does not exist → ConfigError with ``missing`` (what to run or set)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or "Throttl" in code or code in ("RequestThrottled", "ServiceUnavailable"):
            return TransientError(f"{what}: SQS {code or status}")
        if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return ConfigError(f"{what}: {missing}")
        return SweepqError(f"{what}: SQS {code}: {exc}")
    return TransientError(f"{what}: {exc}")


def resolve_queue_url(client: Any, *, url: str | None, name: str | None) -> str:
    """``SWEEPQ_QUEUE_URL`` if given, else look up ``SWEEPQ_QUEUE_NAME``."""
    if url:
        return url
    if not name:
        raise ConfigError("no queue: set SWEEPQ_QUEUE_URL (or SWEEPQ_QUEUE_NAME), or pass --queue-url")
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"]
    except (ClientError, BotoCoreError) as exc:
        raise translate_sqs(exc, f"find queue {name!r}") from exc


def find_queue_url(client: Any, name: str) -> str | None:
    """The URL of queue ``name``, or None when it does not exist."""
    try:
        return str(client.get_queue_url(QueueName=name)["QueueUrl"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            return None
        raise translate_sqs(exc, f"find queue {name!r}") from exc
    except BotoCoreError as exc:
        raise translate_sqs(exc, f"find queue {name!r}") from exc


def create_wake_queue(client: Any, name: str) -> str:
    """Idempotently create the wake queue (triggers only: no DLQ, kept for a day). Returns its URL."""
    try:
        return str(client.create_queue(
            QueueName=name, Attributes={"MessageRetentionPeriod": "86400", "SqsManagedSseEnabled": "true"},
        )["QueueUrl"])
    except (ClientError, BotoCoreError) as exc:
        raise translate_sqs(exc, f"create queue {name!r}") from exc


def create_queues(client: Any, name: str, *, visibility_timeout: int = 300) -> tuple[str, str]:
    """Idempotently create ``name`` and ``name-dlq`` with a redrive policy. Returns both URLs."""
    try:
        dlq_url = client.create_queue(
            QueueName=f"{name}-dlq",
            Attributes={"MessageRetentionPeriod": "1209600", "SqsManagedSseEnabled": "true"},
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = client.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(visibility_timeout),
                "ReceiveMessageWaitTimeSeconds": "20",
                "SqsManagedSseEnabled": "true",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(DLQ_MAX_RECEIVES)}),
            },
        )["QueueUrl"]
    except (ClientError, BotoCoreError) as exc:
        raise translate_sqs(exc, f"create queue {name!r}") from exc
    return url, dlq_url


class Queue:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def send(self, body: str, *, dedup_id: str | None = None) -> str:
        try:
            return self.client.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"]
        except (ClientError, BotoCoreError) as exc:
            raise translate_sqs(exc, "send to the sweep queue") from exc

    def receive(self, *, max_messages: int = 10, wait_s: int = 0, visibility_s: int | None = None) -> list[Received]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_s,
            "MessageSystemAttributeNames": ["All"],
        }
        if visibility_s is not None:
            kwargs["VisibilityTimeout"] = visibility_s
        try:
            out = self.client.receive_message(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate_sqs(exc, "receive from the sweep queue") from exc
        return [
            Received(
                message_id=m["MessageId"],
                receipt=m["ReceiptHandle"],
                body=m.get("Body", ""),
                receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                sender_id=str(m.get("Attributes", {}).get("SenderId", "")),
            )
            for m in out.get("Messages", [])
        ]

    def delete(self, receipt: str) -> None:
        try:
            self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
        except (ClientError, BotoCoreError) as exc:
            raise translate_sqs(exc, "delete a processed message") from exc

    def drain_triggers(self, *, max_batches: int = 10) -> int:
        """Receive and delete what is on this (wake) queue without parsing it; returns how many.
        Each trigger only asks for a tick, and this is one."""
        drained = 0
        for _ in range(max_batches):
            batch = self.receive(max_messages=10, wait_s=0)
            for message in batch:
                self.delete(message.receipt)
            drained += len(batch)
            if len(batch) < 10:
                break
        return drained
