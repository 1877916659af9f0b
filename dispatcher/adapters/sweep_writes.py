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

Mixed into :class:`dispatcher.adapters.store.Store`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Protocol

from dispatcher.adapters.dynamo import jdump, ser
from dispatcher.adapters.keys import REGISTRY_KEY, active_pk, spec_key, sweep_key, trial_key
from dispatcher.core.errors import ConfigError, Conflict

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

    # -- the tick: claims -------------------------------------------------------------------
    def claim_fresh(self: SweepHost, sweep_id: str, *, index: int, live: Mapping[str, Any], trial: Mapping[str, Any],
                    owner: str, now: float) -> None:
        """Claim the sweep's next fresh trial (cursor = ``index``) and create its trial item."""
        meta = self.update(
            sweep_key(sweep_id), "SET #c = :next, #live.#i = :live, updated_at = :now",
            {":next": index + 1, ":cur": index, ":live": dict(live), ":now": now, ":active": self._active, ":f": False},
            condition=f"#c = :cur AND list_pk = :active AND attribute_not_exists(#live.#i) AND {NOT_PAUSED}",
            names={"#i": str(index), "#live": "live", "#c": "cursor"},
        )
        item = self.put({**trial_key(sweep_id, index), **trial}, condition="attribute_not_exists(pk)")
        self.transact(f"claim {sweep_id}/{index}", [meta, item], owner=owner, now=now)

    def claim_retry(self: SweepHost, sweep_id: str, *, index: int, prev_attempt: int, live: Mapping[str, Any], attempt: int,
                    job: str, owner: str, now: float) -> None:
        """Claim the next attempt of a WAITING trial."""
        meta = self.update(
            sweep_key(sweep_id), "SET #live.#i = :live, updated_at = :now",
            {":live": dict(live), ":now": now, ":prev": prev_attempt, ":w": "WAITING", ":active": self._active,
             ":f": False},
            condition=f"#live.#i.attempt = :prev AND #live.#i.#s = :w AND list_pk = :active AND {NOT_PAUSED}",
            names={"#i": str(index), **LIVE_NAMES},
        )
        item = self.update(
            trial_key(sweep_id, index),
            "SET attempt = :a, #s = :s, job = :job, claimed_at = :now, updated_at = :now REMOVE started_at",
            {":a": attempt, ":s": "PENDING", ":job": job, ":now": now},
            condition="attribute_exists(pk)", names={"#s": "state"},
        )
        self.transact(f"claim {sweep_id}/{index}", [meta, item], owner=owner, now=now)

    # -- the tick: transitions and ends -----------------------------------------------------
    def record_transition(self: SweepHost, sweep_id: str, *, index: int, attempt: int, live: Mapping[str, Any] | None,
                          trial_state: str, reason: str = "", started_at: float | None = None,
                          outcome: str | None = None, counter: str | None = None,
                          best: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                          counted: bool | None = None, owner: str, now: float) -> None:
        """One live trial changes (``live`` = its new live entry) or leaves the live set (``live``
        None, ``counter`` = succeeded/failed/cancelled/early_stopped), with its trial item, in one
        transaction. ``metrics``: the metrics the dispatcher read for it (the trial item's ``metrics``).
        An attempt that ended (``outcome``) is appended to the trial's ``attempts``, with
        ``counted`` when known (whether it counted against the trial's max_retries)."""
        values: dict[str, Any] = {":a": attempt, ":now": now, ":active": self._active}
        if live is None:
            sets = ["updated_at = :now"]
            if best is not None:
                sets.append("best = :best")
                values[":best"] = dict(best)
            expression = f"SET {', '.join(sets)} REMOVE #live.#i ADD {counter} :one"
            values[":one"] = 1
        else:
            expression = "SET #live.#i = :live, updated_at = :now"
            values[":live"] = dict(live)
        meta = self.update(sweep_key(sweep_id), expression, values,
                           condition="#live.#i.attempt = :a AND list_pk = :active",
                           names={"#i": str(index), **LIVE_NAMES})
        trial_sets = ["#s = :s", "updated_at = :now"]
        trial_values: dict[str, Any] = {":s": trial_state, ":now": now}
        if reason:
            trial_sets.append("reason = :r")
            trial_values[":r"] = reason[:TRIAL_REASON_MAX]
        if started_at is not None and trial_state == "RUNNING":
            trial_sets.append("started_at = :st")
            trial_values[":st"] = started_at
        if outcome is not None:
            trial_sets.append("attempts = list_append(if_not_exists(attempts, :empty), :rec)")
            trial_values[":empty"] = []
            record: dict[str, Any] = {"attempt": attempt, "outcome": outcome, "reason": reason[:ATTEMPT_REASON_MAX],
                                      "at": now}
            if counted is not None:
                record["counted"] = counted
            trial_values[":rec"] = [record]
        if live is None:
            trial_sets.append("finished_at = :now")
        if metrics is not None:
            trial_sets.append("#m = :m")
            trial_values[":m"] = dict(metrics)
        trial = self.update(trial_key(sweep_id, index), "SET " + ", ".join(trial_sets), trial_values,
                            condition="attribute_exists(pk)", names={"#s": "state", "#m": "metrics"})
        self.transact(f"trial {sweep_id}/{index}", [meta, trial], owner=owner, now=now)

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
