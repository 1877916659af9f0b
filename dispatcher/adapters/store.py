"""The DynamoDB store: one on-demand table, single-table design.

Items (``pk`` / ``sk``):

=====================  ==========================  ==========================================
``SWEEP#<id>``         ``META``                    state, scope, namespace, kind, cursor, live
                                                   trials map, counters, best, launch settings,
                                                   hold; ``list_pk`` ACTIVE#<scope>|DONE +
                                                   ``list_sk`` (submitted_at#id) for the index
``SWEEP#<id>``         ``SPEC``                    the sweep file as submitted (immutable)
``SWEEP#<id>``         ``TRIAL#<index:010d>``      params, state, attempt, job, attempt history,
                                                   metrics
``LEASE``              ``dispatcher#<scope>``      owner, expires_at, dirty — one lease per scope
``SCOPES``             ``registry``                ``scopes``: every scope that accepted a sweep
=====================  ==========================  ==========================================

Access patterns: a scope's active sweeps = Query index ``by_state`` (``list_pk = ACTIVE#<scope>``,
keys only) + consistent BatchGetItem of their META items; ``producer list`` reads the registry
and queries each scope's partition and ``DONE``; a sweep's trials = Query ``pk`` begins_with
TRIAL#; everything else by key. No Scan anywhere.

Every write the tick makes is a transaction that also checks its scope's lease (``owner = me AND
expires_at > now``): a dispatcher whose lease expired and was taken over cannot write anything.
The lease itself and the sweep domain writes live in :mod:`dispatcher.adapters.lease` and
:mod:`dispatcher.adapters.sweep_writes` (mixed into :class:`Store`).
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from typing import Any, Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.adapters.dynamo import des, ser, to_dynamo, translate
from dispatcher.adapters.keys import (
    DONE,
    LEGACY_ACTIVE,
    REGISTRY_KEY,
    active_pk,
    lease_key,
    spec_key,
    sweep_key,
    trial_key,
)
from dispatcher.adapters.lease import LeaseOps
from dispatcher.adapters.sweep_writes import SweepWrites
from dispatcher.core.errors import ConfigError, LeaseLost, TransientError

log = logging.getLogger(__name__)

INDEX = "by_state"
BATCH_TRIES = 8  # BatchGetItem rounds for UnprocessedKeys before the read counts as failed




def _lease_check_failed(exc: ClientError) -> bool:
    reasons = exc.response.get("CancellationReasons") or []
    return exc.response.get("Error", {}).get("Code") == "TransactionCanceledException" and bool(reasons) \
        and reasons[-1].get("Code") == "ConditionalCheckFailed"


class Store(LeaseOps, SweepWrites):
    """DynamoDB adapter. ``client`` is an injected ``boto3.client("dynamodb")``; ``scope`` is the
    dispatcher scope whose lease this store's writes are fenced by (``None``: reads only, like the
    producer). ``sleep`` is injected for the UnprocessedKeys backoff."""

    def __init__(self, table: str, client: Any, *, scope: str | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.table = table
        self.client = client
        self.scope = scope
        self._sleep = sleep

    def with_scope(self, scope: str) -> "Store":
        """The same table and client, fenced by ``scope``'s lease."""
        if scope == self.scope:
            return self
        return Store(self.table, self.client, scope=scope, sleep=self._sleep)

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, what) from exc

    @property
    def lease_key(self) -> dict[str, str]:
        if self.scope is None:
            raise ConfigError("this store has no dispatcher scope: leases and fenced writes need one (SWEEPQ_SCOPE)")
        return lease_key(self.scope)

    def _lease_check(self, owner: str, now: float) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": ser(self.lease_key),
                "ConditionExpression": "#o = :owner AND expires_at > :now",
                "ExpressionAttributeNames": {"#o": "owner"},
                "ExpressionAttributeValues": ser({":owner": owner, ":now": now}),
            }
        }

    def transact(self, what: str, items: list[dict[str, Any]], *, owner: str | None, now: float) -> None:
        """All-or-nothing write; with ``owner`` it only happens while that owner holds the lease."""
        ops = list(items)
        if owner is not None:
            ops.append(self._lease_check(owner, now))
        for op in ops:
            body = next(iter(op.values()))
            body.setdefault("TableName", self.table)
        try:
            self.client.transact_write_items(TransactItems=ops)
        except ClientError as exc:
            if owner is not None and _lease_check_failed(exc):
                raise LeaseLost(f"{what}: lost a conditional write (the lease of scope {self.scope} is no longer "
                                f"{owner}'s)") from exc
            raise translate(exc, what) from exc
        except BotoCoreError as exc:
            raise translate(exc, what) from exc

    # -- table ------------------------------------------------------------------------------
    def create_table(self) -> bool:
        """Idempotent. Returns True when the table was created now."""
        try:
            self.client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[
                    {"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "list_pk", "list_sk")
                ],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                GlobalSecondaryIndexes=[
                    {
                        "IndexName": INDEX,
                        "KeySchema": [
                            {"AttributeName": "list_pk", "KeyType": "HASH"},
                            {"AttributeName": "list_sk", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "KEYS_ONLY"},
                    }
                ],
                SSESpecification={"Enabled": True},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("ResourceInUseException", "TableAlreadyExistsException"):
                return False
            raise translate(exc, f"create table {self.table}") from exc
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1})
        try:
            self.client.update_time_to_live(
                TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
            )
        except ClientError as exc:  # TTL is housekeeping; the table works without it
            log.warning("could not enable TTL on %s: %s", self.table, exc)
        return True

    # -- reads ------------------------------------------------------------------------------
    def get_sweep(self, sweep_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        out = self._call(
            f"read sweep {sweep_id}", self.client.get_item, TableName=self.table, Key=ser(sweep_key(sweep_id)),
            ConsistentRead=consistent,
        )
        return des(out["Item"]) if "Item" in out else None

    def get_spec(self, sweep_id: str) -> dict[str, Any] | None:
        out = self._call(
            f"read spec {sweep_id}", self.client.get_item, TableName=self.table, Key=ser(spec_key(sweep_id)),
            ConsistentRead=True,
        )
        return json.loads(des(out["Item"])["spec"]) if "Item" in out else None

    def _query_index(self, list_pk: str, *, newest_first: bool = False, limit: int | None = None) -> list[str]:
        ids: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": INDEX,
            "KeyConditionExpression": "list_pk = :p",
            "ExpressionAttributeValues": ser({":p": list_pk}),
            "ScanIndexForward": not newest_first,
        }
        while True:
            out = self._call("query sweeps", self.client.query, **kwargs)
            for item in out.get("Items", []):
                ids.append(des(item)["pk"].removeprefix("SWEEP#"))
                if limit and len(ids) >= limit:
                    return ids
            if "LastEvaluatedKey" not in out:
                return ids
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def batch_get_sweeps(self, sweep_ids: Iterable[str]) -> list[dict[str, Any]]:
        """META items by id, read strongly (:meth:`_batch_get`)."""
        return self._batch_get("read sweeps", [sweep_key(s) for s in dict.fromkeys(sweep_ids)])

    def batch_get_trials(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
        """TRIAL items by (sweep id, index), read strongly (:meth:`_batch_get`): one call per 100."""
        wanted = list(dict.fromkeys(keys))
        found = self._batch_get("read trials", [trial_key(s, i) for s, i in wanted])
        return {(str(item["pk"]).removeprefix("SWEEP#"), int(item["index"])): item for item in found
                if "index" in item}

    def _batch_get(self, what: str, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Items by key, read strongly, 100 keys a call. UnprocessedKeys (throttling) are retried
        with exponential backoff and jitter; after :data:`BATCH_TRIES` rounds the read fails as
        transient — it never spins in a tight loop against a throttled table."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self.table: {"Keys": [ser(k) for k in keys[start : start + 100]],
                                                    "ConsistentRead": True}}
            for attempt in range(BATCH_TRIES):
                out = self._call(what, self.client.batch_get_item, RequestItems=request)
                found.extend(des(i) for i in out.get("Responses", {}).get(self.table, []))
                request = out.get("UnprocessedKeys") or {}
                if not request:
                    break
                if attempt + 1 < BATCH_TRIES:
                    (self._sleep or time.sleep)(random.uniform(0.5, 1.0) * min(2.0, 0.05 * 2**attempt))
            else:
                left = len(request.get(self.table, {}).get("Keys", []))
                raise TransientError(f"{what}: {left} keys still unprocessed after {BATCH_TRIES} tries "
                                     "(DynamoDB throttling) — retried next tick")
        return found

    def scopes(self) -> list[str]:
        """Every scope that ever accepted a sweep into this table (the registry item)."""
        out = self._call("read scope registry", self.client.get_item, TableName=self.table,
                         Key=ser(REGISTRY_KEY), ConsistentRead=True)
        return sorted(des(out["Item"]).get("scopes") or ()) if "Item" in out else []

    def active_sweeps(self, scope: str | None = None) -> list[dict[str, Any]]:
        """The active sweeps of ``scope`` (default: this store's scope; with neither, of every
        scope in the registry — for tests and operators, not the tick)."""
        scope = scope or self.scope
        scopes = [scope] if scope else self.scopes()
        wanted = {active_pk(s) for s in scopes}
        ids = [sweep_id for s in scopes for sweep_id in self._query_index(active_pk(s))]
        return [s for s in self.batch_get_sweeps(ids) if s.get("list_pk") in wanted]

    def list_sweeps(self, *, limit: int = 50, include_done: bool = True) -> list[dict[str, Any]]:
        """Newest first, across every scope (and sweeps stored before scopes existed)."""
        ids: list[str] = []
        for list_pk in [active_pk(s) for s in self.scopes()] + [LEGACY_ACTIVE]:
            ids += self._query_index(list_pk, newest_first=True, limit=limit)
        if include_done:
            ids += self._query_index(DONE, newest_first=True, limit=limit)
        sweeps = self.batch_get_sweeps(ids)
        sweeps.sort(key=lambda s: s.get("submitted_at", ""), reverse=True)
        return sweeps[:limit]

    def trials(self, sweep_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :t)",
            "ExpressionAttributeValues": ser({":p": f"SWEEP#{sweep_id}", ":t": "TRIAL#"}),
            "ConsistentRead": True,
        }
        while True:
            out = self._call(f"read trials of {sweep_id}", self.client.query, **kwargs)
            items.extend(des(i) for i in out.get("Items", []))
            if "LastEvaluatedKey" not in out:
                return items
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def get_trial(self, sweep_id: str, index: int) -> dict[str, Any] | None:
        out = self._call(
            f"read trial {sweep_id}/{index}", self.client.get_item, TableName=self.table,
            Key=ser(trial_key(sweep_id, index)), ConsistentRead=True,
        )
        return des(out["Item"]) if "Item" in out else None

    # -- transaction items ------------------------------------------------------------------
    @staticmethod
    def update(key: dict[str, str], expression: str, values: dict[str, Any], *, condition: str | None = None,
               names: dict[str, str] | None = None) -> dict[str, Any]:
        """An ``Update`` for a transaction. Placeholders not used by the expressions are dropped
        (DynamoDB refuses unused ones), so callers can pass one shared set of names/values."""
        text = expression + " " + (condition or "")
        body: dict[str, Any] = {"Key": ser(key), "UpdateExpression": expression}
        used_values = {k: v for k, v in values.items() if re.search(re.escape(k) + r"\b", text)}
        used_names = {k: v for k, v in (names or {}).items() if re.search(re.escape(k) + r"\b", text)}
        if used_values:
            body["ExpressionAttributeValues"] = ser(used_values)
        if condition:
            body["ConditionExpression"] = condition
        if used_names:
            body["ExpressionAttributeNames"] = used_names
        return {"Update": body}

    @staticmethod
    def put(item: dict[str, Any], *, condition: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"Item": ser(item)}
        if condition:
            body["ConditionExpression"] = condition
        return {"Put": body}


__all__ = ["Store", "LeaseLost", "sweep_key", "spec_key", "trial_key", "lease_key", "active_pk", "INDEX", "DONE", "to_dynamo"]
