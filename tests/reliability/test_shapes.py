"""Scenario 6 — deployment shapes (issue 12): seeded runs of the ways real deployments differ.

1. Two dispatchers of different scopes (namespaces team-a / team-b, their own queues, their own
   caps) on one table, every tick a fresh process; cancels sometimes sent to the wrong queue.
2. A template kind (JobSets) beside pytorchjob; later ticks run with SWEEPQ_TEMPLATE_RESOURCES
   narrowed, so the processes know the JobSet resource only from the stored sweeps.
3. A kind removed from SWEEPQ_KINDS mid-sweep and restored, cancels arriving meanwhile.
4. A lease lost between claim and create, followed by a cancel of that sweep: the late create
   lands, and the dispatcher that made it either goes on or dies right after.
5. A poison value in each numeric field of a raw body, beside good sweeps.
6. One sweep whose every write fails with an unexpected error, for a while, beside good sweeps.

Each run checks the ledger's invariants — one job per (trial, attempt) ever, caps at every
create (per namespace where there are two), nothing lost, **nothing leaked** once every sweep
ended — and prints its figures (``pytest -s``; quoted in docs/RELIABILITY.md).
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from typing import Any

import boto3
import pytest
from crash import Crash
from helpers import Clock, grid_spec, submit
from invariants import Ledger, is_terminal, labels_of, readable
from shapes import JOBSET, JOBSET_TEMPLATE, PausingBackend, deployment, set_jobset_phase, writes_of
from sweepworld import KIND, advance_cluster, random_sweep

from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import LABEL_SWEEP_ID, JobPhase
from dispatcher.core.message import encode_cancel
from dispatcher.core.policy import Policy

RAYJOBS = "ray.io/v1/rayjobs"


def _queued(queue: Any) -> int:
    attrs = queue.client.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _advance_jobsets(kube: Any, rng: random.Random, *, fail_p: float = 0.15) -> None:
    for obj in sorted(kube.list_objects(JOBSET), key=lambda o: o["metadata"]["name"]):
        if is_terminal(obj):
            continue
        name = obj["metadata"]["name"]
        running = any(c.get("type") == "Running" for c in (obj.get("status") or {}).get("conditions", []))
        if not running:
            if rng.random() < 0.8:
                set_jobset_phase(kube, name, JobPhase.RUNNING)
        elif rng.random() < 0.6:
            set_jobset_phase(kube, name, JobPhase.FAILED if rng.random() < fail_p else JobPhase.SUCCEEDED)


def _advance_batch_jobs(kube: Any, rng: random.Random, *, fail_p: float = 0.15) -> None:
    """The Job controller: a batch Job runs once a pod is ready, then completes or fails."""
    for obj in sorted(kube.list_objects("job"), key=lambda o: o["metadata"]["name"]):
        if is_terminal(obj):
            continue
        name, ready = obj["metadata"]["name"], int((obj.get("status") or {}).get("ready") or 0)
        if not ready:
            if rng.random() < 0.8:
                kube.set_job_phase("job", name, JobPhase.RUNNING)
        elif rng.random() < 0.6:
            kube.set_job_phase("job", name, JobPhase.FAILED if rng.random() < fail_p else JobPhase.SUCCEEDED)


def _report(name: str, seed: int, ledger: Ledger, store: Any, **extra: Any) -> Any:
    figures = ledger.check_final(store)
    ledger.assert_ok(figures)
    details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in extra.items())
    print(f"\nshapes {name} seed {seed}: {details} — {figures.line()}")
    return figures


SEEDS = [1, pytest.param(2, marks=pytest.mark.soak), pytest.param(3, marks=pytest.mark.soak)]


# -- 1 ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_two_scopes_on_one_table(atomic_aws, kube, ledger, seed: int) -> None:
    rng, clock = random.Random(seed), Clock(start=time.time())
    deps = {ns: deployment(atomic_aws, kube, clock, queue_name=f"q-{ns}", namespace=ns, table="shared",
                           backend=KIND, max_running=3) for ns in ("team-a", "team-b")}
    ledger.namespace_caps = {"team-a": 3, "team-b": 3}
    home: dict[str, str] = {}
    refused = cancels = crossed = ticks = 0
    for step in range(300):
        if len(home) < 8 and rng.random() < 0.4:
            ns = rng.choice(sorted(deps))
            spec, launch, total = random_sweep(rng, len(home))
            sweep_id = submit(deps[ns].queue, spec, launch, token=f"scopes-{seed}-{len(home):04d}")
            ledger.expect(sweep_id, "COMPLETED", total=total, max_concurrent=launch.get("max_concurrent"))
            home[sweep_id] = ns
        if home and rng.random() < 0.15:  # a cancel sent to the other deployment's queue: refused
            sweep_id = rng.choice(sorted(home))
            crossed += 1
            deps[{"team-a": "team-b", "team-b": "team-a"}[home[sweep_id]]].queue.send(
                encode_cancel(sweep_id=sweep_id, requested_by="the other team"))
        if home and rng.random() < 0.04:  # a cancel sent where it belongs
            sweep_id = rng.choice(sorted(home))
            deps[home[sweep_id]].queue.send(encode_cancel(sweep_id=sweep_id, requested_by="its owner"))
            ledger.expect(sweep_id, "TERMINAL")
            cancels += 1
        for ns in rng.sample(sorted(deps), 2):  # each tick a fresh process (CronJob)
            report = deps[ns].fresh(owner=f"{ns}-{step}").tick()
            refused += sum("refused" in e for e in report.errors)
            ticks += 1
            ledger.observe()
        advance_cluster(kube, rng)
        clock.advance(20)
        if len(home) == 8 and not deps["team-a"].store.active_sweeps() and not any(_queued(d.queue) for d in deps.values()):
            break
    else:
        pytest.fail(f"seed {seed}: sweeps still active")
    # every job ran in the namespace of the deployment that accepted its sweep
    for ns in deps:
        for obj in kube.list_objects(KIND, ns):
            assert home[labels_of(obj)[LABEL_SWEEP_ID]] == ns, obj["metadata"]["name"]
    _report("two scopes", seed, ledger, deps["team-a"].store, ticks=ticks, cancels_sent_to_the_wrong_queue=crossed,
            refused_while_active=refused, cancels=cancels)


# -- 2 ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_template_kind_observed_from_the_stored_sweeps(atomic_aws, kube, ledger, seed: int) -> None:
    rng, clock = random.Random(seed), Clock(start=time.time())
    kube.install(JOBSET)
    kube.install(RAYJOBS)
    policy = Policy.from_data({"templates": {"jobset": {"manifest": JOBSET_TEMPLATE}}})
    d = deployment(atomic_aws, kube, clock, backend=KIND, kinds=f"{KIND},template",
                   template_resources="rayjobs.ray.io/v1", max_running=4, policy=policy)
    narrowed = dataclasses.replace(d.settings, template_resources=("rayjobs.ray.io/v1",))
    ledger.cap = 4
    submitted, templated, narrowed_ticks = 0, 0, 0
    for _ in range(300):
        if submitted < 8 and rng.random() < 0.5:
            spec, launch, total = random_sweep(rng, submitted)
            if rng.random() < 0.6:
                launch.update(kind="template", template="jobset")
                templated += 1
            sweep_id = submit(d.queue, spec, launch, token=f"template-{seed}-{submitted:04d}")
            ledger.expect(sweep_id, "COMPLETED", total=total, max_concurrent=launch.get("max_concurrent"))
            submitted += 1
        # once everything is accepted, most ticks run with the JobSet template gone from the policy
        # (and its resource from the settings): they launch no template trial, but observe every job
        quiet = submitted == 8 and not _queued(d.queue)
        use_narrowed = quiet and rng.random() < 0.7
        narrowed_ticks += use_narrowed
        report = d.fresh(settings=narrowed if use_narrowed else None,
                         policy=Policy.default() if use_narrowed else None).tick()
        assert report.rejected == 0, report
        ledger.observe()
        advance_cluster(kube, rng)
        _advance_jobsets(kube, rng)
        clock.advance(20)
        if quiet and not d.store.active_sweeps():
            break
    else:
        pytest.fail(f"seed {seed}: sweeps still active")
    lost = [a for s in ledger.expected for t in d.store.trials(s) for a in t.get("attempts") or []
            if a.get("outcome") == "LOST"]
    assert lost == [], lost  # the cluster lost nothing: a LOST would be a job the tick did not list
    _report("template", seed, ledger, d.store, template_sweeps=templated, ticks_without_jobset_in_settings=narrowed_ticks)


# -- 3 ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_kind_removed_mid_sweep_and_restored(atomic_aws, kube, ledger, seed: int) -> None:
    rng, clock = random.Random(seed), Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, kinds=f"{KIND},job", max_running=4)
    without_job = dataclasses.replace(d.settings, kinds=(KIND,))
    ledger.cap = 4
    submitted, job_enabled, off_ticks, held, cancels = 0, True, 0, 0, 0
    ids: list[str] = []
    for step in range(300):
        submitted_now = False
        if submitted < 8 and rng.random() < 0.5:
            spec, launch, total = random_sweep(rng, submitted)
            if rng.random() < 0.5:
                launch["kind"] = "job"
            sweep_id = submit(d.queue, spec, launch, token=f"kinds-{seed}-{submitted:04d}")
            ledger.expect(sweep_id, "COMPLETED", total=total, max_concurrent=launch.get("max_concurrent"))
            ids.append(sweep_id)
            submitted += 1
            submitted_now = True
        if ids and rng.random() < 0.04:
            sweep_id = rng.choice(ids)
            d.queue.send(encode_cancel(sweep_id=sweep_id, requested_by="owner"))
            ledger.expect(sweep_id, "TERMINAL")
            cancels += 1
        if step > 150:
            job_enabled = True
        elif 4 <= step < 16:
            job_enabled = False  # one sure window with `job` removed; random ones after it
        elif rng.random() < 0.15:
            job_enabled = not job_enabled
        # a tick that takes a new submission runs with `job` enabled: while it is removed, a job
        # sweep would be rejected (correctly, but this scenario is about sweeps already running)
        enabled = job_enabled or submitted_now
        report = d.fresh(settings=None if enabled else without_job).tick()
        assert report.rejected == 0, report
        off_ticks += not enabled
        held += len(report.held)
        ledger.observe()
        advance_cluster(kube, rng)
        _advance_batch_jobs(kube, rng)
        clock.advance(20)
        if submitted == 8 and job_enabled and not _queued(d.queue) and not d.store.active_sweeps():
            break
    else:
        pytest.fail(f"seed {seed}: sweeps still active: {[(m['sweep_id'], m.get('live')) for m in d.store.active_sweeps()]}")
    lost = [a for s in ids for t in d.store.trials(s) for a in t.get("attempts") or [] if a.get("outcome") == "LOST"]
    assert lost == [], lost
    _report("kind removed", seed, ledger, d.store, ticks_without_kind_job=off_ticks, held_sweep_ticks=held,
            cancels=cancels)


# -- 4 ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_lease_lost_between_claim_and_create_then_a_cancel(atomic_aws, kube, seed: int) -> None:
    rng, clock = random.Random(seed), Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=2)
    ledger = Ledger(kube, cap=None)  # a create that lands late is unfenced: caps are checked after each tick
    monkeypatch = pytest.MonkeyPatch()
    ledger.install(monkeypatch)
    late = withdrawn = deleted_by_check = cancelled = 0
    try:
        for episode in range(6):
            sweep_id = submit(d.queue, grid_spec(f"late{episode}", 1, rng.randint(1, 2)), {"max_retries": 1},
                              token=f"late-{seed}-{episode:04d}")
            dies, cancel = rng.random() < 0.5, rng.random() < 0.7
            ledger.expect(sweep_id, "CANCELLED" if cancel else "COMPLETED")
            pausing = PausingBackend(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"),
                                     die_after_create=dies)
            a, b = d.fresh(owner=f"A{episode}", backends={KIND: pausing}), d.fresh(owner=f"B{episode}")
            result: dict[str, Any] = {}

            def run_a(a: Any = a, result: dict[str, Any] = result) -> None:
                try:
                    result["report"] = a.tick()
                except Crash:
                    result["died"] = True  # no cleanup, like a SIGKILL

            thread = threading.Thread(target=run_a)
            thread.start()
            assert pausing.paused.wait(30)
            clock.advance(d.settings.lease_seconds * 1.2)  # A's lease expires past the skew margin
            if cancel:
                d.queue.send(encode_cancel(sweep_id=sweep_id, requested_by="owner"))
                cancelled += 1
            b.tick()
            pausing.resume.set()
            thread.join(30)
            withdrawn += result["report"].leaked if "report" in result else 0
            late += bool(pausing.submits)
            for _ in range(8):
                report = b.tick()
                deleted_by_check += report.leaked
                ledger.cap = 2  # the caps hold after every tick (a late create is unfenced in between)
                ledger.observe()
                ledger.cap = None
                advance_cluster(kube, rng, fail_p=0.0)
                clock.advance(20)
                if not d.store.active_sweeps():
                    break
        _report("lease lost + cancel", seed, ledger, d.store, late_creates=late, cancelled=cancelled,
                withdrawn_by_the_late_tick=withdrawn, deleted_by_the_next_tick=deleted_by_check)
    finally:
        monkeypatch.undo()


# -- 5 ------------------------------------------------------------------------------------------

POISON_NUMBERS = ["1e999", str(10**40), "-1e999", "1e308", str(2**63), "-1", "0", "1.5"]
POISON_SETS = [pytest.param(POISON_NUMBERS[:2], id="inf-and-1e40"),
               pytest.param(POISON_NUMBERS, id="every-value", marks=pytest.mark.soak)]
SPEC_FIELDS = ["run_cap", "parameters.lr.min", "parameters.lr.max", "parameters.bs.values[0]",
               "parameters.q.q", "parameters.n.mu", "parameters.n.sigma", "parameters.c.probabilities[0]"]
LAUNCH_FIELDS = ["gpus_per_node", "nproc_per_node", "min_nodes", "max_nodes", "max_concurrent", "max_retries",
                 "max_restarts", "max_failed_trials", "max_runtime", "start_timeout", "priority"]
PLACEHOLDER = "\"@POISON@\""


def _poison_body(field: str, number: str, token: str) -> tuple[str, str]:
    spec: dict[str, Any] = {
        "name": "poison", "method": "random", "run_cap": 1, "program": "train.py",
        "parameters": {"lr": {"min": 0.001, "max": 0.1}, "bs": {"values": [16, 32]},
                       "q": {"distribution": "q_uniform", "min": 0, "max": 10, "q": 2},
                       "n": {"distribution": "normal", "mu": 0, "sigma": 1},
                       "c": {"values": ["a", "b"], "probabilities": [0.5, 0.5]}},
    }
    launch: dict[str, Any] = {}
    target, path = (launch, field) if field in LAUNCH_FIELDS else (spec, field)
    *parents, leaf = path.replace("[0]", ".0").split(".")
    for part in parents:
        target = target[part]
    if leaf == "0":
        target[0] = "@POISON@"
    else:
        target[leaf] = "@POISON@"
    sweep_id = sweep_id_for("poison", token)
    body = json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id, "token": token, "spec": spec,
                       "launch": launch, "submitter": "raw", "submitted_at": "2026-01-01T00:00:00Z"})
    return sweep_id, body.replace(PLACEHOLDER, number)


@pytest.mark.slow
@pytest.mark.parametrize("numbers", POISON_SETS)
def test_a_poison_value_in_each_numeric_field_beside_good_sweeps(atomic_aws, kube, ledger, numbers: list[str]) -> None:
    rng, clock = random.Random(5), Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=10)
    ledger.cap = 10
    cases = [(f, n) for f in SPEC_FIELDS + LAUNCH_FIELDS for n in numbers]
    rng.shuffle(cases)
    poison: dict[str, tuple[str, str]] = {}
    for i, (field, number) in enumerate(cases):
        if i % 15 == 0:
            good = submit(d.queue, grid_spec(f"good{i}", 1, 2))
            ledger.expect(good, "COMPLETED", total=2)
        sweep_id, body = _poison_body(field, number, f"poison-token-{i:04d}")
        d.queue.send(body)
        ledger.expect(sweep_id, "TERMINAL")
        poison[sweep_id] = (field, number)
    dispatcher = d.fresh()
    for _ in range(80):
        report = dispatcher.tick()  # never raises, never leaves the lease held
        assert report.lease == "held" and report.dead_letters == 0, report
        ledger.observe()
        advance_cluster(kube, rng, fail_p=0.0)
        clock.advance(30)
        if not _queued(d.queue) and not d.store.active_sweeps():
            break
    else:
        pytest.fail("poison sweeps still active")
    outcomes: dict[str, int] = {}
    unplanned = []
    for sweep_id, (field, number) in poison.items():
        meta = d.store.get_sweep(sweep_id)
        outcomes[meta["state"]] = outcomes.get(meta["state"], 0) + 1
        if meta["state"] == "REJECTED":
            assert readable(meta["reason"]), meta["reason"]
            if "could not be validated" in meta["reason"]:
                unplanned.append(f"{field}={number}: {meta['reason'][:120]}")
    _report("poison numbers", 5, ledger, d.store, bodies=len(poison), outcomes=outcomes,
            rejected_by_the_catch_all=len(unplanned))
    print("\n".join(["  caught only by the catch-all (a validation gap):"] + unplanned) if unplanned else "")


# -- 6 ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_one_sweep_whose_every_write_fails_unexpectedly(atomic_aws, kube, ledger, seed: int) -> None:
    rng, clock = random.Random(seed), Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=4)
    ledger.cap = 4
    bad = submit(d.queue, grid_spec("bad", 2, 2), submitted_at="2026-01-01T00:00:00.000Z", token=f"bad-sweep-{seed:04d}")
    ledger.expect(bad, "COMPLETED", total=4)
    d.fresh().tick()  # stored (and possibly launched) before its writes start failing
    faulty = boto3.session.Session(region_name="us-east-1")
    hook = writes_of(bad, RuntimeError("injected: unexpected"))
    faulty.events.register("before-parameter-build.dynamodb.TransactWriteItems", hook)
    submitted, failing_ticks, ticks = 0, 0, 0
    for step in range(300):
        if submitted < 6 and rng.random() < 0.5:
            spec, launch, total = random_sweep(rng, submitted)
            sweep_id = submit(d.queue, spec, launch, token=f"good-{seed}-{submitted:04d}")
            ledger.expect(sweep_id, "COMPLETED", total=total, max_concurrent=launch.get("max_concurrent"))
            submitted += 1
        if step == 60:
            hook.armed[0] = False  # its item takes writes again
        report = d.fresh(owner=f"d{step}", session=faulty).tick()
        assert report.lease == "held", report  # every earlier tick released the lease
        failing_ticks += any(bad in e for e in report.errors)
        ticks += 1
        ledger.observe()
        advance_cluster(kube, rng)
        clock.advance(20)
        if step > 60 and submitted == 6 and not _queued(d.queue) and not d.store.active_sweeps():
            break
    else:
        pytest.fail(f"seed {seed}: sweeps still active")
    _report("every write fails", seed, ledger, d.store, ticks=ticks, ticks_reporting_the_bad_sweep=failing_ticks)


# -- 1b: the same through the public contract -------------------------------------------------

@pytest.mark.slow
@pytest.mark.soak
def test_two_deployments_through_producer_and_dispatcher_tick(serial_moto_server, kube, ledger, tmp_path) -> None:
    from procs import run_producer, run_tick, server_stack
    from sweepworld import subprocess_env

    from dispatcher.adapters.queue import create_queues

    # GIVEN two deployments on one table, each its own queue and namespace, as processes
    stack = server_stack(serial_moto_server, kube, tmp_path, cap=2)
    urls = {"team-a": stack.queue.url, "team-b": create_queues(stack.sqs, stack.store.table + "-b")[0]}
    envs = {ns: subprocess_env(endpoint=stack.endpoint, queue_url=url, table=stack.store.table,
                               kubeconfig=stack.kubeconfig, cap=2, extra={"SWEEPQ_NAMESPACE": ns})
            for ns, url in urls.items()}
    ledger.namespace_caps = {"team-a": 2, "team-b": 2}
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("name: pair\nmethod: grid\nprogram: train.py\nparameters:\n  lr: {values: [0.1, 0.01, 0.001]}\n")
    home = {}
    for ns, env in envs.items():
        produced = run_producer(env, "submit", str(sweep_file), "-o", "json")
        assert produced.returncode == 0, produced.stderr
        home[json.loads(produced.stdout)["sweep_id"]] = ns
    for sweep_id in home:
        ledger.expect(sweep_id, "COMPLETED", total=3)
    alpha = next(s for s, ns in home.items() if ns == "team-a")
    # AND team-b's producer asks to cancel team-a's sweep
    assert run_producer(envs["team-b"], "cancel", alpha).returncode == 0
    # WHEN both dispatchers tick (`dispatcher tick`, each run a new process) while jobs succeed
    for _ in range(10):
        for env in envs.values():
            done = run_tick(env)
            assert done.returncode in (0, 1), done.stderr[-2000:]
        ledger.observe()
        for ns in envs:
            for obj in kube.list_objects(KIND, ns):
                if not is_terminal(obj):
                    kube.set_job_phase(KIND, obj["metadata"]["name"], JobPhase.SUCCEEDED, namespace=ns)
        if all(stack.store.get_sweep(s)["state"] == "COMPLETED" for s in home):
            break
    # THEN both completed in their own namespaces, the cross-team cancel changed nothing
    for ns in envs:
        assert {labels_of(o)[LABEL_SWEEP_ID] for o in kube.list_objects(KIND, ns)} == \
            {s for s, h in home.items() if h == ns}
    figures = ledger.check_final(stack.store)
    ledger.assert_ok(figures)
    print(f"\nshapes two deployments as processes: {figures.line()}")
