"""The planner's fair share, one rule per test: teams, submitters, sweeps, priorities, quotas,
borrowing, pause, held and cancelling sweeps (pure: records and observed jobs in, a plan out)."""

from __future__ import annotations

import pytest
from planning import count, ids, jobs_of, record

from dispatcher.core.planner import Capacity, make_plan, plan
from dispatcher.core.sharing import Caps, SharePolicy, TeamShare
from dispatcher.core.waits import WaitKind


def test_two_teams_with_unequal_sweep_counts_share_a_cap_of_six_three_and_three():
    # GIVEN vision submits 5 sweeps and nlp 1 (issue 15: the old planner gave vision 5 slots, nlp 1)
    sweeps = [record(f"vision-{i}", team="vision", submitter="AIDAVISION") for i in range(5)]
    sweeps.append(record("nlp-0", team="nlp", submitter="AIDANLP"))
    # WHEN the cap is 6
    out = make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=6))
    # THEN each team gets 3, and vision's 3 are spread over its sweeps
    got = count(out.launches)
    assert got["nlp-0"] == 3 and sum(v for k, v in got.items() if k.startswith("vision")) == 3
    assert max(v for k, v in got.items() if k.startswith("vision")) == 1
    assert out.teams["vision"].fair_share == out.teams["nlp"].fair_share == 0.5
    assert out.teams["vision"].share == out.teams["nlp"].share == 0.5


def test_the_old_call_shape_shares_per_team_too():
    sweeps = [record(f"v{i}", team="vision") for i in range(5)] + [record("n", team="nlp")]
    assert count(plan(sweeps=sweeps, capacity=Capacity(jobs=6, gpus=None)))["n"] == 3


def test_team_weights_set_the_split():
    policy = SharePolicy(teams={"vision": TeamShare(weight=2), "nlp": TeamShare(weight=1)})
    sweeps = [record("v", team="vision"), record("n", team="nlp")]
    assert count(make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=9), policy=policy).launches) == {"v": 6, "n": 3}


def test_what_a_team_already_runs_counts_for_its_share():
    # GIVEN vision already runs 4 of 6 slots
    vision = record("v", team="vision", running=4)
    nlp = record("n", team="nlp")
    # WHEN 2 slots are free  THEN both go to nlp (3/3 is the fair split)
    out = make_plan(sweeps=[vision, nlp], jobs=jobs_of(vision), caps=Caps(max_jobs=6))
    assert ids(out.launches) == ["n", "n"]


def test_inside_a_team_submitters_share_equally_whatever_their_sweep_counts():
    # GIVEN alice splits her work into 4 sweeps, bob has 1 (the "20 sweeps take 20 shares" complaint)
    sweeps = [record(f"alice-{i}", team="t", submitter="AIDAALICE") for i in range(4)]
    sweeps.append(record("bob-0", team="t", submitter="AIDABOB"))
    out = make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=4))
    got = count(out.launches)
    assert got["bob-0"] == 2 and sum(v for k, v in got.items() if k.startswith("alice")) == 2


def test_sweeps_without_a_stored_submitter_keep_a_share_each():
    # records accepted before the sender was stored: each is its own submitter (today's rule)
    sweeps = [record("a", team="t"), record("b", team="t"), record("c", team="t", submitter="AIDAC")]
    assert count(make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=3)).launches) == {"a": 1, "b": 1, "c": 1}


def test_within_a_submitter_the_least_loaded_sweep_goes_first():
    busy = record("busy", submitter="AIDAX", running=3)
    idle = record("idle", submitter="AIDAX")
    out = make_plan(sweeps=[busy, idle], jobs=jobs_of(busy), caps=Caps(max_jobs=7))
    assert ids(out.launches) == ["idle", "idle", "idle", "busy"]


