"""Fair share between teams through the real tick: sweeps sent as SQS messages (moto), the tick's
intake, reconcile and planner, PyTorchJobs created in the Kubernetes API emulator over HTTP.

The team a sweep counts for is the one the operator policy assigns at intake (``SweepRecord.team``),
never the sweep file's own ``sweepq.team`` label; it and ``producer pause`` reach the planner through
the ``SweepRecord`` fields the intake fills in. moto signs every message as one IAM user
(``MOTO_SENDER``), a member of both teams here: each sweep names its team (``sweepq.team``), which the
policy grants to members only."""

from __future__ import annotations

from collections import Counter

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.backends import make_backend
from dispatcher.core.errors import Conflict, TransientError
from dispatcher.core.jobs import LABEL_SWEEP_ID, LABEL_TRIAL_INDEX, JobPhase
from dispatcher.core.message import encode_pause
from dispatcher.core.policy import Policy
from dispatcher.report import TickReport
from dispatcher.settings import Settings

KIND = "pytorchjob"
MOTO_SENDER = "AIDAIT2UOQQY3AUEKVGXU"  # moto signs every message with this IAM user id
POLICY = Policy.from_data({"teams": {"vision": {"members": [MOTO_SENDER]}, "nlp": {"members": [MOTO_SENDER]}}})


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=6, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatcher = make_dispatcher(aws, settings, {KIND: backend}, Clock(), queue, policy=POLICY)
    return store, queue, dispatcher


def running_per_team(kube, teams: dict[str, str]) -> Counter:
    live = [j for j in kube.list_objects(KIND) if not phase_of(j).terminal]
    return Counter(teams[j["metadata"]["labels"][LABEL_SWEEP_ID]] for j in live)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_two_teams_with_five_and_one_sweeps_share_a_cap_of_six_three_and_three(world, kube):
    store, queue, dispatcher = world
    # GIVEN team vision submits 5 sweeps and team nlp 1 (issue 15: the old planner ran vision 5, nlp 1)
    teams = {submit(queue, grid_spec(f"vision-{i}", 3, 3), {"team": "vision"}): "vision" for i in range(5)}
    teams[submit(queue, grid_spec("nlp", 3, 3), {"team": "nlp"})] = "nlp"
    # WHEN the dispatcher ticks under SWEEPQ_MAX_RUNNING=6
    report = dispatcher.tick()
    assert not report.errors, report.errors
    # THEN each team runs 3
    assert running_per_team(kube, teams) == {"vision": 3, "nlp": 3}
    # AND when two of nlp's jobs end, the freed slots go back to nlp, not to vision's 5 sweeps
    nlp_jobs = [j["metadata"]["name"] for j in kube.list_objects(KIND)
                if teams[j["metadata"]["labels"][LABEL_SWEEP_ID]] == "nlp"]
    for name in nlp_jobs[:2]:
        kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
    report = dispatcher.tick()
    assert not report.errors, report.errors
    assert report.launched == 2 and running_per_team(kube, teams) == {"vision": 3, "nlp": 3}


class FailsFirstCreate:
    """The real backend, except that its first create fails as a timed-out API call would: the
    trial stays claimed (PENDING) without a job, which the next tick re-creates."""

    def __init__(self, backend):
        self.backend, self.failed = backend, False

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def submit(self, dryrun):
        if not self.failed:
            self.failed = True
            raise TransientError("create timed out (injected)")
        return self.backend.submit(dryrun)


def workers(job: dict) -> tuple[int, int, int]:
    spec = job["spec"]
    worker = spec["pytorchReplicaSpecs"]["Worker"]
    gpus = worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    return spec["elasticPolicy"]["maxReplicas"], worker["replicas"], int(gpus)


