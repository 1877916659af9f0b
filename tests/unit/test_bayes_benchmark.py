"""benchmarks/bayes.py runs end to end in a tiny configuration, as a user runs it: the exact command,
one table row per size, and the counts it promises — never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("sweeps")


def run(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "bayes.json"
    argv = [*args, "--json", str(out)]
    done = subprocess.run([sys.executable, "benchmarks/bayes.py", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Command: `python benchmarks/bayes.py {' '.join(argv)}`" in done.stdout
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_gp_fits_per_suggestion_and_points_per_fit_follow_w_and_bs_engine(tmp_path: Path) -> None:
    # GIVEN 10 finished trials and 2 running, a tick with 2 free slots
    stdout, result = run(tmp_path, "--finished", "10", "--running", "2", "--slots", "2", "--repeats", "1")
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "GP fits / suggestion" in table[0]
    [row] = result["rows"]
    # THEN one fit on the finished trials, one more with the running ones' fantasies, per suggestion
    assert row["fits_per_suggestion"] == 2 and row["points_per_fit"] == [10, 12]
    assert row["fits_per_tick"] == 4 and row["suggestions_per_tick"] == 2
    # AND sweepq's suggestion is exactly what W&B's engine gives on the same runs
    assert row["same_suggestion"] is True
    assert row["ours_s"] > 0 and row["wandb_s"] > 0 and row["peak_bytes"] > 0


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_without_running_trials_there_is_one_fit(tmp_path: Path) -> None:
    _, result = run(tmp_path, "--finished", "10", "--running", "0", "--slots", "1", "--repeats", "1")
    [row] = result["rows"]
    assert row["fits_per_suggestion"] == 1 and row["points_per_fit"] == [10] and row["fits_per_tick"] == 1
