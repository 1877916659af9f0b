"""GPU packing: how a trial's GPUs are counted (elastic ranges), the intake check, the reservation
that keeps wide trials from starving, and Kueue's max_waiting (pure)."""

from __future__ import annotations

import pytest
from planning import Cluster, KueueJob, count, ids, jobs_of, record

from dispatcher.core.jobs import JobPhase
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.planner import make_plan
from dispatcher.core.sharing import Caps, SharePolicy, TeamShare, TrialShape, fit_problems, sized_launch, trial_shape
from dispatcher.core.waits import WaitKind

# -- counting a trial's GPUs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "nodes,per_node,limit,expected",
    [("1:4", 8, 16, TrialShape(2, 16)), ("1:4", 8, None, TrialShape(4, 32)), ("1:4", 8, 8, TrialShape(1, 8)),
     ("2:4", 8, 12, None), ("3", 4, 12, TrialShape(3, 12)), ("1:2", 0, 0, TrialShape(2, 0)),
     ("1:4", 8, 31, TrialShape(3, 24))],
    ids=["range-clamped-to-cap", "no-cap-full-width", "team-quota-one-node", "min-over-cap-never-fits",
         "fixed-exactly-fits", "cpu-only", "largest-whole-node-count"],
)
def test_an_elastic_range_is_launched_and_counted_at_the_widest_size_the_gpu_limit_allows(nodes, per_node, limit,
                                                                                          expected):
    launch = LaunchSettings(nodes=nodes, gpus_per_node=per_node, kind="pytorchjob")
    assert trial_shape(launch, gpus=limit) == expected


def test_the_issue_sweep_8_gpus_per_node_1_to_4_nodes_under_16_gpus_launches_at_two_nodes():
    # issue 15: counted at 32 GPUs it was accepted and never launched
    wide = record("wide", gpus_per_node=8, nodes="1:4")
    out = make_plan(sweeps=[wide], jobs={}, caps=Caps(max_jobs=None, max_gpus=16))
    assert [(l.nodes, l.gpus) for l in out.launches] == [(2, 16)]
    sized = sized_launch(wide.launch, TrialShape(2, 16))
    assert (sized.min_nodes, sized.max_nodes, sized.gpus_per_trial) == (1, 2, 16)  # the job can grow to 16, no more
    assert sized_launch(wide.launch, TrialShape(4, 32)) is wide.launch


def test_intake_check_rejects_a_sweep_whose_smallest_trial_can_never_fit_with_the_numbers():
    launch = LaunchSettings(nodes="4:8", gpus_per_node=8, kind="pytorchjob")
    problems = fit_problems(launch, team="vision", policy=SharePolicy(), caps=Caps(max_gpus=16))
    assert problems == [
        "nodes: the smallest trial needs 4 node(s) × gpus_per_node 8 = 32 GPUs, but SWEEPQ_MAX_GPUS is 16 (the "
        "dispatcher's GPU cap) — it could never start; use nodes: '2:…' or fewer, or ask the operator to raise it"]
    policy = SharePolicy(teams={"vision": TeamShare(max_gpus=4, max_jobs=0)})
    problems = fit_problems(LaunchSettings(gpus_per_node=8), team="vision", policy=policy, caps=Caps())
    assert len(problems) == 2
    assert problems[0].startswith("team 'vision' allows 0 jobs")
    assert "team 'vision' max_gpus is 4 (the team's GPU quota)" in problems[1] and "gpus_per_node: 4 or fewer" in \
        problems[1]
    assert fit_problems(LaunchSettings(nodes="1:4", gpus_per_node=8), team="t", policy=SharePolicy(),
                        caps=Caps(max_gpus=16)) == []


def test_a_kueue_queue_with_max_waiting_zero_is_rejected_at_intake():
    launch = LaunchSettings(kueue_queue="team-a")
    assert "max_waiting 0" in fit_problems(launch, team="t", policy=SharePolicy(), caps=Caps(max_waiting=0))[0]


