"""Property tests of the planner (hypothesis): over random clusters, teams, quotas, sweeps, running
and Kueue-waiting jobs, paused/held/cancelling sweeps and tick limits —

* caps, team quotas, max_concurrent and max_waiting are never exceeded by what a plan adds;
* paused, held, cancelling and finished sweeps get nothing; launches are valid attempts in order;
* work-conserving: after a plan (limit not hit), a trial that would fit is held back only by a
  reservation for a trial first in line — never otherwise;
* weighted max-min fairness between teams when trials have one width;
* no starvation: a wide trial first in line — its team's top priority, or a team with nothing
  running — starts at the first tick at which the GPUs freed since it arrived cover what it lacked.

The usage each check needs is recomputed here from the inputs, not read from the planner.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from planning import Cluster, KueueJob, record

from dispatcher.core.jobs import JobPhase
from dispatcher.core.planner import make_plan
from dispatcher.core.records import LiveTrial, SweepState, TrialState
from dispatcher.core.sharing import Caps, SharePolicy, TeamShare, fit_problems, gpu_limit, trial_shape
from dispatcher.core.waits import WaitKind

TEAMS = ("vision", "nlp", "speech")
PROFILE = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

limits = st.one_of(st.none(), st.integers(0, 24))


@st.composite
def worlds(draw):
    caps = Caps(max_jobs=draw(st.one_of(st.none(), st.integers(0, 16))), max_gpus=draw(limits),
                max_waiting=draw(st.one_of(st.none(), st.integers(0, 4))))
    teams = {t: TeamShare(weight=draw(st.sampled_from([1, 1, 2, 3])), max_jobs=draw(st.one_of(st.none(), st.integers(0, 10))),
                          max_gpus=draw(limits), kueue_queue=draw(st.sampled_from([None, f"q-{t}"])))
             for t in TEAMS[:draw(st.integers(1, 3))]}
    policy = SharePolicy(teams=teams, reserve_gpus=draw(st.booleans()))
    records, jobs = [], {}
    for n in range(draw(st.integers(1, 6))):
        sid = f"s{n}"
        min_nodes = draw(st.integers(1, 2))
        r = record(sid, team=draw(st.sampled_from([*teams, None])), submitter=draw(st.sampled_from(["", "A", "B"])),
                   total=draw(st.integers(0, 12)), priority=draw(st.sampled_from([0, 0, 5])),
                   gpus_per_node=draw(st.sampled_from([0, 1, 1, 2, 4, 8])), min_nodes=min_nodes,
                   max_nodes=draw(st.integers(min_nodes, 3)), max_concurrent=draw(st.one_of(st.none(), st.integers(1, 4))),
                   kueue_queue=draw(st.sampled_from([None, None, "shared"])))
        cursor = draw(st.integers(0, r.total))
        live = {}
        for i in range(cursor):
            state = draw(st.sampled_from([None, None, TrialState.RUNNING, TrialState.PENDING, TrialState.WAITING]))
            if state is not None:
                live[i] = LiveTrial(i, draw(st.integers(1, 2)), state, f"{sid}-{i}")
        r = dataclasses.replace(r, cursor=cursor, live=live, paused=draw(st.booleans()) and draw(st.booleans()),
                                cancel_requested=draw(st.integers(0, 9)) == 0,
                                state=SweepState.COMPLETED if draw(st.integers(0, 9)) == 0 else SweepState.ACTIVE)
        records.append(r)
        for t in live.values():
            if t.state.holds_slot and draw(st.booleans()):  # observed (else: claimed, not listed yet)
                jobs[t.job_name] = KueueJob(name=t.job_name, kind="pytorchjob", sweep_id=sid, trial_index=t.index,
                                            attempt=t.attempt, phase=draw(st.sampled_from([JobPhase.RUNNING,
                                                                                           JobPhase.PENDING])),
                                            gpus=draw(st.integers(0, 8)),
                                            admission=draw(st.sampled_from([None, "QUEUED", "ADMITTED", "EVICTED"])))
    for i in range(draw(st.integers(0, 3))):  # jobs of sweeps no longer active
        jobs[f"stray-{i}"] = KueueJob(name=f"stray-{i}", kind="job", sweep_id="gone", trial_index=i, attempt=1,
                                      phase=JobPhase.RUNNING, gpus=draw(st.integers(0, 4)))
    held = frozenset(r.sweep_id for r in records if draw(st.integers(0, 5)) == 0)
    limit = draw(st.one_of(st.none(), st.integers(1, 8)))
    return caps, policy, records, jobs, held, limit


def shape(r, caps, policy):
    return trial_shape(r.launch, gpus=gpu_limit(caps, policy.share(policy.team_of(r))))


def held_now(records, jobs, caps, policy):
    """(jobs, GPUs, waiting) per sweep id, plus the cluster total — the planner's counting rule."""
    busy = {n: j for n, j in jobs.items() if not j.phase.terminal}
    per = {r.sweep_id: [0, 0, 0] for r in records}
    total = [0, 0]
    for j in busy.values():
        total[0] += 1
        total[1] += j.gpus
        if j.sweep_id in per:
            per[j.sweep_id][0] += 1
            per[j.sweep_id][1] += j.gpus
            per[j.sweep_id][2] += getattr(j, "admission", None) in ("QUEUED", "EVICTED")
    for r in records:
        s = shape(r, caps, policy) or trial_shape(r.launch, gpus=None)
        queued = bool(policy.kueue_queue(r))
        for t in r.live.values():
            if t.state.holds_slot and t.job_name not in busy:
                per[r.sweep_id][0] += 1
                per[r.sweep_id][1] += s.gpus
                per[r.sweep_id][2] += queued
                total[0] += 1
                total[1] += s.gpus
    return per, total