def test_shares_are_dominant_shares_so_wide_trials_count_their_gpus():
    # GIVEN team a runs 4-GPU trials and team b 1-GPU trials on 16 GPUs (jobs not scarce)
    a = record("a", team="a", gpus_per_node=4)
    b = record("b", team="b", gpus_per_node=1)
    out = make_plan(sweeps=[a, b], jobs={}, caps=Caps(max_jobs=100, max_gpus=16))
    # THEN each team gets 8 GPUs: 2 trials for a, 8 for b
    assert count(out.launches) == {"a": 2, "b": 8}
    assert (out.teams["a"].gpus, out.teams["b"].gpus) == (8, 8)


def test_priority_is_strict_inside_a_team_across_submitters():
    urgent = record("urgent", team="t", submitter="AIDAU", priority=100, total=3)
    other = record("other", team="t", submitter="AIDAO")
    out = make_plan(sweeps=[other, urgent], jobs={}, caps=Caps(max_jobs=5))
    assert ids(out.launches) == ["urgent"] * 3 + ["other"] * 2


def test_priority_never_crosses_teams():
    # a team cannot take another team's share by marking every sweep priority 1000
    loud = record("loud", team="a", priority=1000)
    quiet = record("quiet", team="b", priority=0)
    assert count(make_plan(sweeps=[loud, quiet], jobs={}, caps=Caps(max_jobs=4)).launches) == {"loud": 2, "quiet": 2}


def test_an_idle_share_is_borrowed_work_conserving():
    # GIVEN nlp has nothing left to launch
    vision = record("v", team="vision")
    nlp = record("n", team="nlp", total=1)
    out = make_plan(sweeps=[vision, nlp], jobs={}, caps=Caps(max_jobs=8))
    # THEN vision borrows the rest: no slot stays idle
    assert count(out.launches) == {"n": 1, "v": 7} and out.free_after.jobs == 0


def test_team_quotas_cap_jobs_and_gpus_even_when_nobody_else_wants_them():
    policy = SharePolicy(teams={"a": TeamShare(max_gpus=6), "b": TeamShare(max_jobs=2)})
    a = record("a", team="a", gpus_per_node=2)
    b = record("b", team="b", gpus_per_node=0)
    c = record("c", team="c", gpus_per_node=1, total=3)
    out = make_plan(sweeps=[a, b, c], jobs={}, caps=Caps(max_jobs=50, max_gpus=32), policy=policy)
    assert count(out.launches) == {"a": 3, "b": 2, "c": 3}
    assert out.sweeps["a"].wait.kind is WaitKind.TEAM_QUOTA
    assert out.sweeps["a"].wait.detail == "team a quota: 6/6 GPUs in use (max_gpus), its next trial needs 2 GPUs"
    assert out.sweeps["b"].wait.detail == "team b quota: 2/2 jobs in use (max_jobs), its next trial needs a job slot"
    assert out.teams["a"].describe() == "team a: 3 jobs, 6/6 GPUs; share 19% (fair share 33%)"


def test_a_team_over_its_quota_launches_nothing_and_others_are_unaffected():
    # GIVEN the operator lowered team a's quota below what it runs
    a = record("a", team="a", running=5, gpus_per_node=1)
    policy = SharePolicy(teams={"a": TeamShare(max_gpus=3)})
    b = record("b", team="b")
    out = make_plan(sweeps=[a, b], jobs=jobs_of(a), caps=Caps(max_jobs=10), policy=policy)
    assert ids(out.launches) == ["b"] * 5
    assert out.sweeps["a"].wait.detail.startswith("team a quota: 3/3 GPUs in use")


def test_a_paused_sweep_launches_nothing_its_running_trials_still_count_and_others_take_the_slots():
    paused = record("p", team="t", submitter="AIDAP", running=2, paused=True)
    other = record("o", team="t", submitter="AIDAO")
    out = make_plan(sweeps=[paused, other], jobs=jobs_of(paused), caps=Caps(max_jobs=6))
    assert ids(out.launches) == ["o"] * 4
    wait = out.sweeps["p"].wait
    assert wait.kind is WaitKind.PAUSED and "2 running trial(s) continue" in wait.detail
    assert out.sweeps["p"].jobs == 2 and out.teams["t"].jobs == 6