def test_a_sweep_that_no_longer_fits_after_the_caps_were_lowered_says_so():
    wide = record("wide", gpus_per_node=8, nodes=2)
    out = make_plan(sweeps=[wide], jobs={}, caps=Caps(max_gpus=8))
    assert out.launches == () and out.sweeps["wide"].wait.kind is WaitKind.NEVER_FITS
    assert out.sweeps["wide"].wait.detail.startswith("its smallest trial needs 2 node(s) × 8 GPUs = 16 GPUs, more "
                                                     "than SWEEPQ_MAX_GPUS 8")
    assert out.reservations == ()  # nothing is held for a trial that can never start


def test_policy_validation_names_the_field_and_the_fix():
    with pytest.raises(ValueError, match=r"team.weight: 0 must be a positive number"):
        TeamShare(weight=0)
    with pytest.raises(ValueError, match=r"team.max_gpus: -1 is not a non-negative whole number"):
        TeamShare(max_gpus=-1)
    with pytest.raises(ValueError, match=r"caps.max_waiting: 1.5"):
        Caps(max_waiting=1.5)  # type: ignore[arg-type]
    policy = SharePolicy.from_teams({"a": {"weight": 2, "max_gpus": 8}, "b": {}})
    assert policy.share("a") == TeamShare(weight=2, max_gpus=8) and policy.share("b") == TeamShare()
    assert policy.share("unnamed") == TeamShare()


# -- reservation: wide trials do not starve --------------------------------------------------


def test_the_issue_case_a_priority_100_wide_sweep_starts_after_eight_freed_slots_not_never():
    # GIVEN a 1-GPU sweep fills 16 GPUs and a priority-100 sweep needs 8 GPUs per trial
    narrow = record("narrow", gpus_per_node=1, running=16)
    wide = record("wide", priority=100, gpus_per_node=8, total=1)
    world = Cluster({"narrow": narrow, "wide": wide}, caps=Caps(max_jobs=100, max_gpus=16))
    world.jobs.update(jobs_of(narrow))
    # WHEN narrow jobs end one at a time, a tick after each
    for step in range(1, 9):
        world.end(world.running("narrow")[0])
        plan = world.tick()
        if step < 8:
            # THEN no freed GPU goes to the narrow sweep: they are held for the wide trial
            assert plan.launches == (), step
            assert plan.sweeps["narrow"].wait.kind is WaitKind.RESERVED_FOR_OTHER
            assert plan.reservations[0].held_gpus == step
            assert plan.sweeps["wide"].reserved_gpus == step
    # AND the wide trial starts at the 8th freed slot
    assert ids(plan.launches) == ["wide"] and plan.launches[0].gpus == 8
    # AND after it, freed slots go back to the narrow sweep
    world.end(world.running("narrow")[0])
    assert ids(world.tick().launches) == ["narrow"]


def test_without_the_reservation_the_wide_sweep_starves_which_is_what_it_prevents():
    narrow = record("narrow", gpus_per_node=1, running=16, total=1000)
    wide = record("wide", priority=100, gpus_per_node=8, total=1)
    world = Cluster({"narrow": narrow, "wide": wide}, caps=Caps(max_gpus=16), policy=SharePolicy(reserve_gpus=False))
    world.jobs.update(jobs_of(narrow))
    for _ in range(200):
        world.end(world.running("narrow")[0])
        world.tick()
    assert count(launch for _, launch in world.started) == {"narrow": 200}  # 0 of 200 freed slots (issue 15)


def test_a_reservation_for_a_team_quota_holds_only_the_teams_free_part_of_the_cluster():
    # GIVEN team a (quota 8 GPUs) runs 6 narrow trials; its priority sweep needs 8; team b has room to grow
    policy = SharePolicy(teams={"a": TeamShare(max_gpus=8)})
    a_narrow = record("a-narrow", team="a", running=6)
    a_wide = record("a-wide", team="a", priority=5, gpus_per_node=8, total=1)
    b = record("b", team="b", running=2)
    out = make_plan(sweeps=[a_narrow, a_wide, b], jobs=jobs_of(a_narrow, b), caps=Caps(max_gpus=32), policy=policy)
    # THEN the 2 GPUs team a has free are held (its missing 6 come back with its own jobs), team b gets the rest
    assert out.reservations[0].held_gpus == 2 and out.reservations[0].blocked_by == "team"
    assert count(out.launches) == {"b": 22}
    assert out.sweeps["a-narrow"].wait.kind is WaitKind.RESERVED_FOR_OTHER
    assert out.sweeps["a-wide"].wait.kind is WaitKind.TEAM_QUOTA


