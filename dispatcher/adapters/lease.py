"""The tick lease of one dispatcher scope: a DynamoDB item, conditional writes only.

* **acquire** — ``PutItem`` if absent, ours, or expired *by more than* ``skew_s``. Expiry is
  judged by each caller's own clock; the margin means a contender whose clock runs up to
  ``skew_s`` ahead of the holder's still waits, and the holder stops creating jobs ``skew_s``
  before its own deadline (see :class:`dispatcher.tick.Dispatcher`), so two clocks up to
  ``2 × skew_s`` apart never let two ticks create at once. DynamoDB writes are fenced anyway:
  every write the tick makes checks ``owner = me AND expires_at > now`` in the same transaction.
* **mark_dirty** — a tick that finds the lease taken asks the holder to go once more before
  releasing (a trigger arrived meanwhile). It only marks a lease that is still alive; ``False``
  tells the caller the holder released it (or it expired) in between: try to acquire again,
  instead of dropping the trigger.
* **release** — deletes the item unless it is dirty (then clears the mark and says so).
* **renew** — extends our own unexpired lease.

Mixed into :class:`dispatcher.adapters.store.Store` (``self.client``, ``self.table``,
``self.lease_key``, ``self._call``: :class:`LeaseHost`).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from botocore.exceptions import ClientError

from dispatcher.adapters.dynamo import ser, translate


class LeaseHost(Protocol):
    """What :class:`LeaseOps` uses of the class it is mixed into (:class:`~dispatcher.adapters.store.Store`)."""

    table: str
    client: Any

    @property
    def lease_key(self) -> dict[str, str]: ...

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any: ...


class LeaseOps:
    """Lease operations; mixed into :class:`~dispatcher.adapters.store.Store`."""

    def acquire_lease(self: LeaseHost, owner: str, *, now: float, seconds: int, skew_s: float = 0.0) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=ser({**self.lease_key, "owner": owner, "expires_at": now + seconds, "acquired_at": now,
                          "dirty": False}),
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :stale OR #o = :owner",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues=ser({":stale": now - skew_s, ":owner": owner}),
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, "acquire lease") from exc

    def mark_dirty(self: LeaseHost, *, now: float | None = None) -> bool:
        """Ask the live holder to tick once more before releasing. False when there is no live
        lease to mark (released or expired since the caller's acquire failed)."""
        condition = "attribute_exists(pk)"
        values: dict[str, Any] = {":t": True}
        if now is not None:
            condition += " AND expires_at > :now"
            values[":now"] = now
        try:
            self.client.update_item(
                TableName=self.table,
                Key=ser(self.lease_key),
                UpdateExpression="SET dirty = :t",
                ConditionExpression=condition,
                ExpressionAttributeValues=ser(values),
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, "mark lease dirty") from exc

    def release_lease(self: LeaseHost, owner: str) -> bool:
        """Release unless someone marked the lease dirty; returns True if released, False if dirty
        (the caller ticks again; the dirty mark is cleared)."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=ser(self.lease_key),
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
                Key=ser(self.lease_key),
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

    def renew_lease(self: LeaseHost, owner: str, *, now: float, seconds: int) -> None:
        self._call(
            "renew lease",
            self.client.update_item,
            TableName=self.table,
            Key=ser(self.lease_key),
            UpdateExpression="SET expires_at = :exp",
            ConditionExpression="#o = :owner AND expires_at > :now",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues=ser({":owner": owner, ":now": now, ":exp": now + seconds}),
        )
