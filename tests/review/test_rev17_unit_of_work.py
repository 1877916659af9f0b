"""rev17 — adversarial review of the tick's unit of work after its rev16 fixes (issue 16).

Each test drives ``Dispatcher.tick`` (or ``Store.commit_sweep``) on moto + the Kubernetes API
emulator and asserts what dispatcher/tick.py, dispatcher/launching.py and
dispatcher/adapters/sweep_writes.py promise. A failing test is a finding (see the rev17 report);
a passing one is a guard.
"""

from __future__ import annotations

from typing import Any

from helpers import Clock, CountingSession, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.errors import TransientError
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings

KIND = "job"


def _names(kube: Any) -> set[str]:
    return {o["metadata"]["name"] for o in kube.list_objects(KIND, "sweepq")}


def _dispatcher(aws: Any, kube: Any, clock: Clock | None = None, **settings: Any) -> Any:
    s = Settings.load({}, backend=KIND, namespace="sweepq", **settings)
    _, queue = bootstrap(aws, s)
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    return make_dispatcher(aws, s, {KIND: backend}, clock or Clock(), queue), queue, backend


def _unserved_once(d: Any) -> None:
    """The next BatchGetItem of trial items is not served (throttling after BATCH_TRIES)."""
    original = d.store.batch_get_trials

    def unserved(keys: Any) -> Any:
        d.store.batch_get_trials = original  # type: ignore[method-assign]
        raise TransientError("read trials: 1 keys still unprocessed after 5 tries (DynamoDB throttling)")

    d.store.batch_get_trials = unserved  # type: ignore[method-assign]


def test_rev17_a_sweep_whose_breaker_tripped_launches_no_new_trial_while_a_success_waits_for_its_read(aws, kube):
    """reconcile_sweep: the circuit breaker (max_failed_trials) ends the sweep FAILED, cancelling
    the rest. tick.py ``_reconcile_sweep`` defers the end while a succeeded trial's read waits
    (``waiting``: MetricsNotYet / an unserved read, rev16 finding 4's fix) — and then returns the
    sweep as neither ended nor stale, so it is not held: the launch step plans and *creates* fresh
    trials of a sweep that already decided to fail, and the next tick cancels them again."""
    d, queue, _ = _dispatcher(aws, kube, max_running=2)
    sweep_id = submit(queue, grid_spec("rev17breaker", 1, 4), {"max_failed_trials": 1, "max_retries": 0})
    assert not d.tick().errors
    first = {f"{sweep_id}-0-a1", f"{sweep_id}-1-a1"}
    assert _names(kube) == first
    kube.set_job_phase(KIND, f"{sweep_id}-0-a1", JobPhase.FAILED)  # the breaker trips on it
    kube.set_job_phase(KIND, f"{sweep_id}-1-a1", JobPhase.SUCCEEDED)  # recorded once its read is served
    d.clock.advance(10)
    _unserved_once(d)
    second = d.tick(max_rounds=1)
    created = sorted(_names(kube) - first)
    assert not created, (f"the breaker tripped (trial 0 FAILED, max_failed_trials 1) yet the same tick created "
                         f"{created}; errors {second.errors}")
    d.clock.advance(10)
    d.tick()
    meta = d.store.get_sweep(sweep_id)
    assert meta["state"] == "FAILED", meta["state"]


def _formula(report: Any, touched: int, ended: int = 0) -> int:
    from types import SimpleNamespace

    from benchmarks.tick import expected_aws_calls

    return expected_aws_calls(SimpleNamespace(report=report, touched=touched, ended=ended))  # type: ignore[arg-type]


