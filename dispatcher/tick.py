"""One dispatcher tick: lease → intake → load → observe → reconcile → leaks → early stop → plan → launch → report.

Decisions are made by the pure core (:mod:`dispatcher.core.reconcile`, :mod:`dispatcher.core.planner`);
this module reads, asks, and performs; the store owns every DynamoDB expression. Every step is
safe to crash and re-run:

* a sweep is stored with a conditional put *before* its message is deleted;
* what a tick decides on a sweep — its trials' transitions, then its claims — is written as one
  unit of work (``Store.commit_sweep``: one transaction with every condition of the single writes
  and the lease check, split only at DynamoDB's limits); a refused one holds only that sweep;
* a trial is claimed (cursor/attempt condition + lease check) *before* its job is created under a
  deterministic name; 409 AlreadyExists counts as created; a claimed trial whose job is missing is
  re-created by the next tick, which also records LAUNCHED for one whose job it lists; a launched
  job that vanished is LOST and retried;
* what the tick lists follows from the stored active sweeps of its scope (their kinds, their
  templates' resources); a sweep it cannot observe is held untouched, never judged;
* each sweep is handled on its own: anything it raises holds only that sweep (and, after
  ``SWEEPQ_SWEEP_FAILURES_TO_HOLD`` ticks in a row, parks it for an operator);
* a managed job no live attempt owns — also of a sweep that ended — is deleted;
* the lease is released however the round ends (short of the process dying).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import AbstractSet, Any, Callable, Mapping, Union

from pydantic import ValidationError

from dispatcher.adapters.metrics import MetricsRead, MetricsStore
from dispatcher.adapters.queue import Queue, Received
from dispatcher.adapters.store import LeaseLost, Store
from dispatcher.core import history
from dispatcher.core.changes import SweepChange, TrialTransition
from dispatcher.core.errors import Conflict, SweepqError, TransientError
from dispatcher.core.hyperband import HyperbandSpec
from dispatcher.core.identity import job_name
from dispatcher.core.jobs import Backend, JobStatus
from dispatcher.core.metrics import final_values, template_suffix
from dispatcher.core.policy import Policy
from dispatcher.core.reconcile import SweepOutcome, Transition, reconcile_sweep
from dispatcher.core.records import SweepRecord, SweepState, TrialState, better
from dispatcher.early_stop import EarlyStopping
from dispatcher.intake import Intake, policy_getter, unexpected
from dispatcher.isolation import Isolation
from dispatcher.launching import Launching
from dispatcher.observation import prepare_observation
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from dispatcher.suggesting import Suggesting
from dispatcher.trials import SpecCache, record_from_item

log = logging.getLogger(__name__)
BEST_PARAMS_MAX = 4096  # the best trial's params on the META item (longer: look the trial up)
COUNTERS = {TrialState.SUCCEEDED: "succeeded", TrialState.FAILED: "failed", TrialState.CANCELLED: "cancelled"}
REPORTED = {TrialState.SUCCEEDED: "finished", TrialState.FAILED: "failed", TrialState.CANCELLED: "cancelled",
            TrialState.WAITING: "retried"}


METRICS_WAIT_S = 120  # how long a succeeded trial's recording waits for its final metrics to be visible
METRICS_CLOCK_SKEW_S = 60  # a trial's write time may be this far ahead of ours


class MetricsNotYet(Exception):
    """A succeeded trial's final metrics are not visible yet: its transition waits a tick."""


