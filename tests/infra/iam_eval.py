"""Evaluate IAM policy documents against a request, for the conditions moto does not evaluate.

moto enforces identity policies (``INITIAL_NO_AUTH_ACTION_COUNT``) on actions, and on resources
for SQS, but not the condition keys the trainer policy rests on (``dynamodb:LeadingKeys``,
``dynamodb:Attributes``, ``aws:PrincipalTag/...``), not DynamoDB resources (it authorises every
DynamoDB call against ``*``), and no resource policy. This module evaluates the policy
*documents* with IAM's rules for the subset sweepq uses, and refuses anything outside it:

* explicit Deny wins, then any Allow, else implicit deny (one account: identity and resource
  policies are a union); ``Action``/``Resource`` with ``*``/``?`` wildcards, ``NotAction``;
  resource-policy ``Principal: "*"``;
* condition operators String(Not)Equals, StringLike, ArnEquals/ArnLike, Bool, Null, the
  ``IfExists`` suffix and the ``ForAllValues:``/``ForAnyValue:`` set qualifiers;
* policy variables ``${aws:PrincipalTag/...}`` (a missing tag matches nothing).

:func:`dynamodb_request` and :func:`sqs_request` derive the request context from the exact boto3
parameters of a call, so a hook on a real client can refuse what IAM would refuse.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

Value = str | list[str]
_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_OPERATORS = {"StringEquals", "StringNotEquals", "StringLike", "ArnEquals", "ArnLike", "Bool", "Null"}


class Unsupported(ValueError):
    """The document uses IAM features this evaluator does not implement: never guess."""


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, Value] = field(default_factory=dict)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _substitute(pattern: str, context: Mapping[str, Value]) -> str | None:
    """``${key}`` → its (single) value; ``None`` when a referenced key is absent."""
    missing = False

    def repl(match: re.Match[str]) -> str:
        nonlocal missing
        value = context.get(match.group(1))
        if value is None or isinstance(value, list):
            missing = True
            return ""
        return value

    out = _VARIABLE.sub(repl, pattern)
    return None if missing else out


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _match_one(operator: str, expected: list[str], actual: str, context: Mapping[str, Value]) -> bool:
    patterns = [p for p in (_substitute(str(e), context) for e in expected) if p is not None]
    if operator in ("StringEquals", "ArnEquals"):
        return actual in patterns
    if operator == "StringNotEquals":
        return actual not in patterns
    if operator in ("StringLike", "ArnLike"):
        return any(_like(p, actual) for p in patterns)
    if operator == "Bool":
        return actual.lower() in [p.lower() for p in patterns]
    raise Unsupported(operator)


def _condition_holds(full: str, key: str, expected: Any, context: Mapping[str, Value]) -> bool:
    qualifier, _, operator = full.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if operator not in _OPERATORS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise Unsupported(full)
    expected = [str(e) for e in _list(expected)]
    actual = context.get(key)
    if operator == "Null":
        return (actual is None) == (expected[0].lower() == "true")
    if qualifier == "ForAllValues":
        return all(_match_one(operator, expected, v, context) for v in _list(actual or []))
    if qualifier == "ForAnyValue":
        return any(_match_one(operator, expected, v, context) for v in _list(actual or []))
    if actual is None:
        return if_exists
    if isinstance(actual, list):
        raise Unsupported(f"{full} on the multivalued key {key}: use ForAllValues/ForAnyValue")
    return _match_one(operator, expected, actual, context)


def _statement_matches(statement: Mapping[str, Any], request: Request) -> bool:
    if "NotResource" in statement or "NotPrincipal" in statement:
        raise Unsupported("NotResource/NotPrincipal")
    if "Principal" in statement and statement["Principal"] != "*":
        raise Unsupported(f"Principal {statement['Principal']!r}: only '*' (resource policies)")
    if "NotAction" in statement:
        if any(_like(a.lower(), request.action.lower()) for a in _list(statement["NotAction"])):
            return False
    elif not any(_like(a.lower(), request.action.lower()) for a in _list(statement["Action"])):
        return False
    resources = [_substitute(r, request.context) for r in _list(statement.get("Resource", "*"))]
    if not any(r is not None and _like(r, request.resource) for r in resources):
        return False
    return all(_condition_holds(op, key, expected, request.context)
               for op, block in statement.get("Condition", {}).items() for key, expected in block.items())


def evaluate(documents: list[Mapping[str, Any]], request: Request) -> str:
    """``"Allow"``, ``"Deny"`` (an explicit deny matched) or ``"ImplicitDeny"``."""
    allowed = False
    for document in documents:
        for statement in _list(document["Statement"]):
            if _statement_matches(statement, request):
                if statement["Effect"] == "Deny":
                    return "Deny"
                allowed = True
    return "Allow" if allowed else "ImplicitDeny"


# --------------------------------------------------------------------------- request contexts

_EXPRESSION_WORDS = {"SET", "REMOVE", "ADD", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN", "if_not_exists",
                     "list_append", "attribute_exists", "attribute_not_exists", "attribute_type", "begins_with",
                     "contains", "size"}
_TOKEN = re.compile(r"#[A-Za-z0-9_]+|:[A-Za-z0-9_]+|[A-Za-z_][A-Za-z0-9_]*")


def expression_attributes(expression: str, names: Mapping[str, str]) -> set[str]:
    """Top-level attribute names an update/condition/projection expression touches."""
    found: set[str] = set()
    previous_end, previous = 0, ""
    for match in _TOKEN.finditer(expression):
        token = match.group(0)
        nested = expression[previous_end:match.start()].endswith(".") and previous not in ("", ":")
        previous_end, previous = match.end(), token[0]
        if token.startswith(":") or token in _EXPRESSION_WORDS or nested:
            continue
        found.add(names[token] if token.startswith("#") else token)
    return found


def dynamodb_request(operation: str, params: Mapping[str, Any], *, table_arns: Mapping[str, str],
                     hash_keys: Mapping[str, str], principal: Mapping[str, Value]) -> Request:
    """The IAM request of one DynamoDB item call (PutItem, UpdateItem, DeleteItem, GetItem)."""
    table = params["TableName"]
    key_item = params.get("Item") or params.get("Key") or {}
    names = params.get("ExpressionAttributeNames", {})
    attributes = set(key_item)
    for name in ("UpdateExpression", "ConditionExpression", "ProjectionExpression"):
        if name in params:
            attributes |= expression_attributes(params[name], names)
    context: dict[str, Value] = dict(principal)
    hash_key = hash_keys[table]
    if hash_key in key_item:
        context["dynamodb:LeadingKeys"] = [next(iter(key_item[hash_key].values()))]
    context["dynamodb:Attributes"] = sorted(attributes)
    if "ReturnValues" in params:
        context["dynamodb:ReturnValues"] = params["ReturnValues"]
    return Request(action=f"dynamodb:{operation}", resource=table_arns[table], context=context)


def sqs_request(operation: str, params: Mapping[str, Any], *, queue_arns: Mapping[str, str],
                principal: Mapping[str, Value], secure: bool = True) -> Request:
    action = {"DeleteMessageBatch": "DeleteMessage", "SendMessageBatch": "SendMessage"}.get(operation, operation)
    context: dict[str, Value] = {**principal, "aws:SecureTransport": "true" if secure else "false"}
    return Request(action=f"sqs:{action}", resource=queue_arns[params["QueueUrl"]], context=context)


def resolve(value: Any, *, refs: Mapping[str, Any], arns: Mapping[str, str], conditions: Mapping[str, bool]) -> Any:
    """The CloudFormation intrinsics the stack's resource policies use, resolved from the
    deployed stack: Ref, Fn::GetAtt [X, Arn], Fn::If and AWS::NoValue."""
    if isinstance(value, list):
        items = [resolve(v, refs=refs, arns=arns, conditions=conditions) for v in value]
        return [v for v in items if v is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        return _NO_VALUE if value["Ref"] == "AWS::NoValue" else refs[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        logical, attribute = value["Fn::GetAtt"]
        if attribute != "Arn":
            raise Unsupported(f"Fn::GetAtt {attribute}")
        return arns[logical]
    if set(value) == {"Fn::Sub"}:
        text = value["Fn::Sub"]
        if not isinstance(text, str):
            raise Unsupported("Fn::Sub with a variable map")
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(refs[m.group(1)]), text)
    if set(value) == {"Fn::If"}:
        name, yes, no = value["Fn::If"]
        return resolve(yes if conditions[name] else no, refs=refs, arns=arns, conditions=conditions)
    if any(k.startswith("Fn::") for k in value):
        raise Unsupported(str(list(value)))
    out = {k: resolve(v, refs=refs, arns=arns, conditions=conditions) for k, v in value.items()}
    return {k: v for k, v in out.items() if v is not _NO_VALUE}


_NO_VALUE = object()