def test_rev17_the_benchmarks_call_formula_counts_the_launched_notes_and_the_end_of_a_sweep(aws, kube):
    """benchmarks/tick.py ``expected_aws_calls``: "one transaction per touched sweep", touched =
    "sweeps with a job that finished or was created in the tick" (``Measured.touched``), asserted
    in tests/unit/test_benchmarks_smoke.py and printed as "Every tick made exactly …". The tick
    after a create writes LAUNCHED for a sweep none of whose jobs finished or was created (one
    transaction the formula does not count), and the tick a sweep ends in writes its unit of work
    *and* ``end_sweep`` (two for one touched sweep), and its ⌈sweeps/100⌉ uses
    ``report.active_sweeps`` — counted *after* the end — for the sweeps the tick loaded. The
    formula holds only for the benchmark's own sequence of ticks, not for "every tick"."""
    kind = "pytorchjob"  # the benchmark's kind (its first pod is known by name: one metrics BatchGetItem)
    counting = CountingSession(aws)
    settings = Settings.load({}, backend=kind, namespace="sweepq", max_running=1)
    _, queue = bootstrap(counting, settings)
    d = make_dispatcher(counting, settings, {kind: make_backend(kind, api_client=kube.api_client,
                                                                namespace="sweepq")}, Clock(), queue)
    sweep_id = submit(queue, grid_spec("rev17calls", 1, 1))
    assert not d.tick().errors  # intake, claim, create
    d.clock.advance(10)
    counting.calls.reset()
    noted = d.tick()  # lists the job: LAUNCHED; nothing finished, nothing created
    assert not noted.errors and noted.launched == 0 and noted.finished == 0
    # fixed formula (rev17 finding 7): touched counts the sweep whose job is first listed (LAUNCHED)
    measured = {"launched note": (sum(counting.calls.calls.values()), _formula(noted, touched=1),
                                  dict(counting.calls.calls))}
    kube.set_job_phase(kind, f"{sweep_id}-0-a1", JobPhase.SUCCEEDED)
    d.clock.advance(10)
    counting.calls.reset()
    ended = d.tick()  # its only trial succeeded: the sweep ends
    measured["sweep ends"] = (sum(counting.calls.calls.values()), _formula(ended, touched=1, ended=1),
                              dict(counting.calls.calls))
    assert not ended.errors and ended.finished == 1
    assert d.store.get_sweep(sweep_id)["state"] == "COMPLETED"
    wrong = {tick: m for tick, m in measured.items() if m[0] != m[1]}
    assert not wrong, "(calls made, formula, by operation): " + "; ".join(f"{k}: {v}" for k, v in wrong.items())


def test_rev17_claims_a_split_unit_committed_before_a_pause_are_created_in_their_tick(aws, kube):
    """launching.py ``_commit_and_create``: "its jobs are created after that commit"; ClaimsRefused
    (core/errors.py): "its claims are not [written] (nothing of them may be created)". A unit of
    150 fresh claims is split (DynamoDB's 100 items); a pause lands after part 1 committed. Part 2
    is refused and ``commit_sweep`` raises ClaimsRefused for the *whole* unit, so the caller reverts
    the sweep to ``before`` and creates nothing — also for the part-1 claims that *are* written
    (cursor advanced). They wait, PENDING without a job, for the next tick's relaunch, which runs
    while the sweep is paused: the paused sweep starts them then."""
    n = 150
    d, queue, _ = _dispatcher(aws, kube, max_running=n, max_launches_per_tick=n)
    spec = {**grid_spec("rev17split", 1, 1), "parameters": {"seed": {"values": list(range(2 * n))}}}
    sweep_id = submit(queue, spec)
    original = d.store.transact
    parts: list[str] = []

    def transact(what: str, items: Any, **kw: Any) -> None:
        if what.startswith(f"commit sweep {sweep_id}") and "part 2 of" in what and not parts:
            parts.append(what)  # `producer pause` lands between the unit's parts
            d.store.request_pause(sweep_id, pause=True, requested_by="operator", now=d.clock())
        return original(what, items, **kw)

    d.store.transact = transact  # type: ignore[method-assign]
    report = d.tick(max_rounds=1)
    d.store.transact = original  # type: ignore[method-assign]
    assert parts, "the unit was split"
    meta = d.store.get_sweep(sweep_id)
    claimed = {t["job"] for t in meta["live"].values()}
    created = _names(kube)
    assert claimed, "part 1's claims are written"
    d.clock.advance(10)
    d.tick()  # still paused
    later = _names(kube)
    assert claimed == created, (f"{len(claimed)} claims written (cursor {meta['cursor']}) but {len(created)} of their "
                                f"jobs created in their tick (the next tick, paused, created {len(later)}); "
                                f"errors {report.errors}")


