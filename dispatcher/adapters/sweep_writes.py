"""Domain writes on sweeps: each one named operation, one DynamoDB transaction, its conditions here.

The tick says *what* happens (claim trial 7 of sweep S for attempt 2, record that it succeeded,
end the sweep); this module owns *how*: item shapes, update expressions, and the conditions that
make each write exactly-once and scope-safe:

* every META update of the tick requires ``list_pk = ACTIVE#<this store's scope>``, so a
  dispatcher can never change a sweep of another scope, nor one that already ended;
* claims require the cursor (fresh trial) or the WAITING attempt (retry) they were planned from,
  and a sweep not paused (a pause committed while a tick planned makes its claim fail: nothing new
  starts once ``request_pause`` returned);
* a cancel, pause or resume of a sender other than the sweep's stored ``sender_id`` (and not an
  operator) is never performed: only the refusal is noted on the sweep (``control_refused``);
* a trial's transition requires the attempt it is about;
* with ``owner`` the transaction also checks that owner's lease (:meth:`Store.transact`).

**One sweep's unit of work** (:meth:`SweepWrites.commit_sweep`). The tick writes everything it
decided on a sweep in one ``TransactWriteItems``; DynamoDB allows one operation per item in a
transaction, so the changes (:mod:`dispatcher.core.changes`, in the order decided) are merged:

=========================  ===============================================================
item                       operation in the sweep's transaction
=========================  ===============================================================
``SWEEP#<id>`` / ``META``  one ``Update``: ``live.<i>`` set to each touched trial's last
                           entry (or removed when it left the live set), ``cursor`` to the
                           last fresh claim + 1, ``ADD`` each counter by how many trials ended
                           so, ``best`` the last one decided, ``updated_at``. Condition:
                           ``list_pk = ACTIVE#<scope>`` AND, per touched trial, what its
                           *first* change was decided on (a transition: ``live.<i>.attempt``;
                           a fresh claim: ``attribute_not_exists(live.<i>)``; a retry:
                           ``live.<i>.attempt`` = the WAITING attempt AND its state WAITING)
                           AND ``cursor`` = the first fresh claim's index AND, with any claim,
                           not paused. A later change of the same trial was decided on the
                           state the earlier one left, so its condition holds by construction.
``SWEEP#<id>`` / ``TRIAL``  one op per trial: a fresh claim's ``Put`` (``attribute_not_exists``)
``#<index:010d>``          with what later changes of the same trial set folded in; otherwise
                           one ``Update`` (``attribute_exists``) whose ``SET``/``REMOVE`` is the
                           trial's changes applied in order (the last value wins) and whose
                           ``attempts`` gets every ended attempt appended; a trial that
                           leaves the live set gets its ``metric_summary`` here too.
``LEASE``                  the ``ConditionCheck`` of the lease (last item).
=========================  ===============================================================

Split only at DynamoDB's limits: 100 items and 4 MB per transaction, 4 KB per expression (the
META update and its condition are kept under :data:`EXPRESSION_BUDGET`), and where two changes
cannot merge (a fresh claim that does not continue the part's cursor). The parts are written in
order, each with its own conditions and the lease check; a refused part raises :class:`Conflict`
and the parts before it stay written — each is what a sequence of single writes would have left.

Mixed into :class:`dispatcher.adapters.store.Store`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

from dispatcher.adapters.dynamo import jdump, ser
from dispatcher.adapters.keys import REGISTRY_KEY, active_pk, spec_key, sweep_key, trial_key
from dispatcher.core import history
from dispatcher.core.changes import FreshClaim, RetryClaim, SweepChange, TrialTransition
from dispatcher.core.errors import ClaimsRefused, ConfigError, Conflict, LeaseLost

log = logging.getLogger(__name__)
LIVE_NAMES = {"#live": "live", "#s": "state"}
TRIAL_REASON_MAX = 1000
ATTEMPT_REASON_MAX = 500
NOT_PAUSED = "(attribute_not_exists(paused) OR paused = :f)"  # a claim's condition (``:f`` = False)


class SweepHost(Protocol):
    """What :class:`SweepWrites` uses of the class it is mixed into (:class:`~dispatcher.adapters.store.Store`),
    and its own ``_active``."""

    scope: str | None

    @property
    def _active(self) -> str: ...

    def transact(self, what: str, items: list[dict[str, Any]], *, owner: str | None, now: float) -> None: ...

    def get_sweep(self, sweep_id: str, *, consistent: bool = True) -> dict[str, Any] | None: ...

    @staticmethod
    def update(key: dict[str, str], expression: str, values: dict[str, Any], *, condition: str | None = None,
               names: dict[str, str] | None = None) -> dict[str, Any]: ...

    @staticmethod
    def put(item: dict[str, Any], *, condition: str | None = None) -> dict[str, Any]: ...

    def commit_sweep(self, sweep_id: str, changes: Sequence[SweepChange], *, owner: str, now: float) -> int: ...


class SweepWrites:
    """Sweep domain writes; mixed into :class:`~dispatcher.adapters.store.Store`, whose ``transact``,
    ``get_sweep``, ``update``, ``put`` and ``scope`` they use."""

    @property
    def _active(self: SweepHost) -> str:
        if self.scope is None:
            raise ConfigError("sweep writes need a dispatcher scope (SWEEPQ_SCOPE)")
        return active_pk(self.scope)

    # -- intake -----------------------------------------------------------------------------
    def put_sweep(self: SweepHost, meta: dict[str, Any], spec: dict[str, Any], *, owner: str | None, now: float) -> bool:
        """Create META (+ SPEC) if absent, and register the sweep's scope for ``producer list``.
        False when the sweep already exists (duplicate delivery, or a tombstone)."""
        sweep_id = meta["sweep_id"]
        # A cancel that reached another deployment's queue before this sweep was stored left that
        # scope's tombstone: it does not bind this scope (a tombstone of our own scope does).
        condition, values = "attribute_not_exists(pk)", {}
        if meta.get("scope"):
            condition += " OR (tombstone = :t AND #scope <> :scope)"
            values = {":t": True, ":scope": meta["scope"]}
            # a tombstone someone else left (neither this sender nor an operator) binds nobody
            condition += " OR (tombstone = :t AND tomb_operator = :f AND tomb_sender <> :sender)"
            values.update({":f": False, ":sender": str(meta.get("sender_id") or "")})
        put = self.put({**sweep_key(sweep_id), **meta}, condition=condition)
        if values:
            put["Put"]["ExpressionAttributeValues"] = ser(values)
            put["Put"]["ExpressionAttributeNames"] = {"#scope": "scope"}
        items = [
            put,
            self.put({**spec_key(sweep_id), "spec": jdump(spec)}, condition="attribute_not_exists(pk)"),
        ]
        if meta.get("scope") and str(meta.get("list_pk", "")).startswith("ACTIVE#"):
            items.append(self.update(REGISTRY_KEY, "ADD scopes :s", {":s": {meta["scope"]}}))
        try:
            self.transact(f"store sweep {sweep_id}", items, owner=owner, now=now)
            return True
        except Conflict:
            if self.get_sweep(sweep_id) is not None:
                return False
            raise

    def request_cancel(self: SweepHost, sweep_id: str, *, requested_by: str, now: float, note: str = "",
                       sender: str | None = None, operator: bool = False) -> str:
        """Mark an active sweep of this scope for cancellation. ``sender``: the SenderId the sweep's
        stored ``sender_id`` must equal (``None``: an operator's, any sweep). A sweep not stored yet
        gets a tombstone naming ``requested_by`` (and ``operator``): only a submit of that same sender
        honours it (:meth:`put_sweep`), so nobody pre-cancels someone else's sweep. Returns what happened:
        ``requested``, ``tombstoned`` (not stored yet: its submit becomes a no-op), ``ended``
        (already terminal), ``refused:<submitter>`` (someone else's sweep) or ``other-scope:<scope>``
        (another deployment's sweep)."""
        condition = "attribute_exists(pk) AND list_pk = :a"
        values: dict[str, Any] = {":t": True, ":by": requested_by, ":now": now, ":a": self._active,
                                  ":note": note[:256]}
        if sender is not None:
            condition += " AND sender_id = :sender"
            values[":sender"] = sender
        update = self.update(
            sweep_key(sweep_id), "SET cancel_requested = :t, cancelled_by = :by, cancel_note = :note, updated_at = :now",
            values, condition=condition,
        )
        try:
            self.transact(f"cancel {sweep_id}", [update], owner=None, now=now)
            return "requested"
        except Conflict:
            log.info("cancel %s: no active sweep of scope %s with that id and sender; looking it up", sweep_id,
                     self.scope)
        meta = self.get_sweep(sweep_id)
        if meta is not None:
            if meta.get("state") == "ACTIVE" and meta.get("scope") != self.scope:
                return f"other-scope:{meta.get('scope') or 'none (stored before scopes)'}"
            if meta.get("state") == "ACTIVE" and sender is not None and meta.get("sender_id", "") != sender:
                return f"refused:{meta.get('sender_id', '')}"
            return "ended"
        tomb = {"sweep_id": sweep_id, "type": "sweep", "state": "CANCELLED", "list_pk": "DONE",
                "list_sk": f"0000#{sweep_id}", "reason": f"cancelled by {requested_by} before it was accepted", "cancelled_by": requested_by,
                "total": 0, "cursor": 0, "live": {}, "submitted_at": "", "launch": "{}", "scope": self.scope,
                "tombstone": True, "tomb_sender": requested_by, "tomb_operator": operator}
        try:
            self.transact(f"cancel {sweep_id}", [self.put({**sweep_key(sweep_id), **tomb},
                                                          condition="attribute_not_exists(pk)")], owner=None, now=now)
        except Conflict:
            log.info("sweep %s appeared while cancelling; the next cancel request will catch it", sweep_id)
            return "raced"
        return "tombstoned"

    def request_pause(self: SweepHost, sweep_id: str, *, pause: bool, requested_by: str, now: float, note: str = "",
                      sender: str | None = None) -> str:
        """Pause (``pause``) or resume an active sweep of this scope: ``paused`` is set or cleared,
        with who did it and when. ``sender``: the SenderId the sweep's stored ``sender_id`` must equal
        (``None``: an operator's, any sweep). Idempotent: pausing a paused sweep pauses it again.
        Returns ``paused`` / ``resumed`` (done), ``ended`` (already terminal), ``missing`` (no such
        sweep stored: nothing done), ``refused:<submitter>`` (someone else's sweep) or
        ``other-scope:<scope>`` (another deployment's sweep)."""
        condition = "attribute_exists(pk) AND list_pk = :a"
        values: dict[str, Any] = {":p": pause, ":by": requested_by, ":now": now, ":a": self._active,
                                  ":note": note[:256]}
        if sender is not None:
            condition += " AND sender_id = :sender"
            values[":sender"] = sender
        if pause:
            expression = "SET paused = :p, paused_by = :by, pause_note = :note, paused_at = :now, updated_at = :now"
        else:
            expression = "SET paused = :p, resumed_by = :by, resume_note = :note, resumed_at = :now, updated_at = :now"
        action = "pause" if pause else "resume"
        try:
            self.transact(f"{action} {sweep_id}", [self.update(sweep_key(sweep_id), expression, values,
                                                              condition=condition)], owner=None, now=now)
            return "paused" if pause else "resumed"
        except Conflict:
            log.info("%s %s: no active sweep of scope %s with that id and sender; looking it up", action, sweep_id,
                     self.scope)
        meta = self.get_sweep(sweep_id)
        if meta is None:
            return "missing"
        if meta.get("state") == "ACTIVE" and meta.get("scope") != self.scope:
            return f"other-scope:{meta.get('scope') or 'none (stored before scopes)'}"
        if meta.get("state") == "ACTIVE" and sender is not None and meta.get("sender_id", "") != sender:
            return f"refused:{meta.get('sender_id', '')}"
        return "ended"

    def note_control_refused(self: SweepHost, sweep_id: str, *, action: str, sender: str, reason: str,
                             now: float) -> None:
        """Record on an active sweep of this scope that a cancel/pause/resume was refused (for
        ``producer status``); nothing else of the sweep changes. A sweep that ended meanwhile is
        left as it is."""
        entry = {"action": action, "by": sender[:256], "reason": reason[:ATTEMPT_REASON_MAX], "at": now}
        update = self.update(sweep_key(sweep_id), "SET control_refused = :r", {":r": entry, ":a": self._active},
                             condition="attribute_exists(pk) AND list_pk = :a")
        try:
            self.transact(f"note refused {action} of {sweep_id}", [update], owner=None, now=now)
        except Conflict:
            log.info("refused %s of %s not noted: the sweep is no longer active here", action, sweep_id)

    def note_policy_hold(self: SweepHost, sweep_id: str, *, reason: str | None, owner: str, now: float) -> None:
        """Record (``reason``) or clear (``None``) why the operator policy holds the sweep's launches now."""
        if reason is None:
            update = self.update(sweep_key(sweep_id), "REMOVE policy_hold", {":a": self._active},
                                 condition="list_pk = :a")
        else:
            update = self.update(sweep_key(sweep_id), "SET policy_hold = :r", {":r": reason[:4000], ":a": self._active},
                                 condition="list_pk = :a")
        self.transact(f"policy hold of {sweep_id}", [update], owner=owner, now=now)

    # -- the tick: one unit of work per sweep ------------------------------------------------
    def commit_sweep(self: SweepHost, sweep_id: str, changes: Sequence[SweepChange], *, owner: str,
                     now: float) -> int:
        """Write everything one tick decided on one sweep (``changes``, in the order decided) as one
        transaction: one META update merging them all, one op per TRIAL item, the lease check (see
        the module docstring for the layout and the conditions). Split into more transactions, in
        order, only where DynamoDB's limits need it; each part carries the conditions of its own
        changes and the lease check. A refused part raises :class:`Conflict` (parts before it stay
        committed: each is a consistent step on its own, as when every change was its own write).

        Claims are the speculative part of a unit of work (they need the sweep unpaused and its
        cursor unmoved); transitions record what already happened (a job that ended, a job the tick
        deleted). So a refused part with claims in it is written once more without the claims of
        it and of every later part, and :class:`ClaimsRefused` says so: a pause that lands while
        the tick plans refuses its new trials, never the outcome of a job it already cancelled.
        Returns the number of transactions written."""
        parts = _split(self, sweep_id, list(changes), now)
        for n, part in enumerate(parts):
            items, _ = _render(self, sweep_id, part, now)
            try:
                self.transact(_what(sweep_id, part, n, len(parts)), items, owner=owner, now=now)
            except LeaseLost:
                raise
            except Conflict as exc:
                rest = [c for p in parts[n:] for c in p]
                transitions = [c for c in rest if isinstance(c, TrialTransition)]
                if len(transitions) == len(rest):
                    raise
                # DynamoDB does not say which condition of the merged META update failed, so a part
                # refused for a stale transition (or an ended sweep) costs this one more transaction,
                # which is refused the same way (a plain Conflict, nothing written).
                if transitions:
                    self.commit_sweep(sweep_id, transitions, owner=owner, now=now)
                written = frozenset(_claimed(c) for p in parts[:n] for c in p if not isinstance(c, TrialTransition))
                raise ClaimsRefused(f"{exc} — {len(rest) - len(transitions)} claim(s) not written "
                                    f"({len(written)} of earlier parts are), {len(transitions)} transition(s) "
                                    "written without them", written=written) from exc
        return len(parts)

    # -- the tick: claims and transitions, one at a time (each its own unit of work) ---------------
    def claim_fresh(self: SweepHost, sweep_id: str, *, index: int, live: Mapping[str, Any], trial: Mapping[str, Any],
                    owner: str, now: float) -> None:
        """Claim the sweep's next fresh trial (cursor = ``index``) and create its trial item."""
        self.commit_sweep(sweep_id, [FreshClaim(index, live, trial)], owner=owner, now=now)

    def claim_retry(self: SweepHost, sweep_id: str, *, index: int, prev_attempt: int, live: Mapping[str, Any], attempt: int,
                    job: str, owner: str, now: float) -> None:
        """Claim the next attempt of a WAITING trial."""
        self.commit_sweep(sweep_id, [RetryClaim(index, prev_attempt, live, attempt, job)], owner=owner, now=now)

    def record_transition(self: SweepHost, sweep_id: str, *, index: int, attempt: int, live: Mapping[str, Any] | None,
                          trial_state: str, reason: str = "", started_at: float | None = None,
                          outcome: str | None = None, counter: str | None = None,
                          best: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                          counted: bool | None = None, summary: Mapping[str, Any] | None = None, owner: str,
                          now: float) -> None:
        """One live trial changes or leaves the live set, with its trial item, in one transaction
        (:class:`~dispatcher.core.changes.TrialTransition`)."""
        change = TrialTransition(index, attempt, live, trial_state, reason=reason, started_at=started_at,
                                 outcome=outcome, counter=counter, best=best, metrics=metrics, counted=counted,
                                 summary=summary)
        self.commit_sweep(sweep_id, [change], owner=owner, now=now)

    # -- the tick: transitions and ends -----------------------------------------------------
    def end_sweep(self: SweepHost, sweep_id: str, *, state: str, reason: str, owner: str, now: float) -> None:
        update = self.update(
            sweep_key(sweep_id),
            "SET #s = :s, reason = :r, list_pk = :done, ended_at = :now, updated_at = :now",
            {":s": state, ":r": reason, ":done": "DONE", ":now": now, ":active": self._active},
            condition="list_pk = :active",
            names={"#s": "state"},
        )
        self.transact(f"end sweep {sweep_id}", [update], owner=owner, now=now)

    # -- the tick: per-sweep failures -------------------------------------------------------
    def note_sweep_failure(self: SweepHost, sweep_id: str, *, failures: int, error: str, hold: str | None, owner: str,
                           now: float) -> None:
        """Record that handling this sweep failed ``failures`` ticks in a row; with ``hold`` the
        sweep is held (the tick leaves it alone until an operator clears it, see the README)."""
        sets = ["failures = :n", "last_error = :e", "updated_at = :now"]
        values: dict[str, Any] = {":n": failures, ":e": error[:ATTEMPT_REASON_MAX], ":now": now,
                                  ":active": self._active}
        if hold is not None:
            sets += ["held = :h", "reason = :r"]
            values[":h"] = {"reason": hold[:ATTEMPT_REASON_MAX], "at": now, "failures": failures}
            values[":r"] = f"held: {hold}"[:TRIAL_REASON_MAX]
        update = self.update(sweep_key(sweep_id), "SET " + ", ".join(sets), values, condition="list_pk = :active")
        self.transact(f"note failure of sweep {sweep_id}", [update], owner=owner, now=now)

    def clear_sweep_failures(self: SweepHost, sweep_id: str, *, owner: str, now: float) -> None:
        """A tick handled the sweep again: forget its earlier failures."""
        update = self.update(sweep_key(sweep_id), "SET updated_at = :now REMOVE failures, last_error",
                             {":now": now, ":active": self._active},
                             condition="list_pk = :active AND attribute_exists(failures)")
        self.transact(f"clear failures of sweep {sweep_id}", [update], owner=owner, now=now)


# -- one sweep's unit of work: merging and splitting ------------------------------------------
MAX_TRANSACT_ITEMS = 100  # DynamoDB's limit per TransactWriteItems (the lease check is one of them)
MAX_TRANSACT_BYTES = 3_000_000  # of DynamoDB's 4 MB per transaction, estimated on the request's JSON
EXPRESSION_BUDGET = 3000  # characters of one META update + condition; DynamoDB allows 4 KB per expression


class _Unmergeable(Exception):
    """The change at position ``at`` cannot join this part (it must start a new transaction)."""

    def __init__(self, message: str, at: int = 0) -> None:
        super().__init__(message)
        self.at = at


def _claimed(change: SweepChange) -> tuple[int, int]:
    """(trial index, attempt) of a claim."""
    return (change.index, change.attempt if isinstance(change, RetryClaim) else 1)


@dataclass
class _TrialOp:
    """What one part does to one TRIAL item: create it (``put``) or update it."""

    put: dict[str, Any] | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    removes: set[str] = field(default_factory=set)
    appends: list[dict[str, Any]] = field(default_factory=list)

    def set(self, name: str, value: Any) -> None:
        if self.put is not None:
            self.put[name] = value
        else:
            self.sets[name] = value
            self.removes.discard(name)

    def remove(self, name: str) -> None:
        if self.put is not None:
            self.put.pop(name, None)
        else:
            self.sets.pop(name, None)
            self.removes.add(name)

    def append(self, record: dict[str, Any]) -> None:
        if self.put is not None:
            self.put["attempts"] = [*self.put.get("attempts", []), record]
        else:
            self.appends.append(record)


@dataclass
class _Meta:
    """What one part does to the META item, merged from its changes in order."""

    conditions: dict[int, tuple[str, int]] = field(default_factory=dict)  # index → (first change's kind, attempt)
    live: dict[int, Mapping[str, Any] | None] = field(default_factory=dict)  # index → final entry (None: removed)
    cursor: tuple[int, int] | None = None  # (cursor the fresh claims were decided on, cursor after them)
    counters: dict[str, int] = field(default_factory=dict)
    best: Mapping[str, Any] | None = None
    claims: bool = False


def _merge(sweep_id: str, changes: Sequence[SweepChange], now: float) -> tuple[_Meta, dict[int, _TrialOp]]:
    meta: _Meta = _Meta()
    trials: dict[int, _TrialOp] = {}
    for at, change in enumerate(changes):
        index = change.index
        op = trials.setdefault(index, _TrialOp())
        if isinstance(change, FreshClaim):
            if op.put is not None or op.sets or op.removes or op.appends or index in meta.live:
                raise _Unmergeable(f"trial {index} changed before its fresh claim", at)
            if meta.cursor is not None and meta.cursor[1] != index:
                raise _Unmergeable(f"fresh claim {index} does not follow the cursor {meta.cursor[1]}", at)
            meta.cursor = (meta.cursor[0] if meta.cursor else index, index + 1)
            meta.conditions.setdefault(index, ("fresh", 0))
            meta.live[index] = dict(change.live)
            meta.claims = True
            op.put = {**trial_key(sweep_id, index), **change.trial}
        elif isinstance(change, RetryClaim):
            meta.conditions.setdefault(index, ("retry", change.prev_attempt))
            meta.live[index] = dict(change.live)
            meta.claims = True
            for name, value in (("attempt", change.attempt), ("state", "PENDING"), ("job", change.job),
                                ("claimed_at", now), ("updated_at", now)):
                op.set(name, value)
            op.remove("started_at")
        else:
            meta.conditions.setdefault(index, ("attempt", change.attempt))
            meta.live[index] = dict(change.live) if change.live is not None else None
            if change.live is None and change.counter:
                meta.counters[change.counter] = meta.counters.get(change.counter, 0) + 1
            if change.best is not None:
                meta.best = dict(change.best)
            op.set("state", change.trial_state)
            op.set("updated_at", now)
            if change.reason:
                op.set("reason", change.reason[:TRIAL_REASON_MAX])
            if change.started_at is not None and change.trial_state == "RUNNING":
                op.set("started_at", change.started_at)
            if change.outcome is not None:
                record: dict[str, Any] = {"attempt": change.attempt, "outcome": change.outcome,
                                          "reason": change.reason[:ATTEMPT_REASON_MAX], "at": now}
                if change.counted is not None:
                    record["counted"] = change.counted
                op.append(record)
            if change.live is None:
                op.set("finished_at", now)
            if change.metrics is not None:
                op.set("metrics", dict(change.metrics))
            if change.summary is not None:  # JSON text: a finite metric may exceed a DynamoDB number
                op.set(history.FIELD, history.dump(change.summary))
    return meta, trials


def _meta_update(store: SweepHost, sweep_id: str, meta: _Meta, now: float) -> dict[str, Any]:
    names: dict[str, str] = {"#live": "live"}
    values: dict[str, Any] = {":now": now, ":active": store._active}
    sets, removes, adds = ["updated_at = :now"], [], []
    conditions = ["list_pk = :active"]
    for n, (index, (kind, attempt)) in enumerate(meta.conditions.items()):
        names[f"#i{n}"] = str(index)
        path = f"#live.#i{n}"
        if kind == "fresh":
            conditions.append(f"attribute_not_exists({path})")
        else:
            values[f":a{n}"] = attempt
            conditions.append(f"{path}.attempt = :a{n}")
            if kind == "retry":
                names["#s"] = "state"
                values[":w"] = "WAITING"
                conditions.append(f"{path}.#s = :w")
        entry = meta.live[index]
        if entry is None:
            removes.append(path)
        else:
            values[f":l{n}"] = dict(entry)
            sets.append(f"{path} = :l{n}")
    if meta.cursor is not None:
        names["#c"] = "cursor"
        values[":cur"], values[":next"] = meta.cursor
        conditions.append("#c = :cur")
        sets.append("#c = :next")
    if meta.claims:
        values[":f"] = False
        conditions.append(NOT_PAUSED)
    if meta.best is not None:
        values[":best"] = dict(meta.best)
        sets.append("best = :best")
    for n, (counter, count) in enumerate(sorted(meta.counters.items())):
        names[f"#k{n}"] = counter
        values[f":k{n}"] = count
        adds.append(f"#k{n} :k{n}")
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    if adds:
        expression += " ADD " + ", ".join(adds)
    return store.update(sweep_key(sweep_id), expression, values, condition=" AND ".join(conditions), names=names)


def _trial_write(store: SweepHost, sweep_id: str, index: int, op: _TrialOp) -> dict[str, Any]:
    if op.put is not None:
        return store.put(op.put, condition="attribute_not_exists(pk)")
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    sets, removes = [], []
    for n, (name, value) in enumerate(op.sets.items()):
        names[f"#t{n}"] = name
        values[f":t{n}"] = value
        sets.append(f"#t{n} = :t{n}")
    if op.appends:
        names["#h"] = "attempts"
        values[":empty"], values[":rec"] = [], list(op.appends)
        sets.append("#h = list_append(if_not_exists(#h, :empty), :rec)")
    for n, name in enumerate(sorted(op.removes)):
        names[f"#r{n}"] = name
        removes.append(f"#r{n}")
    expression = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
    return store.update(trial_key(sweep_id, index), expression.strip(), values, condition="attribute_exists(pk)",
                        names=names)


def _render(store: SweepHost, sweep_id: str, changes: Sequence[SweepChange],
            now: float) -> tuple[list[dict[str, Any]], float]:
    """The transaction items of one part, and how full they are against DynamoDB's limits (the item
    count and the META expression budget): ≤ 1.0 fits."""
    meta, trials = _merge(sweep_id, changes, now)
    meta_item = _meta_update(store, sweep_id, meta, now)
    items = [meta_item, *(_trial_write(store, sweep_id, index, op) for index, op in trials.items())]
    body = meta_item["Update"]
    expression = len(body["UpdateExpression"]) + len(body.get("ConditionExpression", ""))
    return items, max((len(items) + 1) / MAX_TRANSACT_ITEMS, expression / EXPRESSION_BUDGET)


def _size(change: SweepChange) -> int:
    """An upper estimate of what ``change`` adds to a transaction's request, in bytes (twice: META and trial)."""
    return 2 * len(json.dumps(dataclasses.asdict(change), default=str)) + 256


def _split(store: SweepHost, sweep_id: str, changes: list[SweepChange], now: float) -> list[list[SweepChange]]:
    """``changes`` in order, cut into parts that merge and fit DynamoDB's limits. Each candidate
    part is rendered whole, so its fit is exact; its length is guessed from the last render (how
    full it was), not grown one change at a time: about three renders' worth of merging per change
    in the worst case (rev17 finding 6: growing by one re-merged every prefix, ~36 merges per
    change for 1,000 changes). Parts may come out slightly below the limits (a 10 % margin on the
    guess): a few more transactions in that rare case, never one over."""
    sizes = [_size(c) for c in changes]
    parts: list[list[SweepChange]] = []
    start, guess = 0, len(changes)  # guess: the length the limits allowed last (a cut before an unmergeable change is no guide)
    while start < len(changes):
        k = min(guess, len(changes) - start)
        while True:
            candidate = changes[start:start + k]
            try:
                _, full = _render(store, sweep_id, candidate, now)
            except _Unmergeable as exc:
                k = max(1, exc.at)  # the part ends before the change that cannot join it
                continue
            full = max(full, sum(sizes[start:start + k]) / MAX_TRANSACT_BYTES)
            if full <= 1.0 or k == 1:
                break
            k = max(1, min(k - 1, int(k / full * 0.9)))
            guess = k
        parts.append(candidate)
        start += k
    return parts


def _what(sweep_id: str, part: Sequence[SweepChange], n: int, total: int) -> str:
    if len(part) == 1 and total == 1:
        change = part[0]
        return f"{'trial' if isinstance(change, TrialTransition) else 'claim'} {sweep_id}/{change.index}"
    return f"commit sweep {sweep_id} ({len(part)} changes{f', part {n + 1} of {total}' if total > 1 else ''})"
