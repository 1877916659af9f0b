"""Trial results as a researcher reads them: rows, rounding, sorting, the table and the failures block."""

from __future__ import annotations

from decimal import Decimal

from rich.console import Console

from dispatcher.core.failures import format_failure
from dispatcher.core.results import (
    fmt_duration,
    fmt_metric,
    fmt_number,
    metric_label,
    sort_rows,
    swept_names,
    top,
    trial_rows,
)
from dispatcher.results_view import failure_lines, footnotes, last_failure, results_table

ITEMS = [
    {"index": 0, "trial_id": "s-0", "state": "SUCCEEDED", "attempt": 1, "started_at": Decimal("100"),
     "finished_at": Decimal("165"), "params": '{"lr": 1.9709920913356e-05, "opt": {"name": "adamw", "wd": 0.01}, "bs": 16}',
     "metrics": {"eval/accuracy": Decimal("0.9634"), "epoch": Decimal("3")}},
    {"index": 1, "trial_id": "s-1", "state": "CANCELLED", "attempt": 1, "started_at": 100, "finished_at": 130,
     "params": '{"lr": 0.001, "opt": {"name": "sgd", "wd": 0.01}, "bs": 16}', "metrics": {"eval/accuracy": 0.957, "epoch": 1}},
    {"index": 2, "trial_id": "s-2", "state": "RUNNING", "attempt": 2, "started_at": 150,
     "params": '{"lr": 0.0003, "opt": {"name": "adamw", "wd": 0.01}, "bs": 16}', "metrics": {"eval/accuracy": 0.5, "epoch": 1.5},
     "attempts": [{"attempt": 1, "outcome": "FAILED", "reason": "killed by signal 9 (SIGKILL)"}]},
    {"index": 3, "trial_id": "s-3", "state": "FAILED", "attempt": 3, "params": {"lr": 0.1, "opt": {"name": "sgd", "wd": 0.01}, "bs": 16},
     "reason": format_failure("exit code 1", log_lines=["Traceback (most recent call last):", "ValueError: lr too big"],
                              log="/s/log.txt") + " (attempt 3 of 3)"},
]


def rows():
    return trial_rows(ITEMS, metric_name="eval/accuracy", now=200.0)


def test_rows_flatten_params_parse_numbers_and_mark_partial_metrics() -> None:
    r = rows()
    assert r[0].flat == {"lr": 1.9709920913356e-05, "opt.name": "adamw", "opt.wd": 0.01, "bs": 16}
    assert (r[0].metric, r[0].partial, r[0].epoch, r[0].elapsed_s) == (0.9634, False, 3.0, 65.0)
    assert (r[1].metric, r[1].partial) == (0.957, True)  # cancelled after epoch 1: not a final value
    assert (r[2].partial, r[2].elapsed_s) == (True, 50.0)  # running: elapsed up to now
    assert (r[3].metric, r[3].elapsed_s, r[3].summary) == (None, None, "exit code 1: ValueError: lr too big (attempt 3 of 3)")


def test_swept_names_from_the_spec_or_from_what_varies() -> None:
    assert swept_names(rows(), {"lr", "opt"}) == ["lr", "opt.name", "opt.wd"]
    assert swept_names(rows()) == ["lr", "opt.name"]  # bs and opt.wd are the same everywhere
    assert swept_names(rows()[:1]) == ["bs", "lr", "opt.name", "opt.wd"]


def test_numbers_are_rounded_for_reading() -> None:
    assert [fmt_number(v) for v in (1.9709920913356e-05, 0.001, 0.0003, 16, 0.0, 3.0, 0.96341234, True, None, [1, 2])] == [
        "1.971e-05", "0.001", "0.0003", "16", "0", "3.0", "0.9634", "True", "", "[1,2]"]
    r = rows()
    assert [fmt_metric(x) for x in r] == ["0.9634", "0.9570*", "0.5000*", ""]
    assert [fmt_duration(s) for s in (None, 4.4, 65, 3725)] == ["", "4s", "1m05s", "1h02m"]
    assert (metric_label("eval/loss", "minimize"), metric_label(None, "maximize")) == ("eval/loss ↓", "metric")


def test_sort_and_top_by_metric_goal_and_parameter() -> None:
    r = rows()
    assert [x.index for x in sort_rows(r, "metric", goal="maximize")] == [0, 1, 2, 3]
    assert [x.index for x in sort_rows(r, "metric", goal="minimize")] == [2, 1, 0, 3]  # no metric: last
    assert [x.index for x in sort_rows(r, "lr")] == [0, 2, 1, 3]
    assert [x.index for x in sort_rows(r, "opt.name")] == [0, 2, 1, 3]
    assert [x.index for x in sort_rows(r, "elapsed")] == [0, 2, 1, 3]
    assert [x.index for x in top(r, 2, goal="maximize")] == [0, 1]