# (final metrics, trial item, metric summary or None) of a succeeded trial, or why it is not recorded this tick
FinalMetrics = Union[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any] | None], Exception]


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher(Launching, Isolation, Suggesting, EarlyStopping):
    """Holds the injected adapters. ``backends`` maps job kind → Backend (enabled kinds only).
    ``store`` is used fenced by this dispatcher's scope (``settings.scope``). ``metrics`` reads
    the trials' metrics table (CONTRACTS C1); without it no trial's metrics are read (no best
    trial, no Hyperband early stopping)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        queue: Queue | None,
        backends: Mapping[str, Backend],
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        wake_queue: Queue | None = None,
        policy: "Policy | Callable[[], Policy] | None" = None,
        metrics: MetricsStore | None = None,
    ) -> None:
        self.settings = settings
        # the operator policy, current: a PolicySource's getter re-reads a changed file or parameter
        self.policy = policy_getter(policy)
        self.metrics = metrics
        self.scope = settings.dispatcher_scope
        self.store = store.with_scope(self.scope)
        self.queue = queue
        self.wake_queue = wake_queue
        self.backends = dict(backends)
        self.clock = clock
        self.owner = owner or default_owner()
        self.skew_s = settings.lease_seconds / 8  # clock skew tolerated between dispatcher hosts
        self._lease_until = 0.0  # by our own clock
        self._lease_lock = threading.Lock()  # the creates of one tick run on several threads (launching)
        self._lease_gone: LeaseLost | None = None  # a renew before a create found the lease lost (this round)
        self._failures: dict[str, int] = {}  # consecutive failures, when the sweep item could not record them
        self._failed_now: set[str] = set()  # sweeps whose handling failed in the current round
        self._policy_holds: set[str] = set()  # sweeps the operator policy lets launch nothing this round
        # this round's unit of work: per sweep, the changes decided and not yet committed (commit_sweep)
        self._changes: dict[str, list[SweepChange]] = {}
        self._final_metrics: dict[tuple[str, int], FinalMetrics] = {}  # prefetch_final_metrics
        self._ended_summaries: dict[tuple[str, int], Mapping[str, Any]] = {}  # prefetch_ended_summaries
        self._noted: set[str] = set()  # jobs whose PENDING trial this round noted LAUNCHED, not committed yet
        self.specs = SpecCache(self.store.get_spec)
        self.intake = Intake(settings=settings, store=self.store, queue=queue, backends=self.backends, clock=clock,
                             wake_queue=wake_queue, policy=self.policy)

    def process_message(self, message: Received, report: TickReport) -> bool:
        """One delivered message (the Lambda SQS event source); True when it was committed."""
        return self.intake.process_message(message, report)

    # -- entry ----------------------------------------------------------------------------
    def tick(self, *, max_rounds: int = 3) -> TickReport:
        started = self.clock()
        report = TickReport(scope=self.scope)
        if not self._acquire(started):
            report.lease = "busy"
            report.duration_s = round(self.clock() - started, 3)
            log.info(json.dumps({"event": "tick", **report.as_dict()}))
            return report
        try:
            for _ in range(max_rounds):
                self._guarded_round(report)
                if self.store.release_lease(self.owner):
                    break
                # someone marked the lease dirty: a trigger arrived while we worked — go once more
                self._renew()
            else:
                self.store.release_lease(self.owner)
        except (TransientError, Conflict) as exc:
            # The work of this tick is committed (or fenced off); a lease we could not release or
            # renew simply expires. Report it instead of failing the whole tick (CronJob exit 3).
            report.errors.append(f"lease: {exc} — it expires by itself in {self.settings.lease_seconds} s")
        report.duration_s = round(self.clock() - started, 3)
        log.info(json.dumps({"event": "tick", **report.as_dict()}, default=str))
        return report

    def _acquire(self, now: float) -> bool:
        """Take the lease, or mark it dirty for its live holder. If the holder released it between
        our failed acquire and the mark, the trigger would be lost: try again instead."""
        for _ in range(3):
            if self.store.acquire_lease(self.owner, now=now, seconds=self.settings.lease_seconds, skew_s=self.skew_s):
                self._lease_until = now + self.settings.lease_seconds
                return True
            if self.store.mark_dirty(now=now):
                return False
            now = self.clock()
        return False  # expired but within the skew margin: its holder may still be working

    def _renew(self) -> None:
        now = self.clock()
        try:
            self.store.renew_lease(self.owner, now=now, seconds=self.settings.lease_seconds)
        except LeaseLost:
            raise
        except Conflict as exc:
            raise LeaseLost(f"renew: lost a conditional write (the lease of scope {self.scope} is no longer "
                            f"{self.owner}'s)") from exc
        self._lease_until = now + self.settings.lease_seconds

    def _guarded_round(self, report: TickReport) -> None:
        """One round, whatever it raises short of the process dying: the caller then releases the
        lease (a tick that ended with the lease held made every other dispatcher wait it out)."""
        try:
            self._round(report)
        except LeaseLost as exc:
            report.errors.append(f"{exc} — this tick stops; the holder carries on")
        except (TransientError, Conflict) as exc:
            report.errors.append(f"tick: {exc} — retried next tick")
        except Exception as exc:  # noqa: BLE001 - a bug outside the per-sweep isolation: report it, keep the lease safe
            log.exception("tick round failed")
            report.errors.append(f"tick: {unexpected(exc)} — nothing more this round")

    def _round(self, report: TickReport) -> None:
        self._failed_now = set()
        self._changes = {}  # what a round that stopped early left uncommitted is decided again from what is observed
        self._final_metrics = {}
        self._ended_summaries = {}
        self._noted = set()
        self._lease_gone = None
        if self.queue is not None:
            self.intake.drain(report)
            self._renew()
        records = self.load_active(report)
        self.specs.hold(len(records))
        self._policy_holds = self.apply_policy(records, report)
        skip = prepare_observation(self.backends, records, namespace=self.settings.namespace)
        for r in records:
            if r.held and r.sweep_id not in skip and not r.cancel_requested:
                skip[r.sweep_id] = (f"held after {r.failures} failed ticks: {r.held} — clear `held` on its item to "
                                    "resume, or cancel it (see the README, Reliability)")
        report.held = [f"{sweep_id}: {reason}" for sweep_id, reason in sorted(skip.items())]  # this round's
        for sweep_id, reason in sorted(skip.items()):
            log.warning(json.dumps({"event": "sweep-held", "sweep_id": sweep_id, "reason": reason}))
        try:
            jobs = self.observe()
        except Exception as exc:  # noqa: BLE001 - any list failure: caps cannot be counted, so launch nothing
            if not isinstance(exc, SweepqError):
                log.exception("observe failed")
            report.errors.append(f"observe: {exc if isinstance(exc, SweepqError) else unexpected(exc)}")
            log.warning("observe failed, launching nothing this tick: %s", exc)
            return
        # Listing can take long (or this process stalled): before anything is deleted or created on
        # what we loaded, the lease must still be ours — a successor that took over since may have
        # created jobs our stale view would call orphans.
        self._renew()
        loaded = {r.sweep_id for r in records}
        try:
            records, held = self.reconcile(records, jobs, report, skip=set(skip))
            self.delete_leaks(loaded, jobs, report)
            jobs = dict(jobs)
            records = self.early_stop(records, jobs, report, held=held)  # stopped trials' jobs leave `jobs`
            self.launch(records, jobs, report, held=held)  # commits every sweep's unit of work
        finally:
            self._commit_left(report)
        report.active_sweeps = len(records)
        report.running = sum(r.holding for r in records)
        for record in records:  # handled without a failure this round: earlier failures are forgotten
            if record.sweep_id not in held and record.sweep_id not in self._failed_now:
                self._sweep_recovered(record, report)

    # -- observe / load -------------------------------------------------------------------
    def observe(self) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for kind in sorted(self.backends):
            jobs.update(self.backends[kind].observe())
        return jobs

    def load_active(self, report: TickReport) -> list[SweepRecord]:
        records = []
        for item in self.store.active_sweeps(self.scope):
            try:
                records.append(record_from_item(item))
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                report.errors.append(f"sweep {item.get('sweep_id')}: unreadable record: {exc}")
        return records

    # -- reconcile ------------------------------------------------------------------------
    def reconcile(self, records: list[SweepRecord], jobs: Mapping[str, JobStatus], report: TickReport, *,
                  skip: AbstractSet[str] = frozenset()) -> tuple[list[SweepRecord], set[str]]:
        """Apply each sweep's outcome. Returns the records still active, as they now are, and the
        ids of those *held* this tick: ``skip`` (not observable here, or parked for an operator),
        a write was refused or a job could not be cancelled (our view is stale, or a job we gave up
        on still runs), or handling it raised. A held sweep launches nothing this tick, but its
        live trials still count against the caps: dropping it let other sweeps take its slots, and
        the next tick (re)created its claimed trials on top of them."""
        still_active: list[SweepRecord] = []
        held: set[str] = set(skip) & {r.sweep_id for r in records}
        now = self.clock()
        by_sweep: dict[str, dict[str, JobStatus]] = {}
        for job in jobs.values():  # once per tick: each sweep sees only its own jobs (O(jobs), not O(sweeps × jobs))
            by_sweep.setdefault(job.sweep_id, {})[job.name] = job
        decided: dict[str, tuple[SweepRecord, SweepOutcome]] = {}
        for record in records:  # first every outcome (pure), so the succeeded trials' metrics are read at once
            if record.sweep_id in skip:
                continue
            try:
                noted = self._note_created(record, by_sweep.get(record.sweep_id, {}), now, report)
                decided[record.sweep_id] = (noted, reconcile_sweep(noted, by_sweep.get(record.sweep_id, {}), now=now))
            except Exception as exc:  # noqa: BLE001 - contained per sweep: held, counted, reported
                self._sweep_failed(record, exc, report)
                held.add(record.sweep_id)
        self.prefetch_final_metrics([(noted, tr.index) for noted, outcome in decided.values()
                                     for tr in outcome.transitions
                                     if tr.new is None and tr.trial_state is TrialState.SUCCEEDED])
        self.prefetch_ended_summaries([(noted, tr.index) for noted, outcome in decided.values()
                                       for tr in outcome.transitions
                                       if tr.new is None and tr.trial_state is not TrialState.SUCCEEDED])
        for record in records:
            if record.sweep_id not in decided:
                still_active.append(record)
                continue
            try:
                current, stale = self._reconcile_sweep(*decided[record.sweep_id], now, report)
            except LeaseLost:
                raise
            except (Conflict, TransientError) as exc:
                report.errors.append(f"sweep {record.sweep_id}: {exc} — re-planned next tick")
                held.add(record.sweep_id)
                still_active.append(record)
                continue
            except Exception as exc:  # noqa: BLE001 - contained per sweep: held, counted, reported
                self._sweep_failed(record, exc, report)
                held.add(record.sweep_id)
                still_active.append(record)
                continue
            if current is None:
                self._failures.pop(record.sweep_id, None)
                continue  # ended
            if stale:
                held.add(record.sweep_id)
            still_active.append(current)
        return still_active, held

    def _reconcile_sweep(self, record: SweepRecord, outcome: SweepOutcome, now: float,
                         report: TickReport) -> tuple[SweepRecord | None, bool]:
        """One sweep, its ``outcome`` decided on ``record``. Returns (the record as it now is, or
        None when it ended; whether it is stale)."""
        if any(c.name in self._noted for c in outcome.cancels):
            # a job is never cancelled while its trial still says PENDING in the table (see _note_created)
            self.commit(record.sweep_id)
        uncancelled = self._cancel(outcome.cancels, report)
        current = record
        waiting: set[int] = set()  # succeeded trials whose final metrics are not visible yet
        try:
            current = self._apply(record, outcome, uncancelled, now, report, waiting=waiting)
        except LeaseLost:
            raise
        except (Conflict, TransientError) as exc:
            report.errors.append(f"sweep {record.sweep_id}: {exc} — re-planned next tick")
            return current, True  # our view of this sweep is stale
        if outcome.end and not uncancelled and not waiting:
            self.commit(record.sweep_id)  # its last transitions, then its end
            self.end_sweep(current, *outcome.end, now=now)
            return None, False
        # a sweep decided to end (cancelled, its breaker tripped, every trial done) whose end waits
        # for a cancel or a success's metrics launches nothing meanwhile: it is held (rev17 finding 1)
        return current, bool(uncancelled) or (outcome.end is not None and bool(waiting))

    def _apply(self, record: SweepRecord, outcome: SweepOutcome, uncancelled: set[str], now: float,
               report: TickReport, *, waiting: set[int] | None = None) -> SweepRecord:
        current = record
        for tr in outcome.transitions:
            live = record.live.get(tr.index)
            if live is not None and live.job_name in uncancelled:
                continue  # its job still runs: the trial keeps its slot until a cancel succeeds
            try:
                current = self.write_transition(current, tr, now, report)
            except (MetricsNotYet, TransientError) as exc:
                # A success whose final metrics are not visible yet, or whose read DynamoDB did not
                # serve: recorded next tick, with its metrics (its job stays SUCCEEDED on the
                # cluster). Nothing else of the sweep waits for it: the other transitions — some of
                # whose jobs were just cancelled — are still decided and committed (rev16 finding 4).
                log.info(json.dumps({"event": "metrics-wait", "sweep_id": record.sweep_id, "trial": tr.index,
                                     "reason": str(exc)}))
                if isinstance(exc, TransientError):
                    report.errors.append(f"sweep {record.sweep_id}/{tr.index}: {exc} — recorded next tick")
                if waiting is not None:
                    waiting.add(tr.index)
        for relaunch in outcome.relaunches:
            current = self.relaunch(current, relaunch, report)
        return current

    def _note_created(self, record: SweepRecord, jobs: Mapping[str, JobStatus], now: float,
                      report: TickReport) -> SweepRecord:
        """Record LAUNCHED for PENDING trials whose job is on the cluster, before anything else is
        decided for the sweep. This is how every create becomes LAUNCHED: the tick that creates a
        job does not write it (see :mod:`dispatcher.launching`), the next tick that lists the job
        does, in that sweep's unit of work. PENDING means "the job may not exist yet: create it",
        so a job must never be cancelled while its trial still says PENDING in the table: the
        cancel (a cancelled sweep, say) succeeded, the write of the attempt's end failed, and the
        next tick created the same attempt's job a second time. So a sweep whose outcome cancels
        a job noted here commits its unit of work before that cancel (:meth:`_reconcile_sweep`)."""
        for t in sorted(record.live.values(), key=lambda t: t.index):
            if t.state is TrialState.PENDING and t.job_name in jobs:
                launched = dataclasses.replace(t, state=TrialState.LAUNCHED)
                self._noted.add(t.job_name)
                record = self.write_transition(
                    record, Transition(record.sweep_id, t.index, t.attempt, launched, TrialState.LAUNCHED), now, report)
        return record

    def _commit_left(self, report: TickReport) -> None:
        """A round that stopped between reconcile and launch (a bug outside the per-sweep
        isolation) still writes what it decided: its cancels were made. Nothing after a lost lease."""
        for sweep_id in list(self._changes):
            try:
                self.commit(sweep_id)
            except LeaseLost:
                self._changes.clear()
                return
            except Exception as exc:  # noqa: BLE001 - contained per sweep: the next tick decides again
                report.errors.append(f"sweep {sweep_id}: {exc if isinstance(exc, SweepqError) else unexpected(exc)} "
                                     "— re-planned next tick")

    def commit(self, sweep_id: str) -> int:
        """Write what this round decided on the sweep and has not written yet (its unit of work,
        ``Store.commit_sweep``: one transaction, split only at DynamoDB's limits). Returns the
        number of transactions; a refused one raises (the sweep's view is stale: re-planned next tick)."""
        changes = self._changes.pop(sweep_id, [])
        if not changes:
            return 0
        return self.store.commit_sweep(sweep_id, changes, owner=self.owner, now=self.clock())

    def write_transition(self, record: SweepRecord, tr: Transition, now: float, report: TickReport) -> SweepRecord:
        """Decide ``tr``: it joins the sweep's unit of work (written by :meth:`commit`, with every
        other change of the sweep this round); returns the record as it is with it."""
        best = None
        metrics: Mapping[str, Any] = {}
        summary: Mapping[str, Any] | None = None
        if tr.new is None and tr.trial_state is TrialState.SUCCEEDED:
            metrics, item, summary = self.trial_metrics(record, tr.index)
            best = self._best_after(record, tr.index, metrics, item)
        elif tr.new is None:  # it leaves the live set: what prefetch_ended_summaries read of its history
            summary = self._ended_summaries.get((tr.sweep_id, tr.index))
        started = tr.new.started_at if tr.new is not None else None
        self._changes.setdefault(tr.sweep_id, []).append(TrialTransition(
            tr.index, tr.attempt, tr.new.to_item() if tr.new is not None else None, tr.trial_state.value,
            reason=tr.reason, started_at=started, outcome=tr.outcome.value if tr.outcome is not None else None,
            counter=COUNTERS.get(tr.trial_state) if tr.new is None else None, best=best, metrics=metrics or None,
            counted=tr.counted, summary=summary))
        log.info(json.dumps({"event": "trial", "sweep_id": tr.sweep_id, "trial": tr.index, "attempt": tr.attempt,
                             "state": tr.trial_state.value, "reason": tr.reason, "counted": tr.counted,
                             "evicted": tr.evicted}))
        report.evicted += tr.evicted
        if tr.trial_state in REPORTED and (tr.new is None or tr.trial_state is TrialState.WAITING):
            setattr(report, REPORTED[tr.trial_state], getattr(report, REPORTED[tr.trial_state]) + 1)
        live = dict(record.live)
        if tr.new is None:
            live.pop(tr.index, None)
        else:
            live[tr.index] = tr.new
        return dataclasses.replace(
            record,
            live=live,
            succeeded=record.succeeded + (tr.trial_state is TrialState.SUCCEEDED),
            failed=record.failed + (tr.trial_state is TrialState.FAILED and tr.new is None),
            cancelled=record.cancelled + (tr.trial_state is TrialState.CANCELLED),
            best=best if best is not None else record.best,
        )

    def trial_metrics(self, record: SweepRecord, index: int
                      ) -> tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any] | None]:
        """(final metrics, trial item, metric summary) of trial ``index``, whose live attempt just
        succeeded (the summary, :mod:`dispatcher.core.history`, only for a sweep that needs one): what
        :meth:`prefetch_final_metrics` read for it this tick (read now when it did not). Raises
        what that read raised for it (:class:`MetricsNotYet`, :class:`TransientError`)."""
        found = self._final_metrics.get((record.sweep_id, index))
        if found is None:
            found = self.final_metrics([(record, index)])[(record.sweep_id, index)]
        if isinstance(found, Exception):
            raise found
        return found

    def prefetch_final_metrics(self, wanted: list[tuple[SweepRecord, int]]) -> None:
        """Read the final metrics and trial items of every trial this tick records as succeeded, in
        one ``BatchGetItem`` of each table (per 100), before any of them is recorded."""
        self._final_metrics = self.final_metrics(wanted) if wanted else {}

    def final_metrics(self, wanted: list[tuple[SweepRecord, int]]) -> dict[tuple[str, int], FinalMetrics]:
        """(final metrics, trial item, metric summary), or what stops it being recorded now, of each
        (record, trial index) in ``wanted`` — trials whose live attempt just succeeded; the one place the dispatcher
        reads what a trial reported. The metrics come from the metrics table (CONTRACTS C1), from an
        item that names the live attempt's job, trial and attempt, written by a pod of that job
        (:func:`dispatcher.core.metrics.verify`); its finished values
        (:func:`~dispatcher.core.metrics.final_values`). Anything else is left out with a logged
        reason: no metrics is never an error. A read DynamoDB did not serve gives
        :class:`TransientError` (the transition is recorded next tick, with its metrics); an item
        still 'running' gives :class:`MetricsNotYet` (within :data:`METRICS_WAIT_S`). A failed
        read of the trial items raises (the sweeps are re-planned next tick)."""
        try:
            items = self.store.batch_get_trials([(r.sweep_id, i) for r, i in wanted])
        except SweepqError as exc:
            return {(r.sweep_id, i): exc for r, i in wanted}
        out: dict[tuple[str, int], FinalMetrics] = {}
        refs: list[tuple[str, str, int]] = []
        patterns: dict[str, str] = {}
        asked: list[tuple[SweepRecord, int, str, int]] = []  # (record, index, job, attempt) read from the metrics table
        for record, index in wanted:
            key = (record.sweep_id, index)
            item = items.get(key) or {}
            out[key] = ({}, item, None)
            live = record.live.get(index)
            if self.metrics is None or live is None:
                continue
            job = self._live_job(record, index)
            if job is None:
                continue
            if record.kind == "template":
                suffix = self._template_pattern(record, index, job)
                if isinstance(suffix, Exception):
                    out[key] = suffix
                if not isinstance(suffix, str):
                    continue
                patterns[job] = suffix
            refs.append((record.kind, job, live.attempt))
            asked.append((record, index, job, live.attempt))
        if not asked:
            return out
        try:
            read = self.metrics.read(refs, template_patterns=patterns) if self.metrics is not None else None
        except SweepqError as exc:
            for record, index, _, _ in asked:
                out[(record.sweep_id, index)] = exc
            return out
        for record, index, job, attempt in asked:
            key = (record.sweep_id, index)
            out[key] = self._final_of(record, index, job, attempt, read, out[key])
        return out

    def _live_job(self, record: SweepRecord, index: int) -> str | None:
        """The job of trial ``index``'s live attempt, whose metrics item may be trusted; ``None``
        (logged) when the live entry names another job."""
        live = record.live[index]
        job = job_name(record.sweep_id, index, live.attempt)
        if live.job_name and live.job_name != job:
            self._metrics_skipped(record, index, live.attempt, job,
                                  f"the live entry names job {live.job_name!r}, not {job!r}: no metrics trusted")
            return None
        return job

    def template_pods(self, record: SweepRecord) -> str | TransientError | None:
        """The pod-name suffix pattern a ``template`` sweep's metrics items are trusted by (the
        operator policy's entry, :func:`~dispatcher.core.metrics.template_suffix`); ``None`` when
        its entry trusts no pod; :class:`TransientError` when the policy cannot be read now."""
        try:
            policy = self.policy()
        except SweepqError as exc:
            return TransientError(f"the operator policy cannot be read ({exc})")
        entry = policy.templates.get(record.launch.template or "")
        return template_suffix(entry.pod_name_pattern if entry is not None else None)

    def _template_pattern(self, record: SweepRecord, index: int, job: str) -> str | TransientError | None:
        """The pod-name pattern a ``template`` sweep's metrics items are trusted by (the operator
        policy's entry); ``None`` (logged) when its entry trusts no pod; :class:`TransientError`
        when the policy cannot be read now (which pods to trust is the policy's word: wait for it)."""
        suffix = self.template_pods(record)
        if isinstance(suffix, TransientError):
            return TransientError(f"metrics of {job}: {suffix}")
        if suffix is None:
            self._metrics_skipped(record, index, record.live[index].attempt, job,
                                  f"template {record.launch.template!r} has no pod_name_pattern "
                                  "'{job}-<regex>' in the policy: no pod of it is trusted")
        return suffix

    def summary_needs(self, record: SweepRecord) -> tuple[str, HyperbandSpec | None] | None:
        """``(metric, hyperband spec)`` when the sweep's ended trials get a metric summary
        (:func:`dispatcher.core.history.needed`), else ``None`` — also for a spec that cannot be
        read (its claims report that; the trial then ends without a summary, the fallback)."""
        if not record.metric_name:
            return None
        try:
            sweep = self.specs.get(record.sweep_id)
        except Exception:  # noqa: BLE001 - reported by the sweep's claims; a summary is never worth failing a transition
            return None
        return (record.metric_name, sweep.hyperband) if history.needed(sweep) else None

    def prefetch_ended_summaries(self, wanted: list[tuple[SweepRecord, int]]) -> None:
        """The metric summaries (:mod:`dispatcher.core.history`) of the trials this tick ends
        other than by success (failed, cancelled, lost and given up), of sweeps that need one
        (bayes, hyperband): **one batched read** of their live attempts' metrics items for the
        whole tick (a ``BatchGetItem`` per 100 jobs, a ``Query`` per job for kinds without a
        predictable pod), made only in a tick where such a trial ends — in exchange, no ended
        trial's metrics item is read again. A read refused or left unprocessed leaves those trials
        without a summary (logged): their transitions are never held for it, and the readers fall
        back as for an item stored before summaries existed."""
        self._ended_summaries = {}
        if self.metrics is None:
            return
        refs: list[tuple[str, str, int]] = []
        patterns: dict[str, str] = {}
        asked: list[tuple[SweepRecord, int, str, tuple[str, HyperbandSpec | None]]] = []
        for record, index in wanted:
            needs = self.summary_needs(record)
            if needs is None or index not in record.live:
                continue
            job = self._live_job(record, index)
            if job is None:
                continue
            if record.kind == "template":
                suffix = self._template_pattern(record, index, job)
                if not isinstance(suffix, str):
                    continue
                patterns[job] = suffix
            refs.append((record.kind, job, record.live[index].attempt))
            asked.append((record, index, job, needs))
        if not asked:
            return
        try:
            read = self.metrics.read(refs, template_patterns=patterns)
        except SweepqError as exc:
            log.warning(json.dumps({"event": "history-unread", "trials": len(asked), "reason": str(exc)}))
            return
        for record, index, job, (metric, hyperband) in asked:
            if job in read.unread:
                log.warning(json.dumps({"event": "history-unread", "sweep_id": record.sweep_id, "trial": index,
                                        "reason": "DynamoDB kept the read unprocessed"}))
                continue
            self._ended_summaries[(record.sweep_id, index)] = history.summarize_item(
                read.get(job), metric=metric, hyperband=hyperband)

    def _final_of(self, record: SweepRecord, index: int, job: str, attempt: int, read: MetricsRead | None,
                  unread: FinalMetrics) -> FinalMetrics:
        assert read is not None and not isinstance(unread, Exception)
        item = unread[1]
        if job in read.unread:
            return TransientError(f"metrics of {job}: DynamoDB kept the read unprocessed — retried next tick")
        found = read.get(job)
        if found is not None and found.status == "running" and self._may_wait(found.updated_at):
            return MetricsNotYet(f"{job}: its pod's item still says 'running' — the final write (or the index) "
                                 f"lags; waiting up to {METRICS_WAIT_S} s")
        needs = self.summary_needs(record)
        if found is None:
            reasons = "; ".join(f"{i.pod}: {i.reason}" for i in read.ignored if i.job == job) or "no item for its pods"
            self._metrics_skipped(record, index, attempt, job, f"no trusted metrics item ({reasons})",
                                  "metrics-missing")
            return {}, item, (history.summarize_item(None, metric=needs[0], hyperband=needs[1]) if needs else None)
        final = final_values(found, metric=record.metric_name)
        for note in final.notes:
            self._metrics_skipped(record, index, attempt, job, f"{found.pod}: {note}")
        summary = None
        if needs is not None:  # W&B's summary of a finished run is its final value
            summary = history.summarize_item(found, metric=needs[0], hyperband=needs[1],
                                             summary=final.values.get(needs[0]))
        return final.values, item, summary

    @staticmethod
    def _metrics_skipped(record: SweepRecord, index: int, attempt: int, job: str, reason: str,
                         event: str = "metrics-ignored") -> None:
        log.warning(json.dumps({"event": event, "sweep_id": record.sweep_id, "trial": index,
                                "attempt": attempt, "job": job, "reason": reason}))

    def _may_wait(self, updated_at: float) -> bool:
        """Whether a succeeded trial whose item is not final yet is worth another tick: its last
        write is under :data:`METRICS_WAIT_S` old by our clock. A write time further in the future
        than the skew hosts may have (:data:`METRICS_CLOCK_SKEW_S`) is the trial's word, not a time:
        no wait — what a trial's clock can make us wait stays bounded."""
        now = self.clock()
        if updated_at > now + METRICS_CLOCK_SKEW_S:
            return False
        return now - updated_at < METRICS_WAIT_S

    def _best_after(self, record: SweepRecord, index: int, metrics: Mapping[str, Any],
                    item: Mapping[str, Any]) -> dict[str, Any] | None:
        """The sweep's best trial if trial ``index`` (just succeeded) beats it, from its final
        ``metrics`` (:meth:`trial_metrics`); ``item`` is its trial item."""
        if not record.metric_name:
            return None
        value = metrics.get(record.metric_name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        incumbent = (record.best or {}).get("value")
        if not better(record.metric_goal, float(value), incumbent if isinstance(incumbent, (int, float)) else None):
            return None
        best = {"trial_index": index, "trial_id": item.get("trial_id", ""), "metric": record.metric_name,
                "value": float(value)}
        params = item.get("params", "")
        if isinstance(params, str) and len(params) <= BEST_PARAMS_MAX:
            best["params"] = params
        return best

    def end_sweep(self, record: SweepRecord, state: SweepState, reason: str, *, now: float) -> None:
        self.store.end_sweep(record.sweep_id, state=state.value, reason=reason, owner=self.owner, now=now)
        log.info(json.dumps({"event": "sweep-ended", "sweep_id": record.sweep_id, "state": state.value, "reason": reason}))
