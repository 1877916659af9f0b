"""Adversarial review (rev11p): team claims under a policy without teams. Fails on the current code."""

from __future__ import annotations

from dispatcher.core.launch import LaunchSettings
from dispatcher.core.planner import make_plan
from dispatcher.core.policy import Policy
from dispatcher.core.records import SweepRecord, SweepState
from dispatcher.core.sharing import Caps

ALICE, MALLORY = "AIDAEXAMPLEALICE", "AIDAEXAMPLEMALLORY"


def admitted(sid: str, sender: str, **launch: object) -> SweepRecord:
    """A sweep as intake stores it once ``Policy.admit`` is wired (team = the admission's team)."""
    admission = Policy.default().admit(LaunchSettings.model_validate({"kind": "pytorchjob", "gpus_per_node": 0,
                                                                       **launch}), sender=sender)
    assert admission.ok, admission.reason
    return SweepRecord(sweep_id=sid, state=SweepState.ACTIVE, total=100, cursor=0, launch=admission.launch,
                       kind="pytorchjob", submitted_at=f"2026-01-01T00:00:0{len(sid) % 10}Z#{sid}", live={},
                       team=admission.team, submitter=sender)


def test_invented_team_labels_multiply_a_senders_fair_share_under_the_default_policy() -> None:
    """Attack: the default policy has no teams; README: "no teams (every sender alike; team is only a
    label)". Mallory sends three sweeps claiming made-up teams (``team: t1``, ``t2``, ``t3``), Alice
    one sweep without a team. ``admit`` keeps the claimed labels in the effective launch, and the
    planner's first level of fair share is ``record.team or record.launch.team``: each invented label
    is a team with its own equal share. Expected ("every sender alike"): 4 free slots split 2/2 by
    submitter. Actual: Mallory gets 3, Alice 1 — and more labels take more."""
    sweeps = [admitted("alice-a", ALICE), *(admitted(f"mal-{i}", MALLORY, team=f"t{i}") for i in (1, 2, 3))]
    plan = make_plan(sweeps=sweeps, jobs={}, caps=Caps(max_jobs=4))
    got: dict[str, int] = {}
    for launch in plan.launches:
        who = ALICE if launch.sweep_id.startswith("alice") else MALLORY
        got[who] = got.get(who, 0) + 1
    assert got == {ALICE: 2, MALLORY: 2}, got
