"""The planner after the rev15 review, one rule per test beyond the reviewer's own
(tests/unit/test_review_fairshare.py): what a reservation behind a team quota holds at the cluster,
the size a claim was made at, garbled and duplicated inputs, team weights, the per-tick limit as a
share, and the cost of a plan counted in calls (pure, no clock)."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import pytest
from planning import Cluster, KueueJob, count, jobs_of, record

from dispatcher.core.allocator import Allocator
from dispatcher.core.jobs import JobPhase
from dispatcher.core.planner import make_plan
from dispatcher.core.records import LiveTrial, TrialState
from dispatcher.core.sharing import Caps, SharePolicy, TeamShare, TrialShape, claim_shape, shape_for
from dispatcher.core.waits import WaitKind

# -- a reservation behind its team's quota ------------------------------------------------------


def test_behind_a_team_job_quota_the_cluster_holds_only_what_the_teams_narrowest_job_will_not_bring_back():
    # GIVEN team a (max_jobs 2) runs two 1-GPU trials and its priority sweep needs 8 GPUs; team b runs 4
    policy = SharePolicy(teams={"a": TeamShare(max_jobs=2)})
    a_narrow = record("a-narrow", team="a", submitter="A", running=2)
    a_wide = record("a-wide", team="a", submitter="A", priority=5, gpus_per_node=8, total=1)
    b = record("b", team="b", submitter="B", running=4, total=1000)
    world = Cluster({"a-narrow": a_narrow, "a-wide": a_wide, "b": b}, caps=Caps(max_gpus=16), policy=policy)
    world.jobs.update(jobs_of(a_narrow, b))
    plan = world.tick()
    # THEN a job of team a ending gives back 1 GPU at the cluster: 7 of the 10 free GPUs are held, b gets 3
    assert plan.reservations[0].blocked_by == "team"
    assert plan.sweeps["a-wide"].wait.kind is WaitKind.TEAM_QUOTA
    assert count(plan.launches) == {"b": 3}
    assert plan.sweeps["b"].wait.detail == ("7 free GPU(s) held for sweep a-wide trial 0 (first in line, needs 8 "
                                            "GPUs); its next trial needs 1 GPUs")
    # AND when one of team a's jobs ends, the wide trial starts at the next plan: the hold was not idle for nothing
    world.end(world.running("a-narrow")[0])
    assert count(world.tick().launches) == {"a-wide": 1}


def test_behind_a_team_quota_a_trial_as_wide_as_its_teams_jobs_holds_nothing_at_the_cluster():
    # GIVEN team a (max_jobs 2) runs two 8-GPU trials and has more of them; team b runs 1-GPU trials
    policy = SharePolicy(teams={"a": TeamShare(max_jobs=2)})
    a = record("a", team="a", submitter="A", gpus_per_node=8, running=2)
    b = record("b", team="b", submitter="B", running=12)
    out = make_plan(sweeps=[a, b], jobs=jobs_of(a, b), caps=Caps(max_gpus=64), policy=policy)
    # THEN a's next trial waits for its own team's job, which brings its 8 GPUs back: b gets all 36 free GPUs
    assert count(out.launches) == {"b": 36}
    assert out.reservations[0].held_gpus == 0 and out.sweeps["a"].wait.kind is WaitKind.TEAM_QUOTA


def test_a_job_slot_held_at_a_teams_quota_is_named_as_such():
    o = record("o", team="o", submitter="O", gpus_per_node=4, running=1, total=1)
    w = record("w", team="t", submitter="a", gpus_per_node=2)
    c = record("c", team="t", submitter="b", gpus_per_node=0)
    out = make_plan(sweeps=[o, w, c], jobs=jobs_of(o), caps=Caps(max_gpus=4),
                    policy=SharePolicy(teams={"t": TeamShare(max_jobs=1)}))
    assert out.sweeps["c"].wait.detail == ("1 free job slot(s) of team t's quota held for sweep w trial 0 (first in "
                                           "line, needs 2 GPUs); its next trial needs a job slot")


# -- the size a claim was made at -----------------------------------------------------------------


@dataclass(frozen=True)
class SizedTrial(LiveTrial):
    """A LiveTrial with the node count its claim stored (the field the tick adds: ``nodes``)."""

    nodes: int | None = None


def test_a_claimed_trial_counts_and_is_recreated_at_the_size_its_claim_stored_not_at_todays_caps():
    # GIVEN a trial of an elastic 1:4 × 8-GPU sweep was claimed at 2 nodes (SWEEPQ_MAX_GPUS was 16 then)
    wide = record("wide", gpus_per_node=8, nodes="1:4")
    claimed = dataclasses.replace(wide, cursor=1, live={0: SizedTrial(0, 1, TrialState.PENDING, "wide-0-a1", nodes=2)})
    caps = Caps(max_gpus=32)  # WHEN the cap was raised before its job was created
    # THEN it is re-created and counted at the stored 2 nodes (16 GPUs), while a new claim is sized at 4
    assert shape_for(claimed, SharePolicy(), caps) == TrialShape(4, 32)
    assert claim_shape(claimed, claimed.live[0], policy=SharePolicy(), caps=caps) == TrialShape(2, 16)
    out = make_plan(sweeps=[claimed], jobs={}, caps=caps)
    assert (out.sweeps["wide"].jobs, out.sweeps["wide"].gpus) == (1, 16)  # its claim + no 32-GPU launch (16 free)
    assert out.launches == () and out.reservations[0].held_gpus == 16
    # AND a claim that stored no size (before the tick stores one) is sized by today's caps
    unsized = dataclasses.replace(claimed, live={0: LiveTrial(0, 1, TrialState.PENDING, "wide-0-a1")})
    assert claim_shape(unsized, unsized.live[0], policy=SharePolicy(), caps=caps) == TrialShape(4, 32)


# -- garbled and duplicated inputs ------------------------------------------------------------------


def test_a_negative_gpu_count_of_a_known_sweeps_job_counts_at_its_claims_size():
    r = record("a", gpus_per_node=4, running=1)
    jobs = jobs_of(r, gpus={"a": -100})
    out = make_plan(sweeps=[r], jobs=jobs, caps=Caps(max_gpus=8))
    assert out.sweeps["a"].gpus == 8 and count(out.launches) == {"a": 1}  # 4 counted for the garbled job


def test_a_sweep_given_twice_with_different_contents_launches_nothing_and_says_why():
    r = record("a", team="t", total=10)
    newer = dataclasses.replace(r, cursor=3)
    out = make_plan(sweeps=[r, newer, record("b", team="t")], jobs={}, caps=Caps(max_jobs=4))
    assert count(out.launches) == {"b": 4}
    assert out.sweeps["a"].wait.kind is WaitKind.HELD and "twice with different contents" in out.sweeps["a"].wait.detail


def test_jobs_of_a_sweep_no_longer_planned_show_in_their_teams_status():
    old = {f"old-{i}": KueueJob(name=f"old-{i}", kind="pytorchjob", sweep_id="old", trial_index=i, attempt=1,
                                phase=JobPhase.RUNNING, gpus=4, team="a") for i in range(2)}
    out = make_plan(sweeps=[record("n", team="b")], jobs=old, caps=Caps(max_gpus=10),
                    policy=SharePolicy(teams={"a": TeamShare(), "b": TeamShare()}))
    assert (out.teams["a"].jobs, out.teams["a"].gpus) == (2, 8) and count(out.launches) == {"n": 2}
    # under the default policy (no teams) every label is the default team, which every sweep is in
    out = make_plan(sweeps=[record("n")], jobs=old, caps=Caps(max_gpus=10))
    assert set(out.teams) == {"default"} and out.teams["default"].gpus == 10


# -- team weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0, 5e-324, 0.0009, 1000.5, float("inf")])
def test_team_weights_are_bounded_so_shares_stay_finite(weight):
    with pytest.raises(ValueError, match=r"team.weight: .* must be a positive number from 0.001 to 1000"):
        TeamShare(weight=weight)


def test_the_smallest_and_largest_weights_still_share():
    policy = SharePolicy(teams={"tiny": TeamShare(weight=0.001), "huge": TeamShare(weight=1000)})
    out = make_plan(sweeps=[record("t", team="tiny"), record("h", team="huge")], jobs={}, caps=Caps(max_jobs=3),
                    policy=policy)
    assert count(out.launches) == {"t": 1, "h": 2}  # tiny's share 0 goes first once, then 1/3 / 0.001 > 2/3 / 1000


# -- GPU-less trials under a GPU cap alone ----------------------------------------------------------


def test_without_a_tick_limit_gpu_less_trials_and_gpu_trials_all_go_out():
    cpu = record("cpu", team="etl", gpus_per_node=0, total=50)
    gpu = record("gpu", team="vision", gpus_per_node=1, total=100)
    out = make_plan(sweeps=[cpu, gpu], jobs={}, caps=Caps(max_gpus=16))
    assert count(out.launches) == {"cpu": 50, "gpu": 16}


def test_under_a_tick_limit_gpu_less_and_gpu_trials_share_the_launches():
    cpu = record("cpu", team="etl", gpus_per_node=0, total=1000)
    gpu = record("gpu", team="vision", gpus_per_node=1, total=100)
    got = count(make_plan(sweeps=[cpu, gpu], jobs={}, caps=Caps(max_gpus=16), limit=10).launches)
    assert got["gpu"] >= 5 and got["cpu"] >= 4 and sum(got.values()) == 10


# -- cost, counted in calls -----------------------------------------------------------------------


def _calls(make_sweeps, caps: Caps, jobs_for=()) -> int:
    """Calls of Allocator.dominant in one plan (a profiler hook: no timing, nothing replaced)."""
    sweeps = make_sweeps()
    target, calls = Allocator.dominant.__code__, [0]

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is target:
            calls[0] += 1

    sys.setprofile(hook)
    try:
        make_plan(sweeps=sweeps, jobs=jobs_of(*[s for s in sweeps if s.sweep_id in jobs_for]), caps=caps)
    finally:
        sys.setprofile(None)
    return calls[0]


def test_a_plan_whose_gpus_are_all_taken_costs_linear_in_the_sweeps_when_job_slots_remain():
    # GIVEN only GPUs are capped and held; one GPU-less sweep keeps the plan going past n blocked 8-GPU sweeps
    def world(n):
        return lambda: ([record("busy", team="t", submitter="X", running=16)]
                        + [record(f"w{i:05d}", team="t", submitter=f"S{i}", gpus_per_node=8, total=5) for i in range(n)]
                        + [record("cpu", team="t", submitter="C", gpus_per_node=0, total=3)])

    small, large = (_calls(world(n), Caps(max_gpus=16), {"busy"}) for n in (200, 400))
    assert large <= 2.2 * small, f"{small} → {large} calls for 200 → 400 sweeps"


def test_a_plan_with_many_launches_costs_linear_in_the_launches():
    def world(n):
        return lambda: [record(f"s{i:05d}", team=f"t{i % 3}", submitter=f"S{i % 7}") for i in range(n)]

    small, large = (_calls(world(n), Caps(max_jobs=n)) for n in (200, 400))
    assert large <= 2.5 * small, f"{small} → {large} calls for 200 → 400 launches"
