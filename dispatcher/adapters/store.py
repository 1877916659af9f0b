"""The DynamoDB store: one on-demand table, single-table design.

Items (``pk`` / ``sk``):

=====================  =====================  ==============================================
``SWEEP#<id>``         ``META``               state, cursor, live trials map, counters, best,
                                              launch settings; ``list_pk`` ACTIVE|DONE +
                                              ``list_sk`` (submitted_at#id) for the index
``SWEEP#<id>``         ``SPEC``               the sweep file as submitted (immutable)
``SWEEP#<id>``         ``TRIAL#<index:010d>`` params, state, attempt, job, attempt history,
                                              metrics (written by the trainer)
``LEASE``              ``dispatcher``         owner, expires_at, dirty (also the TTL attribute)
=====================  =====================  ==============================================

Access patterns: active sweeps = Query index ``by_state`` (``list_pk = ACTIVE``, keys only) +
consistent BatchGetItem of their META items; a sweep's trials = Query ``pk`` begins_with TRIAL#;
everything else is GetItem/PutItem/UpdateItem/TransactWriteItems by key. No Scan anywhere.

Every write the tick makes is a transaction that also checks the lease (``owner = me AND
expires_at > now``): a dispatcher whose lease expired and was taken over cannot write anything.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.adapters.dynamo import des, jdump, ser, to_dynamo, translate
from dispatcher.core.errors import Conflict

log = logging.getLogger(__name__)

INDEX = "by_state"
LEASE_KEY = {"pk": "LEASE", "sk": "dispatcher"}


def sweep_key(sweep_id: str) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": "META"}


def spec_key(sweep_id: str) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": "SPEC"}


def trial_key(sweep_id: str, index: int) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": f"TRIAL#{index:010d}"}


class Store:
    """DynamoDB adapter. ``client`` is an injected ``boto3.client("dynamodb")``."""

    def __init__(self, table: str, client: Any) -> None:
        self.table = table
        self.client = client

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, what) from exc

    def _lease_check(self, owner: str, now: float) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.table,
                "Key": ser(LEASE_KEY),
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
        self._call(what, self.client.transact_write_items, TransactItems=ops)

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

    # -- lease ------------------------------------------------------------------------------
    def acquire_lease(self, owner: str, *, now: float, seconds: int) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=ser({**LEASE_KEY, "owner": owner, "expires_at": now + seconds, "acquired_at": now, "dirty": False}),
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=ser({":now": now, ":owner": owner}),
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, "acquire lease") from exc

    def mark_dirty(self) -> bool:
        """Ask the lease holder to tick once more before releasing (a trigger arrived meanwhile)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=ser(LEASE_KEY),
                UpdateExpression="SET dirty = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=ser({":t": True}),
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, "mark lease dirty") from exc

    def release_lease(self, owner: str) -> bool:
        """Release unless someone marked the lease dirty; returns True if released, False if dirty
        (the caller ticks again; the dirty mark is cleared)."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=ser(LEASE_KEY),
                ConditionExpression="#o = :owner AND dirty = :f",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=ser({":owner": owner, ":f": False}),
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise translate(exc, "release lease") from exc
        try:
            self.client.update_item(
                TableName=self.table,
                Key=ser(LEASE_KEY),
                UpdateExpression="SET dirty = :f",
                ConditionExpression="#o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=ser({":owner": owner, ":f": False}),
            )
            return False
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return True  # someone else holds it now: nothing of ours to release
            raise translate(exc, "clear lease dirty mark") from exc

    def renew_lease(self, owner: str, *, now: float, seconds: int) -> None:
        self._call(
            "renew lease",
            self.client.update_item,
            TableName=self.table,
            Key=ser(LEASE_KEY),
            UpdateExpression="SET expires_at = :exp",
            ConditionExpression="#o = :owner AND expires_at > :now",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues=ser({":owner": owner, ":now": now, ":exp": now + seconds}),
        )

    # -- sweeps -----------------------------------------------------------------------------
    def put_sweep(self, meta: dict[str, Any], spec: dict[str, Any], *, owner: str | None, now: float) -> bool:
        """Create META (+ SPEC) if absent. False when the sweep already exists (duplicate delivery)."""
        sweep_id = meta["sweep_id"]
        items = [
            {"Put": {"Item": ser({**sweep_key(sweep_id), **meta}), "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Put": {"Item": ser({**spec_key(sweep_id), "spec": jdump(spec)}), "ConditionExpression": "attribute_not_exists(pk)"}},
        ]
        try:
            self.transact(f"store sweep {sweep_id}", items, owner=owner, now=now)
            return True
        except Conflict:
            if self.get_sweep(sweep_id) is not None:
                return False
            raise

    def get_sweep(self, sweep_id: str, *, consistent: bool = True) -> dict[str, Any] | None:
        out = self._call(
            f"read sweep {sweep_id}", self.client.get_item, TableName=self.table, Key=ser(sweep_key(sweep_id)),
            ConsistentRead=consistent,
        )
        return des(out["Item"]) if "Item" in out else None

    def get_spec(self, sweep_id: str) -> dict[str, Any] | None:
        import json

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
        ids = list(dict.fromkeys(sweep_ids))
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):
            keys = [ser(sweep_key(s)) for s in ids[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                out = self._call("read sweeps", self.client.batch_get_item, RequestItems=request)
                found.extend(des(i) for i in out.get("Responses", {}).get(self.table, []))
                request = out.get("UnprocessedKeys") or {}
        return found

    def active_sweeps(self) -> list[dict[str, Any]]:
        return [s for s in self.batch_get_sweeps(self._query_index("ACTIVE")) if s.get("list_pk") == "ACTIVE"]

    def list_sweeps(self, *, limit: int = 50, include_done: bool = True) -> list[dict[str, Any]]:
        ids = self._query_index("ACTIVE", newest_first=True, limit=limit)
        if include_done:
            ids += self._query_index("DONE", newest_first=True, limit=limit)
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

    # -- update helpers used by the tick -----------------------------------------------------
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


__all__ = ["Store", "sweep_key", "spec_key", "trial_key", "LEASE_KEY", "INDEX", "to_dynamo"]
