"""Adversarial review (rev15) of issue 15's pure planner: ``make_plan`` with realistic records and
observed jobs. Each test fails on the current code; its docstring says the attack, what should happen
and what happens."""

from __future__ import annotations

import dataclasses
import sys

from planning import Cluster, KueueJob, count, jobs_of, record

from dispatcher.core.allocator import Allocator
from dispatcher.core.jobs import JobPhase
from dispatcher.core.planner import make_plan
from dispatcher.core.sharing import Caps, SharePolicy, TeamShare
from dispatcher.core.waits import WaitKind


def labelled(sid: str, label: str | None, **kw) -> object:
    """A sweep whose *sweep file* says ``team: <label>`` (launch.team), with no team assigned at intake
    (record.team None: what intake stores under the default policy, which has no teams)."""
    r = record(sid, **kw)
    return dataclasses.replace(r, launch=r.launch.model_copy(update={"team": label}))


# --------------------------------------------------------------------------- starvation


def test_review_a_wide_trial_of_a_team_with_nothing_running_is_not_starved_by_ties_under_a_job_cap():
    """Attack: the default SWEEPQ_MAX_RUNNING=8 with SWEEPQ_MAX_GPUS=64. Team x holds 7 long 8-GPU jobs,
    so 1 job slot and 8 GPUs are free. Team "wide" (nothing running) submits one 8-GPU trial, team "a-nlp"
    (nothing running) a stream of short 1-GPU trials. README/planner docstring: "at equal shares the wider
    trial goes first", and a team with nothing running starts its wide trial as soon as the freed GPUs
    cover what it lacked — here it lacks nothing: it fits at arrival.
    Expected: the 8-GPU trial starts in the first plan (or at least within 20 plans).
    Actual: the tie-break compares *dominant* shares of the next trial, and under a job cap every trial of
    ≤ max_gpus/max_jobs GPUs has the same one (1/8); the name decides, so "a-nlp" takes the slot at every
    tick its short trial ends — the wide trial waits, with an untrue "held for it", until x's jobs end."""
    world = Cluster({"x": record("x", team="x", submitter="X", gpus_per_node=8, total=7)},
                    caps=Caps(max_jobs=8, max_gpus=64))
    world.tick()
    assert world.held() == (7, 56)
    world.records["n"] = record("n", team="a-nlp", submitter="N", gpus_per_node=1, total=1000)
    world.records["wide"] = record("wide", team="wide", submitter="W", gpus_per_node=8, total=1)
    started = None
    for tick in range(20):
        plan = world.tick()
        if any(launch.sweep_id == "wide" for launch in plan.launches):
            started = tick
            break
        for name in world.running("n"):  # only the narrow team's short trials end
            world.end(name)
    assert started == 0, f"the 8-GPU trial that fit at arrival had not started after 20 plans ({started=})"


def test_review_gpu_less_trials_do_not_take_every_launch_of_a_tick_while_gpus_idle():
    """Attack: only SWEEPQ_MAX_GPUS is capped (as in the utilization benchmark), the tick limit is 10.
    Team etl runs a CPU sweep (gpus_per_node 0, 1000 trials), team vision a 1-GPU sweep; 16 GPUs.
    Expected: vision's 1-GPU trials keep getting launches (fair share, work-conserving: 15 GPUs idle).
    Actual: a GPU-less job has dominant share 0 when jobs are uncapped, so etl stays at share 0 and is
    first in line for every launch of every tick; vision holds 1 GPU after 5 ticks, 15 idle."""
    world = Cluster({"cpu": record("cpu", team="etl", submitter="E", gpus_per_node=0, total=1000),
                     "gpu": record("gpu", team="vision", submitter="V", gpus_per_node=1, total=100)},
                    caps=Caps(max_gpus=16))
    for _ in range(5):
        world.tick(limit=10)
    assert world.held("vision")[1] >= 5, f"vision holds {world.held('vision')} (jobs, GPUs) with 16 GPUs capped"


