"""Pure summaries behind ``producer status`` / ``list``, and the producer's JSON-body checks."""

from __future__ import annotations

import datetime as dt

from producer.aws import region_from_queue_url
from producer.summary import COUNT_KEYS, counts, list_row, status_doc, trial_row
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
                 "succeeded": 1, "failed": 1, "cancelled": 0}
    assert sum(c.values()) == META["total"]


def test_status_doc_has_exactly_the_documented_keys() -> None:
    doc = status_doc(META)
    assert list(doc) == ["sweep_id", "state", "total", "counts", "best", "reason", "submitter", "submitted_at"]
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


def test_list_row_and_trial_row() -> None:
    assert list_row(META) == {"sweep_id": "demo-abcdefgh", "name": "demo", "submitter": META["submitter"],
                              "state": "ACTIVE", "finished": 2, "total": 10, "submitted_at": META["submitted_at"]}
    item = {"index": 3, "params": '{"lr": 0.01}', "state": "SUCCEEDED", "attempt": 1,
            "metrics": {"eval/accuracy": 0.8, "eval/loss": 0.3}}
    assert trial_row(item, "eval/accuracy") == {"index": 3, "params": {"lr": 0.01}, "state": "SUCCEEDED",
                                                "attempt": 1, "metric": 0.8}
    assert trial_row({"index": 4, "state": "PENDING", "attempt": 1}, "eval/accuracy")["metric"] is None


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