def eligible(r, caps, policy, held):
    # a sweep intake would reject under these caps (fit_problems: its smallest trial exceeds a GPU limit,
    # a job limit or its Kueue queue's max_waiting is 0) can never start
    return (not r.state.terminal and not r.cancel_requested and not r.paused and r.sweep_id not in held
            and shape(r, caps, policy) is not None and (r.waiting or r.cursor < r.total)
            and not fit_problems(r.launch, team=policy.team_of(r), policy=policy, caps=caps))


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@PROFILE
@given(worlds())
def test_a_plan_never_exceeds_a_cap_or_quota_and_launches_only_valid_attempts(world):
    caps, policy, records, jobs, held, limit = world
    out = make_plan(sweeps=records, jobs=jobs, caps=caps, policy=policy, limit=limit, held=held)
    per, total = held_now(records, jobs, caps, policy)
    by_id = {r.sweep_id: r for r in records}
    assert limit is None or len(out.launches) <= limit
    added = {sid: [0, 0] for sid in by_id}
    for launch in out.launches:
        r = by_id[launch.sweep_id]
        assert eligible(r, caps, policy, held), launch
        s = shape(r, caps, policy)
        assert (launch.nodes, launch.gpus) == (s.nodes, s.gpus)
        assert r.launch.min_nodes <= launch.nodes <= r.launch.max_nodes
        added[r.sweep_id][0] += 1
        added[r.sweep_id][1] += launch.gpus
    # launches of one sweep: its retries (next attempt) in index order, then fresh trials from the cursor
    for sid, r in by_id.items():
        mine = [l for l in out.launches if l.sweep_id == sid]
        retries = [(i, r.live[i].attempt + 1, True) for i in r.waiting]
        fresh = [(i, 1, False) for i in range(r.cursor, r.total)]
        assert [(l.index, l.attempt, l.retry) for l in mine] == (retries + fresh)[:len(mine)]
        if r.launch.max_concurrent is not None and mine:
            assert r.holding + len(mine) <= r.launch.max_concurrent
    launched_jobs = len(out.launches)
    launched_gpus = sum(l.gpus for l in out.launches)
    if caps.max_jobs is not None and launched_jobs:
        assert total[0] + launched_jobs <= caps.max_jobs
    if caps.max_gpus is not None and launched_gpus:
        assert total[1] + launched_gpus <= caps.max_gpus
    for team in {policy.team_of(r) for r in records}:
        members = [sid for sid, r in by_id.items() if policy.team_of(r) == team]
        quota = policy.share(team)
        n_jobs, n_gpus = (sum(added[s][k] for s in members) for k in (0, 1))
        if quota.max_jobs is not None and n_jobs:
            assert sum(per[s][0] for s in members) + n_jobs <= quota.max_jobs
        if quota.max_gpus is not None and n_gpus:
            assert sum(per[s][1] for s in members) + n_gpus <= quota.max_gpus
    for queue in {policy.kueue_queue(r) for r in records} - {None}:
        members = [sid for sid, r in by_id.items() if policy.kueue_queue(r) == queue]
        new = sum(added[s][0] for s in members)
        bounds = {policy.max_waiting(queue, policy.team_of(by_id[s]), caps) for s in members if added[s][0]}
        if new and None not in bounds:
            assert sum(per[s][2] for s in members) + new <= min(bounds)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@PROFILE