# --------------------------------------------------------------------------- reservations that help nobody


def test_review_a_team_frozen_with_max_jobs_0_does_not_hold_cluster_gpus_forever():
    """Attack: the operator freezes team "frozen" with quota max_jobs: 0 (after its 8-GPU sweep was
    accepted). Team b runs 4 one-GPU trials and has more; SWEEPQ_MAX_GPUS=16.
    Expected: frozen's trial can never start, so b gets the 12 free GPUs (work-conserving).
    Actual: frozen (share 0) is first in line every tick, is blocked by its team's job quota, and
    reserves 8 of the cluster's free GPUs for a trial that can never start: b gets 4, 8 GPUs idle for
    as long as the freeze lasts (README: "at most need − 1 GPUs idle per reservation while it fills")."""
    policy = SharePolicy(teams={"frozen": TeamShare(max_jobs=0)})
    frozen = record("x", team="frozen", gpus_per_node=8)
    b = record("b", team="b", gpus_per_node=1, running=4)
    out = make_plan(sweeps=[frozen, b], jobs=jobs_of(b), caps=Caps(max_gpus=16), policy=policy)
    assert count(out.launches).get("b", 0) == 12, (count(out.launches), out.reservations)


def test_review_a_sweep_whose_team_allows_0_jobs_is_reported_as_never_fitting():
    """Attack: same frozen team (max_jobs 0). fit_problems() would reject this sweep at intake, but the
    planner's wait for an accepted one says TEAM_QUOTA "0/0 jobs in use … 8 of the 8 GPUs … held for it",
    as if it would start when a job ends.
    Expected: WaitKind.NEVER_FITS (it can never start). Actual: TEAM_QUOTA."""
    policy = SharePolicy(teams={"frozen": TeamShare(max_jobs=0)})
    out = make_plan(sweeps=[record("x", team="frozen", gpus_per_node=8)], jobs={}, caps=Caps(max_gpus=16),
                    policy=policy)
    assert out.sweeps["x"].wait.kind is WaitKind.NEVER_FITS, out.sweeps["x"].wait


def test_review_with_one_trial_width_everywhere_a_reservation_costs_nothing():
    """Attack: every trial is 2 GPUs. SWEEPQ_MAX_GPUS=16; team a's quota is max_gpus 5 and it runs 2
    trials (4 GPUs); team b runs 5 (10 GPUs): 2 cluster GPUs free. Planner docstring: "With one trial width
    everywhere a reservation costs nothing: what it holds, no other trial could have used."
    Team a's next trial can start only when one of its own jobs ends — which frees 2 GPUs at the cluster
    too — so holding cluster GPUs for it changes nothing for it.
    Expected: b launches one 2-GPU trial on the 2 free GPUs.
    Actual: a (smaller share) is first in line, blocked by its team quota (1 GPU free there), and holds
    1 cluster GPU; b's trial no longer fits beside the hold: 2 GPUs idle every tick."""
    policy = SharePolicy(teams={"a": TeamShare(max_gpus=5)})
    a = record("a", team="a", submitter="A", gpus_per_node=2, running=2)
    b = record("b", team="b", submitter="B", gpus_per_node=2, running=5)
    out = make_plan(sweeps=[a, b], jobs=jobs_of(a, b), caps=Caps(max_gpus=16), policy=policy)
    assert count(out.launches) == {"b": 1}, (out.launches, out.reservations, out.sweeps["b"].wait)


# --------------------------------------------------------------------------- shares


def test_review_a_sender_cannot_multiply_its_share_by_labelling_sweeps_with_made_up_teams():
    """Attack: default operator policy (no teams: README "every sender alike; `team` is only a label";
    intake stores record.team None). Alice labels her 3 sweeps `team: x1`, `x2`, `x3`; Bob's one sweep has no
    label. Cap 4. README: "a researcher who splits work into 20 sweeps still holds one submitter's share".
    Expected: 2 / 2 (two submitters of one team). Actual: SharePolicy.team_of falls back to launch.team, so
    every label is a top-level team with a full share (and no quota): Alice 3, Bob 1."""
    sweeps = [labelled(f"alice-{i}", f"x{i}", submitter="AIDAALICE") for i in range(3)]
    sweeps.append(labelled("bob-0", None, submitter="AIDABOB"))
    got = count(make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=4), policy=SharePolicy()).launches)
    assert got.get("bob-0", 0) == 2, got


