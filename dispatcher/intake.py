"""Intake: SQS messages → sweeps in DynamoDB. Each message on its own; deleted only once committed.

* a valid sweep is put with ``attribute_not_exists`` (META + SPEC), *then* its message is deleted —
  a duplicate delivery or a resubmission with the same token hits the condition and is just deleted;
  the sweep records this dispatcher's scope, namespace and kind;
* an invalid one (spec, launch settings, what the **operator policy** refuses for its sender, a kind
  not enabled here, a template whose resource this deployment does not list, a number DynamoDB
  cannot store, a job that cannot be rendered) is stored as REJECTED with every reason, then deleted;
* who sent it is SQS's ``SenderId`` (the IAM principal), never the body's ``submitter``: it decides
  the sweep's team (``Policy.admit``) and who may cancel, pause or resume it (the submitter and the
  policy's operators; a request from anyone else is refused — reported in the tick's errors and
  noted on the sweep as ``control_refused`` for ``producer status`` — never performed);
* a body that is not a sweepq envelope is left alone: SQS redrives it into the DLQ;
* a transient error leaves the message for a later tick;
* **anything unexpected** while handling one message — any exception, not only ours — is logged
  with its traceback and contained: raised by validation, the sweep is REJECTED with a readable
  reason; raised anywhere else, the message is left for redrive (the DLQ after maxReceiveCount).
  One bad message never blocks the others, and never ends the tick.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Mapping

from dispatcher.adapters.dynamo import item_size, unstorable
from dispatcher.adapters.queue import Queue, Received
from dispatcher.adapters.store import Store
from dispatcher.core.errors import MessageError, PermanentError, SpecError, SweepqError, TransientError
from dispatcher.core.jobs import Backend
from dispatcher.core.launch import LaunchSettings, redact_secret_env
from dispatcher.core.message import CancelMessage, PauseMessage, SubmitMessage, WakeMessage, decode
from dispatcher.core.policy import Policy
from dispatcher.core.records import SweepState
from dispatcher.core.search import engine_missing
from dispatcher.core.sharing import Caps, SharePolicy, fit_problems
from dispatcher.core.spec import Sweep, validate_launch, validate_sweep
from dispatcher.observation import listed_resources, resource_name, template_resource
from dispatcher.report import TickReport
from dispatcher.settings import ENV, Settings
from dispatcher.trials import launch_request

log = logging.getLogger(__name__)

MAX_TRIALS = 10**12  # the largest sweep stored (a random sweep's run_cap); far beyond any real one
LAUNCH_JSON_MAX = 48 * 1024  # launch settings (template included) on the META item
META_BUDGET = 64 * 1024  # META at intake; the live map adds at most ~120 KiB (docs/RELIABILITY.md)


def policy_getter(policy: "Policy | Callable[[], Policy] | None") -> Callable[[], Policy]:
    """A policy, a getter of the current one (``PolicySource.get``) or none (the safe default) as a getter."""
    if policy is None:
        policy = Policy.default()
    if isinstance(policy, Policy):
        fixed = policy
        return lambda: fixed
    return policy


def unexpected(exc: BaseException) -> str:
    """A readable one-line account of an exception nobody planned for."""
    text = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"unexpected {type(exc).__name__}{': ' + text if text else ''}"


class Intake:
    def __init__(self, *, settings: Settings, store: Store, queue: Queue | None, backends: Mapping[str, Backend],
                 clock: Callable[[], float], wake_queue: Queue | None = None,
                 policy: "Policy | Callable[[], Policy] | None" = None) -> None:
        self.settings = settings
        self.policy = policy_getter(policy)
        self.store = store
        self.queue = queue
        self.wake_queue = wake_queue
        self.backends = backends
        self.clock = clock

    def drain(self, report: TickReport) -> None:
        """Drain the queue in batches of 10 until empty or the time budget is spent, then the wake
        queue's triggers (deleted unread: this tick is what they ask for)."""
        assert self.queue is not None
        deadline = self.clock() + self.settings.intake_budget_s
        seen: set[str] = set()
        while self.clock() < deadline:
            try:
                batch = self.queue.receive(max_messages=10, wait_s=0)
            except TransientError as exc:
                report.errors.append(f"intake: {exc}")
                break
            fresh = [m for m in batch if m.message_id not in seen]
            if not fresh:
                break  # empty, or only messages we already left for the DLQ this tick
            for message in fresh:
                seen.add(message.message_id)
                self.process_message(message, report)
        if self.wake_queue is not None:
            try:
                report.wakes += self.wake_queue.drain_triggers()
            except SweepqError as exc:
                report.errors.append(f"wake queue: {exc}")

    def process_message(self, message: Received, report: TickReport) -> bool:
        """Handle one message; True when it was deleted. Whatever goes wrong stays with it."""
        try:
            parsed = decode(message.body)
        except MessageError as exc:
            self._dead_letter(message, str(exc), report)
            return False  # not deleted: SQS redrives it into the DLQ after maxReceiveCount
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not end the tick; the body goes to the DLQ
            log.exception("message %s: decoding failed", message.message_id)
            self._dead_letter(message, f"could not be decoded ({unexpected(exc)})", report)
            return False
        try:
            if isinstance(parsed, WakeMessage):
                report.wakes += 1
            elif isinstance(parsed, CancelMessage):
                report.cancel_requests += 1
                self.request_cancel(parsed, report, sender_id=message.sender_id)
            elif isinstance(parsed, PauseMessage):
                report.pause_requests += 1
                self.request_pause(parsed, report, sender_id=message.sender_id)
            else:
                self.accept(parsed, report, sender_id=message.sender_id)
            assert self.queue is not None, "process_message needs the queue the message came from"
            self.queue.delete(message.receipt)
            return True
        except TransientError as exc:
            report.errors.append(f"message {message.message_id}: {exc}")
            return False
        except SweepqError as exc:
            report.errors.append(f"message {message.message_id}: {exc}")
            log.error("message %s not processed: %s", message.message_id, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - contained per message, logged with its traceback
            log.exception("message %s: handling failed", message.message_id)
            report.errors.append(f"message {message.message_id}: {unexpected(exc)} — left on the queue; it reaches "
                                 "the DLQ after maxReceiveCount receives")
            return False

    def _dead_letter(self, message: Received, reason: str, report: TickReport) -> None:
        report.dead_letters += 1
        log.warning(json.dumps({"event": "dead-letter", "message_id": message.message_id,
                                "receives": message.receive_count, "reason": reason}))

    def _meta(self, msg: SubmitMessage, now: float, sender_id: str) -> dict[str, Any]:
        spec = msg.spec if isinstance(msg.spec, dict) else {}
        meta = {
            "type": "sweep",
            "sweep_id": msg.sweep_id,
            "name": str(spec.get("name") or "")[:128],
            # who sent it, as SQS authenticated it; the body's claim is kept as a note only
            "submitter": sender_id[:256] if sender_id else f"{msg.submitter} (unverified)",
            "submitter_claim": msg.submitter,
            "submitted_at": msg.submitted_at,
            "accepted_at": now,
            "updated_at": now,
            "source": msg.source,
            "list_sk": f"{msg.submitted_at}#{msg.sweep_id}",
            "scope": self.settings.dispatcher_scope,
            "namespace": self.settings.namespace,
        }
        if sender_id:
            meta["sender_id"] = sender_id[:256]
        return meta

    def validate(self, msg: SubmitMessage, sender_id: str = "") -> tuple[Sweep, LaunchSettings, str, dict[str, Any]]:
        """The sweep, its launch settings as they take effect under the operator policy, its kind and
        what intake records beside them (``team``, ``template_resource``) — or a PermanentError
        naming the field (every policy violation at once)."""
        sweep = validate_sweep(msg.spec, source=msg.sweep_id, max_grid_size=self.settings.max_grid_size)
        if sweep.total > MAX_TRIALS:
            raise SpecError(f"run_cap: {sweep.total:.3g} trials is over the largest sweep sweepq runs "
                            f"({MAX_TRIALS:.0e}) — lower run_cap")
        if sweep.method == "bayes" or sweep.hyperband is not None:
            missing = engine_missing()  # W&B's engine is an optional extra of the dispatcher
            if missing:
                raise SpecError(f"{'method: bayes' if sweep.method == 'bayes' else 'early_terminate'}: {missing}")
        requested = validate_launch(msg.launch)  # SpecError naming the fields, never echoing values
        admission = self.policy().admit(requested, sender=sender_id, default_kind=self.settings.backend)
        launch = admission.raise_for_violations()  # PolicyViolation: every rule it breaks, with the fix
        kind = launch.kind or self.settings.backend
        if kind not in self.backends:
            raise SpecError(f"sweepq.kind: {kind!r} is not enabled on this dispatcher — use one of "
                            f"{', '.join(sorted(self.backends))} ({ENV['kinds']})")
        size = len(launch.model_dump_json()) + len(requested.model_dump_json())
        if size > LAUNCH_JSON_MAX:
            raise SpecError(f"sweepq: the launch settings are {size // 1024} KiB, over the {LAUNCH_JSON_MAX // 1024} "
                            "KiB a sweep may carry — shorten sweepq.env")
        launch = launch.model_copy(update={"kind": kind})
        # what the sender asked for: every tick admits it again under the policy as it is then
        # (dispatcher/launching.py), so a tightened limit clamps and a withdrawn grant holds
        extra: dict[str, Any] = {"team": admission.team, "requested": requested.model_dump_json(exclude_defaults=True)}
        self._check_fit(launch, admission.team)
        # Render trial 0's job now (pure): a sweep whose jobs can never be created (a TrainJob
        # with a node range, a broken template, a template pod outside the policy) is rejected at
        # intake with the reason, instead of failing every trial later.
        # A bayes trial's parameters exist only once suggested: render with a prior draw of them.
        dryrun = self.backends[kind].dryrun(launch_request(self.settings, sweep, msg.sweep_id, launch, 0, 1,
                                                           params=sweep.example_params(0)))
        if kind == "template":
            resource = resource_name(template_resource(self.backends[kind], dryrun.request))
            listed = listed_resources(self.backends[kind])
            if resource not in listed:
                raise SpecError(
                    f"sweepq.template: creates {resource}, which this dispatcher does not list — use one of "
                    f"{', '.join(sorted(listed)) or 'none'}, or ask the operator to add it to "
                    f"{ENV['template_resources']}")
            extra["template_resource"] = resource  # observed by every later process, whatever its settings
        return sweep, launch, kind, extra

    def _check_fit(self, launch: LaunchSettings, team: str | None) -> None:
        """A sweep whose smallest trial could never start under this dispatcher's caps and its team's
        quota (``sharing.fit_problems``: ``MIN`` nodes × ``gpus_per_node`` over ``SWEEPQ_MAX_GPUS`` or
        the team's ``max_gpus``, a job limit of 0, a Kueue queue allowing 0 waiting jobs) is refused
        with the numbers, instead of staying ACTIVE forever. ``SWEEPQ_MAX_RUNNING`` 0 is left out: an
        operator sets it to drain the cluster for a while, and sweeps accepted meanwhile wait."""
        s = self.settings
        shares = SharePolicy.from_teams(self.policy().teams)
        problems = fit_problems(launch, team=team or shares.default_team, policy=shares,
                                caps=Caps(max_jobs=None, max_gpus=s.max_gpus, max_waiting=s.max_waiting))
        if problems:
            raise SpecError(problems)

    def accept(self, msg: SubmitMessage, report: TickReport, *, sender_id: str = "") -> None:
        now = self.clock()
        meta = self._meta(msg, now, sender_id)
        try:
            sweep, launch, kind, extra = self.validate(msg, sender_id)
        except (SpecError, PermanentError) as exc:
            self._reject(msg, meta, str(exc), report, now)
            return
        except (SweepqError, MemoryError):
            raise  # transient, or a problem of this deployment (not of the sweep): the message stays
        except Exception as exc:  # noqa: BLE001 - validation is deterministic in the body: reject, with a reason
            log.exception("sweep %s: validation failed unexpectedly", msg.sweep_id)
            self._reject(msg, meta, f"could not be validated ({unexpected(exc)}) — a sweepq bug; report it with "
                         "this sweep id", report, now)
            return
        meta.update(
            state=SweepState.ACTIVE.value,
            list_pk=f"ACTIVE#{self.settings.dispatcher_scope}",
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
            **extra,
        )
        meta = {k: v for k, v in meta.items() if v is not None}
        problems = unstorable(meta)
        if not problems and item_size(meta) > META_BUDGET:
            problems = [f"the sweep's record would be {item_size(meta) // 1024} KiB, over {META_BUDGET // 1024} KiB — "
                        "shorten the sweep's name, description or launch settings"]
        if problems:
            self._reject(msg, self._meta(msg, now, sender_id), "; ".join(problems), report, now)
            return
        if self.store.put_sweep(meta, msg.spec, owner=None, now=now):
            report.accepted += 1
            log.info(json.dumps({"event": "accepted", "sweep_id": msg.sweep_id, "trials": sweep.total,
                                 "scope": self.settings.dispatcher_scope}))
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

    def request_cancel(self, msg: CancelMessage, report: TickReport, *, sender_id: str = "") -> None:
        """Cancel on behalf of ``sender_id`` (SQS's SenderId): performed only for the sweep's submitter
        (the SenderId stored at intake) or one of the policy's operators; the body's ``requested_by``
        is a free-text note, never an identity. The submitter's own cancel needs no policy (it goes
        through while the policy cannot be read); only someone else's asks whether they operate."""
        now = self.clock()
        outcome = self.store.request_cancel(msg.sweep_id, requested_by=sender_id or "an unknown sender",
                                            note=msg.requested_by, sender=sender_id, now=now)
        if outcome.startswith("refused:") and sender_id and self.policy().is_operator(sender_id):
            outcome = self.store.request_cancel(msg.sweep_id, requested_by=sender_id, note=msg.requested_by,
                                                sender=None, now=now, operator=True)
        if outcome.startswith("other-scope:"):
            # another deployment's sweep: never changed from here; the message is done with
            report.errors.append(f"cancel {msg.sweep_id}: refused — the sweep belongs to scope "
                                 f"{outcome.split(':', 1)[1]}; send the cancel to that deployment's queue")
        elif outcome.startswith("refused:"):
            self._refused("cancel", msg.sweep_id, sender_id, outcome, report)
        log.info(json.dumps({"event": "cancel-request", "sweep_id": msg.sweep_id, "outcome": outcome.split(":")[0],
                             "sender": sender_id}))

    def request_pause(self, msg: PauseMessage, report: TickReport, *, sender_id: str = "") -> None:
        """Pause or resume on behalf of ``sender_id``, authorised exactly like :meth:`request_cancel`.
        A paused sweep launches nothing new (its running trials go on); resume lets it continue from
        where it stopped. A request for a sweep not stored (yet) is reported and dropped: pause it
        once ``producer status`` shows it."""
        action = msg.action
        requested_by = sender_id or "an unknown sender"
        outcome = self.store.request_pause(msg.sweep_id, pause=not msg.resume, requested_by=requested_by,
                                           note=msg.requested_by, sender=sender_id, now=self.clock())
        if outcome.startswith("refused:") and sender_id and self.policy().is_operator(sender_id):
            outcome = self.store.request_pause(msg.sweep_id, pause=not msg.resume, requested_by=requested_by,
                                               note=msg.requested_by, sender=None, now=self.clock())
        if outcome.startswith("other-scope:"):
            report.errors.append(f"{action} {msg.sweep_id}: refused — the sweep belongs to scope "
                                 f"{outcome.split(':', 1)[1]}; send the {action} to that deployment's queue")
        elif outcome.startswith("refused:"):
            self._refused(action, msg.sweep_id, sender_id, outcome, report)
        elif outcome == "missing":
            report.errors.append(f"{action} {msg.sweep_id}: no such sweep is stored — nothing done; send it again "
                                 "once `producer status` shows the sweep")
        elif outcome == "ended":
            log.info("%s %s: the sweep has ended; nothing to do", action, msg.sweep_id)
        log.info(json.dumps({"event": f"{action}-request", "sweep_id": msg.sweep_id, "outcome": outcome.split(":")[0],
                             "sender": sender_id}))

    def _refused(self, action: str, sweep_id: str, sender_id: str, outcome: str, report: TickReport) -> None:
        """A control request of someone other than the sweep's submitter or an operator: reported,
        and noted on the sweep for ``producer status`` — never performed."""
        reason = self.policy().control_refusal(sender_id, submitter=outcome.split(":", 1)[1], action=action,
                                               sweep_id=sweep_id) or f"{action} refused"
        report.errors.append(f"{action} {sweep_id}: {reason}")
        self.store.note_control_refused(sweep_id, action=action, sender=sender_id or "an unknown sender",
                                        reason=reason, now=self.clock())
