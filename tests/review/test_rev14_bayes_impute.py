"""rev14 — ``method: bayes``: what W&B's engine is told about each trial, against W&B's semantics.

W&B's bayes (sweeps.bayes_search._construct_gp_data) reads a run's *history* as well as its
summary: a finished run counts as the extremum of history + summary (SweepRun.metric_extremum);
``impute: latest`` for a failed/killed run and ``impute_while_running: latest`` for a running one
use the last finite value of its history (0.0 when there is none). dispatcher/suggesting.py
builds the observations from trial items only (``observation(..., metrics=...)``, no ``history``),
so the engine sees runs with empty histories. Each test puts the same trial into W&B's engine the
way W&B would have it and the way sweepq does, and compares the y the GP is fitted on.

(Fixed, issue 14: an ended trial's item keeps ``metric_summary`` — dispatcher/core/history.py —
and a running trial's metrics item is read when ``impute_while_running`` is set.)
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from dispatcher.adapters.metrics import MetricsRead
from dispatcher.core import history
from dispatcher.core.identity import job_name
from dispatcher.core.metrics import MetricsItem
from dispatcher.core.records import LiveTrial, TrialState
from dispatcher.core.search import _run, engine_config
from dispatcher.core.spec import validate_sweep
from dispatcher.suggesting import Suggesting

sweeps_bayes = pytest.importorskip("sweeps.bayes_search")
pytestmark = pytest.mark.filterwarnings("ignore")
METRIC = "eval/loss"
SID = "bo-abcdefgh"


def bayes(metric: dict[str, Any]) -> Any:
    spec = {"name": "bo", "method": "bayes", "run_cap": 20, "program": "train.py",
            "metric": {"name": METRIC, "goal": "minimize", **metric},
            "parameters": {"lr": {"min": 0.0, "max": 1.0}}}
    return validate_sweep(spec)


class Metrics:
    """The metrics table's reader as Suggesting uses it: ``read(refs)`` → verified items by job."""

    def __init__(self, items: dict[str, MetricsItem]) -> None:
        self.items = items
        self.reads: list[list[tuple[str, str, int]]] = []

    def read(self, refs: Any, *, template_patterns: Any = None) -> MetricsRead:
        refs = list(refs)
        self.reads.append(refs)
        return MetricsRead(verified={job: self.items[job] for _, job, _ in refs if job in self.items})


class Host(Suggesting):
    """What Suggesting.observations reads: the spec store, the sweep's trial items, the metrics table."""

    def __init__(self, sweep: Any, items: list[dict[str, Any]], metrics: Metrics | None = None) -> None:
        self.specs = SimpleNamespace(get=lambda _sid: sweep)
        self.store = SimpleNamespace(trials=lambda _sid: items)
        self.metrics = metrics if metrics is not None else Metrics({})


def reported(index: int, losses: list[float]) -> MetricsItem:
    """A running trial's verified metrics item: its history by position, its latest value."""
    job = job_name(SID, index, 1)
    return MetricsItem(pod=f"{job}-worker-0", job=job, attempt=1, status="running", updated_at=1.0,
                       metrics={METRIC: losses[-1]}, history={p: {METRIC: v} for p, v in enumerate(losses)})


def item(index: int, state: str, lr: float, metrics: dict | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "state": state, "params": json.dumps({"lr": lr})}
    if metrics is not None:
        out["metrics"] = metrics
    return out


def kept(losses: list[float], summary: float | None = None) -> str:
    """The ``metric_summary`` the tick stores on a trial item when the trial ends."""
    return history.dump(history.summarize(losses, metric=METRIC, summary=losses[-1] if summary is None else summary))


def config_y(sweep: Any, runs: list[Any]) -> list[float]:
    config = sweeps_bayes.bayes_baseline_validate_and_fill(engine_config(sweep))
    _, _, _, y, _ = sweeps_bayes._construct_gp_data(runs, config)
    return [float(v) for v in y]


def gp_y(sweep: Any, items: list[dict[str, Any]], *, live: dict | None = None,
         metrics: Metrics | None = None) -> list[float]:
    record = SimpleNamespace(sweep_id=SID, live=live or {}, metric_name=METRIC, kind="pytorchjob")
    observations = Host(sweep, items, metrics).observations(record)
    return config_y(sweep, [_run(o, METRIC) for o in sorted(observations, key=lambda o: o.index)])


def wandb_y(sweep: Any, runs: list[tuple[str, float, list[float], dict]]) -> list[float]:
    """The y W&B's engine fits on runs as W&B holds them: (state, lr, whole history, summary)."""
    from sweeps import SweepRun

    return config_y(sweep, [SweepRun(name=str(n), state=state, config={"lr": {"value": lr}}, summary_metrics=summary,
                                     history=[{METRIC: v} for v in losses])
                            for n, (state, lr, losses, summary) in enumerate(runs)])