# --------------------------------------------------------------------------- counting


def test_review_a_teams_jobs_still_terminating_after_its_sweep_left_the_active_set_count_for_its_quota():
    """Attack: team a (quota max_gpus 8) had a sweep cancelled (or failed by its circuit breaker) this tick:
    its two 4-GPU jobs are being deleted (graceful termination) and still listed non-terminal, but the sweep
    is no longer among "the active sweeps" make_plan is given. Team a's new 4-GPU sweep is planned.
    Expected: team a's quota holds — nothing launches while its 8 GPUs are still held.
    Actual: jobs of a sweep not in the records count against the cluster only, so team a launches 2 more
    (16 GPUs held by team a against a quota of 8).
    (fix15: the jobs carry their ``sweepq.io/team`` label as JobStatus.team — the planner cannot know
    the team of a sweep it is not given otherwise; a job without the label counts for the cluster only.)"""
    policy = SharePolicy(teams={"a": TeamShare(max_gpus=8)})
    old = {f"old-{i}": KueueJob(name=f"old-{i}", kind="pytorchjob", sweep_id="old", trial_index=i, attempt=1,
                                phase=JobPhase.RUNNING, gpus=4, team="a") for i in range(2)}
    out = make_plan(sweeps=[record("new", team="a", gpus_per_node=4)], jobs=old, caps=Caps(max_gpus=32),
                    policy=policy)
    assert out.launches == (), f"team a launched {count(out.launches)} with its 8/8 GPUs still held"


def test_review_duplicate_records_do_not_plan_a_trial_twice_or_count_its_claims_twice():
    """Attack: the same sweep record twice in the input (a duplicated index entry / a retried read).
    Expected: each (sweep, index, attempt) planned once and each claimed trial counted once.
    Actual: each copy has its own cursor, so trial 0 and 1 are both planned twice; with 2 claimed but
    unobserved trials and a cap of 4, the claims count 4 and nothing launches (2 slots idle)."""
    r = record("a", team="t", total=10)
    out = make_plan(sweeps=[r, r], jobs={}, caps=Caps(max_jobs=4))
    keys = [(l.sweep_id, l.index, l.attempt) for l in out.launches]
    assert len(keys) == len(set(keys)), keys
    from dispatcher.core.records import LiveTrial, TrialState

    claimed = dataclasses.replace(r, cursor=2, live={i: LiveTrial(i, 1, TrialState.PENDING, f"a-{i}") for i in range(2)})
    out = make_plan(sweeps=[claimed, claimed], jobs={}, caps=Caps(max_jobs=4))
    # fix15: SweepShare.jobs is what the sweep holds *after* this plan (documented; test_packing's Kueue test
    # relies on it): 2 claims counted once + the 2 launches = 4 (counted twice: 4 claims and no launch)
    assert out.sweeps["a"].jobs == 4 and len(out.launches) == 2, (out.sweeps["a"].jobs, out.launches)


def test_review_a_garbled_negative_gpu_count_never_lifts_the_cluster_cap():
    """Attack: an observed job reports gpus=-100 (its `sweepq.io/gpus` annotation edited to "-100";
    kube_common.as_int parses it). SWEEPQ_MAX_GPUS=16.
    Expected: at most 16 GPUs launched (a negative count is garbage: clamp it or treat it as unknown).
    Actual: free GPUs = 16 − (−100) = 116 and the plan launches 116 one-GPU trials."""
    bad = {"j": KueueJob(name="j", kind="pytorchjob", sweep_id="gone", trial_index=0, attempt=1,
                         phase=JobPhase.RUNNING, gpus=-100)}
    out = make_plan(sweeps=[record("a", gpus_per_node=1, total=500)], jobs=bad, caps=Caps(max_gpus=16))
    assert sum(l.gpus for l in out.launches) <= 16, (len(out.launches), out.free_before)