def test_table_never_cuts_numbers_and_gives_the_reason_what_is_left() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(results_table(rows(), params=["lr", "opt.name"], metric_name="eval/accuracy", goal="maximize",
                                best_index=0, attempts=3, width=120))
    lines = console.export_text().splitlines()
    assert lines[0].split() == ["#", "lr", "opt.name", "state", "att", "elapsed", "epoch", "eval/accuracy", "↑", "reason"]
    assert lines[2].split() == ["0", "1.971e-05", "adamw", "SUCCEEDED", "1", "1m05s", "3", "0.9634"]
    assert lines[4].split()[:8] == ["2", "0.0003", "adamw", "RUNNING", "2/3", "50s", "1.50", "0.5000*"]
    assert "attempt 1: killed by signal 9 (SIGKILL)" in lines[4]
    assert "exit code 1: ValueError: lr too big" in lines[5] and all(len(line) <= 120 for line in lines)
    narrow = Console(width=70, record=True, color_system=None)
    narrow.print(results_table(rows(), params=["lr", "opt.name"], metric_name="eval/accuracy", goal="maximize", width=70))
    assert "reason" not in narrow.export_text()  # no room: the failures block has it


def test_last_failure_and_footnotes() -> None:
    r = rows()
    assert [last_failure(x) for x in r][:3] == ["", "", "attempt 1: killed by signal 9 (SIGKILL)"]
    assert footnotes(r) and not footnotes(r[:1])


def test_failure_block_names_the_cause_the_log_and_the_command() -> None:
    lines = failure_lines(rows(), "s")
    assert lines[0] == "failures — the whole log of a trial: producer logs s TRIAL"
    assert "  trial 2 failed attempt 1, retried" in lines
    assert "  trial 3 failed (attempt 3 of 3)" in lines
    assert "    exit code 1: ValueError: lr too big" in lines and "    log: /s/log.txt" in lines
    assert "    | Traceback (most recent call last):" in lines
    assert "    | ValueError: lr too big" not in lines  # the cause was printed just above
    assert failure_lines(rows()[:2], "s") == []


def test_at_80_columns_numbers_are_never_cut() -> None:
    # GIVEN the demo's table: two swept parameters, elapsed, epoch and a long metric name
    items = [{"index": i, "trial_id": f"s-{i}", "state": "SUCCEEDED", "attempt": 1, "started_at": 0, "finished_at": 560,
              "params": {"batch_size": bs, "learning_rate": lr, "weight_decay": 0.0}, "metrics": {"eval/accuracy": acc, "epoch": 2}}
             for i, (bs, lr, acc) in enumerate([(16, 0.001, 0.9633), (16, 0.0003, 0.96), (32, 0.001, 0.9567)])]
    rows = trial_rows(items, metric_name="eval/accuracy", now=0.0)
    for params, dropped in ((["batch_size", "learning_rate"], []), (["batch_size", "learning_rate", "weight_decay"], ["epoch"])):
        console = Console(width=80, record=True, color_system=None)
        console.print(results_table(rows, params=params, metric_name="eval/accuracy", goal="maximize", width=80))
        lines = console.export_text().splitlines()
        assert all(len(line.rstrip()) <= 80 for line in lines)
        assert [line.split()[-1] for line in lines[2:]] == ["0.9633", "0.9600", "0.9567"]  # whole, not "0."
        assert all(name not in lines[0] for name in dropped) and "eval/accuracy ↑" in lines[0]


def test_early_stop_savings_are_against_the_mean_succeeded_runtime() -> None:
    from dispatcher.core.results import early_stop_savings
    from dispatcher.results_view import footnotes, last_failure

    items = [
        {"index": 0, "state": "SUCCEEDED", "started_at": 0, "finished_at": 600, "params": "{}"},
        {"index": 1, "state": "SUCCEEDED", "started_at": 0, "finished_at": 1200, "params": "{}"},
        {"index": 2, "state": "EARLY_STOPPED", "started_at": 0, "finished_at": 300, "params": "{}",
         "reason": "hyperband: eval/loss value at position 1 0.9 is worse than the band-2 threshold 0.2"},
        {"index": 3, "state": "RUNNING", "started_at": 0, "params": "{}"},
    ]
    rows = trial_rows(items, metric_name="eval/loss", now=5000)
    savings = early_stop_savings(rows, gpus_per_trial=8)
    assert savings is not None and savings.trials == (2,)
    assert savings.trial_minutes == 10.0 and savings.gpu_minutes == 80.0  # (900 s mean - 300 s) x 8 GPUs
    assert "≈ 80.0 GPU-minutes" in footnotes(rows, gpus_per_trial=8)[-1]
    assert "GPU-minutes" not in footnotes(rows)[-1]  # GPUs unknown (a CPU demo): trial-minutes only
    assert last_failure(rows[2]).startswith("hyperband:")
    assert early_stop_savings(rows[:2]) is None