@pytest.mark.parametrize("stored", [False, True], ids=["item-before-summaries", "with-metric-summary"])
def test_impute_latest_gives_an_early_stopped_trial_its_last_reported_value_not_zero(stored: bool) -> None:
    # GIVEN two finished trials (losses 1.0 and 2.0) and one hyperband-stopped trial whose last
    # reported loss was 5.0 (the tick keeps it as the trial item's metrics: "what it reached")
    sweep = bayes({"impute": "latest"})
    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 1.0}), item(1, "SUCCEEDED", 0.5, {METRIC: 2.0}),
             item(2, "EARLY_STOPPED", 0.9, {METRIC: 5.0})]
    if stored:  # as the tick now writes it: the history it read when it stopped the trial
        items[2][history.FIELD] = kept([9.0, 3.0, 5.0])
    y = gp_y(sweep, items)
    # THEN W&B's engine fits the stopped point at its latest value, 5.0 — sweepq hands it a run with
    # no history, so `impute: latest` makes it 0.0: the best loss of the sweep, and the GP is steered
    # towards the trial hyperband just killed for losing
    assert y[2] == pytest.approx(5.0), f"early-stopped trial imputed as {y[2]} (W&B: its latest value 5.0)"


def test_impute_while_running_latest_uses_the_running_trials_reported_history() -> None:
    # GIVEN a finished trial (loss 1.0) and a running one that has reported 5.0, 4.0 so far (in the
    # metrics table; its trial item has no metrics until it ends)
    sweep = bayes({"impute_while_running": "latest"})
    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 1.0}), item(1, "RUNNING", 0.9)]
    live = {1: LiveTrial(index=1, attempt=1, state=TrialState.RUNNING, job_name=job_name(SID, 1, 1))}
    metrics = Metrics({job_name(SID, 1, 1): reported(1, [5.0, 4.0])})
    y = gp_y(sweep, items, live=live, metrics=metrics)
    # THEN W&B fits the running point at 4.0; sweepq's observation has no history: 0.0, the best loss
    assert len(y) == 2 and y[1] == pytest.approx(4.0), f"running trial fitted at {y[1:]} (W&B: 4.0)"
    assert metrics.reads == [[("pytorchjob", job_name(SID, 1, 1), 1)]]  # one batched read, running trials only
    # W&B's own rule, for a history whose best is not its latest (3.0 then 4.0): a running run with a
    # finite value is fitted at its extremum (get_metric), `latest` only imputes one with none
    metrics = Metrics({job_name(SID, 1, 1): reported(1, [3.0, 4.0])})
    assert gp_y(sweep, items, live=live, metrics=metrics) == pytest.approx(
        wandb_y(sweep, [("finished", 0.1, [1.0], {METRIC: 1.0}), ("running", 0.9, [3.0, 4.0], {METRIC: 4.0})]))
    # without impute_while_running W&B does not fit running runs: nothing is read
    quiet = Metrics({job_name(SID, 1, 1): reported(1, [3.0, 4.0])})
    assert len(gp_y(bayes({}), items, live=live, metrics=quiet)) == 1 and quiet.reads == []


def test_a_finished_trial_counts_as_the_best_value_of_its_history_as_in_wandb() -> None:
    """W&B: y = metric_extremum(history + summary). A trial whose loss went 1.0 → 0.2 → 0.6 counts
    as 0.2 in W&B's GP; sweepq passes only the final summary (0.6). The trial item does not even
    keep the history (early_stop reads it from the metrics table; suggesting never does)."""
    sweep = bayes({})
    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 0.6}), item(1, "SUCCEEDED", 0.5, {METRIC: 2.0})]
    record = SimpleNamespace(sweep_id="bo-abcdefgh", live={}, metric_name=METRIC)
    observations = Host(sweep, items).observations(record)
    assert observations[0].history, "bayes observations carry no history: W&B's extremum over it is lost"
    # WHEN its item keeps the summary the tick stores when it ends (history 1.0, 0.2, 0.6): y is W&B's
    items[0][history.FIELD] = kept([1.0, 0.2, 0.6])
    assert gp_y(sweep, items)[0] == pytest.approx(0.2)


@pytest.mark.parametrize("impute", ["latest", "best", "worst"])
def test_ended_trials_with_stored_summaries_fit_as_wandb_fits_their_whole_histories(impute: str) -> None:
    """Every ended state and every impute strategy: the summary's (min, max, latest) give the y
    W&B's engine computes from the whole history (a failed trial's item has no metrics)."""
    sweep = bayes({"impute": impute})
    runs = [("finished", 0.1, [1.0, 0.2, 0.6], {METRIC: 0.6}), ("failed", 0.3, [0.9, 7.0, 2.5], {METRIC: 2.5}),
            ("killed", 0.5, [4.0, 0.1, 3.0], {METRIC: 3.0}), ("killed", 0.7, [], {})]
    states = {"finished": "SUCCEEDED", "failed": "FAILED", "killed": "EARLY_STOPPED"}
    items = []
    for n, (state, lr, losses, summary) in enumerate(runs):
        one = item(n, states[state] if n < 3 else "CANCELLED", lr, summary if state != "failed" else None)
        one[history.FIELD] = history.dump(history.summarize(losses, metric=METRIC, summary=summary.get(METRIC)))
        items.append(one)
    assert gp_y(sweep, items) == pytest.approx(wandb_y(sweep, runs))