@given(worlds())
def test_a_plan_is_work_conserving_except_for_what_a_reservation_holds(world):
    caps, policy, records, jobs, held, limit = world
    out = make_plan(sweeps=records, jobs=jobs, caps=caps, policy=policy, limit=limit, held=held)
    if limit is not None and len(out.launches) >= limit:
        return
    per, total = held_now(records, jobs, caps, policy)
    by_id = {r.sweep_id: r for r in records}
    for launch in out.launches:
        per[launch.sweep_id][0] += 1
        per[launch.sweep_id][1] += launch.gpus
        per[launch.sweep_id][2] += bool(policy.kueue_queue(by_id[launch.sweep_id]))
        total[0] += 1
        total[1] += launch.gpus

    def fits_in(used, cap, need):
        # a trial needing none of a resource fits whatever is held of it — also when the cluster holds
        # more than the cap (jobs observed over a lowered cap): ``cap - used`` is then negative (rev15 F12)
        return need == 0 or cap is None or cap - used >= need

    for r in records:
        s = shape(r, caps, policy)
        if not eligible(r, caps, policy, held):
            continue
        launched = sum(1 for l in out.launches if l.sweep_id == r.sweep_id)
        if r.launch.max_concurrent is not None and r.holding + launched >= r.launch.max_concurrent:
            continue
        queue = policy.kueue_queue(r)
        team = policy.team_of(r)
        if queue:
            bound = policy.max_waiting(queue, team, caps)
            waiting = sum(per[x.sweep_id][2] for x in records if policy.kueue_queue(x) == queue)
            if bound is not None and waiting >= bound:
                continue
        if launched == len(r.waiting) + r.total - r.cursor:
            continue  # all its work went out
        members = [x.sweep_id for x in records if policy.team_of(x) == team]
        quota = policy.share(team)
        fits = (fits_in(total[0], caps.max_jobs, 1) and fits_in(total[1], caps.max_gpus, s.gpus)
                and fits_in(sum(per[m][0] for m in members), quota.max_jobs, 1)
                and fits_in(sum(per[m][1] for m in members), quota.max_gpus, s.gpus))
        if fits:
            # it would fit what is free: only a reservation for another trial first in line holds it back
            assert policy.reserve_gpus and out.reservations, (r.sweep_id, out.sweeps[r.sweep_id])
            assert out.sweeps[r.sweep_id].wait.kind is WaitKind.RESERVED_FOR_OTHER
        else:
            assert out.sweeps[r.sweep_id].wait.kind in (WaitKind.CLUSTER_CAP, WaitKind.TEAM_QUOTA)
    for res in out.reservations:
        assert res.held_gpus <= res.needs_gpus and res.held_jobs <= 1


@PROFILE
@given(weights=st.lists(st.sampled_from([1, 2, 3]), min_size=2, max_size=3),
       sweeps_per_team=st.lists(st.integers(1, 4), min_size=3, max_size=3),
       cap=st.integers(1, 30), gpu_cap=st.booleans())