def test_rev17_a_unit_refused_for_a_stale_transition_costs_one_refused_rewrite_and_writes_nothing(aws):
    """sweep_writes.py ``commit_sweep``: a refused part with claims in it is written once more
    without them — meant for claims refused by a pause or a moved cursor. It re-writes whatever
    refused the part: a stale transition (or a sweep that ended) refuses the re-write too, so
    every such refusal costs a second, pointless TransactWriteItems (and it cannot be told from a
    claim refusal, as the cancellation reasons are never looked at)."""
    import pytest

    from dispatcher.adapters.keys import active_pk
    from dispatcher.adapters.store import Store
    from dispatcher.core.changes import FreshClaim, TrialTransition
    from dispatcher.core.errors import ClaimsRefused, Conflict

    scope, owner, sweep = "default", "me", "rev17-abcdefgh"
    client = aws.client("dynamodb")
    sent: list[Any] = []
    client.meta.events.register("provide-client-params.dynamodb.TransactWriteItems",
                                lambda params, **_: sent.append(params["TransactItems"]))
    s = Store("rev17", client, scope=scope)
    s.create_table()
    assert s.acquire_lease(owner, now=1.0, seconds=10_000, skew_s=1)
    assert s.put_sweep({"sweep_id": sweep, "type": "sweep", "state": "ACTIVE", "list_pk": active_pk(scope),
                        "list_sk": f"2026#{sweep}", "scope": scope, "cursor": 0, "live": {}, "total": 10,
                        "succeeded": 0, "failed": 0, "cancelled": 0}, {"name": "u"}, owner=None, now=1.0)

    def fresh(i: int) -> FreshClaim:
        job = f"{sweep}-{i}-a1"
        return FreshClaim(i, {"attempt": 1, "state": "PENDING", "job": job, "claimed_at": 2.0},
                          {"type": "trial", "sweep_id": sweep, "index": i, "params": "{}", "state": "PENDING",
                           "attempt": 1, "job": job, "claimed_at": 2.0, "updated_at": 2.0})

    s.commit_sweep(sweep, [fresh(0)], owner=owner, now=2.0)
    sent.clear()
    stale = TrialTransition(0, 7, {"attempt": 7, "state": "RUNNING", "job": "j", "claimed_at": 2.0}, "RUNNING")
    with pytest.raises(Conflict) as raised:
        s.commit_sweep(sweep, [stale, fresh(1)], owner=owner, now=3.0)
    assert not isinstance(raised.value, ClaimsRefused)
    # kept as a documented cost (sweep_writes.commit_sweep): DynamoDB does not say which condition of
    # the merged META update failed, so the re-write without claims is tried once and refused too —
    # two transactions, nothing written, a plain Conflict
    assert len(sent) == 2, f"{len(sent)} transactions for one refused unit"
    assert s.get_sweep(sweep)["cursor"] == 1 and s.get_trial(sweep, 1) is None


