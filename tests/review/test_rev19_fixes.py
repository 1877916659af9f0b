"""rev19 — adversarial review of the last three commits: the rev18 fixes (hyperband counts every
RUNNING trial, stops only stoppable ones; bayes overlays the tick's pending transitions and reads
unsummarised ended trials' histories; ``reached`` bounded) and the spec cache sized to the active
sweeps (``SpecCache.hold``).

A failing test is a finding (see the rev19 report); a passing one, marked "Guard", is a property
checked that holds.
"""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).parents[2]


# --------------------------------------------------------------------------- the spec cache


def _dispatcher_lambda_memory_bytes() -> int:
    """``MemorySize`` (MB) of the tick's Lambda in the shipped stack (infra/aws/sweepq.yaml)."""
    text = (ROOT / "infra" / "aws" / "sweepq.yaml").read_text()
    at = text.index("Handler: dispatcher.lambda_handler.handler")
    memory = re.search(r"MemorySize:\s*(\d+)", text[at:at + 2000])
    assert memory is not None
    return int(memory.group(1)) * 1024 * 1024


def _largest_accepted_spec() -> dict[str, Any]:
    """A sweep file just under the intake's limit (yamlsafe.MAX_SPEC_BYTES): four long value lists."""
    from dispatcher.core.yamlsafe import MAX_SPEC_BYTES

    def spec(n: int) -> dict[str, Any]:
        return {"name": "big", "method": "random", "run_cap": 50, "program": "train.py",
                "metric": {"name": "loss", "goal": "minimize"},
                "parameters": {f"p{k}": {"values": [i * 1.0 for i in range(n)]} for k in range(4)}}

    n = 1
    while len(json.dumps(spec(n + 500))) <= MAX_SPEC_BYTES:
        n += 500
    return spec(n)


@pytest.mark.xfail(strict=True, reason="rev19 finding 2, open (issue 16): SpecCache.hold is bounded by count, not bytes")
def test_rev19_the_spec_cache_sized_to_the_active_sweeps_fits_the_dispatcher_lambdas_memory():
    """trials.py ``SpecCache.hold`` (commit 9e63439): the cache now keeps ``active + 25 %`` specs,
    up to 20,000, on the premise "a parsed spec is a few KB". Nothing bounds it by size: a sweep
    file the intake accepts may be 192 KB (yamlsafe.MAX_SPEC_BYTES), and the cache keeps its parsed
    ``Sweep`` *and* the raw dict it was parsed from (``sweep.raw``) — ~0.8 MB each, measured here.
    The tick runs in a Lambda of ``MemorySize: 512`` (infra/aws/sweepq.yaml). The old fixed 512
    specs stayed under it (~400 MB at worst); sized to 1,000 active sweeps the cache holds 1,250,
    ~1 GB: with enough large sweep files active, every tick is killed for memory part-way (the
    dispatcher makes no progress for anyone until sweeps end) — where before it only re-read specs.
    Property: whatever the active sweeps, the specs the cache may keep fit the tick's memory."""
    from dispatcher.core.spec import validate_sweep
    from dispatcher.trials import SpecCache

    text = json.dumps(_largest_accepted_spec())
    tracemalloc.start()
    try:
        kept = [validate_sweep(json.loads(text), source="x", max_grid_size=2**62) for _ in range(4)]
        per_spec = tracemalloc.get_traced_memory()[0] / len(kept)
    finally:
        tracemalloc.stop()
    del kept
    # how many specs the cache keeps after the tick's hold(len(records)) at 1,000 active sweeps
    cache = SpecCache(lambda sid: {"id": sid})
    cache.hold(1000)
    import dispatcher.trials as trials

    real = trials.validate_sweep
    trials.validate_sweep = lambda raw, **_kw: raw  # cheap stand-in: only the cache's count matters here
    try:
        for i in range(2000):
            cache.get(f"s{i}")
    finally:
        trials.validate_sweep = real
    capacity = len(cache._items)
    memory = _dispatcher_lambda_memory_bytes()
    assert capacity * per_spec < memory, (
        f"the cache keeps {capacity} specs at 1,000 active sweeps; a largest accepted spec parsed is "
        f"{per_spec / 1e6:.2f} MB, so up to {capacity * per_spec / 2**20:,.0f} MiB — the tick's Lambda has "
        f"{memory // 2**20} MiB")


