"""Regressions of issue 12 — exactly-once in every deployment shape. One test per defect the audit
reproduced; each fails on the main it was filed against (see docs/RELIABILITY.md, "Issue 12").

Each drives the real adapters (moto, the Kubernetes emulator over HTTP) through the exact
interleaving, with fresh dispatchers built from settings alone where a new process matters.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import boto3
import pytest
from helpers import Clock, grid_spec, submit
from invariants import is_terminal, labels_of
from shapes import (
    JOBSET,
    JOBSET_RESOURCE,
    JOBSET_TEMPLATE,
    PausingBackend,
    deployment,
    set_jobset_phase,
    tick_catching_crash,
    writes_of,
)

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.store import Store, spec_key, sweep_key
from dispatcher.backends import make_backend
from dispatcher.core.errors import ConfigError, TransientError
from dispatcher.core.jobs import LABEL_SWEEP_ID, JobPhase
from dispatcher.core.message import encode_cancel
from dispatcher.core.policy import Policy
from dispatcher.settings import Settings

KIND = "pytorchjob"
POLICY = Policy.from_data({"templates": {"jobset": {"manifest": JOBSET_TEMPLATE}}})
RAYJOBS = "ray.io/v1/rayjobs"  # a second template resource the emulator serves


def names(kube: Any, kind: str = KIND, namespace: str | None = None) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.list_objects(kind, namespace))


def alive(kube: Any, kind: str = KIND, namespace: str | None = None) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.list_objects(kind, namespace) if not is_terminal(o))


def finish_all(kube: Any, kind: str = KIND, phase: JobPhase = JobPhase.SUCCEEDED) -> None:
    for name in alive(kube, kind):
        kube.set_job_phase(kind, name, phase)


def live_attempts(store: Store, sweep_id: str) -> dict[str, int]:
    return {i: int(t["attempt"]) for i, t in (store.get_sweep(sweep_id)["live"] or {}).items()}


# -- 1. template sweeps duplicated every tick -------------------------------------------------

def test_kind_template_needs_no_listed_resources_and_refuses_malformed_ones() -> None:
    # the template backend lists every template of the operator policy, and each template sweep
    # records its resource at intake: kind template needs no SWEEPQ_TEMPLATE_RESOURCES
    assert Settings.load({}, backend=KIND, kinds=f"{KIND},template").template_resources == ()
    with pytest.raises(ConfigError, match="plural.group/version"):
        Settings.load({}, backend=KIND, kinds=f"{KIND},template", template_resources="jobset.x-k8s.io/v1alpha2/jobsets")


def test_intake_records_the_resource_of_the_template_and_refuses_one_the_policy_lacks(atomic_aws, kube) -> None:
    kube.install(JOBSET)
    d = deployment(atomic_aws, kube, Clock(start=time.time()), backend=KIND, kinds=f"{KIND},template",
                   policy=POLICY)
    accepted = submit(d.queue, grid_spec("tpl", 1, 2), {"kind": "template", "template": "jobset"})
    refused = submit(d.queue, grid_spec("tpl-x", 1, 2), {"kind": "template", "template": "rayjob"})
    report = d.fresh().tick()
    assert (report.accepted, report.rejected) == (1, 1), report
    assert d.store.get_sweep(accepted)["template_resource"] == JOBSET_RESOURCE
    meta = d.store.get_sweep(refused)
    assert meta["state"] == "REJECTED" and "'rayjob' is refused by the operator policy (templates)" in meta["reason"]
    assert "jobset" in meta["reason"]  # what the sweep could name instead


def test_a_template_sweeps_jobs_are_observed_by_every_fresh_process(atomic_aws, kube, ledger) -> None:
    # GIVEN a template sweep (JobSets) accepted and running, every tick a new process (CronJob)
    kube.install(JOBSET)
    kube.install(RAYJOBS)
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, kinds=f"{KIND},template", max_running=4, policy=POLICY)
    ledger.cap = 4
    sweep_id = submit(d.queue, grid_spec("tpl", 1, 2), {"kind": "template", "template": "jobset"})
    ledger.expect(sweep_id, "COMPLETED", total=2)
    assert d.fresh().tick().launched == 2
    for name in names(kube, JOBSET):
        set_jobset_phase(kube, name, JobPhase.RUNNING)
    # WHEN the operator removes the template from the policy and lists another resource while it
    # runs (the process no longer knows the JobSet resource from its settings or policy), four ticks
    narrowed = dataclasses.replace(d.settings, template_resources=("rayjobs.ray.io/v1",))
    for _ in range(4):
        clock.advance(30)
        report = d.fresh(settings=narrowed, policy=Policy.default()).tick()
        ledger.observe()
        # the only complaint: the policy no longer has the template, so the sweep launches nothing new
        assert all("the operator policy refuses its launches now" in e for e in report.errors), report.errors
    # THEN each trial still has its one job: never called LOST, never a second attempt beside it
    assert names(kube, JOBSET) == [f"{sweep_id}-0-a1", f"{sweep_id}-1-a1"]
    assert live_attempts(d.store, sweep_id) == {"0": 1, "1": 1}
    # AND it finishes, one job per trial
    for name in names(kube, JOBSET):
        set_jobset_phase(kube, name, JobPhase.SUCCEEDED)
    clock.advance(30)
    d.fresh(settings=narrowed, policy=Policy.default()).tick()
    ledger.assert_ok(ledger.check_final(d.store))


# -- 2. dispatchers of different scopes on one table ------------------------------------------

def test_dispatchers_of_two_scopes_on_one_table_never_touch_each_others_sweeps(atomic_aws, kube, ledger) -> None:
    # GIVEN two deployments (namespaces team-a / team-b, their own queues) on one table
    clock = Clock(start=time.time())
    a = deployment(atomic_aws, kube, clock, queue_name="team-a", namespace="team-a", table="shared", backend=KIND,
                   max_running=4)
    b = deployment(atomic_aws, kube, clock, queue_name="team-b", namespace="team-b", table="shared", backend=KIND,
                   max_running=4)
    alpha, beta = submit(a.queue, grid_spec("alpha", 1, 2)), submit(b.queue, grid_spec("beta", 1, 2))
    for sweep_id in (alpha, beta):
        ledger.expect(sweep_id, "COMPLETED", total=2)
    da, db = a.fresh(owner="A"), b.fresh(owner="B")
    assert da.tick().launched == 2
    for name in names(kube, KIND, "team-a"):
        kube.set_job_phase(KIND, name, JobPhase.RUNNING, namespace="team-a")
    # WHEN B ticks while A's trials run and A holds its lease
    assert da.store.acquire_lease("A-mid-tick", now=clock(), seconds=60)
    report = db.tick()
    # THEN B has its own lease and launches only its own sweep, in its namespace
    assert report.lease == "held" and report.launched == 2, report
    assert da.store.release_lease("A-mid-tick")
    assert names(kube, KIND, "team-b") == [f"{beta}-0-a1", f"{beta}-1-a1"]
    assert live_attempts(a.store, alpha) == {"0": 1, "1": 1}  # A's trials were not called LOST
    # AND a cancel of A's sweep sent to B's queue is refused, A's sweep untouched
    b.queue.send(encode_cancel(sweep_id=alpha, requested_by="someone-in-b"))
    report = db.tick()
    assert any("refused" in e and "team-a" in e for e in report.errors), report.errors
    assert a.store.get_sweep(alpha)["state"] == "ACTIVE" and not a.store.get_sweep(alpha).get("cancel_requested")
    # AND both finish, each in its own namespace, one job per trial
    for _ in range(4):
        for namespace in ("team-a", "team-b"):
            for name in alive(kube, KIND, namespace):
                kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED, namespace=namespace)
        clock.advance(30)
        da.tick()
        db.tick()
    assert {labels_of(o)[LABEL_SWEEP_ID] for o in kube.list_objects(KIND, "team-a")} == {alpha}
    assert {labels_of(o)[LABEL_SWEEP_ID] for o in kube.list_objects(KIND, "team-b")} == {beta}
    ledger.assert_ok(ledger.check_final(a.store))


def test_a_cancel_sent_to_another_scopes_queue_before_the_sweep_is_stored_does_not_cancel_it(atomic_aws, kube) -> None:
    # GIVEN a sweep submitted to team-a's queue, and a cancel of it sent to team-b's queue that
    # team-b's dispatcher handles first (the sweep is not stored yet: it leaves a tombstone)
    clock = Clock(start=time.time())
    a = deployment(atomic_aws, kube, clock, queue_name="team-a", namespace="team-a", table="shared", backend=KIND)
    b = deployment(atomic_aws, kube, clock, queue_name="team-b", namespace="team-b", table="shared", backend=KIND)
    alpha = submit(a.queue, grid_spec("alpha", 1, 1))
    b.queue.send(encode_cancel(sweep_id=alpha, requested_by="someone-in-b"))
    b.fresh(owner="B").tick()
    # WHEN team-a's dispatcher takes the sweep THEN it is accepted and runs: another scope's
    # tombstone binds nothing here
    report = a.fresh(owner="A").tick()
    assert (report.accepted, report.launched) == (1, 1), report
    assert a.store.get_sweep(alpha)["state"] == "ACTIVE" and names(kube, KIND, "team-a") == [f"{alpha}-0-a1"]


# -- 3. a kind dropped from SWEEPQ_KINDS ------------------------------------------------------

def test_a_kind_removed_from_the_settings_holds_its_sweep_and_the_others_launch(atomic_aws, kube, ledger) -> None:
    # GIVEN a sweep of kind `job` running under a dispatcher that enables pytorchjob and job
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, kinds=f"{KIND},job", max_running=4)
    batch = submit(d.queue, grid_spec("batch", 1, 2), {"kind": "job"})
    ledger.expect(batch, "CANCELLED")
    assert d.fresh().tick().launched == 2
    finish_all(kube, "job", JobPhase.RUNNING)
    # WHEN `job` is dropped from SWEEPQ_KINDS and a sweep of the remaining kind arrives
    narrowed = dataclasses.replace(d.settings, kinds=(KIND,))
    torch = submit(d.queue, grid_spec("torch", 1, 1))
    ledger.expect(torch, "COMPLETED", total=1)
    report = d.fresh(settings=narrowed).tick()
    # THEN the new sweep launches; the other is held untouched and reported, its jobs left running
    assert report.launched == 1 and names(kube) == [f"{torch}-0-a1"], report
    assert any(h.startswith(batch) and "not enabled" in h for h in report.held), report.held
    assert alive(kube, "job") == [f"{batch}-0-a1", f"{batch}-1-a1"]
    assert live_attempts(d.store, batch) == {"0": 1, "1": 1}
    # AND a cancel of it is recorded but not carried out here: never CANCELLED with its jobs alive
    d.queue.send(encode_cancel(sweep_id=batch, requested_by="alice"))
    clock.advance(30)
    d.fresh(settings=narrowed).tick()
    meta = d.store.get_sweep(batch)
    assert meta["state"] == "ACTIVE" and meta["cancel_requested"] is True
    assert alive(kube, "job") == [f"{batch}-0-a1", f"{batch}-1-a1"]
    # AND once `job` is enabled again, the cancel deletes its jobs and ends it
    clock.advance(30)
    d.fresh().tick()
    assert d.store.get_sweep(batch)["state"] == "CANCELLED" and alive(kube, "job") == []
    finish_all(kube)
    clock.advance(30)
    d.fresh(settings=narrowed).tick()
    ledger.assert_ok(ledger.check_final(d.store))


# -- 4. one bad sweep stopped every sweep -----------------------------------------------------

def test_a_poison_run_cap_is_rejected_and_the_good_sweep_in_the_batch_runs(atomic_aws, kube) -> None:
    d = deployment(atomic_aws, kube, Clock(start=time.time()), backend=KIND, max_running=4)
    good = submit(d.queue, grid_spec("good", 1, 2))
    poison = submit(d.queue, {"name": "huge", "method": "random", "program": "train.py", "run_cap": 10**40,
                              "parameters": {"lr": {"min": 0.0, "max": 1.0}}})
    report = d.fresh().tick()  # used to raise decimal.Rounded out of the tick, with the lease held
    assert (report.accepted, report.rejected, report.launched) == (1, 1, 2), report
    meta = d.store.get_sweep(poison)
    assert meta["state"] == "REJECTED" and "run_cap" in meta["reason"], meta["reason"]
    assert d.store.get_sweep(good)["state"] == "ACTIVE"


def test_a_sweep_whose_every_write_fails_unexpectedly_does_not_stop_the_others(atomic_aws, kube, ledger) -> None:
    # GIVEN two stored sweeps; every write touching `bad` fails with an error nobody planned for
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=4)
    ledger.cap = 4
    bad = submit(d.queue, grid_spec("bad", 1, 2), submitted_at="2026-01-01T00:00:00.000Z")
    good = submit(d.queue, grid_spec("good", 1, 2), submitted_at="2026-01-01T00:00:01.000Z")
    for sweep_id in (bad, good):
        ledger.expect(sweep_id, "COMPLETED", total=2)
    d.fresh(settings=dataclasses.replace(d.settings, max_running=0)).tick()  # accepted, nothing launched
    faulty = boto3.session.Session(region_name="us-east-1")
    hook = writes_of(bad, RuntimeError("injected: this sweep's item refuses every write"))
    faulty.events.register("before-parameter-build.dynamodb.TransactWriteItems", hook)
    # WHEN dispatchers tick (each a fresh process) while the cluster makes progress
    for _ in range(5):
        report = d.fresh(owner="faulty", session=faulty).tick()
        # THEN the good sweep goes on, the bad one is reported, and the lease is always released
        assert any(bad in e and "RuntimeError" in e for e in report.errors), report.errors
        assert d.fresh(owner="another", session=faulty).tick().lease == "held"  # the lease was released
        ledger.observe()
        finish_all(kube)
        clock.advance(30)
    assert d.store.get_sweep(good)["state"] == "COMPLETED"
    assert d.store.get_sweep(bad)["state"] == "ACTIVE" and names(kube) == [f"{good}-0-a1", f"{good}-1-a1"]
    # AND once its writes work again, it runs to the end
    hook.armed[0] = False
    for _ in range(4):
        d.fresh(session=faulty).tick()
        finish_all(kube)
        clock.advance(30)
    ledger.assert_ok(ledger.check_final(d.store))


def test_a_sweep_that_keeps_failing_is_held_for_an_operator_and_resumes_when_cleared(atomic_aws, kube, ledger) -> None:
    # GIVEN two stored sweeps, and the SPEC item of one of them gone (a bad manual edit, a bug)
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=4)
    bad = submit(d.queue, grid_spec("bad", 1, 2), submitted_at="2026-01-01T00:00:00.000Z")
    good = submit(d.queue, grid_spec("good", 1, 2), submitted_at="2026-01-01T00:00:01.000Z")
    for sweep_id in (bad, good):
        ledger.expect(sweep_id, "COMPLETED", total=2)
    d.fresh(settings=dataclasses.replace(d.settings, max_running=0)).tick()
    client = atomic_aws.client("dynamodb")
    spec = client.get_item(TableName=d.settings.table, Key=ser(spec_key(bad)))["Item"]
    client.delete_item(TableName=d.settings.table, Key=ser(spec_key(bad)))
    # WHEN fresh dispatchers tick
    reports = []
    for _ in range(4):
        reports.append(d.fresh().tick())
        finish_all(kube)
        clock.advance(30)
    # THEN the failure is counted per tick; after SWEEPQ_SWEEP_FAILURES_TO_HOLD (3) it is held with a
    # readable reason (`producer status` shows it), the other sweep finished meanwhile
    assert [sum(bad in e for e in r.errors) >= 1 for r in reports[:3]] == [True, True, True]
    meta = d.store.get_sweep(bad)
    assert meta["held"]["failures"] == 3 and meta["reason"].startswith("held: unexpected KeyError"), meta
    assert any(h.startswith(bad) for h in reports[3].held) and not any(bad in e for e in reports[3].errors)
    assert d.store.get_sweep(good)["state"] == "COMPLETED"
    # AND once the operator fixed it and cleared the hold (README, Reliability), it runs to the end
    client.put_item(TableName=d.settings.table, Item=spec)
    client.update_item(TableName=d.settings.table, Key=ser(sweep_key(bad)),
                       UpdateExpression="REMOVE held, failures, last_error, reason")
    for _ in range(3):
        d.fresh().tick()
        finish_all(kube)
        clock.advance(30)
    ledger.assert_ok(ledger.check_final(d.store))


# -- 4b. bounded items ------------------------------------------------------------------------

def test_a_sweep_never_holds_more_live_trials_than_the_bound(atomic_aws, kube, monkeypatch) -> None:
    # the bound, scaled down from 1,000 to 3 for the test; the size at 1,000 is test_live_map_size_*
    import dispatcher.core.records as records

    monkeypatch.setattr(records, "MAX_LIVE_PER_SWEEP", 3, raising=False)
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=None)  # SWEEPQ_MAX_RUNNING=none (Kueue)
    sweep_id = submit(d.queue, grid_spec("wide", 2, 5), {"max_retries": 1})
    for _ in range(3):
        d.fresh().tick()
        clock.advance(30)
    assert len(live_attempts(d.store, sweep_id)) == 3 and len(names(kube)) == 3
    # a bound that counts WAITING entries must never block their retries
    finish_all(kube, phase=JobPhase.FAILED)
    d.fresh().tick()
    clock.advance(30)
    d.fresh().tick()
    assert sorted(live_attempts(d.store, sweep_id).values()) == [2, 2, 2] and len(alive(kube)) == 3


# -- 5. a late create leaked a job ------------------------------------------------------------

@pytest.mark.parametrize("dies", [False, True], ids=["the-late-tick-goes-on", "the-late-tick-dies-after-create"])
def test_a_create_that_lands_after_a_lease_loss_and_a_cancel_is_deleted(atomic_aws, kube, dies: bool) -> None:
    # GIVEN max_running=1, and dispatcher A that claims a trial and stalls right before its create
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=1)
    first = submit(d.queue, grid_spec("first", 1, 1), submitted_at="2026-01-01T00:00:00.000Z")
    pausing = PausingBackend(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"), die_after_create=dies)
    a, b = d.fresh(owner="A", backends={KIND: pausing}), d.fresh(owner="B")
    thread = threading.Thread(target=lambda: tick_catching_crash(a))
    thread.start()
    assert pausing.paused.wait(30)
    # WHEN A's lease expires, B takes over, handles a cancel of that sweep and ends it
    clock.advance(d.settings.lease_seconds * 1.2)
    d.queue.send(encode_cancel(sweep_id=first, requested_by="alice"))
    second = submit(d.queue, grid_spec("second", 1, 1), submitted_at="2026-01-01T00:00:01.000Z")
    b.tick()
    assert d.store.get_sweep(first)["state"] == "CANCELLED"
    # AND A's create then lands
    pausing.resume.set()
    thread.join(30)
    assert pausing.submits == [f"{first}-0-a1"]
    # THEN the job of the ended sweep does not survive the next tick (A withdraws it itself when it
    # lives to see its LAUNCHED write refused; otherwise B's leak check deletes it)
    clock.advance(30)
    report = b.tick()
    assert alive(kube) == [f"{second}-0-a1"], (alive(kube), report)
    # AND the slot it held is free: a third sweep starts once the second ends
    third = submit(d.queue, grid_spec("third", 1, 1))
    finish_all(kube)
    clock.advance(30)
    b.tick()
    assert alive(kube) == [f"{third}-0-a1"]


# -- 6. the smaller ones ----------------------------------------------------------------------

def test_a_trial_whose_create_keeps_failing_gives_up_its_slot_after_start_timeout(atomic_aws, kube, ledger) -> None:
    # GIVEN max_running=1, sweep X of kind `job` whose every create fails with a retryable 500, and Y
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, kinds=f"{KIND},job", max_running=1)
    x = submit(d.queue, grid_spec("x", 1, 1), {"kind": "job", "start_timeout": 90, "max_retries": 0},
               submitted_at="2026-01-01T00:00:00.000Z")
    y = submit(d.queue, grid_spec("y", 1, 1), submitted_at="2026-01-01T00:00:01.000Z")
    ledger.expect(x, "FAILED", total=1)  # its only trial failed: no trial succeeded (issue 18)
    ledger.expect(y, "COMPLETED", total=1)
    kube.fail_next("job", 500, times=1000, verb="create")
    dispatcher = d.fresh()
    for _ in range(3):  # 0 s, 40 s, 80 s: within start_timeout, X's claim holds the only slot
        dispatcher.tick()
        assert d.store.get_sweep(x)["live"]["0"]["state"] == "PENDING" and names(kube) == []
        clock.advance(40)
    # WHEN start_timeout has passed
    dispatcher.tick()
    # THEN X's attempt ended (out of retries: FAILED, with the reason) and Y got the slot
    (trial,) = d.store.trials(x)
    assert trial["state"] == "FAILED" and "start_timeout" in trial["reason"], trial
    assert names(kube) == [f"{y}-0-a1"]
    finish_all(kube)
    clock.advance(30)
    dispatcher.tick()
    ledger.assert_ok(ledger.check_final(d.store))


def test_unprocessed_keys_are_retried_with_backoff_not_in_a_tight_loop(aws, monkeypatch) -> None:
    client = aws.client("dynamodb")
    store = Store("unprocessed", client)
    store.create_table()
    ids = [f"s{i}-aaaaaaaa" for i in range(3)]
    for sweep_id in ids:
        client.put_item(TableName="unprocessed", Item=ser({**sweep_key(sweep_id), "sweep_id": sweep_id}))
    calls, throttled = [], [10**6]

    def throttle(parsed: dict[str, Any], **_: Any) -> None:  # DynamoDB under throttling: nothing served
        calls.append(1)
        if len(calls) > 50:
            raise AssertionError("BatchGetItem called in a tight loop")
        if len(calls) <= throttled[0]:
            keys = [{"pk": i["pk"], "sk": i["sk"]} for i in parsed["Responses"]["unprocessed"]]
            parsed["Responses"]["unprocessed"] = []
            parsed["UnprocessedKeys"] = {"unprocessed": {"Keys": keys, "ConsistentRead": True}}

    client.meta.events.register("after-call.dynamodb.BatchGetItem", throttle)
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    # WHEN every round comes back unprocessed THEN it backs off between rounds and gives up, transient
    with pytest.raises(TransientError, match="unprocessed"):
        store.batch_get_sweeps(ids)
    assert len(calls) == 8 and len(sleeps) == 7 and 0 < sleeps[0] < sleeps[-1] <= 2.0
    # AND when the throttling passes after two rounds, every item is read
    calls.clear()
    sleeps.clear()
    throttled[0] = 2
    assert sorted(m["sweep_id"] for m in store.batch_get_sweeps(ids)) == ids and len(sleeps) == 2


def test_a_trigger_is_not_lost_when_the_holder_releases_between_acquire_and_mark_dirty(atomic_aws, kube) -> None:
    # GIVEN A holds the lease; B is woken by a new sweep and fails to acquire; A releases right then
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=4)
    holder = d.fresh(owner="A")
    assert holder.store.acquire_lease("A", now=clock(), seconds=60)
    sweep_id = submit(d.queue, grid_spec("woken", 1, 1))
    late = boto3.session.Session(region_name="us-east-1")
    once = [True]

    def release_first(**_: Any) -> None:  # just before B's mark_dirty reaches DynamoDB
        if once[0]:
            once[0] = False
            assert holder.store.release_lease("A")

    late.events.register("before-call.dynamodb.UpdateItem", release_first)
    # WHEN B ticks THEN it does not drop the trigger: it takes the free lease and handles the sweep
    report = d.fresh(owner="B", session=late).tick()
    assert not once[0] and report.lease == "held" and report.accepted == 1, report
    assert names(kube) == [f"{sweep_id}-0-a1"]


def test_a_contender_whose_clock_runs_ahead_does_not_take_a_live_lease(atomic_aws, kube) -> None:
    # GIVEN A took a 60 s lease at t (by its clock); B's clock runs a few seconds ahead of A's
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND)
    t = clock()
    assert d.fresh(owner="A").store.acquire_lease("A", now=t, seconds=60)
    ahead = Clock(start=t + 61)  # 1 s past A's deadline by B's clock: A may still be creating
    b = d.fresh(owner="B", clock=ahead)
    assert b.tick().lease == "busy"
    # once the lease is over by more than the skew margin (lease/8), B takes it
    ahead.advance(60 / 8)
    assert b.tick().lease == "held"
