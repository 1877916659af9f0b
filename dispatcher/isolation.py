"""Per-sweep fault isolation and leak deletion for :class:`dispatcher.tick.Dispatcher` (a mixin).

* **Failures.** Anything handling one sweep raises beyond the fault model (a bug, a write
  DynamoDB refuses) holds only that sweep for the tick, is reported with a readable reason and
  logged with its traceback, and is counted on the sweep's item; after
  ``SWEEPQ_SWEEP_FAILURES_TO_HOLD`` ticks in a row the sweep is *held* (``held`` on its item,
  ``reason`` "held: …" in ``producer status``) until an operator clears it (README, Reliability).
  Where even that write fails, the count is kept in memory and the error reported every tick.
* **Leaks.** A managed job whose sweep the tick did not load is judged on the sweep's item read
  strongly now (:func:`dispatcher.core.reconcile.leaked_jobs`) and deleted when its sweep ended
  or no live attempt owns it; another scope's or another table's jobs are never touched.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Mapping

from pydantic import ValidationError

from dispatcher.adapters.store import LeaseLost
from dispatcher.core.errors import Conflict, SweepqError, TransientError
from dispatcher.core.jobs import JobStatus
from dispatcher.core.reconcile import CancelJob, leaked_jobs, owned_jobs
from dispatcher.core.records import SweepRecord, SweepState
from dispatcher.intake import unexpected
from dispatcher.report import TickReport
from dispatcher.settings import ENV
from dispatcher.trials import record_from_item

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.tick_host import DispatcherHost

log = logging.getLogger("dispatcher.tick")


class Isolation:
    def _cancel(self: DispatcherHost, cancels: list[CancelJob], report: TickReport) -> set[str]:
        """Delete these jobs; returns the names whose delete failed."""
        failed: set[str] = set()
        for cancel in cancels:
            backend = self.backends.get(cancel.kind)
            if backend is None:
                continue
            try:
                backend.cancel(cancel.name)
            except SweepqError as exc:
                failed.add(cancel.name)
                report.errors.append(f"cancel {cancel.name}: {exc}")
                continue
            if cancel.reason.startswith(("orphan", "leak")):
                report.leaked += 1
            log.info(json.dumps({"event": "cancel-job", "job": cancel.name, "reason": cancel.reason}))
        return failed

    def _sweep_failed(self: DispatcherHost, record: SweepRecord, exc: Exception, report: TickReport) -> None:
        """Handling this sweep raised something not in the fault model (a bug, or a write DynamoDB
        refuses): count it; after ``sweep_failures_to_hold`` ticks in a row, park the sweep."""
        sid, limit = record.sweep_id, self.settings.sweep_failures_to_hold
        if sid in self._failed_now:
            report.errors.append(f"sweep {sid}: {exc if isinstance(exc, SweepqError) else unexpected(exc)}")
            return  # one failure per sweep and round
        self._failed_now.add(sid)
        failures = max(record.failures, self._failures.get(sid, 0)) + 1
        self._failures[sid] = failures
        what = str(exc) if isinstance(exc, SweepqError) else unexpected(exc)
        hold = what if failures >= limit else None
        log.error("sweep %s: handling failed (%d of %d): %s", sid, failures, limit, what,
                  exc_info=not isinstance(exc, SweepqError))
        report.errors.append(f"sweep {sid}: {what} — held this tick (failure {failures} of {limit}"
                             + (f"; now held for an operator, see {ENV['sweep_failures_to_hold']})" if hold else ")"))
        try:
            self.store.note_sweep_failure(sid, failures=failures, error=what, hold=hold, owner=self.owner,
                                          now=self.clock())
        except LeaseLost:
            raise
        except Exception as write_exc:  # noqa: BLE001 - the sweep's item refuses writes too: counted in memory
            report.errors.append(f"sweep {sid}: could not record the failure ({unexpected(write_exc)})")

    def _sweep_recovered(self: DispatcherHost, record: SweepRecord, report: TickReport) -> None:
        """Handled without a failure this round: forget the earlier ones."""
        self._failures.pop(record.sweep_id, None)
        if not record.failures:
            return
        try:
            self.store.clear_sweep_failures(record.sweep_id, owner=self.owner, now=self.clock())
        except LeaseLost:
            raise
        except (Conflict, TransientError) as exc:
            report.errors.append(f"sweep {record.sweep_id}: {exc} — its failure count is cleared next tick")

    def delete_leaks(self: DispatcherHost, loaded: set[str], jobs: Mapping[str, JobStatus], report: TickReport) -> None:
        """Non-terminal managed jobs of sweeps this tick did not load (ended ones, above all: a
        create that landed after a lease loss, once another tick had ended the sweep) are judged
        against their sweep's item read strongly now, and deleted unless a live attempt owns them."""
        foreign: dict[str, dict[str, JobStatus]] = {}
        for job in jobs.values():
            if job.sweep_id not in loaded and not job.phase.terminal:
                foreign.setdefault(job.sweep_id, {})[job.name] = job
        if not foreign:
            return
        try:
            metas = {m["sweep_id"]: m for m in self.store.batch_get_sweeps(sorted(foreign)) if "sweep_id" in m}
        except SweepqError as exc:
            report.errors.append(f"leak check: {exc}")
            return
        for sweep_id, sweep_jobs in sorted(foreign.items()):
            meta = metas.get(sweep_id)
            owned: set[str] = set()
            if meta is not None and meta.get("state") == SweepState.ACTIVE.value:
                try:
                    owned = owned_jobs(record_from_item(meta))
                except (ValueError, KeyError, TypeError, ValidationError):
                    continue  # unreadable: never delete on a guess
            leaks = leaked_jobs(state=meta.get("state") if meta else None, sweep_scope=meta.get("scope") if meta else None,
                                owned=owned, jobs=sweep_jobs, scope=self.scope)
            self._cancel(leaks, report)