def test_trials_that_need_no_gpu_still_backfill_past_a_gpu_reservation():
    narrow = record("narrow", gpus_per_node=1, running=12, team="t", submitter="A")
    wide = record("wide", priority=9, gpus_per_node=8, total=1, team="t", submitter="B")
    cpu = record("cpu", gpus_per_node=0, team="t", submitter="C")
    out = make_plan(sweeps=[narrow, wide, cpu], jobs=jobs_of(narrow), caps=Caps(max_jobs=16, max_gpus=16))
    # 4 GPUs free, held for the wide trial; 4 job slots free, one held for it: the CPU sweep takes 3
    assert count(out.launches) == {"cpu": 3}
    assert (out.reservations[0].held_gpus, out.reservations[0].held_jobs) == (4, 1)


def test_a_wide_trial_first_in_line_by_share_reserves_across_teams():
    # GIVEN team b's 1-GPU sweep runs all 16 GPUs, team a (nothing running) has 8-GPU trials
    b = record("b", team="b", running=16)
    a = record("a", team="a", gpus_per_node=8, total=2)
    world = Cluster({"a": a, "b": b}, caps=Caps(max_gpus=16))
    world.jobs.update(jobs_of(b))
    for _ in range(8):
        world.end(world.running("b")[0])
        world.tick()
    # THEN a's first trial starts after 8 freed GPUs; then the teams hold 8/8
    assert count(launch for _, launch in world.started) == {"a": 1}
    assert world.held("a") == (1, 8) and world.held("b") == (8, 8)


# -- Kueue: waiting jobs counted apart, bounded by max_waiting --------------------------------


def test_kueue_jobs_waiting_for_quota_are_bounded_by_max_waiting_and_other_sweeps_take_the_rest():
    # GIVEN sweep k uses a Kueue queue; 2 of its jobs are admitted, 1 waits
    k = record("k", team="a", kueue_queue="team-a", running=3)
    jobs = jobs_of(k, admission="ADMITTED")
    jobs["k-2-a1"] = KueueJob(**{**jobs["k-2-a1"].__dict__, "admission": "QUEUED"})
    plain = record("plain", team="b")
    out = make_plan(sweeps=[k, plain], jobs=jobs, caps=Caps(max_jobs=10, max_waiting=2), limit=None)
    # THEN k may add one job (2 waiting = max_waiting), the rest goes to the other team
    assert count(out.launches) == {"k": 1, "plain": 6}
    assert out.sweeps["k"].queued == 2 and out.teams["a"].queued == 2
    assert out.sweeps["k"].wait.detail == "Kueue queue team-a: 2/2 jobs wait for quota (max_waiting)"
    assert out.sweeps["k"].jobs == 4  # waiting jobs still count against the caps: Kueue may admit any of them


def test_an_evicted_job_waits_again_and_the_team_queue_applies_when_the_sweep_names_none():
    policy = SharePolicy(teams={"a": TeamShare(kueue_queue="team-a", max_waiting=1)})
    k = record("k", team="a", running=1)
    out = make_plan(sweeps=[k], jobs=jobs_of(k, admission="EVICTED"), caps=Caps(max_jobs=5, max_waiting=4),
                    policy=policy)
    assert out.launches == () and out.sweeps["k"].wait.kind is WaitKind.KUEUE_WAITING


def test_a_sweep_with_all_trials_out_and_jobs_waiting_for_kueue_says_so():
    k = record("k", kueue_queue="q", total=2, running=2)
    out = make_plan(sweeps=[k], jobs=jobs_of(k, admission="QUEUED"), caps=Caps(max_jobs=5))
    assert out.sweeps["k"].wait.kind is WaitKind.KUEUE_QUOTA
    assert out.sweeps["k"].wait.detail == "2 of its jobs wait for Kueue quota in queue q"