@pytest.mark.xfail(strict=True, reason="rev19 finding 3, open (issue 16): an LRU cycled past MAX_SIZE hits nothing")
def test_rev19_above_max_size_the_spec_cache_still_serves_the_specs_it_holds():
    """trials.py ``SpecCache.hold``: capped at ``MAX_SIZE`` (20,000). The commit's own reasoning —
    "a 512-spec LRU visited in order evicts each spec before its next use" — applies unchanged past
    the cap: every tick visits the active sweeps in the same order (load_active), and an LRU of
    20,000 cycled over 20,001+ keys hits *nothing*. At 20,500 active sweeps each tick reads every
    one of the 20,500 specs (GetItem + parse), not the 500 it cannot keep: the cost falls off a cliff
    at the cap instead of growing with the excess. Property: over a tick's in-order visit, the
    cache serves at least as many specs as it holds (here ≥ 20,000 of 20,500)."""
    import dispatcher.trials as trials
    from dispatcher.trials import SpecCache

    loads = []

    def loader(sid: str) -> dict[str, Any]:
        loads.append(sid)
        return {"id": sid}

    real = trials.validate_sweep
    trials.validate_sweep = lambda raw, **_kw: raw  # cheap stand-in: the cache's policy is under test
    try:
        cache = SpecCache(loader)
        active = [f"s{i}" for i in range(SpecCache.MAX_SIZE + 500)]
        for _ in range(2):  # two ticks
            cache.hold(len(active))
            before = len(loads)
            for sid in active:
                cache.get(sid)
        reloaded = len(loads) - before
    finally:
        trials.validate_sweep = real
    assert reloaded <= len(active) - SpecCache.MAX_SIZE, (
        f"the second tick loaded {reloaded:,} of {len(active):,} specs again (it can keep {SpecCache.MAX_SIZE:,})")


def test_rev19_guard_hold_sizes_the_cache_so_a_quiet_tick_reads_no_spec_again():
    """Guard. trials.py ``SpecCache.hold`` below the cap: at 2,000 active sweeps visited in order,
    the second tick loads no spec (the commit's 2,000 GetItem per quiet tick are gone)."""
    import dispatcher.trials as trials
    from dispatcher.trials import SpecCache

    loads = []
    real = trials.validate_sweep
    trials.validate_sweep = lambda raw, **_kw: raw
    try:
        cache = SpecCache(lambda sid: loads.append(sid) or {"id": sid})
        active = [f"s{i}" for i in range(2000)]
        for _ in range(2):
            cache.hold(len(active))
            before = len(loads)
            for sid in active:
                cache.get(sid)
    finally:
        trials.validate_sweep = real
    assert len(loads) - before == 0


# --------------------------------------------------------------------------- bayes: overlay and ended histories


def _bayes_host(impute: str = "latest") -> Any:
    pytest.importorskip("sweeps")
    from test_rev14_bayes_impute import bayes

    return bayes({"impute": impute})


def _item(job: str, attempt: int, losses: list[float], status: str = "failed") -> Any:
    from test_rev14_bayes_impute import METRIC

    from dispatcher.core.metrics import MetricsItem

    return MetricsItem(pod=f"{job}-worker-0", job=job, attempt=attempt, status=status, updated_at=1.0,
                       metrics={METRIC: losses[-1]}, history={p: {METRIC: v} for p, v in enumerate(losses)})


