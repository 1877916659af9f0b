"""Pure summaries behind ``producer status`` / ``list``, and the producer's JSON-body checks."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from producer.aws import region_from_queue_url
from producer.summary import COUNT_KEYS, counts, list_row, status_doc
from producer.sweepfile import json_problems

META = {
    "sweep_id": "demo-abcdefgh",
    "name": "demo",
    "state": "ACTIVE",
    "total": 10,
    "cursor": 6,
    "live": {
        "2": {"attempt": 2, "state": "WAITING", "job": "demo-abcdefgh-2-a1"},
        "3": {"attempt": 1, "state": "PENDING", "job": "demo-abcdefgh-3-a1"},
        "4": {"attempt": 1, "state": "LAUNCHED", "job": "demo-abcdefgh-4-a1"},
        "5": {"attempt": 1, "state": "RUNNING", "job": "demo-abcdefgh-5-a1"},
    },
    "succeeded": 1,
    "failed": 1,
    "cancelled": 0,
    "best": {"trial_index": 0, "trial_id": "demo-abcdefgh-0", "metric": "eval/accuracy", "value": 0.9,
             "params": '{"lr": 0.1}'},
    "metric_goal": "maximize",
    "submitter": "arn:aws:iam::123456789012:user/alice",
    "submitted_at": "2026-11-25T10:00:00.000Z",
}


def test_every_trial_is_in_exactly_one_bucket() -> None:
    c = counts(META)
    assert list(c) == list(COUNT_KEYS)
    assert c == {"not_started": 4, "waiting": 1, "pending": 1, "launched": 1, "running": 1,
                 "succeeded": 1, "failed": 1, "cancelled": 0, "early_stopped": 0}
    assert sum(c.values()) == META["total"]


def test_status_doc_has_exactly_the_documented_keys() -> None:
    doc = status_doc(META)
    assert list(doc) == ["sweep_id", "state", "total", "counts", "best", "reason", "submitter", "submitted_at",
                         "metric", "goal", "paused", "control_refused", "team", "policy_hold"]
    assert (doc["paused"], doc["control_refused"]) == (False, None)
    assert doc["best"]["params"] == {"lr": 0.1}  # stored as JSON text, shown as an object
    assert doc["best"]["goal"] == "maximize"
    assert doc["reason"] == ""


def test_rejected_and_tombstone_sweeps() -> None:
    rejected = {"sweep_id": "x-abcdefgh", "state": "REJECTED", "total": 0, "cursor": 0, "live": {},
                "reason": "x-abcdefgh: run_cap: missing"}
    doc = status_doc(rejected)
    assert doc["best"] is None and doc["reason"] == "x-abcdefgh: run_cap: missing"
    assert set(doc["counts"].values()) == {0}
    assert list_row(rejected)["finished"] == 0


def test_list_row() -> None:
    assert list_row(META) == {"sweep_id": "demo-abcdefgh", "name": "demo", "submitter": META["submitter"],
                              "state": "ACTIVE", "finished": 2, "failed": 1, "total": 10,
                              "submitted_at": META["submitted_at"]}


def test_json_problems_name_the_path() -> None:
    raw = {"parameters": {"d": {"values": [dt.date(2024, 1, 1), "ok", float("nan")]}, "b": {"value": {1, 2}}}}
    assert json_problems(raw) == [
        "parameters.d.values[0]: 2024-01-01 is a YAML timestamp, not a string — quote it: '2024-01-01'",
        "parameters.d.values[2]: nan is not a finite number — JSON cannot carry it; write a large number instead",
        "parameters.b.value: a YAML set cannot be sent as JSON — write a plain value or a list",
    ]
    assert json_problems({"a": [1, 2.5, None, True, {"b": "c"}]}) == []


def test_region_from_queue_url() -> None:
    assert region_from_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/sweepq") == "eu-west-1"
    assert region_from_queue_url("http://localhost:4566/000000000000/sweepq") is None
    assert region_from_queue_url(None) is None


def test_a_paused_active_sweep_shows_as_paused_with_the_refusal_noted_on_it() -> None:
    refused = {"action": "resume", "by": "AROAX:eve", "reason": "resume of demo-abcdefgh by AROAX:eve refused",
               "at": Decimal("1700000000.5")}
    meta = {**META, "state": "ACTIVE", "paused": True, "control_refused": refused}
    doc = status_doc(meta)
    assert (doc["state"], doc["paused"]) == ("PAUSED", True)
    assert doc["control_refused"] == {**refused, "at": 1700000000.5}
    assert list_row(meta)["state"] == "PAUSED"
    # a paused sweep that ended shows how it ended
    assert status_doc({**meta, "state": "COMPLETED"})["state"] == "COMPLETED"