def test_claimed_trials_whose_jobs_are_not_listed_yet_count_and_wait_for_kueue():
    # a PENDING trial (claimed, job not observed yet) counts at its shape and, in a Kueue queue, as waiting
    import dataclasses

    from dispatcher.core.records import LiveTrial, TrialState

    k = dataclasses.replace(record("k", kueue_queue="q", gpus_per_node=8, nodes="1:4"), cursor=1,
                            live={0: LiveTrial(0, 1, TrialState.PENDING, "k-0-a1")})
    out = make_plan(sweeps=[k], jobs={}, caps=Caps(max_gpus=16, max_waiting=1))
    assert (out.sweeps["k"].jobs, out.sweeps["k"].gpus, out.sweeps["k"].queued) == (1, 16, 1)
    assert out.launches == ()
    finished = {"k-0-a1": KueueJob(name="k-0-a1", kind="pytorchjob", sweep_id="k", trial_index=0, attempt=1,
                                   phase=JobPhase.SUCCEEDED, gpus=16)}
    assert make_plan(sweeps=[k], jobs=finished, caps=Caps(max_gpus=16, max_waiting=1)).sweeps["k"].jobs == 1


def test_a_kueue_queue_shared_by_two_teams_is_bounded_as_one():
    a = record("a", team="a", kueue_queue="shared")
    b = record("b", team="b", kueue_queue="shared")
    out = make_plan(sweeps=[a, b], jobs={}, caps=Caps(max_jobs=10, max_waiting=3))
    assert len(out.launches) == 3 and out.sweeps["b"].wait.kind is WaitKind.KUEUE_WAITING
    assert out.sweeps["a"].wait.detail == "Kueue queue shared: 3/3 jobs wait for quota (max_waiting)"


def test_admission_is_read_as_contracts_c7_gives_it_in_any_spelling():
    import enum

    from dispatcher.core.sharing import waits_for_quota

    class Admission(str, enum.Enum):
        QUEUED = "queued"
        ADMITTED = "admitted"
        EVICTED = "evicted"

    def job(admission):
        return KueueJob(name="j", kind="trainjob", sweep_id="s", trial_index=0, attempt=1, phase=JobPhase.PENDING,
                        admission=admission)

    assert [waits_for_quota(job(a)) for a in (Admission.QUEUED, Admission.ADMITTED, Admission.EVICTED, None,
                                              "QUEUED", "Admitted")] == [True, False, True, False, True, False]


def test_the_share_policy_maps_the_operator_policys_team_entries_with_a_nested_quota():
    from types import SimpleNamespace

    entry = SimpleNamespace(weight=3, quota=SimpleNamespace(max_jobs=4, max_gpus=16), kueue_queue="team-a")
    policy = SharePolicy.from_teams({"a": entry}, default_team="shared")
    assert policy.share("a") == TeamShare(weight=3, max_jobs=4, max_gpus=16, kueue_queue="team-a")
    assert policy.team_of(record("x")) == "shared" and policy.team_of(record("y", team="a")) == "a"


def test_only_the_team_the_policy_assigned_counts_never_the_sweep_files_own_label():
    # rev15 F5: under the default policy `team` in a sweep file is a label; counting it made every
    # made-up label a top-level team with a full share
    import dataclasses

    r = dataclasses.replace(record("z"), launch=LaunchSettings(team="claimed"))
    assert SharePolicy().team_of(r) == "default"
    assert SharePolicy(teams={"claimed": TeamShare()}).team_of(r) == "default"
    assert SharePolicy().team_of(dataclasses.replace(r, team="assigned")) == "assigned"
    # a job's sweepq.io/team label (its sweep no longer planned): a team the policy names, else the default
    policy = SharePolicy(teams={"a": TeamShare()})
    assert [policy.team_of_label(x) for x in ("a", "made-up", None, "")] == ["a", "default", None, None]
