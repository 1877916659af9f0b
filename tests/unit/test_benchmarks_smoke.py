"""Each benchmark runs end to end in a tiny configuration, as a script like a user runs it, and its
output has the promised shape: the exact command, a Markdown table with one row per measurement,
and results whose *counts* hold (never timings — those are for the README, not for assertions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, script: str, *args: str) -> tuple[str, dict]:
    out = tmp_path / f"{script}.json"
    argv = [*args, "--json", str(out)]
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Command: `python benchmarks/{script} {' '.join(argv)}`" in done.stdout
    return done.stdout, json.loads(out.read_text())


def markdown_rows(stdout: str) -> list[list[str]]:
    """The table's rows (header first), after checking every line has the header's column count."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, stdout
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    assert {len(r) for r in rows} == {len(rows[0])}, lines
    assert all(set(cell) <= set(":-") for cell in rows[1]), lines[1]
    return [rows[0], *rows[2:]]


@pytest.mark.slow  # > 10 s: not in `scripts/test.sh --fast`
def test_expand_compares_both_engines_on_the_same_trials(tmp_path):
    # GIVEN a 100-point grid  WHEN the expansion benchmark runs
    stdout, result = run_benchmark(tmp_path, "expand.py", "--sizes", "100", "--repeats", "1")
    # THEN one row per k (half the grid, 10 before the end), both engines measured, same trials
    header, *rows = markdown_rows(stdout)
    assert "sweeps / sweepq cold" in header and len(rows) == 2
    assert [(r["grid"], r["k"]) for r in result["rows"]] == [(100, 50), (100, 90)]
    for row in result["rows"]:
        assert row["same_trials"] is True
        assert row["ours_warm_s"] > 0 and row["wandb_call_s"] > 0 and row["wandb_peak_bytes"] > 0


@pytest.mark.slow  # > 10 s: not in `scripts/test.sh --fast`
def test_expand_skips_the_sweeps_side_over_its_cap_and_says_so(tmp_path):
    stdout, result = run_benchmark(tmp_path, "expand.py", "--sizes", "100", "--repeats", "1", "--wandb-max-k", "60")
    skipped = [r for r in result["rows"] if "note" in r]
    assert [r["k"] for r in skipped] == [90] and "wandb_call_s" not in skipped[0]
    assert "sweeps skipped: k=90" in stdout


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_tick_counts_calls_per_operation_and_they_follow_the_formula(tmp_path):
    # GIVEN 1 sweep / 2 jobs, then the same with 3 finished jobs kept on the cluster
    stdout, result = run_benchmark(tmp_path, "tick.py", "--scenarios", "1x2:4+3")
    header, *rows = markdown_rows(stdout)
    assert "AWS calls by operation" in header and len(rows) == 4
    ticks = [(r["tick"], r["kept_finished_jobs"]) for r in result["results"]]
    assert ticks == [("quiet", 0), ("steady", 0), ("quiet", 3), ("steady", 3)]
    for r in result["results"]:
        # THEN one list per tick, no Scan, and the call counts the module documents
        assert r["kube_calls"]["list pytorchjobs"] == 1
        assert "dynamodb.Scan" not in r["aws_calls"]
        # (one transaction per touched sweep; the finished trials' items and metrics in one batch read each)
        expected = 6 + math.ceil(r["active_sweeps"] / 100) + 2 * math.ceil(r["finished"] / 100) + r["touched_sweeps"]
        assert sum(r["aws_calls"].values()) == expected
        assert (r["launched"], r["finished"], r["touched_sweeps"]) == ((0, 0, 0) if r["tick"] == "quiet" else (1, 1, 1))
        assert r["aws_calls"].get("dynamodb.TransactWriteItems", 0) == r["touched_sweeps"]
    assert "independent of trials per sweep and of finished jobs kept: yes" in stdout


@pytest.mark.slow  # > 10 s: not in `scripts/test.sh --fast`
def test_utilization_drives_every_sweep_to_completion_in_each_mode(tmp_path):
    stdout, result = run_benchmark(tmp_path, "utilization.py", "--sweeps", "a=2x2,b=2x1", "--slots", "2",
                                   "--median-min", "5")
    header, *rows = markdown_rows(stdout)
    assert "utilization while work remained" in header and len(rows) == 5
    simulated, reference = result["rows"][:4], result["rows"][4]
    assert [(r["period_s"], r["events"]) for r in simulated] == [(600, False), (60, False), (600, True), (60, True)]
    for r in simulated:
        assert r["states"] == ["COMPLETED"] and r["succeeded"] + r["failed"] == 6
        assert r["jobs"] >= 6 and 0 < r["utilization"] <= 1 and r["ticks"] > 0
        assert (r["wake_ticks"] > 0) == r["events"]
    assert reference["utilization"] == pytest.approx(1.0) and reference["ticks"] == 0
