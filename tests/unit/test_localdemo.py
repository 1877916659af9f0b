"""The demo's pure parts: state per sweep file, and the plot (drawn for real, checked as an image)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatcher.core.results import trial_rows
from dispatcher.demo_plot import label, plot, span
from dispatcher.localdemo import SNAPSHOT, interrupted, sweep_dir


def test_state_is_per_sweep_file_and_content(tmp_path: Path) -> None:
    a, b = tmp_path / "sweep.yaml", tmp_path / "random.yaml"
    a.write_text("method: grid\n")
    b.write_text("method: grid\n")
    state = tmp_path / "state"
    assert sweep_dir(state, str(a)) == sweep_dir(state, str(a))  # the same file resumes
    assert sweep_dir(state, str(a)).name.startswith("sweep-") and sweep_dir(state, str(b)).name.startswith("random-")
    assert sweep_dir(state, str(a)) != sweep_dir(state, str(b))  # another file is another sweep
    before = sweep_dir(state, str(a))
    a.write_text("method: random\n")
    assert sweep_dir(state, str(a)) != before  # an edited file too


def test_interrupted_sweeps_are_those_with_a_snapshot(tmp_path: Path) -> None:
    for name, snap in (("a-1", True), ("b-2", False)):
        (tmp_path / "sweeps" / name).mkdir(parents=True)
        if snap:
            (tmp_path / "sweeps" / name / SNAPSHOT).write_text("{}")
    assert [d.name for d in interrupted(tmp_path)] == ["a-1"]


ITEMS = [
    {"index": i, "trial_id": f"s-{i}", "state": state, "attempt": 1, "params": json.dumps(params),
     "metrics": {"eval/accuracy": acc, "epoch": 2}}
    for i, (state, params, acc) in enumerate([
        ("SUCCEEDED", {"learning_rate": 1e-3, "optimizer": "adamw"}, 0.963),
        ("SUCCEEDED", {"learning_rate": 1e-5, "optimizer": "sgd"}, 0.957),
        ("CANCELLED", {"learning_rate": 3e-4, "optimizer": "adamw"}, 0.91),
    ])
] + [{"index": 3, "trial_id": "s-3", "state": "FAILED", "attempt": 3, "params": '{"learning_rate": 0.1, "optimizer": "sgd"}'}]


def test_the_plot_is_drawn_with_parameter_labels_and_a_panel_per_parameter(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = trial_rows(ITEMS, metric_name="eval/accuracy", now=0.0)
    for row in rows[:2]:
        out = tmp_path / "outputs" / row.trial_id
        out.mkdir(parents=True)
        (out / "result.json").write_text(json.dumps({"history": [{"epoch": 1, "eval/accuracy": 0.9},
                                                                 {"epoch": 2, "eval/accuracy": row.metric}]}))
    path = plot(rows, params=["learning_rate", "optimizer"], metric="eval/accuracy", goal="maximize", best_index=0,
                outputs=tmp_path / "outputs", path=tmp_path / "results.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    assert label(rows[0], ["learning_rate", "optimizer"]) == "#0 learning_rate=0.001 optimizer=adamw"
    low, high = span([0.957, 0.963])
    assert 0.95 < low < 0.957 and 0.963 < high < 0.97  # the axis spans the values, not from 0


def test_the_title_counts_early_stopped_trials_as_done() -> None:
    from rich.console import Console

    from dispatcher.localdemo import render

    meta = {"sweep_id": "demo-hb-abcdefgh", "state": "COMPLETED", "total": 6, "succeeded": 2, "early_stopped": 4,
            "metric_name": "eval/loss"}
    console = Console(width=100, record=True)
    console.print(render(meta, [], []))
    assert "6/6 trials done" in " ".join(console.export_text().split())  # the title wraps
