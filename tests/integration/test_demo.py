"""README command 1 end to end: `dispatcher demo` on moto + the local backend + the real trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def test_demo_runs_a_sweep_to_completion_and_reports_the_best_trial(tmp_path):
    # GIVEN the demo sweep made smaller for CI (2 trials, 1 epoch, 400 synthetic samples)
    spec = yaml.safe_load(Path("examples/sweep.yaml").read_text())
    spec["parameters"]["learning_rate"] = {"values": [0.002, 0.00001]}
    spec["parameters"]["batch_size"] = {"value": 32}
    spec["parameters"]["epochs"] = {"value": 1}
    spec["parameters"]["synthetic_samples"] = {"value": 400}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    state = tmp_path / "state"
    # WHEN the demo runs
    out = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "demo", str(sweep_file), "--state-dir", str(state),
         "--no-live", "--interval", "1", "--output", "json"],
        capture_output=True, text=True, timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # THEN every trial succeeded, the table is sorted by the metric, the best trial is recorded
    assert (result["state"], result["total"], result["succeeded"], result["failed"]) == ("COMPLETED", 2, 2, 0)
    values = [t["metric"] for t in result["trials"]]
    assert all(isinstance(v, float) for v in values) and values == sorted(values, reverse=True)
    assert result["best"]["value"] == pytest.approx(values[0])
    assert result["best"]["trial_id"] in {t["trial_id"] for t in result["trials"] if t["metric"] == values[0]}
    assert {t["state"] for t in result["trials"]} == {"SUCCEEDED"}
    # logs, checkpoints/results and the plot are where the demo says; results are kept per sweep file
    for t in result["trials"]:
        assert (Path(result["outputs"]) / t["trial_id"] / "result.json").is_file()
        assert t["params"]["learning_rate"] in (0.002, 0.00001) and t["metric_partial"] is False
    assert result["params"] == ["learning_rate"]  # the swept parameter: the table's and the plot's labels
    assert any(Path(result["logs"]).glob("*/log.txt"))
    assert Path(result["plot"]).stat().st_size > 10_000
    assert Path(result["plot"]).parent.parent == state / "sweeps" and Path(result["plot"]).parent.name.startswith("sweep-")


def test_ctrl_c_stops_the_trials_saves_the_state_and_the_rerun_resumes(tmp_path):
    import os
    import signal
    import time

    spec = yaml.safe_load(Path("examples/sweep.yaml").read_text())
    spec["parameters"] = {"learning_rate": {"values": [0.002, 0.001]}, "epochs": {"value": 1},
                          "synthetic_samples": {"value": 300}, "model": {"value": "tiny"}, "data": {"value": "synthetic"}}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "dispatcher.cli", "demo", str(sweep_file), "--state-dir", str(state), "--no-live",
           "--interval", "1", "--output", "json"]
    # GIVEN a demo whose two trials are running
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list((state / "jobs").glob("*/pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(list((state / "jobs").glob("*/pid"))) == 2, "the trials never started"
    # WHEN the researcher presses Ctrl-C
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    # THEN it exits 130 with the state saved (in the directory of this sweep file) and no trial process left
    assert first.returncode == 130, err[-2000:]
    [snapshot] = list((state / "sweeps").glob("*/table.json"))
    for exit_file in (state / "jobs").glob("*/exit_code"):
        assert "cancelled" in exit_file.read_text()
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if _has_env(p, str(state))]
    assert leftovers == []
    # AND another sweep file is another sweep: it does not resume this one (here it is refused at
    # intake at once: its program is not a file), and this one's state is kept
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "other", "method": "grid", "program": "no_such_train.py",
                                     "parameters": {"lr": {"values": [0.1]}}, "sweepq": {"kind": "local", "gpus_per_node": 0}}))
    refused = subprocess.run([*cmd[:4], str(other), *cmd[5:]], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "resuming" not in refused.stderr, refused.stderr[-2000:]
    assert "1 other interrupted sweep(s) kept" in refused.stderr
    rejected = json.loads(refused.stdout.strip().splitlines()[-1])
    assert rejected["state"] == "REJECTED" and "program: 'no_such_train.py' is not a file" in rejected["reason"]
    assert snapshot.is_file()
    # AND the same command resumes and finishes the sweep (the interrupted trials run attempt 2)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming sweep" in second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert (result["state"], result["succeeded"]) == ("COMPLETED", 2)
    assert sorted(t["attempt"] for t in result["trials"]) == [2, 2]
    assert not snapshot.exists()
    assert os.path.isfile(result["plot"])


def _has_env(proc: Path, needle: str) -> bool:
    try:
        return needle.encode() in (proc / "environ").read_bytes()
    except OSError:
        return False
