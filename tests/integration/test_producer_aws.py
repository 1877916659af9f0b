"""``producer submit / status / list / cancel / pause / resume`` against moto's SQS, STS and DynamoDB.

The sweep items are written by the dispatcher's own code (``Dispatcher.intake`` and ``tick``)
from the messages the producer sent. The only stand-in is the job backend: a recording
:class:`FakeBackend` at our own ``Backend`` interface, whose jobs the test moves through phases
(see producer_world.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from producer_world import EXAMPLE, MOTO_ARN, World, make_world, run, submit

from dispatcher.core.jobs import JobPhase
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.message import CancelMessage, SubmitMessage
from dispatcher.core.spec import validate_sweep

MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"  # the SenderId moto gives every message


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    yield from make_world(monkeypatch, tmp_path)


# -- submit ---------------------------------------------------------------------------------------

def test_submit_round_trip(world: World) -> None:
    # WHEN a researcher submits the demo sweep (queue found by its default name)
    result = run("submit", str(EXAMPLE), "-o", "json", "--priority", "5")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"sweep_id", "trials", "state", "queue_url", "wandb_sweep"} and out["trials"] == 4
    assert out["wandb_sweep"] is None  # no W&B credentials: no W&B sweep, nothing else changes
    assert (out["state"], out["queue_url"]) == ("QUEUED", world.url)
    # THEN exactly one message is on the queue, a valid envelope whose spec re-validates
    [msg] = world.receive()
    assert isinstance(msg, SubmitMessage) and msg.sweep_id == out["sweep_id"]
    assert validate_sweep(msg.spec).total == 4
    launch = LaunchSettings.model_validate(msg.launch)
    assert (launch.kind, launch.priority, launch.max_concurrent) == ("local", 5, 2)
    assert msg.submitter == MOTO_ARN and msg.source == "sweep.yaml"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_submit_text_says_how_to_watch(world: World) -> None:
    result = run("submit", str(EXAMPLE), "--queue-url", world.url)
    assert result.exit_code == 0, result.output
    sweep_id = world.receive()[0].sweep_id
    assert f"submitted sweep {sweep_id}: 4 trials (grid) to {world.url}" in result.stdout
    assert f"producer status {sweep_id}" in result.stdout


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_retried_submit_with_the_same_key_is_one_sweep(world: World) -> None:
    first = submit("--idempotency-key", "ci-build-4711")
    second = submit("--idempotency-key", "ci-build-4711")
    other = submit()
    assert first == second != other
    report = world.intake()
    assert (report.accepted, report.duplicates) == (2, 1)
    assert world.queued() == 0


def test_dry_run_sends_nothing(world: World) -> None:
    assert run("submit", str(EXAMPLE), "--dry-run").exit_code == 0
    assert world.queued() == 0


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_missing_queue_is_exit_3(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPQ_QUEUE_NAME", "no-such-queue")
    result = run("submit", str(EXAMPLE))
    assert result.exit_code == 3
    assert result.stderr.strip() == ("error: find queue 'no-such-queue': the queue does not exist — run "
                                     "`dispatcher bootstrap` or set SWEEPQ_QUEUE_URL")


# -- status / list --------------------------------------------------------------------------------

@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_status_follows_the_dispatcher(world: World) -> None:
    sweep_id = submit()
    world.dispatcher.tick()  # accepts the sweep and launches max_concurrent = 2 trials
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    # who sent it, as SQS authenticated it (the body's claim, MOTO_ARN, is only a note)
    assert doc["state"] == "ACTIVE" and doc["total"] == 4 and doc["submitter"] == MOTO_SENDER
    # claimed and created: PENDING until the next tick lists their jobs and records LAUNCHED
    assert doc["counts"] == {"not_started": 2, "waiting": 0, "pending": 2, "launched": 0, "running": 0,
                             "succeeded": 0, "failed": 0, "cancelled": 0, "early_stopped": 0}
    assert doc["best"] is None

    # WHEN trial 0 runs and trial 1 succeeds with a metric
    world.backend.set_phase(f"{sweep_id}-0-a1", JobPhase.RUNNING)
    world.backend.set_phase(f"{sweep_id}-1-a1", JobPhase.SUCCEEDED)
    world.report_metrics(sweep_id, 1, {"eval/accuracy": 0.75, "eval/loss": 0.5})
    world.dispatcher.tick()
    # THEN status shows it, and trial 2 was launched into the freed slot (PENDING until the next tick)
    result = run("status", sweep_id, "-o", "json", "--trials")
    doc = json.loads(result.stdout)
    assert doc["counts"] == {"not_started": 1, "waiting": 0, "pending": 1, "launched": 0, "running": 1,
                             "succeeded": 1, "failed": 0, "cancelled": 0, "early_stopped": 0}
    assert doc["best"]["trial_index"] == 1 and doc["best"]["value"] == 0.75
    assert doc["best"]["metric"] == "eval/accuracy" and doc["best"]["params"]["learning_rate"] == 0.0003
    assert [(t["index"], t["state"], t["attempt"], t["metric"]) for t in doc["trials"]] == [
        (0, "RUNNING", 1, None), (1, "SUCCEEDED", 1, 0.75), (2, "PENDING", 1, None)]

    text = run("status", sweep_id, "--trials").stdout
    assert f"sweep {sweep_id}  demo-lr-bs  ACTIVE" in text
    assert "1/4 finished (25%)" in text
    assert "not started 1  waiting 0  pending 1  launched 0  running 1  succeeded 1  failed 0  cancelled 0" in text
    assert "best: trial 1 eval/accuracy=0.7500 (maximize)" in text
    assert "1 more trial not started yet" in text
    # the trials table: one column per swept parameter (constants left out), a labelled, rounded metric
    # (no epoch column: no trial reported one)
    header = next(line for line in text.splitlines() if "state" in line and "#" in line).split()
    assert header == ["#", "batch_size", "learning_rate", "state", "att", "elapsed", "eval/accuracy", "↑"]
    row = next(line for line in text.splitlines() if "SUCCEEDED" in line).split()
    assert row == ["1", "16", "0.0003", "SUCCEEDED", "1", "0.7500"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_status_defaults_to_the_newest_sweep(world: World) -> None:
    submit()
    newest = submit()
    world.intake()
    assert json.loads(run("status", "-o", "json").stdout)["sweep_id"] == newest


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_rejected_sweep_shows_its_reason(world: World) -> None:
    # GIVEN a sweep whose kind this dispatcher does not run
    sweep_id = submit("--kind", "pytorchjob")
    world.intake()
    result = run("status", sweep_id)
    assert result.exit_code == 0
    assert "REJECTED" in result.stdout
    assert "reason: " in result.stdout and "sweepq.kind: 'pytorchjob' is not enabled on this dispatcher" in result.stdout
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "REJECTED" and "use one of local" in doc["reason"]


def test_unknown_sweep_is_exit_4(world: World) -> None:
    result = run("status", "nosuch-abcdefgh")
    assert result.exit_code == 4
    assert "sweep nosuch-abcdefgh is not in table sweepq" in result.stderr
    result = run("status")
    assert result.exit_code == 4 and "no sweeps in table sweepq" in result.stderr


def test_missing_table_is_exit_3(world: World) -> None:
    result = run("status", "--table", "nope")
    assert result.exit_code == 3
    assert "table not found" in result.stderr and "Traceback" not in result.output


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_list_newest_first(world: World) -> None:
    assert "no sweeps in table sweepq" in run("list").stdout
    first = submit()
    second = submit("--kind", "job")  # rejected: listed too
    world.intake()
    rows = json.loads(run("list", "-o", "json").stdout)
    assert [r["sweep_id"] for r in rows] == [second, first]
    assert rows[1] == {"sweep_id": first, "name": "demo-lr-bs", "submitter": MOTO_SENDER, "state": "ACTIVE",
                       "finished": 0, "failed": 0, "total": 4, "submitted_at": rows[1]["submitted_at"]}
    assert rows[0]["state"] == "REJECTED"
    assert [r["sweep_id"] for r in json.loads(run("list", "-o", "json", "--limit", "1").stdout)] == [second]
    text = run("list").stdout
    assert first in text and "0/4" in text and "REJECTED" in text


# -- cancel ---------------------------------------------------------------------------------------

@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_cancel_is_a_message_the_dispatcher_acts_on(world: World) -> None:
    sweep_id = submit()
    world.dispatcher.tick()
    assert len(world.backend.jobs) == 2
    # WHEN the researcher cancels
    result = run("cancel", sweep_id)
    assert result.exit_code == 0, result.output
    assert "deletes its 2 live jobs" in result.stdout
    # THEN the queue carries a cancel request, and the next tick deletes the jobs and ends the sweep
    world.dispatcher.tick()
    assert world.backend.jobs == {}
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "CANCELLED"
    # AND cancelling again sends nothing
    result = run("cancel", sweep_id, "-o", "json")
    assert json.loads(result.stdout) == {"sweep_id": sweep_id, "cancel_requested": False, "state": "CANCELLED"}
    assert world.queued() == 0


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_cancel_of_an_unknown_id_exits_4_and_leaves_nothing(world: World) -> None:
    # GIVEN a mistyped id: neither in the table nor sent from this machine
    result = run("cancel", "mistyped-abcdefgh")
    # THEN nothing is sent (so no ghost CANCELLED row can appear), exit 4
    assert result.exit_code == 4
    assert result.stderr.startswith("error: sweep mistyped-abcdefgh is not in table sweepq, and this machine did not "
                                    "submit it: nothing sent")
    assert world.queued() == 0
    world.intake()
    assert run("status", "mistyped-abcdefgh").exit_code == 4 and run("list", "-o", "json").stdout.strip() == "[]"
    # AND in JSON the error is one object on stdout
    doc = json.loads(run("cancel", "mistyped-abcdefgh", "-o", "json").stdout)
    assert doc["error"]["code"] == 4 and doc["error"]["type"] == "not_found"


def test_cancel_while_still_queued_drops_the_sweep_on_arrival(world: World) -> None:
    sweep_id = submit()
    result = run("cancel", sweep_id, "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"sweep_id": sweep_id, "cancel_requested": True, "state": "QUEUED"}
    world.dispatcher.tick()
    assert json.loads(run("status", sweep_id, "-o", "json").stdout)["state"] == "CANCELLED"
    assert world.backend.jobs == {}


def test_cancel_force_sends_for_an_id_queued_elsewhere(world: World) -> None:
    result = run("cancel", "early-abcdefgh", "--force", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"sweep_id": "early-abcdefgh", "cancel_requested": True, "state": None}
    [msg] = world.receive()
    assert isinstance(msg, CancelMessage) and msg.requested_by == MOTO_ARN


# -- pause / resume -------------------------------------------------------------------------------

@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_pause_and_resume_are_messages_the_dispatcher_acts_on_and_status_shows_paused(world: World) -> None:
    sweep_id = submit()
    world.dispatcher.tick()
    assert len(world.backend.jobs) == 2  # the example's max_concurrent
    # WHEN the researcher pauses the sweep
    result = run("pause", sweep_id)
    assert result.exit_code == 0, result.output
    assert "its 2 running trials go on" in result.stdout and f"producer resume {sweep_id}" in result.stdout
    # THEN after the next tick status and list say PAUSED, and a trial that ends is not replaced
    assert world.dispatcher.tick().pause_requests == 1
    assert world.store.get_sweep(sweep_id)["pause_note"] == MOTO_ARN  # the caller, as a note
    first = sorted(world.backend.jobs)[0]
    world.backend.set_phase(first, JobPhase.SUCCEEDED)
    world.dispatcher.tick()
    assert [j.phase for j in world.backend.jobs.values() if not j.phase.terminal] == [JobPhase.PENDING]
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert (doc["state"], doc["paused"], doc["counts"]["succeeded"], doc["counts"]["not_started"]) == \
        ("PAUSED", True, 1, 2)
    assert "paused: no new trial starts" in run("status", sweep_id).stdout
    assert json.loads(run("list", "-o", "json").stdout)[0]["state"] == "PAUSED"
    # AND pausing again sends nothing
    result = run("pause", sweep_id, "-o", "json")
    assert json.loads(result.stdout) == {"sweep_id": sweep_id, "pause_requested": False, "state": "PAUSED"}
    assert world.queued() == 0
    # WHEN it is resumed, THEN the next tick launches its next trial
    result = run("resume", sweep_id, "-o", "json")
    assert json.loads(result.stdout) == {"sweep_id": sweep_id, "resume_requested": True, "state": "PAUSED"}
    world.dispatcher.tick()
    assert sum(1 for j in world.backend.jobs.values() if not j.phase.terminal) == 2
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert (doc["state"], doc["paused"], doc["counts"]["not_started"]) == ("ACTIVE", False, 1)
    assert "nothing to resume" in run("resume", sweep_id).stdout and world.queued() == 0


def test_pause_of_an_id_not_in_the_table_exits_4_and_sends_nothing(world: World) -> None:
    queued_id = submit()  # sent from this machine, not stored by a dispatcher yet
    for sweep_id in ("mistyped-abcdefgh", queued_id):
        result = run("pause", sweep_id)
        assert result.exit_code == 4, result.output
        assert "nothing sent" in result.stderr
    assert "it is still queued" in run("resume", queued_id).stderr
    assert world.queued() == 1  # the submit only