def test_rev17_splitting_a_large_unit_merges_each_change_a_bounded_number_of_times(monkeypatch):
    """sweep_writes.py ``_split`` renders every prefix of the part it grows (``_render`` =
    ``_merge`` + the whole META expression + ``ser`` of every value, per change added), so a
    sweep's 1,000 changes of one tick (MAX_LIVE_PER_SWEEP trials ending at once) are merged ~36,000
    times — about 37x one render of the result, seconds of the tick's CPU per such sweep before its
    first transaction (5.6 s here for 1,000 successes without metrics, 19 s with 64 metrics each,
    on this 2-core host), and again for the re-write after a ClaimsRefused. Counted, not timed."""
    import dispatcher.adapters.sweep_writes as sw
    from dispatcher.adapters.store import Store
    from dispatcher.core.changes import TrialTransition

    merged = [0]
    original = sw._merge

    def counting(sweep_id: str, changes: Any, now: float) -> Any:
        merged[0] += len(changes)
        return original(sweep_id, changes, now)

    monkeypatch.setattr(sw, "_merge", counting)
    n = 1000
    changes = [TrialTransition(i, 1, None, "SUCCEEDED", outcome="SUCCEEDED", counter="succeeded") for i in range(n)]
    parts = sw._split(Store("t", None, scope="default"), "rev17-abcdefgh", changes, 1.0)
    assert sum(len(p) for p in parts) == n
    assert merged[0] <= 3 * n, f"{merged[0]} changes merged to split {n} into {len(parts)} parts"


def test_rev17_a_pause_refusing_a_retry_keeps_its_waiting_transition_once_and_the_retry_runs_once(aws, kube):
    """Guard. One tick records trial 0's failed attempt (WAITING, the attempt appended to its
    history) and claims its retry (RetryClaim on that WAITING attempt) in one unit; a pause lands
    before the commit: ClaimsRefused re-writes the WAITING transition alone. No attempt-2 job is
    created while paused, the failed attempt is appended once, and after the resume attempt 2 runs
    exactly once."""
    d, queue, _ = _dispatcher(aws, kube, max_running=1)
    sweep_id = submit(queue, grid_spec("rev17retry", 1, 1), {"max_retries": 2})
    assert not d.tick().errors
    first, second = f"{sweep_id}-0-a1", f"{sweep_id}-0-a2"
    kube.set_job_phase(KIND, first, JobPhase.FAILED)
    d.clock.advance(10)
    original = d.store.commit_sweep
    seen: list[Any] = []

    def commit_sweep(sid: str, changes: Any, **kw: Any) -> int:
        seen.append([type(c).__name__ for c in changes])
        d.store.request_pause(sid, pause=True, requested_by="operator", now=d.clock())
        d.store.commit_sweep = original  # type: ignore[method-assign]
        return original(sid, changes, **kw)

    d.store.commit_sweep = commit_sweep  # type: ignore[method-assign]
    report = d.tick(max_rounds=1)
    assert seen and "RetryClaim" in seen[0] and "TrialTransition" in seen[0], (seen, report.errors)
    assert second not in _names(kube), "no retry is created for a refused claim"
    meta = d.store.get_sweep(sweep_id)
    assert (meta["live"]["0"]["attempt"], meta["live"]["0"]["state"]) == (1, "WAITING"), meta["live"]
    d.clock.advance(10)
    assert not d.tick().errors and second not in _names(kube), "paused: the retry waits"
    d.store.request_pause(sweep_id, pause=False, requested_by="operator", now=d.clock())
    for _ in range(2):
        d.clock.advance(10)
        assert not d.tick().errors
    attempts = [(a["attempt"], a["outcome"]) for a in d.store.get_trial(sweep_id, 0).get("attempts", [])]
    assert attempts == [(1, "FAILED")], attempts
    assert second in _names(kube) and d.store.get_sweep(sweep_id)["live"]["0"]["attempt"] == 2