def test_an_elastic_sweep_wider_than_the_gpu_cap_launches_at_the_size_the_cap_allows_and_keeps_it(aws, kube):
    # GIVEN SWEEPQ_MAX_GPUS=16 and a sweep of 8 GPUs per node on 1 to 4 nodes (issue 15: it was
    # counted at 32 GPUs and never launched), whose first create fails
    settings = Settings.load({}, backend=KIND, max_running=6, max_gpus=16, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backend = FailsFirstCreate(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"))
    clock = Clock()
    dispatcher = make_dispatcher(aws, settings, {KIND: backend}, clock, queue, policy=POLICY)
    sweep_id = submit(queue, grid_spec("wide", 1, 2), {"team": "vision", "gpus_per_node": 8, "nodes": "1:4"})
    # WHEN the dispatcher ticks: the trial is claimed at 2 nodes (16 GPUs), its create fails
    report = dispatcher.tick()
    assert report.accepted == 1 and report.launched == 0 and kube.list_objects(KIND) == []
    [entry] = store.get_sweep(sweep_id)["live"].values()
    assert (entry["state"], entry["nodes"]) == ("PENDING", 2)
    # AND the operator raises the cap before the next tick re-creates the claimed job
    dispatcher.settings = dispatcher.intake.settings = Settings.load(
        {}, backend=KIND, max_running=6, max_gpus=64, namespace="sweepq")
    clock.advance(5)
    report = dispatcher.tick()
    assert not [e for e in report.errors if "injected" not in e], report.errors
    # THEN the re-created job has the size its claim counted (2 nodes × 8 GPUs), not one recomputed
    # from the new cap, and the second trial launches at the largest size now allowed (4 nodes)
    jobs = {j["metadata"]["labels"][LABEL_TRIAL_INDEX]: j for j in kube.list_objects(KIND)}
    assert workers(jobs["0"]) == (2, 2, 8) and workers(jobs["1"]) == (4, 4, 8)
    live = store.get_sweep(sweep_id)["live"]
    assert (live["0"]["nodes"], live["1"]["nodes"]) == (2, 4)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_team_quota_and_weights_from_the_operator_policy_bound_and_share_the_cap(aws, kube):
    # GIVEN vision weighs 2 with a quota of 3 jobs, nlp weighs 1 and research 1, under a cap of 6
    policy = Policy.from_data({"teams": {
        "vision": {"members": [MOTO_SENDER], "weight": 2, "quota": {"max_jobs": 3}},
        "nlp": {"members": [MOTO_SENDER]}, "research": {"members": [MOTO_SENDER]}}})
    settings = Settings.load({}, backend=KIND, max_running=8, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatcher = make_dispatcher(aws, settings, {KIND: backend}, Clock(), queue, policy=policy)
    teams = {submit(queue, grid_spec(f"vision-{i}", 3, 3), {"team": "vision"}): "vision" for i in range(3)}
    teams[submit(queue, grid_spec("nlp", 3, 3), {"team": "nlp"})] = "nlp"
    teams[submit(queue, grid_spec("research", 3, 3), {"team": "research"})] = "research"
    # WHEN the dispatcher ticks
    report = dispatcher.tick()
    assert not report.errors, report.errors
    # THEN vision's weight would give it 4 of 8, but its quota stops it at 3; the rest is shared
    # by nlp and research, work-conserving (no slot left idle; at equal shares the name decides)
    assert running_per_team(kube, teams) == {"vision": 3, "nlp": 3, "research": 2}
    assert report.launched == 8


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_paused_sweep_gets_none_of_the_freed_slots_its_running_trials_go_on_and_resume_continues_it(world, kube):
    store, queue, dispatcher = world
    # GIVEN vision's 5 sweeps and nlp's 1 share a cap of 6: 3 and 3
    teams = {submit(queue, grid_spec(f"vision-{i}", 3, 3), {"team": "vision"}): "vision" for i in range(5)}
    nlp = submit(queue, grid_spec("nlp", 3, 3), {"team": "nlp"})
    teams[nlp] = "nlp"
    assert not dispatcher.tick().errors
    assert running_per_team(kube, teams) == {"vision": 3, "nlp": 3}
    # WHEN its submitter pauses nlp's sweep through the queue, and two of its jobs end
    queue.send(encode_pause(sweep_id=nlp, requested_by="lunch break"))  # moto: signed as MOTO_SENDER
    nlp_jobs = sorted(j["metadata"]["name"] for j in kube.list_objects(KIND)
                      if j["metadata"]["labels"][LABEL_SWEEP_ID] == nlp)
    for name in nlp_jobs[:2]:
        kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
    report = dispatcher.tick()
    # THEN none of the freed slots goes to it: vision takes both; its third trial runs on
    assert not report.errors and report.pause_requests == 1, report.errors
    assert report.launched == 2 and running_per_team(kube, teams) == {"vision": 5, "nlp": 1}
    meta = store.get_sweep(nlp)
    assert meta["paused"] is True and meta["paused_by"] == MOTO_SENDER and meta["cursor"] == 3
    assert not phase_of(next(j for j in kube.list_objects(KIND) if j["metadata"]["name"] == nlp_jobs[2])).terminal
    # AND while it stays paused, freed slots keep going elsewhere
    vision_job = next(j["metadata"]["name"] for j in kube.list_objects(KIND)
                      if teams[j["metadata"]["labels"][LABEL_SWEEP_ID]] == "vision" and not phase_of(j).terminal)
    kube.set_job_phase(KIND, vision_job, JobPhase.SUCCEEDED)
    assert dispatcher.tick().launched == 1 and running_per_team(kube, teams) == {"vision": 5, "nlp": 1}
    # WHEN it is resumed and two of vision's jobs end
    queue.send(encode_pause(sweep_id=nlp, requested_by="back", resume=True))
    for name in [j["metadata"]["name"] for j in kube.list_objects(KIND)
                 if teams[j["metadata"]["labels"][LABEL_SWEEP_ID]] == "vision" and not phase_of(j).terminal][:2]:
        kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
    report = dispatcher.tick()
    # THEN it launches again, from where it stopped (trials 3 and 4: none repeated)
    assert not report.errors and report.pause_requests == 1, report.errors
    assert running_per_team(kube, teams) == {"vision": 3, "nlp": 3}
    meta = store.get_sweep(nlp)
    assert meta["paused"] is False and meta["cursor"] == 5 and meta["resumed_by"] == MOTO_SENDER
    indexes = sorted(int(j["metadata"]["labels"][LABEL_TRIAL_INDEX]) for j in kube.list_objects(KIND)
                     if j["metadata"]["labels"][LABEL_SWEEP_ID] == nlp)
    assert indexes == [0, 1, 2, 3, 4]


def test_a_claim_planned_before_a_pause_was_committed_is_refused(world):
    store, queue, dispatcher = world
    sweep_id = submit(queue, grid_spec("racy", 1, 2), {"team": "vision"})
    dispatcher.intake.drain(TickReport(scope=dispatcher.settings.dispatcher_scope))
    # a pause lands between the tick's read of the sweep and its claim
    assert store.request_pause(sweep_id, pause=True, requested_by=MOTO_SENDER, sender=MOTO_SENDER, now=1.0) == "paused"
    def claim() -> None:
        store.claim_fresh(sweep_id, index=0, live={"attempt": 1, "state": "PENDING", "job": "j", "claimed_at": 1.0},
                          trial={"type": "trial", "sweep_id": sweep_id, "index": 0}, owner=None, now=1.0)

    with pytest.raises(Conflict):
        claim()
    assert store.get_sweep(sweep_id)["cursor"] == 0
    # the same claim once resumed goes through
    assert store.request_pause(sweep_id, pause=False, requested_by=MOTO_SENDER, sender=MOTO_SENDER, now=2.0) == \
        "resumed"
    claim()
    assert store.get_sweep(sweep_id)["cursor"] == 1


def test_a_sweep_whose_smallest_trial_exceeds_the_gpu_cap_or_its_team_quota_is_rejected_with_the_numbers(aws, kube):
    policy = Policy.from_data({"teams": {"vision": {"members": [MOTO_SENDER], "quota": {"max_gpus": 8}},
                                         "nlp": {"members": [MOTO_SENDER]}}})
    settings = Settings.load({}, backend=KIND, max_running=6, max_gpus=16, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatcher = make_dispatcher(aws, settings, {KIND: backend}, Clock(), queue, policy=policy)
    over_cap = submit(queue, grid_spec("three-nodes", 1, 1), {"team": "nlp", "gpus_per_node": 8, "nodes": "3:4"})
    over_quota = submit(queue, grid_spec("two-nodes", 1, 1), {"team": "vision", "gpus_per_node": 8, "nodes": "2"})
    fits = submit(queue, grid_spec("elastic", 1, 1), {"team": "nlp", "gpus_per_node": 8, "nodes": "1:4"})
    report = dispatcher.tick()
    assert (report.accepted, report.rejected, report.launched) == (1, 2, 1)
    reason = store.get_sweep(over_cap)["reason"]
    assert "3 node(s) × gpus_per_node 8 = 24 GPUs" in reason and "SWEEPQ_MAX_GPUS is 16" in reason
    reason = store.get_sweep(over_quota)["reason"]
    assert "16 GPUs" in reason and "team 'vision' max_gpus is 8" in reason
    assert store.get_sweep(fits)["state"] == "ACTIVE"