def test_rev19_guard_the_overlay_fits_the_attempt_that_ended_not_an_earlier_one():
    """Guard. suggesting.py ``observations(pending=...)``: trial 2's attempt 2 failed this tick
    (its transition pending, its end read unserved: no summary); its trial item still names attempt
    1's job. The overlay takes the attempt from the transition, and ``_ended_histories`` reads
    attempt 2's metrics item — its history [5.0, 4.0] is fitted (``impute: latest`` → 4.0), not
    attempt 1's [0.1]."""
    sweep = _bayes_host("latest")
    from test_rev14_bayes_impute import METRIC, SID, Host, Metrics, config_y, item, wandb_y
    from test_rev14_bayes_impute import _run as as_run

    from dispatcher.core.changes import TrialTransition
    from dispatcher.core.identity import job_name

    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 1.0}), item(1, "SUCCEEDED", 0.5, {METRIC: 2.0}),
             item(2, "RUNNING", 0.9)]
    items[0]["metric_summary"] = '{"latest":1.0,"max":1.0,"metric":"eval/loss","min":1.0,"n":1,"summary":1.0}'
    items[1]["metric_summary"] = '{"latest":2.0,"max":2.0,"metric":"eval/loss","min":2.0,"n":1,"summary":2.0}'
    for one in items:
        one["job"], one["attempt"] = job_name(SID, one["index"], 1), 1
    a1, a2 = job_name(SID, 2, 1), job_name(SID, 2, 2)
    metrics = Metrics({a1: _item(a1, 1, [0.1]), a2: _item(a2, 2, [5.0, 4.0])})
    done = TrialTransition(2, 2, None, "FAILED", counter="failed")
    record = SimpleNamespace(sweep_id=SID, live={}, metric_name=METRIC, kind="pytorchjob")
    observations = Host(sweep, items, metrics).observations(record, pending=[done])
    got = config_y(sweep, [as_run(o, METRIC) for o in sorted(observations, key=lambda o: o.index)])
    expected = wandb_y(sweep, [("finished", 0.1, [1.0], {METRIC: 1.0}), ("finished", 0.5, [2.0], {METRIC: 2.0}),
                               ("failed", 0.9, [5.0, 4.0], {METRIC: 4.0})])
    assert got == pytest.approx(expected)
    assert metrics.reads == [[("pytorchjob", a2, 2)]]



def _summarise_first_and_name_jobs(items: list[dict[str, Any]]) -> str:
    """Trial 0 succeeded at 1.0 with its summary; every item names its attempt-1 job. Returns
    trial 1's job name."""
    from test_rev14_bayes_impute import SID

    from dispatcher.core.identity import job_name

    items[0]["metric_summary"] = '{"latest":1.0,"max":1.0,"metric":"eval/loss","min":1.0,"n":1,"summary":1.0}'
    for one in items:
        one["job"], one["attempt"] = job_name(SID, one["index"], 1), 1
    return job_name(SID, 1, 1)


def test_rev19_guard_a_pending_waiting_retry_is_observed_as_pending_and_nothing_is_read():
    """Guard. suggesting.py: a pending transition that keeps the trial live (attempt 1 failed,
    WAITING for its retry) is not an end: the trial is observed from ``record.live`` (pending,
    fantasised by the engine, not fitted) and no metrics item is read for it."""
    sweep = _bayes_host("latest")
    from test_rev14_bayes_impute import METRIC, SID, Host, Metrics, item

    from dispatcher.core.changes import TrialTransition
    from dispatcher.core.records import LiveTrial, TrialState

    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 1.0}), item(1, "RUNNING", 0.9)]
    a1 = _summarise_first_and_name_jobs(items)
    metrics = Metrics({a1: _item(a1, 1, [5.0, 4.0])})
    waiting = LiveTrial(index=1, attempt=1, state=TrialState.WAITING, job_name=a1)
    change = TrialTransition(1, 1, {"state": "WAITING"}, "WAITING")
    record = SimpleNamespace(sweep_id=SID, live={1: waiting}, metric_name=METRIC, kind="pytorchjob")
    observations = {o.index: o for o in Host(sweep, items, metrics).observations(record, pending=[change])}
    assert observations[1].outcome not in ("finished", "failed", "crashed", "killed")
    assert observations[1].metric is None and not observations[1].history
    assert metrics.reads == []


