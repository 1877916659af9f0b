"""Intake: SQS messages → sweeps in DynamoDB. Each message on its own; deleted only once committed.

* a valid sweep is put with ``attribute_not_exists`` (META + SPEC), *then* its message is deleted —
  a duplicate delivery or a resubmission with the same token hits the condition and is just deleted;
* an invalid one (spec, launch settings, a kind not enabled here, a job that cannot be rendered)
  is stored as REJECTED with the reason, then deleted;
* a body that is not a sweepq envelope is left alone: SQS redrives it into the DLQ;
* a transient error leaves the message for a later tick. One bad message never blocks the others.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

from dispatcher.adapters.queue import Queue, Received
from dispatcher.adapters.store import Store, sweep_key
from dispatcher.core.errors import Conflict, MessageError, PermanentError, SpecError, SweepqError, TransientError
from dispatcher.core.jobs import Backend
from dispatcher.core.launch import redact_secret_env
from dispatcher.core.message import CancelMessage, SubmitMessage, WakeMessage, decode
from dispatcher.core.records import SweepState
from dispatcher.core.spec import validate_launch, validate_sweep
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from dispatcher.trials import launch_request

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, *, settings: Settings, store: Store, queue: Queue | None, backends: Mapping[str, Backend],
                 clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backends = backends
        self.clock = clock

    def drain(self, report: TickReport) -> None:
        """Drain the queue in batches of 10 until empty or the time budget is spent."""
        assert self.queue is not None
        deadline = self.clock() + self.settings.intake_budget_s
        seen: set[str] = set()
        while self.clock() < deadline:
            try:
                batch = self.queue.receive(max_messages=10, wait_s=0)
            except TransientError as exc:
                report.errors.append(f"intake: {exc}")
                return
            fresh = [m for m in batch if m.message_id not in seen]
            if not fresh:
                return  # empty, or only messages we already left for the DLQ this tick
            for message in fresh:
                seen.add(message.message_id)
                self.process_message(message, report)

    def process_message(self, message: Received, report: TickReport) -> bool:
        """Handle one message; True when it was deleted. One bad message never blocks the others."""
        try:
            parsed = decode(message.body)
        except MessageError as exc:
            report.dead_letters += 1
            log.warning(json.dumps({"event": "dead-letter", "message_id": message.message_id,
                                    "receives": message.receive_count, "reason": str(exc)}))
            return False  # not deleted: SQS redrives it into the DLQ after maxReceiveCount
        try:
            if isinstance(parsed, WakeMessage):
                report.wakes += 1
            elif isinstance(parsed, CancelMessage):
                report.cancel_requests += 1
                self.request_cancel(parsed)
            else:
                self.accept(parsed, report)
            self.queue.delete(message.receipt)  # type: ignore[union-attr]
            return True
        except TransientError as exc:
            report.errors.append(f"message {message.message_id}: {exc}")
            return False
        except SweepqError as exc:
            report.errors.append(f"message {message.message_id}: {exc}")
            log.error("message %s not processed: %s", message.message_id, exc)
            return False

    def _meta(self, msg: SubmitMessage, now: float) -> dict[str, Any]:
        spec = msg.spec if isinstance(msg.spec, dict) else {}
        return {
            "type": "sweep",
            "sweep_id": msg.sweep_id,
            "name": str(spec.get("name") or "")[:128],
            "submitter": msg.submitter,
            "submitted_at": msg.submitted_at,
            "accepted_at": now,
            "updated_at": now,
            "source": msg.source,
            "list_sk": f"{msg.submitted_at}#{msg.sweep_id}",
        }

    def accept(self, msg: SubmitMessage, report: TickReport) -> None:
        now = self.clock()
        meta = self._meta(msg, now)
        try:
            sweep = validate_sweep(msg.spec, source=msg.sweep_id, max_grid_size=self.settings.max_grid_size)
            launch = validate_launch(msg.launch)  # SpecError naming the fields, never echoing values
            kind = launch.kind or self.settings.backend
            if kind not in self.backends:
                raise SpecError(
                    f"sweepq.kind: {kind!r} is not enabled on this dispatcher — use one of "
                    f"{', '.join(sorted(self.backends))} (SWEEPQ_KINDS)"
                )
            # Render trial 0's job now (pure): a sweep whose jobs can never be created (a TrainJob
            # with a node range, an ElasticJob without torchrun, a broken template) is rejected at
            # intake with the reason, instead of failing every trial later.
            self.backends[kind].dryrun(
                launch_request(self.settings, sweep, msg.sweep_id, launch.model_copy(update={"kind": kind}), 0, 1)
            )
        except (SpecError, PermanentError) as exc:
            self._reject(msg, meta, str(exc), report, now)
            return
        meta.update(
            state=SweepState.ACTIVE.value,
            list_pk="ACTIVE",
            total=sweep.total,
            cursor=0,
            live={},
            succeeded=0,
            failed=0,
            cancelled=0,
            kind=kind,
            method=sweep.spec.method,
            launch=launch.model_dump_json(),
            priority=launch.priority,
            metric_name=sweep.spec.metric.name if sweep.spec.metric else None,
            metric_goal=sweep.spec.metric.goal if sweep.spec.metric else "minimize",
        )
        meta = {k: v for k, v in meta.items() if v is not None}
        if self.store.put_sweep(meta, msg.spec, owner=None, now=now):
            report.accepted += 1
            log.info(json.dumps({"event": "accepted", "sweep_id": msg.sweep_id, "trials": sweep.total}))
        else:
            report.duplicates += 1

    def _reject(self, msg: SubmitMessage, meta: dict[str, Any], reason: str, report: TickReport, now: float) -> None:
        # A refused secret (env.WANDB_API_KEY in the body) is not copied into the table.
        meta.update(state=SweepState.REJECTED.value, list_pk="DONE", reason=reason[:4000], total=0, cursor=0, live={},
                    launch=json.dumps(redact_secret_env(msg.launch), default=str)[:20000])
        if self.store.put_sweep(meta, redact_secret_env(msg.spec), owner=None, now=now):
            report.rejected += 1
            log.warning(json.dumps({"event": "rejected", "sweep_id": msg.sweep_id, "reason": reason}))
        else:
            report.duplicates += 1

    def request_cancel(self, msg: CancelMessage) -> None:
        now = self.clock()
        update = self.store.update(
            sweep_key(msg.sweep_id),
            "SET cancel_requested = :t, cancelled_by = :by, updated_at = :now",
            {":t": True, ":by": msg.requested_by, ":now": now, ":a": "ACTIVE"},
            condition="attribute_exists(pk) AND list_pk = :a",
        )
        try:
            self.store.transact(f"cancel {msg.sweep_id}", [update], owner=None, now=now)
            return
        except Conflict:
            log.info("cancel %s: no active sweep with that id; checking whether it exists at all", msg.sweep_id)
        if self.store.get_sweep(msg.sweep_id) is None:
            # cancelled before its submit message was processed: a tombstone makes the submit a no-op
            tomb = {"sweep_id": msg.sweep_id, "type": "sweep", "state": SweepState.CANCELLED.value, "list_pk": "DONE",
                    "list_sk": f"0000#{msg.sweep_id}", "reason": f"cancelled by {msg.requested_by} before it was accepted",
                    "total": 0, "cursor": 0, "live": {}, "submitted_at": "", "launch": "{}"}
            try:
                self.store.transact(f"cancel {msg.sweep_id}", [self.store.put({**sweep_key(msg.sweep_id), **tomb},
                                    condition="attribute_not_exists(pk)")], owner=None, now=now)
            except Conflict:
                log.info("sweep %s appeared while cancelling; the next cancel request will catch it", msg.sweep_id)