# --------------------------------------------------------------------------- waits that are true


def test_review_the_never_fits_reason_names_only_the_limit_it_exceeds():
    """Attack: SWEEPQ_MAX_GPUS 64, team t max_gpus 8, smallest trial 2 × 8 = 16 GPUs.
    Expected: the reason names the team quota (16 > 8). Actual: "16 GPUs, more than SWEEPQ_MAX_GPUS 64
    and team t max_gpus 8" — false for the cluster cap."""
    policy = SharePolicy(teams={"t": TeamShare(max_gpus=8)})
    r = record("w", team="t", gpus_per_node=8, min_nodes=2, max_nodes=2)
    detail = make_plan(sweeps=[r], jobs={}, caps=Caps(max_gpus=64), policy=policy).sweeps["w"].wait.detail
    assert "SWEEPQ_MAX_GPUS 64" not in detail, detail


def test_review_a_job_slot_hold_is_not_reported_as_zero_gpus_held():
    """Attack: team t (max_jobs 1) has a 2-GPU sweep (first in line, cluster GPUs all held by team o) and a
    GPU-less sweep. The 2-GPU trial reserves the team's only job slot; the GPU-less trial, which needs no
    GPU, waits for that slot.
    Expected: its wait names what is held (a job slot). Actual: "0 free GPU(s) held for sweep w trial 0
    (needs 2, first in line); its next trial needs 0" — zero GPUs held, zero needed, yet it waits."""
    o = record("o", team="o", submitter="O", gpus_per_node=4, running=1, total=1)
    w = record("w", team="t", submitter="a", gpus_per_node=2)
    c = record("c", team="t", submitter="b", gpus_per_node=0)
    out = make_plan(sweeps=[o, w, c], jobs=jobs_of(o), caps=Caps(max_gpus=4),
                    policy=SharePolicy(teams={"t": TeamShare(max_jobs=1)}))
    wait = out.sweeps["c"].wait
    assert wait.kind is WaitKind.RESERVED_FOR_OTHER
    assert not wait.detail.startswith("0 free GPU"), wait.detail


# --------------------------------------------------------------------------- cost


def _dominant_calls(n: int) -> int:
    """Calls of Allocator.dominant in one plan of ``n`` one-GPU sweeps (distinct submitters, one team) on a
    full cluster — counted with a profiler hook (no timing, nothing replaced)."""
    busy = record("busy", team="t", submitter="X", running=8)
    sweeps = [busy] + [record(f"s{i:05d}", team="t", total=10) for i in range(n)]
    target, calls = Allocator.dominant.__code__, [0]

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is target:
            calls[0] += 1

    sys.setprofile(hook)
    try:
        out = make_plan(sweeps=sweeps, jobs=jobs_of(busy), caps=Caps(max_jobs=8))
    finally:
        sys.setprofile(None)
    assert out.launches == ()
    return calls[0]


def test_review_a_plan_on_a_full_cluster_costs_linear_in_the_sweeps():
    """Attack: many active sweeps (legacy records without a submitter, or many submitters, in one team)
    while the cluster is full — the common steady state. README: "Cost per tick is O(active sweeps + live
    trials + launches)"; allocator docstring: O(sweeps + launches × (…)) — 0 launches here.
    Expected: doubling the sweeps at most ~doubles the work. Actual: every sweep in turn is first in line,
    is blocked, reserves and refresh() re-ranks all groups of the team (best_in): quadratic — 4× the work
    for 2× the sweeps (measured here: 1000 sweeps 7 s, 2000 sweeps 27 s per plan)."""
    small, large = _dominant_calls(100), _dominant_calls(200)
    assert large <= 2.5 * small, f"{small} → {large} calls of dominant() for 100 → 200 sweeps"
