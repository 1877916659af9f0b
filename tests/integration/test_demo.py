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
    # logs, checkpoints/results and the plot are where the demo says
    for t in result["trials"]:
        assert (Path(result["outputs"]) / t["trial_id"] / "result.json").is_file()
    assert any(Path(result["logs"]).glob("*/log.txt"))
    assert Path(result["plot"]).stat().st_size > 10_000
