"""DynamoDB plumbing shared by the store: value conversion and error translation."""

from __future__ import annotations

import decimal
import json
from decimal import Decimal
from typing import Any, Mapping

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.core.errors import Conflict, SweepqError, TransientError

_SER = TypeSerializer()
_DES = TypeDeserializer()
TRANSIENT_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "LimitExceededException",
}


def to_dynamo(value: Any) -> Any:
    """Python → DynamoDB-safe Python (floats as Decimal)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {str(k): to_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


def ser(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _SER.serialize(to_dynamo(v)) for k, v in item.items()}


def des(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_dynamo(_DES.deserialize(v)) for k, v in item.items()}


def unstorable(item: Mapping[str, Any]) -> list[str]:
    """One problem per attribute DynamoDB cannot store as given: numbers beyond its 38 significant
    digits or its exponent range (``10**40``, ``1e300``) make boto3's serializer raise
    ``decimal.Rounded``/``Overflow`` — which once escaped intake and aborted the whole tick."""
    problems = []
    for name, value in item.items():
        try:
            _SER.serialize(to_dynamo(value))
        except (decimal.DecimalException, TypeError, ValueError) as exc:
            problems.append(f"{name}: {str(value)[:40]!r} cannot be stored ({type(exc).__name__}: DynamoDB numbers "
                            "have at most 38 significant digits and magnitudes from 1e-130 to 1e126)")
    return problems


def item_size(item: Mapping[str, Any]) -> int:
    """The size DynamoDB counts against its 400 KB item limit, by its documented rules (names +
    values; numbers ~1 byte per 2 significant digits + 1; maps and lists 3 bytes + 1 per element)."""
    return sum(len(str(name).encode()) + _value_size(value) for name, value in item.items())


def _value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, (int, float, Decimal)):
        digits = len(str(Decimal(repr(value)) if isinstance(value, float) else Decimal(value)).lstrip("-")
                     .replace(".", "").split("E")[0].strip("0")) or 1
        return (digits + 1) // 2 + 1
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, Mapping):
        return 3 + sum(1 + len(str(k).encode()) + _value_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 3 + sum(1 + _value_size(v) for v in value)
    return len(str(value).encode())


def jdump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def translate(exc: Exception, what: str) -> SweepqError:
    """A botocore error → our typed error (chain with ``from``)."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", []) if r.get("Code") != "None"]
            if code == "ConditionalCheckFailedException" or all(r == "ConditionalCheckFailed" for r in reasons):
                return Conflict(f"{what}: lost a conditional write ({', '.join(reasons) or code})")
            if any(r in TRANSIENT_CODES or r in ("ThrottlingError", "TransactionConflict") for r in reasons):
                return TransientError(f"{what}: DynamoDB busy ({', '.join(reasons)}) — retried next tick")
        if code in TRANSIENT_CODES or status >= 500:
            return TransientError(f"{what}: DynamoDB {code or status} — retried next tick")
        if code == "ValidationException" and "size" in str(exc).lower():
            return SweepqError(f"{what}: DynamoDB refused an item over its 400 KB limit ({exc}) — a bug: report it")
        if code == "ResourceNotFoundException":
            return SweepqError(f"{what}: table not found ({exc}) — run `dispatcher bootstrap` or set SWEEPQ_TABLE")
        return SweepqError(f"{what}: DynamoDB {code}: {exc}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"{what}: {exc} — retried next tick")
    return SweepqError(f"{what}: {exc}")
