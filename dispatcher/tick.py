"""One dispatcher tick: lease → intake → observe → reconcile → plan → launch → report.

Decisions are made by the pure core (:mod:`dispatcher.core.reconcile`, :mod:`dispatcher.core.planner`);
this module reads, asks, and performs. Every step is safe to crash and re-run:

* a sweep is stored with a conditional put *before* its message is deleted;
* a trial is claimed (cursor/attempt condition + lease check, one transaction) *before* its job is
  created under a deterministic name; 409 AlreadyExists counts as created; a claimed trial whose job
  is missing is re-created by the next tick; a launched job that vanished is LOST and retried.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import uuid
from typing import Any, Callable, Mapping

from pydantic import ValidationError

from dispatcher.adapters.queue import Queue, Received
from dispatcher.adapters.store import Store, sweep_key, trial_key
from dispatcher.core.errors import Conflict, PermanentError, SweepqError, TransientError
from dispatcher.core.jobs import Backend, JobStatus
from dispatcher.core.planner import Launch, free_capacity, plan
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.reconcile import Relaunch, Transition, fail_attempt, reconcile_sweep
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState, better
from dispatcher.intake import Intake
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from dispatcher.trials import SpecCache, launch_request, record_from_item

log = logging.getLogger(__name__)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Holds the injected adapters. ``backends`` maps job kind → Backend (enabled kinds only)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        queue: Queue | None,
        backends: Mapping[str, Backend],
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.backends = dict(backends)
        self.clock = clock
        self.owner = owner or default_owner()
        self.specs = SpecCache(store.get_spec)
        self.intake = Intake(settings=settings, store=store, queue=queue, backends=self.backends, clock=clock)

    def process_message(self, message: Received, report: TickReport) -> bool:
        """One delivered message (the Lambda SQS event source); True when it was committed."""
        return self.intake.process_message(message, report)

    # -- entry ----------------------------------------------------------------------------
    def tick(self, *, max_rounds: int = 3) -> TickReport:
        started = self.clock()
        report = TickReport()
        if not self.store.acquire_lease(self.owner, now=started, seconds=self.settings.lease_seconds):
            self.store.mark_dirty()
            report.lease = "busy"
            report.duration_s = round(self.clock() - started, 3)
            log.info(json.dumps({"event": "tick", **report.as_dict()}))
            return report
        try:
            for _ in range(max_rounds):
                self._round(report)
                if self.store.release_lease(self.owner):
                    break
                # someone marked the lease dirty: a trigger arrived while we worked — go once more
                self.store.renew_lease(self.owner, now=self.clock(), seconds=self.settings.lease_seconds)
            else:
                self.store.release_lease(self.owner)
        except (TransientError, Conflict) as exc:
            # The work of this tick is committed (or fenced off); a lease we could not release or
            # renew simply expires. Report it instead of failing the whole tick (CronJob exit 3).
            report.errors.append(f"lease: {exc} — it expires by itself in {self.settings.lease_seconds} s")
        report.duration_s = round(self.clock() - started, 3)
        log.info(json.dumps({"event": "tick", **report.as_dict()}, default=str))
        return report

    def _round(self, report: TickReport) -> None:
        if self.queue is not None:
            self.intake.drain(report)
            self.store.renew_lease(self.owner, now=self.clock(), seconds=self.settings.lease_seconds)
        try:
            jobs = self.observe()
        except SweepqError as exc:
            report.errors.append(f"observe: {exc}")
            log.warning("observe failed, launching nothing this tick: %s", exc)
            return
        records = self.load_active(report)
        records, held = self.reconcile(records, jobs, report)
        self.launch(records, jobs, report, held=held)
        report.active_sweeps = len(records)
        report.running = sum(r.holding for r in records)

    # -- observe / load -------------------------------------------------------------------
    def observe(self) -> dict[str, JobStatus]:
        jobs: dict[str, JobStatus] = {}
        for kind in sorted(self.backends):
            jobs.update(self.backends[kind].observe())
        return jobs

    def load_active(self, report: TickReport) -> list[SweepRecord]:
        records = []
        for item in self.store.active_sweeps():
            try:
                records.append(record_from_item(item))
            except (ValueError, KeyError, ValidationError) as exc:
                report.errors.append(f"sweep {item.get('sweep_id')}: unreadable record: {exc}")
        return records

    # -- reconcile ------------------------------------------------------------------------
    def reconcile(self, records: list[SweepRecord], jobs: Mapping[str, JobStatus],
                  report: TickReport) -> tuple[list[SweepRecord], set[str]]:
        """Apply each sweep's outcome. Returns the records still active, as they now are, and the
        ids of those *held* this tick — a write was refused or a job could not be cancelled, so
        our view is stale or a job we gave up on still runs. A held sweep launches nothing this
        tick, but its live trials still count against the caps: dropping it let other sweeps
        take its slots, and the next tick (re)created its claimed trials on top of them."""
        still_active: list[SweepRecord] = []
        held: set[str] = set()
        now = self.clock()
        by_sweep: dict[str, dict[str, JobStatus]] = {}
        for job in jobs.values():  # once per tick: each sweep sees only its own jobs (O(jobs), not O(sweeps × jobs))
            by_sweep.setdefault(job.sweep_id, {})[job.name] = job
        for record in records:
            sweep_jobs = by_sweep.get(record.sweep_id, {})
            try:
                record = self._note_created(record, sweep_jobs, now, report)
            except (Conflict, TransientError) as exc:
                report.errors.append(f"sweep {record.sweep_id}: {exc} — re-planned next tick")
                held.add(record.sweep_id)
                still_active.append(record)
                continue
            outcome = reconcile_sweep(record, sweep_jobs, now=now)
            uncancelled: set[str] = set()
            for cancel in outcome.cancels:
                try:
                    self.backends[cancel.kind].cancel(cancel.name) if cancel.kind in self.backends else None
                    log.info(json.dumps({"event": "cancel-job", "job": cancel.name, "reason": cancel.reason}))
                except SweepqError as exc:
                    uncancelled.add(cancel.name)
                    report.errors.append(f"cancel {cancel.name}: {exc}")
            current, stale = record, False
            try:
                for tr in outcome.transitions:
                    live = record.live.get(tr.index)
                    if live is not None and live.job_name in uncancelled:
                        continue  # its job still runs: the trial keeps its slot until a cancel succeeds
                    current = self.write_transition(current, tr, now, report)
                for relaunch in outcome.relaunches:
                    current = self.relaunch(current, relaunch, report)
                if outcome.end and not uncancelled:
                    self.end_sweep(current, *outcome.end, now=now)
                    continue
            except Conflict as exc:
                report.errors.append(f"sweep {record.sweep_id}: {exc} — re-planned next tick")
                stale = True  # our view of this sweep is stale (or we lost the lease)
            except TransientError as exc:
                report.errors.append(f"sweep {record.sweep_id}: {exc}")
                stale = True
            if stale or uncancelled:
                held.add(record.sweep_id)
            still_active.append(current)
        return still_active, held

    def _note_created(self, record: SweepRecord, jobs: Mapping[str, JobStatus], now: float,
                      report: TickReport) -> SweepRecord:
        """Record LAUNCHED for PENDING trials whose job is on the cluster (their LAUNCHED write was
        lost to a crash or a failed call), before anything else is decided for the sweep. PENDING
        means "the job may not exist yet: create it", so a job must never be cancelled while its
        trial still says PENDING: the cancel (over max_runtime, say) succeeded, the write of the
        attempt's end failed, and the next tick created the same attempt's job a second time."""
        for t in sorted(record.live.values(), key=lambda t: t.index):
            if t.state is TrialState.PENDING and t.job_name in jobs:
                launched = dataclasses.replace(t, state=TrialState.LAUNCHED)
                record = self.write_transition(
                    record, Transition(record.sweep_id, t.index, t.attempt, launched, TrialState.LAUNCHED), now, report)
        return record

    def write_transition(self, record: SweepRecord, tr: Transition, now: float, report: TickReport) -> SweepRecord:
        names = {"#i": str(tr.index), "#live": "live", "#s": "state"}
        values: dict[str, Any] = {":a": tr.attempt, ":now": now}
        trial_sets = ["#s = :s", "updated_at = :now"]
        trial_values: dict[str, Any] = {":s": tr.trial_state.value, ":now": now}
        if tr.reason:
            trial_sets.append("reason = :r")
            trial_values[":r"] = tr.reason[:1000]
        if tr.new is not None and tr.new.started_at is not None and tr.trial_state is TrialState.RUNNING:
            trial_sets.append("started_at = :st")
            trial_values[":st"] = tr.new.started_at
        if tr.outcome is not None:
            trial_sets.append("attempts = list_append(if_not_exists(attempts, :empty), :rec)")
            trial_values[":empty"] = []
            trial_values[":rec"] = [{"attempt": tr.attempt, "outcome": tr.outcome.value, "reason": tr.reason[:500], "at": now}]
        best = None
        if tr.new is None:
            counter = {TrialState.SUCCEEDED: "succeeded", TrialState.FAILED: "failed", TrialState.CANCELLED: "cancelled"}[tr.trial_state]
            trial_sets.append("finished_at = :now")
            sets = ["updated_at = :now"]
            if tr.trial_state is TrialState.SUCCEEDED:
                best = self._best_after(record, tr.index)
                if best is not None:
                    sets.append("best = :best")
                    values[":best"] = best
            expr = f"SET {', '.join(sets)} REMOVE #live.#i ADD {counter} :one"
            values[":one"] = 1
        else:
            expr = "SET #live.#i = :live, updated_at = :now"
            values[":live"] = tr.new.to_item()
        meta = self.store.update(sweep_key(tr.sweep_id), expr, values, condition="#live.#i.attempt = :a", names=names)
        trial = self.store.update(trial_key(tr.sweep_id, tr.index), "SET " + ", ".join(trial_sets), trial_values,
                                  condition="attribute_exists(pk)", names={"#s": "state"})
        self.store.transact(f"trial {tr.sweep_id}/{tr.index}", [meta, trial], owner=self.owner, now=now)
        log.info(json.dumps({"event": "trial", "sweep_id": tr.sweep_id, "trial": tr.index, "attempt": tr.attempt,
                             "state": tr.trial_state.value, "reason": tr.reason}))
        if tr.trial_state is TrialState.SUCCEEDED:
            report.finished += 1
        elif tr.trial_state is TrialState.FAILED:
            report.failed += 1
        elif tr.trial_state is TrialState.CANCELLED:
            report.cancelled += 1
        elif tr.trial_state is TrialState.WAITING:
            report.retried += 1
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

    def _best_after(self, record: SweepRecord, index: int) -> dict[str, Any] | None:
        """The sweep's best trial if trial ``index`` (just succeeded) beats it, from its reported metrics."""
        if not record.metric_name:
            return None
        item = self.store.get_trial(record.sweep_id, index) or {}
        value = (item.get("metrics") or {}).get(record.metric_name)
        if not isinstance(value, (int, float)):
            return None
        incumbent = (record.best or {}).get("value")
        if better(record.metric_goal, float(value), incumbent if isinstance(incumbent, (int, float)) else None):
            return {"trial_index": index, "trial_id": item.get("trial_id", ""), "metric": record.metric_name,
                    "value": float(value), "params": item.get("params", "")}
        return None

    def end_sweep(self, record: SweepRecord, state: SweepState, reason: str, *, now: float) -> None:
        update = self.store.update(
            sweep_key(record.sweep_id),
            "SET #s = :s, reason = :r, list_pk = :done, ended_at = :now, updated_at = :now",
            {":s": state.value, ":r": reason, ":done": "DONE", ":now": now, ":active": "ACTIVE"},
            condition="list_pk = :active",
            names={"#s": "state"},
        )
        self.store.transact(f"end sweep {record.sweep_id}", [update], owner=self.owner, now=now)
        log.info(json.dumps({"event": "sweep-ended", "sweep_id": record.sweep_id, "state": state.value, "reason": reason}))

    # -- launch ---------------------------------------------------------------------------
    def _submit(self, record: SweepRecord, index: int, attempt: int) -> None:
        sweep = self.specs.get(record.sweep_id)
        request = launch_request(
            self.settings, sweep, record.sweep_id, record.launch, index, attempt, self.queue.url if self.queue else None
        )
        backend = self.backends[record.kind]
        backend.submit(backend.dryrun(request))

    def relaunch(self, record: SweepRecord, r: Relaunch, report: TickReport) -> SweepRecord:
        """A claimed trial whose job is missing (a crash between claim and create): create it now."""
        return self._create_and_mark(record, r.index, r.attempt, report)

    def _create_and_mark(self, record: SweepRecord, index: int, attempt: int, report: TickReport) -> SweepRecord:
        t = record.live[index]
        try:
            self._submit(record, index, attempt)
        except PermanentError as exc:
            return self.write_transition(record, fail_attempt(record, t, TrialState.FAILED, f"could not create job: {exc}"),
                                         self.clock(), report)
        launched = LiveTrial(index, attempt, TrialState.LAUNCHED, t.job_name, t.claimed_at)
        report.launched += 1
        return self.write_transition(record, Transition(record.sweep_id, index, attempt, launched, TrialState.LAUNCHED),
                                     self.clock(), report)

    def claim(self, record: SweepRecord, launch: Launch, now: float) -> SweepRecord:
        name = job_name(record.sweep_id, launch.index, launch.attempt)
        live = LiveTrial(launch.index, launch.attempt, TrialState.PENDING, name, now)
        names = {"#i": str(launch.index), "#live": "live", "#s": "state"}
        if launch.retry:
            prev = record.live[launch.index]
            meta = self.store.update(
                sweep_key(record.sweep_id), "SET #live.#i = :live, updated_at = :now",
                {":live": live.to_item(), ":now": now, ":prev": prev.attempt, ":w": TrialState.WAITING.value},
                condition="#live.#i.attempt = :prev AND #live.#i.#s = :w", names=names,
            )
            trial = self.store.update(
                trial_key(record.sweep_id, launch.index),
                "SET attempt = :a, #s = :s, job = :job, claimed_at = :now, updated_at = :now REMOVE started_at",
                {":a": launch.attempt, ":s": TrialState.PENDING.value, ":job": name, ":now": now},
                condition="attribute_exists(pk)", names={"#s": "state"},
            )
        else:
            sweep = self.specs.get(record.sweep_id)
            params = sweep.trial(launch.index)
            meta = self.store.update(
                sweep_key(record.sweep_id), "SET #c = :next, #live.#i = :live, updated_at = :now",
                {":next": launch.index + 1, ":cur": launch.index, ":live": live.to_item(), ":now": now, ":active": "ACTIVE"},
                condition="#c = :cur AND list_pk = :active AND attribute_not_exists(#live.#i)",
                names={"#i": str(launch.index), "#live": "live", "#c": "cursor"},
            )
            trial = self.store.put(
                {**trial_key(record.sweep_id, launch.index), "type": "trial", "sweep_id": record.sweep_id,
                 "trial_id": trial_id(record.sweep_id, launch.index), "index": launch.index,
                 "params": json.dumps(params, sort_keys=True), "state": TrialState.PENDING.value,
                 "attempt": launch.attempt, "job": name, "claimed_at": now, "updated_at": now},
                condition="attribute_not_exists(pk)",
            )
        self.store.transact(f"claim {record.sweep_id}/{launch.index}", [meta, trial], owner=self.owner, now=now)
        return dataclasses.replace(
            record, live={**record.live, launch.index: live},
            cursor=record.cursor if launch.retry else launch.index + 1,
        )

    def launch(self, records: list[SweepRecord], jobs: Mapping[str, JobStatus], report: TickReport, *,
               held: set[str] | frozenset[str] = frozenset()) -> None:
        """Claim, then create, what the planner gives the free slots. Every record counts for the
        caps; ``held`` sweeps (see :meth:`reconcile`) get no launch this tick."""
        s = self.settings
        holding_live = {t.job_name for r in records for t in r.live.values() if t.state.holds_slot}
        busy = [j for j in jobs.values() if not j.phase.terminal]
        used_jobs = len(busy) + len(holding_live - {j.name for j in busy})
        by_id = {r.sweep_id: r for r in records}
        used_gpus = sum(j.gpus for j in busy) + sum(
            r.launch.gpus_per_trial for r in records for t in r.live.values()
            if t.state.holds_slot and t.job_name not in jobs
        )
        capacity = free_capacity(max_running=s.max_running, max_gpus=s.max_gpus, used_jobs=used_jobs, used_gpus=used_gpus)
        report.capacity = capacity.jobs
        stale: set[str] = set()
        launchable = [r for r in records if r.sweep_id not in held]
        for item in plan(sweeps=launchable, capacity=capacity, limit=s.max_launches_per_tick):
            if item.sweep_id in stale:
                continue
            try:
                record = self.claim(by_id[item.sweep_id], item, self.clock())
                by_id[item.sweep_id] = record
                by_id[item.sweep_id] = self._create_and_mark(record, item.index, item.attempt, report)
            except (Conflict, TransientError) as exc:
                # A lost condition means our view of this sweep is stale (or the lease is gone, in
                # which case every further write fails the same way): nothing more for it this tick.
                # Claim precedes create, so no job exists without a committed claim.
                stale.add(item.sweep_id)
                report.errors.append(f"launch {item.sweep_id}/{item.index}: {exc} — re-planned next tick")
        for i, r in enumerate(records):
            records[i] = by_id[r.sweep_id]
