"""What the tick's mixins (:mod:`dispatcher.launching`, :mod:`dispatcher.isolation`,
:mod:`dispatcher.suggesting`, :mod:`dispatcher.early_stop`) use of the class they are mixed into,
:class:`dispatcher.tick.Dispatcher`: its state and the methods they call on ``self``.

Typing only: each mixin method is annotated ``self: DispatcherHost`` (mypy's idiom for mixins), so
it sees the dispatcher without importing it, and every call on a :class:`~dispatcher.tick.Dispatcher`
checks that the dispatcher still has everything listed here, with these signatures.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping, Protocol, Sequence

from dispatcher.adapters.metrics import MetricsRead, MetricsStore
from dispatcher.adapters.store import LeaseLost, Store
from dispatcher.core.changes import SweepChange
from dispatcher.core.errors import PermanentError, TransientError
from dispatcher.core.hyperband import StopDecision
from dispatcher.core.jobs import Backend, JobStatus
from dispatcher.core.metrics import MetricsItem
from dispatcher.core.planner import Launch
from dispatcher.core.policy import Policy
from dispatcher.core.reconcile import CancelJob, Transition
from dispatcher.core.records import LiveTrial, SweepRecord
from dispatcher.core.search import Observation
from dispatcher.core.sharing import Caps, SharePolicy, TrialShape
from dispatcher.core.spec import Sweep
from dispatcher.report import TickReport
from dispatcher.settings import Settings
from dispatcher.trials import SpecCache


class DispatcherHost(Protocol):
    # -- state (set by Dispatcher.__init__ and its tick) ---------------------------------------
    settings: Settings
    store: Store
    backends: dict[str, Backend]
    clock: Callable[[], float]
    owner: str
    scope: str
    specs: SpecCache
    policy: Callable[[], Policy]
    metrics: MetricsStore | None
    _lease_until: float
    _failures: dict[str, int]
    _failed_now: set[str]
    _policy_holds: set[str]
    _lease_lock: threading.Lock
    _lease_gone: LeaseLost | None
    _changes: dict[str, list[SweepChange]]

    # -- dispatcher.tick.Dispatcher -------------------------------------------------------------
    def _renew(self) -> None: ...

    def write_transition(self, record: SweepRecord, tr: Transition, now: float, report: TickReport) -> SweepRecord: ...

    def commit(self, sweep_id: str) -> int: ...

    def _template_pattern(self, record: SweepRecord, index: int, job: str) -> str | TransientError | None: ...

    def template_pods(self, record: SweepRecord) -> str | TransientError | None: ...

    # -- dispatcher.isolation.Isolation ---------------------------------------------------------
    def _cancel(self, cancels: list[CancelJob], report: TickReport) -> set[str]: ...

    def _sweep_failed(self, record: SweepRecord, exc: Exception, report: TickReport) -> None: ...

    # -- dispatcher.launching.Launching ---------------------------------------------------------
    def _ensure_lease(self) -> None: ...

    def _sharing(self) -> tuple[SharePolicy, Caps]: ...

    def _claimed_shape(self, record: SweepRecord, index: int) -> TrialShape: ...

    def _submit(self, record: SweepRecord, index: int, attempt: int,
                params: Mapping[str, Any] | None = None) -> None: ...

    def _create_and_mark(self, record: SweepRecord, index: int, attempt: int, report: TickReport,
                         params: Mapping[str, Any] | None = None) -> SweepRecord: ...

    def _created(self, record: SweepRecord, index: int, attempt: int, report: TickReport,
                 refused: PermanentError | None) -> SweepRecord: ...

    def claim(self, record: SweepRecord, launch: Launch, now: float,
              params: Mapping[str, Any] | None = None) -> SweepRecord: ...

    def plan_claim(self, record: SweepRecord, launch: Launch, now: float,
                   params: Mapping[str, Any] | None = None) -> tuple[SweepRecord, SweepChange]: ...

    def _commit_and_create(self, by_id: dict[str, SweepRecord], before: Mapping[str, SweepRecord],
                           claimed: Mapping[str, list[tuple[Launch, Mapping[str, Any] | None]]],
                           report: TickReport) -> None: ...

    def _create_claimed(self, record: SweepRecord,
                        items: list[tuple[Launch, Mapping[str, Any] | None]]) -> list[tuple[int, int, Exception | None]]: ...

    def _commit_or_hold(self, sweep_id: str, report: TickReport,
                        record: SweepRecord | None) -> bool | frozenset[tuple[int, int]]: ...

    # -- dispatcher.suggesting.Suggesting -------------------------------------------------------
    def is_bayes(self, record: SweepRecord) -> bool: ...

    def bound_suggestions(self, planned: Sequence[Launch], records: Mapping[str, SweepRecord]) -> list[Launch]: ...

    def suggest_fresh(self, record: SweepRecord, indices: Sequence[int]) -> dict[int, dict[str, Any]]: ...

    def observations(self, record: SweepRecord, *, pending: Sequence[SweepChange] = ()) -> list[Observation]: ...


    def running_reports(self, record: SweepRecord, sweep: Sweep) -> dict[int, MetricsItem]: ...

    def stored_trial_params(self, record: SweepRecord, index: int) -> dict[str, Any]: ...

    # -- dispatcher.early_stop.EarlyStopping ----------------------------------------------------

    def _early_stop_sweep(self, record: SweepRecord, sweep: Sweep, running: list[LiveTrial],
                          read: MetricsRead, jobs: dict[str, JobStatus],
                          report: TickReport, *, metrics: MetricsStore) -> SweepRecord: ...

    def _stop_trial(self, record: SweepRecord, t: LiveTrial, decision: StopDecision,
                    item: MetricsItem | None, jobs: dict[str, JobStatus], report: TickReport, *,
                    summary: Mapping[str, Any] | None = None) -> SweepRecord: ...

    def _best_of_stopped(self, record: SweepRecord, index: int,
                         metrics: Mapping[str, Any]) -> dict[str, Any] | None: ...