def test_rev17_a_lease_lost_between_the_refusal_and_the_rewrite_writes_nothing_and_says_lease(aws):
    """Guard. ``commit_sweep``: a part refused for its claims (a pause), then the lease taken by
    another dispatcher before the re-write: the re-write's lease check refuses it and LeaseLost
    (not ClaimsRefused, which the tick would treat as "transitions written") reaches the caller."""
    import pytest

    from dispatcher.adapters.dynamo import ser
    from dispatcher.adapters.keys import active_pk
    from dispatcher.adapters.store import LeaseLost, Store
    from dispatcher.core.changes import FreshClaim, TrialTransition

    scope, owner, sweep = "default", "me", "rev17-lease"
    client = aws.client("dynamodb")
    s = Store("rev17l", client, scope=scope)
    s.create_table()
    assert s.acquire_lease(owner, now=1.0, seconds=10_000, skew_s=1)
    assert s.put_sweep({"sweep_id": sweep, "type": "sweep", "state": "ACTIVE", "list_pk": active_pk(scope),
                        "list_sk": f"2026#{sweep}", "scope": scope, "cursor": 0, "live": {}, "total": 10,
                        "succeeded": 0, "failed": 0, "cancelled": 0}, {"name": "u"}, owner=None, now=1.0)
    job = f"{sweep}-0-a1"
    s.commit_sweep(sweep, [FreshClaim(0, {"attempt": 1, "state": "PENDING", "job": job, "claimed_at": 2.0},
                                      {"type": "trial", "sweep_id": sweep, "index": 0, "params": "{}",
                                       "state": "PENDING", "attempt": 1, "job": job, "claimed_at": 2.0,
                                       "updated_at": 2.0})], owner=owner, now=2.0)
    assert s.request_pause(sweep, pause=True, requested_by="op", now=2.5) == "paused"
    original = s.transact
    calls: list[str] = []

    def transact(what: str, items: Any, **kw: Any) -> None:
        calls.append(what)
        if len(calls) == 2:  # the re-write: a successor took the lease meanwhile
            client.put_item(TableName="rev17l", Item=ser({**s.lease_key, "owner": "successor",
                                                          "expires_at": 99_999.0, "acquired_at": 3.0}))
        return original(what, items, **kw)

    s.transact = transact  # type: ignore[method-assign]
    running = TrialTransition(0, 1, {"attempt": 1, "state": "RUNNING", "job": job, "claimed_at": 2.0,
                                     "started_at": 3.0}, "RUNNING", started_at=3.0)
    fresh1 = FreshClaim(1, {"attempt": 1, "state": "PENDING", "job": f"{sweep}-1-a1", "claimed_at": 3.0},
                        {"type": "trial", "sweep_id": sweep, "index": 1, "params": "{}", "state": "PENDING",
                         "attempt": 1, "job": f"{sweep}-1-a1", "claimed_at": 3.0, "updated_at": 3.0})
    with pytest.raises(LeaseLost):
        s.commit_sweep(sweep, [running, fresh1], owner=owner, now=3.0)
    assert len(calls) == 2
    meta = s.get_sweep(sweep)
    assert meta["live"]["0"]["state"] == "PENDING" and meta["cursor"] == 1


def test_rev17_a_success_waiting_for_its_final_metrics_is_not_recorded_early_stopped(aws, kube):
    """tick.py ``_apply``: a succeeded trial whose metrics item still says 'running' waits a tick
    (MetricsNotYet; "its job stays SUCCEEDED on the cluster"). Its transition is left out of the
    unit of work, so the record early_stop gets still shows it RUNNING, and its item is 'running':
    early_stop.py ranks it at the band and records EARLY_STOPPED a trial whose job already
    succeeded — its SUCCEEDED outcome and final metrics are lost (hyperband.py: "A trial that
    finished before the intent committed stays SUCCEEDED")."""
    import pytest

    pytest.importorskip("sweeps")
    from test_rev14_hyperband_tick import World, hyperband_spec

    w = World(aws, kube, max_running=3)
    sid = submit(w.queue, hyperband_spec(3))
    d = w.dispatcher()
    d.tick()
    w.run_all()
    w.clock.advance(60)
    d.tick()
    w.write(sid, 0, [1.0, 0.1])
    w.write(sid, 1, [1.0, 0.2])
    w.write(sid, 2, [1.0, 0.9])  # its final write (status 'finished') is not visible yet
    w.kube.set_job_phase("pytorchjob", f"{sid}-2-a1", JobPhase.SUCCEEDED)
    w.clock.advance(30)
    report = d.tick()
    trial = w.store.get_trial(sid, 2)
    assert trial["state"] != "EARLY_STOPPED", (f"trial 2's job SUCCEEDED (final metrics pending) but it was recorded "
                                              f"{trial['state']}: {trial.get('reason')}; errors {report.errors}")


