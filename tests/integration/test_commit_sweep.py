"""One sweep's unit of work (``Store.commit_sweep``): every change of a tick in one transaction,
with every condition that makes the single writes exactly-once, split only at DynamoDB's limits."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.adapters.keys import active_pk
from dispatcher.adapters.store import Store
from dispatcher.adapters.sweep_writes import EXPRESSION_BUDGET, MAX_TRANSACT_ITEMS
from dispatcher.core.changes import FreshClaim, RetryClaim, TrialTransition
from dispatcher.core.errors import ClaimsRefused, Conflict

SCOPE, OWNER, SWEEP = "default", "me", "unit-abcdefgh"


@pytest.fixture
def store(aws) -> tuple[Store, list[list[dict[str, Any]]]]:
    """A table with one active sweep (cursor 0, nothing live), our lease, and the transactions sent."""
    client = aws.client("dynamodb")
    sent: list[list[dict[str, Any]]] = []
    client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems",
                                lambda params, **_: sent.append(params["TransactItems"]))
    s = Store("units", client, scope=SCOPE)
    s.create_table()
    assert s.acquire_lease(OWNER, now=1.0, seconds=10_000, skew_s=1)
    meta = {"sweep_id": SWEEP, "type": "sweep", "state": "ACTIVE", "list_pk": active_pk(SCOPE),
            "list_sk": f"2026#{SWEEP}", "scope": SCOPE, "cursor": 0, "live": {}, "total": 1000,
            "succeeded": 0, "failed": 0, "cancelled": 0}
    assert s.put_sweep(meta, {"name": "unit"}, owner=None, now=1.0)
    sent.clear()
    return s, sent


def fresh(index: int, attempt: int = 1) -> FreshClaim:
    job = f"{SWEEP}-{index}-a{attempt}"
    return FreshClaim(index, {"attempt": attempt, "state": "PENDING", "job": job, "claimed_at": 2.0},
                      {"type": "trial", "sweep_id": SWEEP, "index": index, "params": "{}", "state": "PENDING",
                       "attempt": attempt, "job": job, "claimed_at": 2.0, "updated_at": 2.0})


def running(index: int, attempt: int) -> TrialTransition:
    return TrialTransition(index, attempt, {"attempt": attempt, "state": "RUNNING", "job": f"{SWEEP}-{index}-a{attempt}",
                                            "claimed_at": 2.0, "started_at": 3.0}, "RUNNING", started_at=3.0)


def test_transitions_and_claims_of_one_tick_are_one_transaction(store) -> None:
    s, sent = store
    assert s.commit_sweep(SWEEP, [fresh(0), fresh(1), fresh(2)], owner=OWNER, now=2.0) == 1
    assert s.commit_sweep(SWEEP, [running(0, 1), running(1, 1), running(2, 1)], owner=OWNER, now=3.0) == 1
    sent.clear()
    # WHEN one tick records trial 0 failed (to be retried), trial 1 succeeded with its metrics and
    # the sweep's new best, trial 2 left as it is, retries trial 0 and claims trials 3 and 4
    waiting = TrialTransition(0, 1, {"attempt": 1, "state": "WAITING", "job": f"{SWEEP}-0-a1", "claimed_at": 2.0},
                              "WAITING", reason="exit 1", outcome="FAILED", counted=True)
    retry = RetryClaim(0, 1, {"attempt": 2, "state": "PENDING", "job": f"{SWEEP}-0-a2", "claimed_at": 4.0}, 2,
                       f"{SWEEP}-0-a2")
    best = {"trial_index": 1, "trial_id": "t1", "metric": "acc", "value": 0.9}
    done = TrialTransition(1, 1, None, "SUCCEEDED", outcome="SUCCEEDED", counter="succeeded", best=best,
                           metrics={"acc": 0.9})
    n = s.commit_sweep(SWEEP, [waiting, done, retry, fresh(3), fresh(4)], owner=OWNER, now=4.0)
    # THEN one transaction: META, trials 0, 1, 3, 4 (one op each), the lease check
    assert n == 1 and len(sent) == 1 and len(sent[0]) == 6
    meta = s.get_sweep(SWEEP)
    assert meta["cursor"] == 5 and meta["succeeded"] == 1 and meta["best"]["value"] == 0.9
    assert sorted(meta["live"]) == ["0", "2", "3", "4"]
    assert meta["live"]["0"]["attempt"] == 2 and meta["live"]["0"]["state"] == "PENDING"
    assert meta["live"]["2"]["state"] == "RUNNING"
    trial0 = s.get_trial(SWEEP, 0)
    assert (trial0["state"], trial0["attempt"], trial0["job"], trial0["reason"]) == ("PENDING", 2, f"{SWEEP}-0-a2",
                                                                                     "exit 1")
    assert "started_at" not in trial0 and [a["outcome"] for a in trial0["attempts"]] == ["FAILED"]
    trial1 = s.get_trial(SWEEP, 1)
    assert trial1["state"] == "SUCCEEDED" and trial1["metrics"] == {"acc": 0.9} and "finished_at" in trial1
    assert s.get_trial(SWEEP, 3)["state"] == "PENDING" and s.get_trial(SWEEP, 4)["attempt"] == 1


@pytest.mark.parametrize("stale", ["attempt", "cursor", "waiting", "paused", "ended"])
def test_every_condition_survives_merging_and_a_stale_one_refuses_its_part(store, stale: str) -> None:
    s, sent = store
    s.commit_sweep(SWEEP, [fresh(0), fresh(1)], owner=OWNER, now=2.0)
    s.commit_sweep(SWEEP, [running(0, 1)], owner=OWNER, now=3.0)
    changes: list[Any] = [running(1, 1), fresh(2)]
    if stale == "attempt":
        changes.insert(0, running(0, 7))  # decided on an attempt that is not the live one
    elif stale == "cursor":
        changes = [running(1, 1), fresh(3)]  # decided on a cursor of 3
    elif stale == "waiting":
        changes.insert(0, RetryClaim(0, 1, {"attempt": 2, "state": "PENDING", "job": "j", "claimed_at": 4.0}, 2, "j"))
    elif stale == "paused":
        assert s.request_pause(SWEEP, pause=True, requested_by="op", now=3.5) == "paused"
    else:
        s.end_sweep(SWEEP, state="CANCELLED", reason="cancelled", owner=OWNER, now=3.5)
    before = s.get_sweep(SWEEP)
    with pytest.raises(Conflict) as raised:
        s.commit_sweep(SWEEP, changes, owner=OWNER, now=4.0)
    after = s.get_sweep(SWEEP)
    assert after["cursor"] == 2 and s.get_trial(SWEEP, 2) is None and s.get_trial(SWEEP, 3) is None
    if stale in ("cursor", "waiting", "paused"):
        # only the claims were stale: the unit is written again without them (ClaimsRefused) — a
        # transition records what already happened on the cluster and must not wait for a claim
        assert isinstance(raised.value, ClaimsRefused)
        assert after["live"]["1"]["state"] == "RUNNING" and s.get_trial(SWEEP, 1)["state"] == "RUNNING"
        assert after["live"]["0"] == before["live"]["0"]
    else:
        # a stale transition (or a sweep that ended) refuses the whole unit
        assert not isinstance(raised.value, ClaimsRefused)
        assert after["live"] == before["live"] and s.get_trial(SWEEP, 1)["state"] == "PENDING"


def test_a_lost_lease_refuses_the_unit(store) -> None:
    s, _ = store
    with pytest.raises(Conflict):
        s.commit_sweep(SWEEP, [fresh(0)], owner="someone else", now=2.0)
    assert s.get_sweep(SWEEP)["cursor"] == 0


def test_a_unit_over_dynamodbs_limits_is_split_in_order_and_each_part_carries_its_conditions(store) -> None:
    s, sent = store
    # WHEN one tick claims 150 trials of the sweep
    n = s.commit_sweep(SWEEP, [fresh(i) for i in range(150)], owner=OWNER, now=2.0)
    # THEN it took more than one transaction, each within 100 items and the expression budget, each
    # with the lease check and the cursor it continues from
    assert n == len(sent) > 1
    cursors = []
    for items in sent:
        assert len(items) <= MAX_TRANSACT_ITEMS and "ConditionCheck" in items[-1]
        update = items[0]["Update"]
        assert len(update["UpdateExpression"]) + len(update["ConditionExpression"]) <= EXPRESSION_BUDGET
        assert "#c = :cur" in update["ConditionExpression"] and "list_pk = :active" in update["ConditionExpression"]
        cursors.append(int(update["ExpressionAttributeValues"][":cur"]["N"]))
    assert cursors[0] == 0 and cursors == sorted(cursors)
    meta = s.get_sweep(SWEEP)
    assert meta["cursor"] == 150 and len(meta["live"]) == 150
    assert len(s.trials(SWEEP)) == 150