@pytest.mark.xfail(strict=True, reason="rev19 finding 4, open (issue 14): the summary built from a late read is not kept on the trial item")
def test_rev19_an_unsummarised_ended_trial_is_read_again_on_every_suggestion_and_its_fit_moves():
    """suggesting.py ``_ended_histories`` (rev18 finding 3's fix): an ended trial with no summary
    (its end read was unserved, or it ended before summaries existed) has its metrics item read
    "one batched read, only then" — but what is read is never kept: the trial item still has no
    summary, so *every* later suggestion of the sweep reads it again (a BatchGetItem per 100 such
    trials, a Query each for kinds without a predictable pod, for as long as the sweep runs), and
    each read sees the item as it is *now*. history.py's contract ("keeps a small summary ... as it
    last read it ... and never reads that trial's metrics item again") and early_stop.py's ("nothing
    its pod writes after the end moves another trial's fate") do not hold for these trials: a
    cancelled trial whose pod flushed one more value in its SIGTERM grace (0.01, its best) is fitted
    at 4.0 by one suggestion and at 0.01 by the next — the GP's view of an ended run changes after
    it ended. Property: an ended trial's metrics item is read at most once, and its fit is fixed."""
    sweep = _bayes_host("latest")
    from test_rev14_bayes_impute import METRIC, SID, Host, Metrics, config_y, item
    from test_rev14_bayes_impute import _run as as_run


    items = [item(0, "SUCCEEDED", 0.1, {METRIC: 1.0}), item(1, "CANCELLED", 0.9)]
    a1 = _summarise_first_and_name_jobs(items)
    metrics = Metrics({a1: _item(a1, 1, [5.0, 4.0], status="stopping")})
    host = Host(sweep, items, metrics)
    record = SimpleNamespace(sweep_id=SID, live={}, metric_name=METRIC, kind="pytorchjob")

    def y() -> list[float]:
        return config_y(sweep, [as_run(o, METRIC) for o in sorted(host.observations(record), key=lambda o: o.index)])

    first = y()
    metrics.items[a1] = _item(a1, 1, [5.0, 4.0, 0.01], status="stopping")  # a late flush after the end
    second = y()
    assert len(metrics.reads) <= 1 and second == pytest.approx(first), (
        f"{len(metrics.reads)} reads of the ended trial's item in two suggestions; fitted at {first} then {second}")


def test_rev19_guard_an_unserved_read_of_ended_histories_defers_the_suggestion():
    """Guard. suggesting.py ``_ended_histories``: a read DynamoDB left unprocessed raises
    TransientError (the sweep suggests next tick), never fits the trial on nothing."""
    sweep = _bayes_host("latest")
    from test_rev14_bayes_impute import METRIC, SID, Host, item

    from dispatcher.adapters.metrics import MetricsRead
    from dispatcher.core.errors import TransientError
    from dispatcher.core.identity import job_name

    items = [item(0, "FAILED", 0.1)]
    items[0]["job"], items[0]["attempt"] = job_name(SID, 0, 1), 1

    class Unread:
        def read(self, refs: Any, *, template_patterns: Any = None) -> MetricsRead:
            return MetricsRead(unread=tuple(job for _, job, _ in refs))

    host = Host(sweep, items)
    host.metrics = Unread()
    record = SimpleNamespace(sweep_id=SID, live={}, metric_name=METRIC, kind="pytorchjob")
    with pytest.raises(TransientError):
        host.observations(record)


# --------------------------------------------------------------------------- early stop: what it reached


