"""Following a sweep as a researcher: QUEUED right after submit, the results table, failures with
their cause, ``producer logs``, and errors as JSON. moto + the real dispatcher (producer_world.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from producer_world import World, make_world, run, submit

from dispatcher.core.failures import format_failure
from dispatcher.core.jobs import JobPhase
from producer import queued

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs"
TRAINER_ERROR = "trainer: error: unknown argument --learning_rte (did you mean --learning_rate?)"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    yield from make_world(monkeypatch, tmp_path)


def typo_reason(log: Path) -> str:
    return format_failure("exit code 2", log_lines=(LOGS / "torchrun-typo.log").read_text().splitlines(), log=str(log))


# -- queued -----------------------------------------------------------------------------------------

def test_status_right_after_submit_shows_the_sweep_queued(world: World) -> None:
    # GIVEN a sweep just sent, which no dispatcher has stored yet
    sweep_id = submit()
    # WHEN the researcher asks for it, by id or as the newest
    text = run("status", sweep_id)
    newest = run("status", "-o", "json")
    # THEN it is QUEUED, with the queue's depth — not "not found"
    assert text.exit_code == 0, text.output
    assert f"sweep {sweep_id}  demo-lr-bs  QUEUED" in text.stdout
    assert "the queue holds ~1 message(s) waiting and ~0 being taken by a dispatcher" in text.stdout
    doc = json.loads(newest.stdout)
    assert (doc["sweep_id"], doc["state"], doc["total"], doc["counts"]["not_started"]) == (sweep_id, "QUEUED", 4, 4)
    assert doc["queue"] == {"url": world.url, "depth": {"waiting": 1, "in_flight": 0, "delayed": 0}}
    # AND once the dispatcher stored it, the table is the truth and the local record is gone
    world.intake()
    assert json.loads(run("status", sweep_id, "-o", "json").stdout)["state"] == "ACTIVE"
    assert queued.get(sweep_id, table="sweepq") is None


def test_list_shows_queued_sweeps_first(world: World) -> None:
    stored = submit()
    world.intake()
    waiting = submit()
    rows = json.loads(run("list", "-o", "json").stdout)
    assert [(r["sweep_id"], r["state"]) for r in rows] == [(waiting, "QUEUED"), (stored, "ACTIVE")]
    text = run("list").stdout
    assert "1 sweep QUEUED: sent from this machine" in text


def test_a_queued_sweep_without_queue_permission_still_shows(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # researchers may hold only sqs:SendMessage: the depth is then unknown, the sweep still QUEUED
    sweep_id = submit()
    import producer.reader as reader

    monkeypatch.setattr(reader, "queue_depth", lambda sqs, url: None)
    doc = json.loads(run("status", sweep_id, "-o", "json").stdout)
    assert doc["state"] == "QUEUED" and doc["queue"]["depth"] is None
    assert "queue depth unknown" in run("status", sweep_id).stdout


def test_a_sweep_neither_stored_nor_sent_from_here_is_not_found(world: World) -> None:
    result = run("status", "other-abcdefgh")
    assert result.exit_code == 4
    assert "sweep other-abcdefgh is not in table sweepq, and this machine did not submit it" in result.stderr


# -- results and failures ---------------------------------------------------------------------------

def _three_trials(world: World, tmp_path: Path) -> tuple[str, Path]:
    """Trial 0 succeeded (0.8), trial 1 was cancelled mid-way (0.6, partial), trial 2 failed with a typo."""
    sweep_id = submit("--max-retries", "0", "--max-concurrent", "3")
    world.dispatcher.tick()
    log = tmp_path / "jobs" / f"{sweep_id}-2-a1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text((LOGS / "torchrun-typo.log").read_text())
    world.backend.set_phase(f"{sweep_id}-0-a1", JobPhase.SUCCEEDED)
    world.report_metrics(sweep_id, 0, {"eval/accuracy": 0.8, "epoch": 2.0})
    world.backend.set_phase(f"{sweep_id}-1-a1", JobPhase.RUNNING)
    world.report_metrics(sweep_id, 1, {"eval/accuracy": 0.6, "epoch": 1.0})
    world.backend.set_phase(f"{sweep_id}-2-a1", JobPhase.FAILED, reason=typo_reason(log))
    world.dispatcher.tick()
    return sweep_id, log


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_trials_table_has_parameters_metric_partial_marks_and_the_cause(world: World, tmp_path: Path) -> None:
    sweep_id, log = _three_trials(world, tmp_path)
    doc = json.loads(run("status", sweep_id, "--trials", "-o", "json").stdout)
    by_index = {t["index"]: t for t in doc["trials"]}
    assert (by_index[0]["metric"], by_index[0]["metric_partial"]) == (0.8, False)
    assert (by_index[1]["metric"], by_index[1]["metric_partial"], by_index[1]["epoch"]) == (0.6, True, 1.0)
    assert by_index[2]["state"] == "FAILED" and TRAINER_ERROR in by_index[2]["reason"]
    assert f"log: {log}" in by_index[2]["reason"]
    text = run("status", sweep_id, "--trials").stdout
    lines = text.splitlines()
    assert next(line for line in lines if line.startswith("1 ")).split()[-1] == "0.6000*"  # RUNNING: not final
    assert any(line.startswith("* not final") for line in lines)
    # the failures block: the trainer's own error line, and where the whole log is
    block = text[text.index("failures — "):]
    assert f"producer logs {sweep_id} TRIAL" in block and "trial 2 failed (attempt 1 of 1)" in block
    assert f"exit code 2: {TRAINER_ERROR}" in block and f"log: {log}" in block


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_trials_that_failed_the_same_way_are_grouped(world: World, tmp_path: Path) -> None:
    sweep_id = submit("--max-retries", "0", "--max-concurrent", "4")
    world.dispatcher.tick()
    for index in range(4):
        world.backend.set_phase(f"{sweep_id}-{index}-a1", JobPhase.FAILED, reason=typo_reason(tmp_path / f"{index}.txt"))
    world.dispatcher.tick()
    text = run("status", sweep_id, "--trials").stdout
    assert "trials 0, 1, 2, 3 failed the same way (attempt 1 of 1)" in text
    assert text.count(TRAINER_ERROR) == 1  # the cause in full once, in the block
    rows = [line for line in text.splitlines() if " FAILED " in line]
    assert len(rows) == 4 and all("exit code 2: trainer: error:" in line for line in rows)  # each row's cell


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_sort_and_top(world: World, tmp_path: Path) -> None:
    sweep_id, _ = _three_trials(world, tmp_path)
    top = json.loads(run("status", sweep_id, "--trials", "--top", "1", "-o", "json").stdout)["trials"]
    assert [t["index"] for t in top] == [0]  # maximize: 0.8 beats 0.6; the failed trial has no metric
    by_metric = json.loads(run("status", sweep_id, "--trials", "--sort", "metric", "-o", "json").stdout)["trials"]
    assert [t["index"] for t in by_metric] == [0, 1, 2, 3]  # trial 3 took the failed one's slot; no metric yet
    by_lr = json.loads(run("status", sweep_id, "--trials", "--sort", "learning_rate", "-o", "json").stdout)["trials"]
    assert [(t["params"]["learning_rate"], t["index"]) for t in by_lr] == [(0.0003, 1), (0.0003, 3), (0.001, 0), (0.001, 2)]
    assert "top 1 by eval/accuracy" in run("status", sweep_id, "--trials", "--top", "1").stdout
    bad = run("status", sweep_id, "--trials", "--sort", "learning_rte")
    assert bad.exit_code == 1 and "--sort: 'learning_rte' is neither a column nor a parameter" in bad.stderr


# -- logs -------------------------------------------------------------------------------------------

def test_logs_prints_the_failed_trials_log(world: World, tmp_path: Path) -> None:
    sweep_id, log = _three_trials(world, tmp_path)
    # TRIAL defaults to the first failed one; the path comes from its reason
    result = run("logs", sweep_id)
    assert result.exit_code == 0, result.output
    assert result.stdout == log.read_text()
    assert result.stderr.startswith(f"# trial 2, attempt 1 (FAILED): {log}")
    last = json.loads(run("logs", sweep_id, "2", "--tail", "1", "-o", "json").stdout)
    assert last["lines"] == [log.read_text().splitlines()[-1]] and last["job"] == f"{sweep_id}-2-a1"


def test_logs_of_a_trial_whose_log_is_elsewhere_says_where(world: World, tmp_path: Path) -> None:
    sweep_id, _ = _three_trials(world, tmp_path)
    result = run("logs", sweep_id, "0", "--state-dir", str(tmp_path / "elsewhere"))
    assert result.exit_code == 4
    assert f"the log of job {sweep_id}-0-a1 is not on this machine" in result.stderr
    assert str(tmp_path / "elsewhere" / "jobs" / f"{sweep_id}-0-a1" / "log.txt") in result.stderr
    assert run("logs", sweep_id, "7").exit_code == 4
    assert run("logs", sweep_id, "0", "--attempt", "2").exit_code == 4


def test_logs_of_a_kubernetes_trial_gives_the_kubectl_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for world in make_world(monkeypatch, tmp_path, kind="pytorchjob"):
        sweep_id = submit("--kind", "pytorchjob")
        world.dispatcher.tick()
        doc = json.loads(run("logs", sweep_id, "1", "-o", "json").stdout)
        selector = f"sweepq.io/sweep-id={sweep_id},sweepq.io/trial-index=1,sweepq.io/attempt=1"
        assert doc["commands"][0] == ["kubectl", "logs", "-n", "sweepq", "-l", selector, "--all-containers", "--prefix",
                                      "--tail=-1", "--max-log-requests=32"]
        assert doc["pods"] == f"{sweep_id}-1-a1-worker-<n>"
        text = run("logs", sweep_id, "1").stdout
        assert f"kubectl logs -n sweepq -l {selector}" in text and "kubectl describe pods" in text


# -- errors as JSON -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "code", "kind"),
    [
        (["status", "nosuch-abcdefgh"], 4, "not_found"),
        (["status", "Not_An_Id"], 2, "usage"),
        (["status", "--top", "0"], 2, "usage"),
        (["submit", "missing.yaml"], 2, "usage"),
        (["cancel", "nosuch-abcdefgh"], 4, "not_found"),
        (["logs", "nosuch-abcdefgh"], 4, "not_found"),
        (["list", "--table", "nope"], 3, "config"),
    ],
    ids=["not-found", "bad-id", "bad-flag-value", "missing-file", "cancel-unknown", "logs-unknown", "no-table"],
)
@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_errors_are_one_json_object_on_stdout(world: World, args: list[str], code: int, kind: str) -> None:
    result = run(*args, "-o", "json")
    assert result.exit_code == code, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"error"} and (doc["error"]["code"], doc["error"]["type"]) == (code, kind)
    assert doc["error"]["message"] == doc["error"]["problems"][0] and result.stderr == ""
