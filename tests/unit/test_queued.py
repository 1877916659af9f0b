"""The producer's local records of sweeps it sent that the table does not hold yet."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer import queued


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(queued.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def entry(sweep_id: str, at: str, table: str = "sweepq", region: str = "us-east-1") -> dict:
    return {"sweep_id": sweep_id, "name": "n", "total": 4, "table": table, "region": region, "queue_url": "q",
            "submitted_at": at, "submitter": "alice"}


def test_records_are_per_table_and_region_newest_first(home: Path) -> None:
    assert queued.record(entry("a-aaaaaaaa", "2026-01-01T00:00:00.000Z")) == home / "submitted" / "a-aaaaaaaa.json"
    queued.record(entry("b-bbbbbbbb", "2026-01-02T00:00:00.000Z"))
    queued.record(entry("c-cccccccc", "2026-01-03T00:00:00.000Z", table="other"))
    queued.record(entry("d-dddddddd", "2026-01-04T00:00:00.000Z", region="eu-west-1"))
    assert [e["sweep_id"] for e in queued.pending(table="sweepq", region="us-east-1")] == ["b-bbbbbbbb", "a-aaaaaaaa"]
    assert queued.get("c-cccccccc", table="sweepq") is None and queued.get("c-cccccccc", table="other") is not None
    queued.forget("a-aaaaaaaa")
    assert [e["sweep_id"] for e in queued.pending(table="sweepq", region="us-east-1")] == ["b-bbbbbbbb"]
    assert not any(p.name.endswith(".tmp") for p in (home / "submitted").iterdir())


def test_stale_records_are_dropped(home: Path) -> None:
    queued.record(entry("a-aaaaaaaa", "2026-01-01T00:00:00.000Z"))
    recorded = queued.get("a-aaaaaaaa", table="sweepq")["recorded_at"]
    assert queued.pending(table="sweepq", now=recorded + queued.MAX_AGE_S - 1)
    assert queued.pending(table="sweepq", now=recorded + queued.MAX_AGE_S + 1) == []
    assert not (home / "submitted" / "a-aaaaaaaa.json").exists()


def test_an_unwritable_home_never_fails_the_submit(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    home.parent.mkdir(parents=True, exist_ok=True)
    home.write_text("a file where the directory should be")
    assert queued.record(entry("a-aaaaaaaa", "t")) is None
    assert "could not keep a local record of sweep a-aaaaaaaa" in caplog.text
    assert queued.pending(table="sweepq") == []


def test_home_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert queued.home({"SWEEPQ_HOME": "/x"}) == Path("/x")
    assert queued.home({"XDG_STATE_HOME": "/state"}) == Path("/state/sweepq")
    assert queued.home({}) == Path("~/.local/state/sweepq").expanduser()


def test_status_doc_of_a_queued_sweep_has_the_stored_keys_and_the_queue() -> None:
    doc = queued.status_doc(entry("a-aaaaaaaa", "t"), {"waiting": 2, "in_flight": 1, "delayed": 0})
    assert doc["state"] == "QUEUED" and doc["counts"]["not_started"] == 4 and sum(doc["counts"].values()) == 4
    assert doc["queue"] == {"url": "q", "depth": {"waiting": 2, "in_flight": 1, "delayed": 0}}
    assert queued.list_row(entry("a-aaaaaaaa", "t"))["state"] == "QUEUED"