def test_rev19_guard_what_a_stopped_trial_reached_is_bounded_and_storable_whatever_its_pod_wrote():
    """Guard. early_stop.py ``reached`` (core.metrics.recorded): a hostile or diverged item — 4,000
    names, names of 255 characters, the largest and smallest numbers DynamoDB holds, a 38-digit
    int, NaN — gives at most MAX_RECORDED names, the sweep metric first, all storable again."""
    from decimal import Decimal

    from dispatcher.adapters.dynamo import from_dynamo, unstorable
    from dispatcher.core.metrics import MAX_RECORDED, MetricsItem
    from dispatcher.early_stop import reached

    values: dict[str, Any] = {f"m{i:04d}": float(i) for i in range(4000)}
    values.update({"x" * 255: 1.0, "big": from_dynamo(Decimal("9.9999999999999999999999999999999999999E+125")),
                   "int38": int("9" * 38), "int39": from_dynamo(Decimal("3.4028234663852886E+38")),
                   "tiny": from_dynamo(Decimal("1E-130")), "nan": None, "zz/loss": 0.5})
    item = MetricsItem(pod="p-worker-0", job="p", attempt=1, status="running", updated_at=1.0, metrics=values,
                       history={})
    got = reached(item, "zz/loss")
    assert len(got) <= MAX_RECORDED and next(iter(got)) == "zz/loss" and "nan" not in got
    assert not unstorable({"metrics": got}), unstorable({"metrics": got})


# --------------------------------------------------------------------------- early stop: thresholds


def _hb_world(aws: Any, kube: Any, n: int) -> tuple[Any, str, Any, dict[str, Any]]:
    pytest.importorskip("sweeps")
    from test_rev18_history import _hb_world as world

    return world(aws, kube, n)


@pytest.mark.xfail(strict=True, reason="rev19 finding 1, open (issue 14): a WAITING (or LOST) trial's history is left out of the hyperband thresholds")
def test_rev19_a_trial_waiting_for_its_retry_still_counts_in_the_hyperband_thresholds(aws, kube):
    """early_stop.py (rev18 finding 1's fix): "every RUNNING trial counts in the thresholds" and the
    ended ones by their stored bands — a trial WAITING for its retry is neither (nor, its retry claimed
    the same tick, PENDING/LAUNCHED, until attempt 2 runs and reports again): attempt 1 crashed
    (OOM-killed, say) after reporting [1.0, 0.9], reconcile moved it to WAITING in this very tick
    (``max_retries`` 2, the default), and its history is left out of every band. W&B's engine counts
    every run with a history whatever its state (``hyperband_stopping``: all runs' histories form
    the thresholds), and the crashed run is still there — with the same WANDB_RUN_ID (the trial id)
    for every attempt, W&B holds one run for the trial. Here leaving it out lowers the band-2
    threshold from 0.3 to 0.2 and trial 3 (0.3), which W&B keeps, is deleted: EARLY_STOPPED for
    good, because another trial crashed. The window is not one tick: the trial's history
    ("over the trial's whole life", trainer/channel.py) is back only when attempt 2 runs and
    reports — after its retry backoff and however long the retry queues (PENDING behind Kueue);
    a LOST trial (its job vanished, in its grace) is left out the same way. Same root as rev18
    finding 1 (a live trial that is not RUNNING is in neither list)."""
    from test_rev18_history import _wandb_stops

    from dispatcher.core.jobs import JobPhase

    w, sid, d, spec = _hb_world(aws, kube, 4)
    for index, loss in ((0, 0.1), (1, 0.9), (2, 0.2), (3, 0.3)):
        w.write(sid, index, [1.0, loss])
    w.kube.set_job_phase("pytorchjob", f"{sid}-1-a1", JobPhase.FAILED)
    assert _wandb_stops(spec, [("running", [1.0, 0.1]), ("crashed", [1.0, 0.9]), ("running", [1.0, 0.2]),
                               ("running", [1.0, 0.3])]) == set()
    w.clock.advance(30)
    report = d.tick()
    live = w.store.get_sweep(sid).get("live") or {}
    assert w.store.get_trial(sid, 1)["state"] not in ("FAILED", "EARLY_STOPPED"), (w.store.get_trial(sid, 1), live)
    stopped = {i for i in range(4) if w.store.get_trial(sid, i)["state"] == "EARLY_STOPPED"}
    assert not stopped, (f"trials {sorted(stopped)} early-stopped on thresholds without trial 1 (attempt 1 "
                         f"crashed, retry pending); W&B stops none. {w.store.get_trial(sid, 3).get('reason')}; "
                         f"errors {report.errors}")


