"""AWS Lambda entry point: ``dispatcher.lambda_handler.handler``.

Two triggers, one tick:

* the EventBridge schedule (``{"source": "aws.events", ...}``) — a plain tick;
* the SQS event source (``{"Records": [...]}``, ``ReportBatchItemFailures``) — the delivered
  messages are processed as intake first (each on its own: one bad message never fails the batch),
  then a tick tops up immediately. The response lists only the message ids that were *not*
  committed (``batchItemFailures``), so SQS redelivers exactly those. An unparseable body is
  reported as failed and reaches the DLQ after ``maxReceiveCount`` deliveries.

The dispatcher (clients, EKS token) is built once per warm container.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from dispatcher.adapters.queue import Received
from dispatcher.settings import Settings
from dispatcher.report import TickReport
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


def _records(event: dict[str, Any]) -> list[Received]:
    out = []
    for record in event.get("Records", []):
        if record.get("eventSource") != "aws:sqs":
            continue
        out.append(
            Received(
                message_id=record["messageId"],
                receipt=record["receiptHandle"],
                body=record.get("body", ""),
                receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)),
            )
        )
    return out


def handle(event: dict[str, Any], dispatcher: Dispatcher) -> dict[str, Any]:
    """The handler's logic with an injected dispatcher (tests call this)."""
    failures = []
    intake = TickReport()
    for message in _records(event):
        if not dispatcher.process_message(message, intake):
            failures.append({"itemIdentifier": message.message_id})
    report = dispatcher.tick().as_dict()
    for key in ("accepted", "rejected", "duplicates", "dead_letters", "wakes", "cancel_requests"):
        report[key] += getattr(intake, key)
    report["errors"] = intake.errors + report["errors"]
    response: dict[str, Any] = {"report": report}
    if "Records" in event:
        response["batchItemFailures"] = failures
    log.info(json.dumps({"event": "lambda", "failures": len(failures)}))
    return response


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event or {}, _dispatcher())
