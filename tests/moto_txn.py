"""moto's TransactWriteItems without its whole-table deep copies (a test-speed fix, issue 16).

moto 5.2 keeps a rollback copy of a transaction's tables by ``copy.deepcopy(table)`` — once per
*item* of the transaction, each a copy of every item in the table. sweepq's claims and unit-of-work
commits are transactions of up to 100 items on one table, so in the reliability harness (hundreds
of sweeps in one table) these copies were most of the run: 96 of 171 s of the poison-values
scenario under a profiler, and the cost grows with the square of the table's size.

This replaces only that rollback copy, inside ``moto.dynamodb.models``: the snapshot shares the
table's untouched items and holds deep copies of the items the transaction names (the only ones
a transaction writes; an Update mutates its item in place, hence the copies). When the
transaction is cancelled moto puts the snapshot back exactly as it puts back its own copy, so a
cancelled transaction still leaves every item as it was — ``tests/unit/test_moto_txn.py`` checks
that against a transaction that updates, puts and deletes before its last condition fails. A
table with a stream, or a transaction whose keys cannot be read, falls back to moto's own deep copy.
Everything else (conditions, errors, the order of the writes) is moto's code, unchanged.
"""

from __future__ import annotations

import contextvars
import copy
from typing import Any

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models.table import Table

_touched: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("sweepq_moto_txn", default=None)


class _CopyModule:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``: a table's deep copy
    during a transaction is a snapshot of its touched items; every other call is ``copy``'s."""

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    @staticmethod
    def deepcopy(obj: Any, memo: Any = None) -> Any:
        touched = _touched.get()
        if touched is None or not isinstance(obj, Table) or obj.name not in touched or obj.stream_shard is not None:
            return copy.deepcopy(obj, memo)
        cache = touched["__snapshots__"]
        if obj.name not in cache:  # moto asks once per item of the transaction: one snapshot is enough
            cache[obj.name] = _snapshot(obj, touched[obj.name])
        return cache[obj.name]


def _snapshot(table: Table, keys: list[tuple[Any, Any]]) -> Table:
    snap = copy.copy(table)
    items = copy.copy(table.items)  # the same defaultdict type; values shared
    if table.has_range_key:
        for hash_key in list(items):
            items[hash_key] = dict(items[hash_key])
    for hash_key, range_key in keys:
        if hash_key not in items:
            continue
        if table.has_range_key:
            if range_key in items[hash_key]:
                items[hash_key][range_key] = copy.deepcopy(items[hash_key][range_key])
        else:
            items[hash_key] = copy.deepcopy(items[hash_key])
    snap.items = items
    return snap


def _keys(backend: Any, transact_items: list[dict[str, Any]]) -> dict[str, Any] | None:
    touched: dict[str, Any] = {"__snapshots__": {}}
    for entry in transact_items:
        _, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName"))
        if table is None:
            continue
        if "Item" in op:  # Put
            attrs = op["Item"]
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        touched.setdefault(table.name, []).append(backend.get_keys_value(table, key))
    return touched


_original = dynamodb_models.DynamoDBBackend.transact_write_items


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    try:
        touched = _keys(self, transact_items)
    except Exception:  # noqa: BLE001 - a malformed request: moto's own path reports it
        touched = None
    token = _touched.set(touched)
    try:
        return _original(self, transact_items)
    finally:
        _touched.reset(token)


def install() -> None:
    """Idempotent; patches the process (in-process moto and moto's threaded server alike)."""
    if getattr(dynamodb_models.DynamoDBBackend.transact_write_items, "_sweepq", False):
        return
    transact_write_items._sweepq = True  # type: ignore[attr-defined]
    dynamodb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    dynamodb_models.copy = _CopyModule()  # type: ignore[assignment]