def test_rev19_guard_a_template_sweeps_unsummarised_ended_trials_are_read_by_the_policys_pod_pattern():
    """Guard. suggesting.py ``_ended_histories`` for kind ``template``: the ended trial's item is
    read under the operator policy's pod pattern (``template_pods``), as every other reader; with
    no pattern in the policy nothing is read (no pod of the template is trusted)."""
    sweep = _bayes_host("latest")
    from test_rev14_bayes_impute import METRIC, SID, Host, Metrics, item

    from dispatcher.core.identity import job_name

    items = [item(0, "FAILED", 0.1)]
    job = job_name(SID, 0, 1)
    items[0]["job"], items[0]["attempt"] = job, 1
    seen: list[Any] = []

    class Reader(Metrics):
        def read(self, refs: Any, *, template_patterns: Any = None) -> Any:
            seen.append(dict(template_patterns or {}))
            return super().read(refs)

    record = SimpleNamespace(sweep_id=SID, live={}, metric_name=METRIC, kind="template",
                             launch=SimpleNamespace(template="jobset"))
    host = Host(sweep, items, Reader({job: _item(job, 1, [5.0, 4.0])}))
    host.template_pods = lambda _record: "w-[0-9]+-[0-9]+-[a-z0-9]{5}"
    (obs,) = host.observations(record)
    assert seen == [{job: "w-[0-9]+-[0-9]+-[a-z0-9]{5}"}] and obs.history and obs.history[-1] == 4.0
    seen.clear()
    host.template_pods = lambda _record: None
    host.observations(record)
    assert seen == []


def test_rev19_guard_a_quiet_hyperband_tick_reads_no_trial_items(aws, kube):
    """Guard. early_stop.py: a hyperband sweep none of whose stoppable trials reached the first band
    costs one batched metrics read per tick and no Query of its trial items (nor a commit)."""
    w, sid, d, _ = _hb_world(aws, kube, 3)
    for index in range(3):
        w.write(sid, index, [1.0])  # band 2 not reached by anyone
    queried: list[str] = []
    real = d.store.trials
    d.store.trials = lambda sweep_id: queried.append(sweep_id) or real(sweep_id)
    w.clock.advance(30)
    report = d.tick()
    assert not report.errors and report.early_stopped == 0
    assert queried == [], queried


# --------------------------------------------------------------------------- bayes: the tick