def test_rev17_a_success_deferred_by_an_unserved_read_is_not_recorded_cancelled_by_a_later_cancel(aws, kube):
    """A tick decides trial 0 SUCCEEDED and defers it (its trial-item read was not served:
    "recorded next tick, with its metrics"). The researcher then cancels the sweep: reconcile's
    cancel branch (core/reconcile.py ``_stop_all``) records every live trial CANCELLED whatever its
    job's phase, so the succeeded trial — its job SUCCEEDED on the cluster — ends CANCELLED, its
    final metrics and the best trial never recorded."""
    d, queue, _ = _dispatcher(aws, kube, max_running=2)
    sweep_id = submit(queue, grid_spec("rev17cancel", 1, 2))
    assert not d.tick().errors
    kube.set_job_phase(KIND, f"{sweep_id}-0-a1", JobPhase.SUCCEEDED)
    d.clock.advance(10)
    _unserved_once(d)
    deferred = d.tick(max_rounds=1)
    assert d.store.get_trial(sweep_id, 0)["state"] != "SUCCEEDED", "deferred"
    assert d.store.request_cancel(sweep_id, requested_by="tester", now=d.clock()) == "requested"
    d.clock.advance(10)
    d.tick()
    assert d.store.get_sweep(sweep_id)["state"] == "CANCELLED"
    trial = d.store.get_trial(sweep_id, 0)
    assert trial["state"] == "SUCCEEDED", (f"trial 0's job SUCCEEDED (decided, deferred by an unserved read: "
                                           f"{deferred.errors}) but it was recorded {trial['state']}")


def test_rev17_a_claim_whose_create_failed_counts_for_the_cap_in_the_next_dispatcher_process(aws, kube):
    """Guard. Dispatcher A claims two trials (max_running 2) and one create fails transiently: the
    trial stays PENDING with no job and no LAUNCHED. Dispatcher B (another process, same scope)
    ticks next: it counts the claimed-not-created trial for the cap, claims nothing more, and
    re-creates that job under the same attempt's name — never three jobs, never a second attempt."""
    settings = Settings.load({}, backend=KIND, namespace="sweepq", max_running=2)
    _, queue = bootstrap(aws, settings)
    backend_a = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    clock = Clock()
    a = make_dispatcher(aws, settings, {KIND: backend_a}, clock, queue, owner="a")
    b = make_dispatcher(aws, settings, {KIND: make_backend(KIND, api_client=kube.api_client, namespace="sweepq")},
                        clock, queue, owner="b")
    sweep_id = submit(queue, grid_spec("rev17caps", 1, 4))
    original = backend_a.submit
    failed: list[str] = []

    def submit_once(dryrun: Any) -> str:
        if not failed and dryrun.job_name.endswith("-1-a1"):
            failed.append(dryrun.job_name)
            raise TransientError("create: API server 503 — retried next tick")
        return original(dryrun)

    backend_a.submit = submit_once  # type: ignore[method-assign]
    first = a.tick()
    assert failed and any("503" in e for e in first.errors), first.errors
    assert _names(kube) == {f"{sweep_id}-0-a1"}
    for _ in range(3):
        clock.advance(10)
        assert not b.tick().errors
        assert len(_names(kube)) <= 2, _names(kube)
    assert _names(kube) == {f"{sweep_id}-0-a1", f"{sweep_id}-1-a1"}
    live = b.store.get_sweep(sweep_id)["live"]
    assert sorted(live) == ["0", "1"] and {t["attempt"] for t in live.values()} == {1}