def test_paused_retries_wait_too():
    import dataclasses

    from dispatcher.core.records import LiveTrial, TrialState

    r = record("p", total=5, paused=True)
    r = dataclasses.replace(r, cursor=3, live={1: LiveTrial(1, 1, TrialState.WAITING, "p-1-a1")})
    assert make_plan(sweeps=[r], jobs={}, caps=Caps(max_jobs=4)).launches == ()


def test_held_and_cancelling_sweeps_get_nothing_and_say_why():
    import dataclasses

    held = record("h")
    cancelling = dataclasses.replace(record("c"), cancel_requested=True)
    out = make_plan(sweeps=[held, cancelling], jobs={}, caps=Caps(max_jobs=4), held={"h"})
    assert out.launches == ()
    assert out.sweeps["h"].wait.kind is WaitKind.HELD and out.sweeps["c"].wait.kind is WaitKind.CANCELLING


def test_max_concurrent_and_the_tick_limit_are_reasons_too():
    capped = record("capped", max_concurrent=2, team="a")
    other = record("other", team="b")
    out = make_plan(sweeps=[capped, other], jobs={}, caps=Caps(max_jobs=10), limit=6)
    assert count(out.launches) == {"capped": 2, "other": 4}
    assert out.sweeps["capped"].wait.detail == "its max_concurrent: 2 trials hold slots"
    assert out.sweeps["other"].wait.kind is WaitKind.TICK_LIMIT


def test_a_sweep_with_everything_launched_waits_for_nothing():
    done = record("d", total=2, running=2)
    out = make_plan(sweeps=[done], jobs=jobs_of(done), caps=Caps(max_jobs=10))
    assert out.launches == () and out.sweeps["d"].wait is None and out.sweeps["d"].jobs == 2


def test_the_cluster_cap_reason_names_the_setting_and_the_numbers():
    a = record("a", running=4, gpus_per_node=2)
    out = make_plan(sweeps=[a], jobs=jobs_of(a), caps=Caps(max_jobs=10, max_gpus=9))
    assert ids(out.launches) == []
    assert out.sweeps["a"].wait.detail == ("cluster cap: 8/9 GPUs in use (SWEEPQ_MAX_GPUS), its next trial needs 2 "
                                           "GPUs; 1 of the 2 GPUs its next trial needs are held for it")
    assert out.sweeps["a"].to_item() == {"team": "default", "jobs": 4, "gpus": 8, "queued": 0, "share": 0.8889,
                                         "wait": "cluster_cap", "detail": out.sweeps["a"].wait.detail,
                                         "reserved_gpus": 1}


def test_jobs_of_sweeps_the_planner_does_not_know_count_against_the_cluster_only():
    from planning import KueueJob

    from dispatcher.core.jobs import JobPhase

    stray = {f"old-{i}": KueueJob(name=f"old-{i}", kind="job", sweep_id="gone", trial_index=i, attempt=1,
                                  phase=JobPhase.RUNNING, gpus=1) for i in range(3)}
    stray["done"] = KueueJob(name="done", kind="job", sweep_id="gone", trial_index=9, attempt=1,
                             phase=JobPhase.SUCCEEDED, gpus=1)
    out = make_plan(sweeps=[record("a", team="t")], jobs=stray, caps=Caps(max_jobs=5))
    assert ids(out.launches) == ["a", "a"] and out.teams["t"].jobs == 2


@pytest.mark.parametrize("order", [0, 1, 2], ids=["as-given", "reversed", "rotated"])
def test_the_plan_does_not_depend_on_the_order_of_the_records(order):
    sweeps = [record("v1", team="v", submitter="A"), record("v2", team="v", submitter="B", priority=3),
              record("n1", team="n", submitter="C", gpus_per_node=2), record("n2", team="n", submitter="C")]
    arranged = [sweeps, sweeps[::-1], sweeps[2:] + sweeps[:2]][order]
    baseline = make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=7, max_gpus=9)).launches
    assert make_plan(sweeps=arranged, jobs={}, caps=Caps(max_jobs=7, max_gpus=9)).launches == baseline
