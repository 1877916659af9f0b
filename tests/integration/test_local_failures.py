"""A local sweep whose every trial fails with a typo'd argument, end to end: the real trainer under
real torchrun (CPU), the local backend, the real tick on moto, the producer reading the table.

One sweep runs for the module; the tests read what it left:

* the trainer's own error line is in ``producer status --trials`` (text and JSON) and ``producer
  logs`` prints the whole log — this holds today;
* the sweep ends FAILED after one attempt per trial: an argument error is not retried
  (dispatcher/core/outcomes.py, applied by dispatcher/core/reconcile.py), and each trial's
  attempt says so and that it counted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
import yaml
from moto import mock_aws
from typer.testing import CliRunner

from dispatcher.adapters.queue import create_queues
from dispatcher.adapters.store import Store
from dispatcher.backends.local import LocalBackend
from dispatcher.settings import Settings
from dispatcher.wiring import build_dispatcher
from producer.cli import app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRAINER_ERROR = "trainer: error: unknown argument --learning_rte (did you mean --learning_rate?)"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "REJECTED")


def typo_sweep() -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "examples" / "sweep.yaml").read_text())
    spec["name"] = "typo"
    spec["parameters"] = {"learning_rte": {"values": [0.001, 0.0003]}, "model": {"value": "tiny"},
                          "data": {"value": "synthetic"}, "epochs": {"value": 1}}
    spec["sweepq"]["max_retries"] = 2
    return spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("typo")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("SWEEPQ_", "AWS_ENDPOINT_URL")):
                mp.delenv(name)
        mp.setenv("SWEEPQ_HOME", str(tmp / "home"))
        mp.setenv("NO_COLOR", "1")
        mp.setenv("COLUMNS", "160")
        with mock_aws():
            settings = Settings.load({}, backend="local", kinds=("local",), max_running=2, local_slots=2,
                                     state_dir=str(tmp / "state"), output_dir=str(tmp / "state" / "outputs"))
            session = boto3.session.Session()
            url, _ = create_queues(session.client("sqs"), settings.queue_name)
            store = Store(settings.table, session.client("dynamodb"))
            store.create_table()
            backend = LocalBackend(settings.state_dir, slots=2, cwd=ROOT, termination_grace_s=5)
            dispatcher = build_dispatcher(settings, session=session, backends={"local": backend})
            path = tmp / "typo.yaml"
            path.write_text(yaml.safe_dump(typo_sweep()))
            # GIVEN a researcher's sweep whose parameter name is misspelt
            sent = CliRunner().invoke(app, ["submit", str(path), "--queue-url", url, "-o", "json"])
            assert sent.exit_code == 0, sent.output
            sweep_id = json.loads(sent.stdout)["sweep_id"]
            # WHEN the dispatcher runs it to the end
            deadline = time.monotonic() + 280
            meta: dict[str, Any] = {}
            while time.monotonic() < deadline:
                dispatcher.tick()
                meta = store.get_sweep(sweep_id) or {}
                if meta.get("state") in TERMINAL:
                    break
                time.sleep(0.5)
            assert meta.get("state") in TERMINAL, f"the sweep did not end in time: {meta}"
            yield {"sweep_id": sweep_id, "meta": meta, "trials": store.trials(sweep_id), "backend": backend,
                   "run": lambda *args: CliRunner().invoke(app, list(args))}


def test_the_trainers_error_line_is_in_status_and_the_log_one_command_away(finished: dict[str, Any]) -> None:
    sweep_id, run = finished["sweep_id"], finished["run"]
    # THEN `producer status --trials` shows the trainer's own words, in the table's reason column,
    text = run("status", sweep_id, "--trials")
    assert text.exit_code == 0, text.output
    assert sum(TRAINER_ERROR[:40] in line and " FAILED " in line for line in text.stdout.splitlines()) == 2
    # ... in full in the failures block, once for both trials (they failed the same way), with the log
    block = text.stdout[text.stdout.index("failures — "):]
    assert "trials 0, 1 failed the same way" in block and block.count(TRAINER_ERROR) == 1
    log_line = next(line for line in block.splitlines() if line.strip().startswith("log: "))
    log = Path(log_line.split("log: ", 1)[1])
    assert log.is_file() and TRAINER_ERROR in log.read_text()
    # ... and in JSON
    doc = json.loads(run("status", sweep_id, "--trials", "-o", "json").stdout)
    assert all(TRAINER_ERROR in t["reason"] for t in doc["trials"]) and len(doc["trials"]) == 2
    # AND `producer logs` prints the whole log of the first failed trial
    logs = run("logs", sweep_id)
    assert logs.exit_code == 0 and TRAINER_ERROR in logs.stdout and "ChildFailedError" in logs.stdout


def test_the_sweep_ends_failed_without_retrying_an_argument_error(finished: dict[str, Any]) -> None:
    meta, trials = finished["meta"], finished["trials"]
    assert meta["state"] == "FAILED", meta.get("reason")
    assert meta["reason"].startswith("no trial succeeded: 0 succeeded, 2 failed")
    assert [int(t["attempt"]) for t in trials] == [1, 1]  # not max_retries + 1 = 3 each
    assert all("not retried: the program refused its arguments" in t["reason"] for t in trials)
    assert [[(int(a["attempt"]), a["outcome"], a["counted"]) for a in t["attempts"]] for t in trials] == \
        [[(1, "FAILED", True)]] * 2
