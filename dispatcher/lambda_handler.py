"""AWS Lambda entry point: ``dispatcher.lambda_handler.handler``.

Two triggers, one tick:

* the EventBridge schedule (``{"source": "aws.events", ...}``) — a plain tick;
* the SQS event source (``{"Records": [...]}``, ``ReportBatchItemFailures``) — the delivered
  messages are processed as intake first (each on its own: one bad message never fails the batch),
  then a tick tops up immediately. The response lists only the message ids that were *not*
  committed (``batchItemFailures``), so SQS redelivers exactly those. An unparseable body is
  reported as failed and reaches the DLQ after ``maxReceiveCount`` deliveries.
  Only records of the **sweep queue** (told apart by the event source ARN) are parsed; records
  of any other queue — the wake queue — are triggers only: never parsed, always committed (the
  tick is what they ask for), so nothing a trial sends can act as a submit or a cancel.

The dispatcher (clients, EKS token) is built once per warm container.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from dispatcher.adapters.queue import Received
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher
from dispatcher.wiring import build_dispatcher

log = logging.getLogger(__name__)
logging.getLogger().setLevel(os.environ.get("SWEEPQ_LOG_LEVEL", "INFO"))
_DISPATCHER: Dispatcher | None = None


def _dispatcher() -> Dispatcher:
    global _DISPATCHER
    if _DISPATCHER is None:
        _DISPATCHER = build_dispatcher(Settings.load())
    return _DISPATCHER


def _queue_name(arn_or_url: str) -> str:
    return arn_or_url.rstrip("/").rsplit(":", 1)[-1].rsplit("/", 1)[-1]


def _records(event: dict[str, Any], *, sweep_queue: str | None = None) -> tuple[list[Received], int]:
    """The sweep queue's records, and how many came from any other queue (the wake queue).
    Only the sweep queue's bodies are ever parsed: a record from another queue is a trigger,
    whatever its body says (a record without a source ARN is taken as the sweep queue's)."""
    out, wakes = [], 0
    for record in event.get("Records", []):
        if record.get("eventSource") != "aws:sqs":
            continue
        source = str(record.get("eventSourceARN") or "")
        if sweep_queue and source and _queue_name(source) != sweep_queue:
            wakes += 1
            continue
        attributes = record.get("attributes", {})
        out.append(
            Received(
                message_id=record["messageId"],
                receipt=record["receiptHandle"],
                body=record.get("body", ""),
                receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                sender_id=str(attributes.get("SenderId", "")),
            )
        )
    return out, wakes


def handle(event: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    """The handler's logic with an injected dispatcher (tests call this)."""
    failures = []
    intake = TickReport()
    sweep_queue = _queue_name(dispatcher.queue.url) if dispatcher.queue is not None else None
    messages, intake.wakes = _records(event, sweep_queue=sweep_queue)
    for message in messages:
        if not dispatcher.process_message(message, intake):
            failures.append({"itemIdentifier": message.message_id})
    report = dispatcher.tick().as_dict()
    for key in ("accepted", "rejected", "duplicates", "dead_letters", "wakes", "cancel_requests", "pause_requests"):
        report[key] += getattr(intake, key)
    report["errors"] = intake.errors + report["errors"]
    response: dict[str, Any] = {"report": report}
    if "Records" in event:
        response["batchItemFailures"] = failures
    log.info(json.dumps({"event": "lambda", "failures": len(failures)}))
    return response


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event or {}, _dispatcher())
