"""``benchmarks/utilization.py --teams`` runs as a script in its quick configuration: the table has
one row per planner, the plot is written, and the seeded simulation's counts hold (shares and
starts are deterministic for a seed — never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_two_teams_benchmark_compares_the_planners_and_writes_the_plot(tmp_path):
    out, plot = tmp_path / "teams.json", tmp_path / "teams.png"
    argv = ["--teams", "--quick", "--plot", str(plot), "--json", str(out)]
    done = subprocess.run([sys.executable, "benchmarks/utilization.py", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Command: `python benchmarks/utilization.py {' '.join(argv)}`" in done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(lines) == 5 and len({line.count("|") for line in lines}) == 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    today, plain, fair = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in (today, plain, fair)] == [
        "today's planner (per sweep)", "fair share, no reservation", "fair share + GPU reservation"]
    # today's planner and fair share without reservation starve nlp's wider trials under top-up;
    # with the reservation nlp holds close to its equal share while both teams wait
    assert today["team_share"]["nlp"] < 0.1 and plain["team_share"]["nlp"] < 0.1
    assert 0.4 <= fair["team_share"]["nlp"] <= 0.6
    assert fair["freed_slots_before_first_wide"] < today["freed_slots_before_first_wide"]
    for row in (today, plain, fair):
        assert row["wide_started"] == row["wide_trials"] and 0 < row["utilization"] <= 1
        assert row["paused_launches"] == 0 and row["resumed_launches"] > 0
