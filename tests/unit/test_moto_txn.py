"""The test-speed shim of moto's transaction rollback (tests/moto_txn.py) leaves exactly what moto's
own whole-table copy leaves: after a cancelled transaction that updated, put and deleted before
its last condition failed, and after a transaction that succeeded, on a table with a range key
(sweepq's) and on one without."""

from __future__ import annotations

from typing import Any

import moto_txn
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb import models as dynamodb_models


def _table(ddb: Any, name: str, *, range_key: bool) -> None:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}] + ([{"AttributeName": "sk", "KeyType": "RANGE"}] if range_key else [])
    attrs = [{"AttributeName": k["AttributeName"], "AttributeType": "S"} for k in keys]
    ddb.create_table(TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST")


def _key(pk: str, range_key: bool) -> dict[str, Any]:
    return {"pk": {"S": pk}, **({"sk": {"S": "META"}} if range_key else {})}


def _scan(ddb: Any, name: str) -> list[Any]:
    return sorted((repr(sorted(i.items())) for i in ddb.scan(TableName=name)["Items"]))


def _run(ddb: Any, name: str, range_key: bool, *, fail: bool) -> tuple[list[Any], list[Any], str | None]:
    for pk in ("a", "b", "d"):
        ddb.put_item(TableName=name, Item={**_key(pk, range_key), "n": {"N": "1"}, "tags": {"L": [{"S": "x"}]}})
    before = _scan(ddb, name)
    error = None
    try:
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": name, "Key": _key("a", range_key), "UpdateExpression": "SET n = :two, tags[0] = :y",
                        "ExpressionAttributeValues": {":two": {"N": "2"}, ":y": {"S": "y"}}}},
            {"Put": {"TableName": name, "Item": {**_key("c", range_key), "n": {"N": "3"}}}},
            {"Delete": {"TableName": name, "Key": _key("b", range_key)}},
            {"ConditionCheck": {"TableName": name, "Key": _key("d", range_key),
                                "ConditionExpression": "n = :want",
                                "ExpressionAttributeValues": {":want": {"N": "9" if fail else "1"}}}},
        ])
    except ClientError as exc:
        error = exc.response["Error"]["Code"]
    return before, _scan(ddb, name), error


@pytest.mark.parametrize("range_key", [True, False], ids=["pk+sk", "pk"])
@pytest.mark.parametrize("fail", [True, False], ids=["cancelled", "committed"])
def test_the_snapshot_rolls_back_like_moto(aws, monkeypatch: pytest.MonkeyPatch, range_key: bool, fail: bool) -> None:
    assert dynamodb_models.DynamoDBBackend.transact_write_items is moto_txn.transact_write_items  # installed
    ddb = aws.client("dynamodb")
    _table(ddb, "shim", range_key=range_key)
    shim = _run(ddb, "shim", range_key, fail=fail)
    monkeypatch.setattr(dynamodb_models.DynamoDBBackend, "transact_write_items", moto_txn._original)
    _table(ddb, "stock", range_key=range_key)
    stock = _run(ddb, "stock", range_key, fail=fail)
    assert shim == stock
    before, after, error = shim
    if fail:
        assert error == "TransactionCanceledException" and after == before
    else:
        assert error is None and after != before and len(after) == len(before)  # c added, b deleted