def test_teams_get_weighted_max_min_fair_shares_when_trials_have_one_width(weights, sweeps_per_team, cap, gpu_cap):
    teams = {TEAMS[i]: TeamShare(weight=w) for i, w in enumerate(weights)}
    records = [record(f"{t}-{n}", team=t, submitter=f"{t}-user{n % 2}") for i, t in enumerate(teams)
               for n in range(sweeps_per_team[i])]
    caps = Caps(max_gpus=cap) if gpu_cap else Caps(max_jobs=cap)
    out = make_plan(sweeps=records, jobs={}, caps=caps, policy=SharePolicy(teams=teams))
    got = {t: sum(1 for l in out.launches if l.sweep_id.startswith(t + "-")) for t in teams}
    assert sum(got.values()) == cap  # work-conserving
    for x in teams:
        for y in teams:
            # x's last trial went to it while it held the smaller weighted share
            assert (got[x] - 1) / teams[x].weight <= got[y] / teams[y].weight


@st.composite
def wide_arrivals(draw):
    cap = draw(st.integers(4, 24))
    wide_gpus = draw(st.integers(2, cap))
    others = draw(st.lists(st.tuples(st.sampled_from(["nlp", "speech"]), st.integers(1, max(1, wide_gpus - 1))),
                           min_size=1, max_size=3))
    return cap, wide_gpus, others, draw(st.randoms(use_true_random=False))


def fill(world, rounds=3):
    for _ in range(rounds):
        world.tick()


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@PROFILE
@given(wide_arrivals())
def test_a_top_priority_wide_trial_starts_exactly_when_the_freed_gpus_cover_what_it_lacked(arrival):
    cap, wide_gpus, others, rnd = arrival
    # GIVEN narrower sweeps of one team fill the cluster
    records = {f"o{i}": record(f"o{i}", team="vision", submitter=f"u{i}", gpus_per_node=w, total=400)
               for i, (_, w) in enumerate(others)}
    world = Cluster(records, caps=Caps(max_gpus=cap))
    fill(world)
    free = cap - world.held()[1]
    # WHEN a wide sweep of the team's highest priority arrives
    world.records["wide"] = record("wide", team="vision", submitter="u9", priority=10, gpus_per_node=wide_gpus, total=1)
    freed = 0
    for _ in range(400):
        plan = world.tick()
        if any(l.sweep_id == "wide" for l in plan.launches):
            break
        # THEN until it starts nobody else starts a GPU trial, and it starts as soon as the GPUs are there
        assert plan.launches == () and free + freed < wide_gpus
        name = rnd.choice(sorted(world.jobs))
        freed += world.jobs[name].gpus
        world.end(name)
    assert free + freed >= wide_gpus
    assert [l.gpus for l in plan.launches if l.sweep_id == "wide"] == [wide_gpus]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
@PROFILE
@given(wide_arrivals(), st.sampled_from([1, 2]))
def test_a_wide_trial_of_a_team_with_nothing_running_starts_when_the_freed_gpus_cover_what_it_lacked(arrival, weight):
    cap, wide_gpus, others, rnd = arrival
    # GIVEN other teams' narrower sweeps fill the cluster
    teams = {"vision": TeamShare(weight=weight)}
    records = {f"o{i}": record(f"o{i}", team=team, submitter=f"u{i}", gpus_per_node=w, total=400)
               for i, (team, w) in enumerate(others)}
    world = Cluster(records, caps=Caps(max_gpus=cap), policy=SharePolicy(teams=teams))
    fill(world)
    free = cap - world.held()[1]
    # WHEN team vision, with nothing running, submits a wide sweep
    world.records["wide"] = record("wide", team="vision", gpus_per_node=wide_gpus, total=1)
    freed = 0
    for _ in range(400):
        plan = world.tick()
        if any(l.sweep_id == "wide" for l in plan.launches):
            break
        # THEN its team stays first in line (share 0; ties go to the wider trial): nobody else starts a
        # GPU trial, and it starts at the first tick where the freed GPUs cover what it lacked
        assert plan.launches == () and free + freed < wide_gpus
        name = rnd.choice(sorted(world.jobs))
        freed += world.jobs[name].gpus
        world.end(name)
    assert free + freed >= wide_gpus
