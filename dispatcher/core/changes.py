"""What one tick changes on one sweep: plain data the tick builds and the store commits together.

The tick decides (a trial moved on, a trial is claimed); it does not write each decision on its
own. It collects them per sweep, in the order they were decided, and hands the list to
``Store.commit_sweep``, which writes them as one DynamoDB transaction (split only at DynamoDB's
limits; see :mod:`dispatcher.adapters.sweep_writes`). Each change carries the condition it was
decided on (the attempt of a transition, the cursor of a fresh claim, the WAITING attempt of a
retry), so merging them loses none of what makes a write exactly-once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class TrialTransition:
    """A live trial changes (``live`` = its new live entry) or leaves the live set (``live`` None,
    ``counter`` = succeeded/failed/cancelled/early_stopped). Decided on attempt ``attempt`` being
    the trial's live one. ``metrics``: its final metrics (the trial item's ``metrics``); ``outcome``:
    the attempt ended (appended to the trial's ``attempts``, with ``counted`` when known).
    ``summary``: the sweep metric's history as the tick last read it, for a trial that leaves the
    live set (:mod:`dispatcher.core.history`; stored as the trial item's ``metric_summary``)."""

    index: int
    attempt: int
    live: Mapping[str, Any] | None
    trial_state: str
    reason: str = ""
    started_at: float | None = None
    outcome: str | None = None
    counter: str | None = None
    best: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    counted: bool | None = None
    summary: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FreshClaim:
    """Claim the sweep's next fresh trial: decided on the cursor being ``index``; creates its trial item."""

    index: int
    live: Mapping[str, Any]
    trial: Mapping[str, Any]


@dataclass(frozen=True)
class RetryClaim:
    """Claim attempt ``attempt`` of a trial decided on its live attempt ``prev_attempt`` being WAITING."""

    index: int
    prev_attempt: int
    live: Mapping[str, Any]
    attempt: int
    job: str


SweepChange = Union[TrialTransition, FreshClaim, RetryClaim]
