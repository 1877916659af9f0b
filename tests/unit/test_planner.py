"""The planner: caps, per-sweep caps, round-robin fairness, priorities, retries first, GPUs."""

from __future__ import annotations

import pytest

from dispatcher.core.launch import LaunchSettings
from dispatcher.core.planner import Capacity, free_capacity, plan
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState


def sweep(sid, *, total=10, cursor=0, live=None, priority=0, submitted="2026-01-01T00:00:00Z", **launch):
    return SweepRecord(
        sweep_id=sid,
        state=SweepState.ACTIVE,
        total=total,
        cursor=cursor,
        launch=LaunchSettings(priority=priority, **launch),
        kind="job",
        submitted_at=submitted,
        live=live or {},
    )


def test_global_cap_bounds_launches():
    out = plan(sweeps=[sweep("a")], capacity=Capacity(jobs=3, gpus=None))
    assert [(l.sweep_id, l.index) for l in out] == [("a", 0), ("a", 1), ("a", 2)]


def test_round_robin_shares_slots_so_a_big_sweep_cannot_starve_others():
    big = sweep("big", total=1000, submitted="2026-01-01T00:00:00Z")
    small1 = sweep("s1", total=5, submitted="2026-01-02T00:00:00Z")
    small2 = sweep("s2", total=5, submitted="2026-01-03T00:00:00Z")
    out = plan(sweeps=[small2, big, small1], capacity=Capacity(jobs=6, gpus=None))
    assert [l.sweep_id for l in out] == ["big", "s1", "s2", "big", "s1", "s2"]


def test_higher_priority_launches_first_inside_a_team_and_submit_time_breaks_ties():
    # priority is strict inside a team ("Higher launches first"); it was only a tie-break before
    low = sweep("low", submitted="2026-01-01T00:00:00Z")
    high = sweep("high", priority=10, submitted="2026-01-05T00:00:00Z", total=2)
    out = plan(sweeps=[low, high], capacity=Capacity(jobs=3, gpus=None))
    assert [l.sweep_id for l in out] == ["high", "high", "low"]
    early = sweep("early", submitted="2026-01-01T00:00:00Z")
    late = sweep("late", submitted="2026-01-02T00:00:00Z")
    assert [l.sweep_id for l in plan(sweeps=[late, early], capacity=Capacity(jobs=3, gpus=None))] == [
        "early", "late", "early"]


def test_per_sweep_max_concurrent_counts_live_trials():
    live = {0: LiveTrial(0, 1, TrialState.RUNNING, "j0"), 1: LiveTrial(1, 1, TrialState.PENDING, "j1")}
    s = sweep("a", cursor=2, live=live, max_concurrent=3)
    out = plan(sweeps=[s], capacity=Capacity(jobs=10, gpus=None))
    assert [(l.index, l.attempt) for l in out] == [(2, 1)]


def test_retries_go_first_with_the_next_attempt_number():
    live = {4: LiveTrial(4, 2, TrialState.WAITING, "a-4-a2", reason="exit code 1")}
    s = sweep("a", cursor=6, live=live)
    out = plan(sweeps=[s], capacity=Capacity(jobs=2, gpus=None))
    assert [(l.index, l.attempt, l.retry) for l in out] == [(4, 3, True), (6, 1, False)]


def test_gpu_cap_skips_a_sweep_whose_trial_does_not_fit():
    wide = sweep("wide", gpus_per_node=8, min_nodes=1, max_nodes=2, submitted="2026-01-01T00:00:00Z")
    narrow = sweep("narrow", gpus_per_node=1, submitted="2026-01-02T00:00:00Z")
    out = plan(sweeps=[wide, narrow], capacity=Capacity(jobs=None, gpus=10))
    assert [l.sweep_id for l in out] == ["narrow"] * 10


def test_nothing_left_means_nothing_planned_and_terminal_or_cancelled_sweeps_get_nothing():
    done = sweep("done", total=3, cursor=3)
    cancelled = sweep("c")
    cancelled = cancelled.__class__(**{**cancelled.__dict__, "cancel_requested": True})
    assert plan(sweeps=[done, cancelled], capacity=Capacity(jobs=5, gpus=None)) == []


@pytest.mark.parametrize(
    "max_running,max_gpus,used_jobs,used_gpus,expected",
    [(4, None, 1, 0, Capacity(3, None)), (4, 8, 6, 2, Capacity(0, 6)), (None, None, 9, 9, Capacity(None, None))],
    ids=["jobs-only", "over-cap-clamps-to-zero", "unlimited"],
)
def test_free_capacity(max_running, max_gpus, used_jobs, used_gpus, expected):
    assert free_capacity(max_running=max_running, max_gpus=max_gpus, used_jobs=used_jobs, used_gpus=used_gpus) == expected


def test_per_tick_limit():
    assert len(plan(sweeps=[sweep("a", total=100)], capacity=Capacity(jobs=None, gpus=None), limit=7)) == 7


def test_a_slot_freed_under_top_up_goes_to_the_least_loaded_sweep_not_the_first():
    # GIVEN alpha (oldest) runs 6 trials, beta 5, gamma 5, and one slot just freed
    def running(n):
        return {i: LiveTrial(i, 1, TrialState.RUNNING, f"j{i}") for i in range(n)}

    alpha = sweep("alpha", total=100, cursor=6, live=running(6), submitted="2026-01-01T00:00:00Z")
    beta = sweep("beta", total=100, cursor=5, live=running(5), submitted="2026-01-02T00:00:00Z")
    gamma = sweep("gamma", total=100, cursor=4, live=running(4), submitted="2026-01-03T00:00:00Z")
    # THEN it goes to gamma, the sweep running the fewest trials
    assert [l.sweep_id for l in plan(sweeps=[alpha, beta, gamma], capacity=Capacity(jobs=1, gpus=None))] == ["gamma"]
    out = plan(sweeps=[alpha, beta, gamma], capacity=Capacity(jobs=3, gpus=None))
    assert [l.sweep_id for l in out] == ["gamma", "beta", "gamma"]