def test_rev19_guard_in_the_tick_a_trial_fails_the_next_suggestion_fits_its_history(aws, kube):
    """Guard. The tick end to end (rev18 findings 3 and 4's fixes together): trial 0 succeeds
    (1.0); trial 1 fails for good (``max_retries: 0``) after reporting [4.0, 3.0], and in that same
    tick its slot is refilled. The suggestion for trial 2 is W&B's engine's on a failed run with
    that history (``impute: latest`` → 3.0), not on a run still pending nor on one with nothing."""
    pytest.importorskip("sweeps")
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from test_bayes_tick import World, bayes_spec
    from test_rev14_hyperband_tick import raw_item

    from dispatcher.adapters.dynamo import ser
    from dispatcher.core.jobs import JobPhase
    from dispatcher.core.search import Observation, default_seed, suggest
    from dispatcher.core.spec import validate_sweep

    w = World(aws, kube, max_running=1)
    spec = bayes_spec(run_cap=4)
    spec["metric"]["impute"] = "latest"
    sid = submit_with(w.queue, spec, {"max_retries": 0})
    d = w.dispatcher()
    assert not d.tick().errors
    (job,) = w.jobs()
    w.finish(job, sid, 1.0)
    w.clock.advance(60)
    assert not d.tick().errors
    assert w.store.get_trial(sid, 0)["state"] == "SUCCEEDED"
    name = f"{sid}-1-a1"
    w.kube.set_job_phase("pytorchjob", name, JobPhase.RUNNING)
    w.clock.advance(60)
    assert not d.tick().errors
    item = raw_item(sid, 1, {"0": {"eval/loss": 4.0}, "1": {"eval/loss": 3.0}}, status="failed")
    item["metrics"], item["updated_at"] = {"eval/loss": 3.0}, w.clock()
    w.aws.client("dynamodb").put_item(TableName=str(w.settings.metrics_table), Item=ser(item))
    w.kube.set_job_phase("pytorchjob", name, JobPhase.FAILED)
    w.clock.advance(60)
    report = d.tick()
    assert w.store.get_trial(sid, 1)["state"] == "FAILED", (w.store.get_trial(sid, 1), report.errors)
    params = w.params(sid)
    assert 2 in params, report.errors
    sweep = validate_sweep(spec)
    seed = default_seed(sweep, 2)
    done = Observation(0, params[0], "finished", 1.0, (1.0,))

    def suggested(observed: Observation) -> dict[str, Any]:
        return suggest(sweep, observations=[done, observed], indices=[2], seed=seed)[0].params

    wandb = suggested(Observation(1, params[1], "failed", 3.0, (4.0, 3.0)))
    assert wandb != suggested(Observation(1, params[1], "failed", None, ()))  # the engine's answer depends on it
    assert params[2] == wandb, (params[2], wandb, suggested(Observation(1, params[1], "pending", None, ())))


def submit_with(queue: Any, spec: dict[str, Any], launch: dict[str, Any]) -> str:
    from helpers import submit

    return submit(queue, spec, launch)


def test_rev19_guard_an_unserved_read_of_an_unsummarised_ended_trial_defers_the_early_stop(aws, kube):
    """Guard. early_stop.py: an ended trial without a summary has its metrics item read; when
    DynamoDB leaves that key unprocessed, the sweep is evaluated next tick — trial 3 (0.3), which
    W&B keeps with the stopped trial 2 (0.9) in the band-2 threshold, is not stopped on the rest."""
    from test_rev18_history import _Unprocessed, _wandb_stops

    w, sid, d, spec = _hb_world(aws, kube, 5)  # max_running 5: trials 0-4 run
    for index, loss in ((0, 0.1), (1, 0.2), (2, 0.9), (3, 0.3), (4, 0.25)):
        w.write(sid, index, [1.0] if index >= 3 else [1.0, loss])
    w.clock.advance(30)
    d.tick()
    assert w.store.get_trial(sid, 2)["state"] == "EARLY_STOPPED"
    # its summary lost (stored before summaries existed, say): the fallback reads its metrics item
    w.aws.client("dynamodb").update_item(TableName=w.settings.table,
                                         Key={"pk": {"S": f"SWEEP#{sid}"}, "sk": {"S": "TRIAL#0000000002"}},
                                         UpdateExpression="REMOVE metric_summary")
    w.write(sid, 3, [1.0, 0.3])
    assert _wandb_stops(spec, [("running", [1.0, 0.1]), ("running", [1.0, 0.2]), ("killed", [1.0, 0.9]),
                               ("running", [1.0, 0.3]), ("running", [1.0])]) == set()
    assert _wandb_stops(spec, [("running", [1.0, 0.1]), ("running", [1.0, 0.2]),
                               ("running", [1.0, 0.3]), ("running", [1.0])]) == {2}  # (trial 3: 3rd run here)
    d.metrics.client = _Unprocessed(d.metrics.client, {f"{sid}-2-a1-worker-0"})
    d.metrics.sleep = lambda _s: None
    w.clock.advance(30)
    report = d.tick()
    stopped = {i for i in (0, 1, 3, 4) if w.store.get_trial(sid, i)["state"] == "EARLY_STOPPED"}
    assert not stopped, (stopped, report.errors)
    assert any("unprocessed" in e for e in report.errors), report.errors
