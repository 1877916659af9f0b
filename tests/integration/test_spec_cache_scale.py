"""The spec cache holds every active sweep: a quiet tick reads no spec, however many sweeps are
active (benchmarks/tick.py at 2,000 sweeps found 2,000 GetItem calls per quiet tick: a 512-spec
LRU evicted each spec before its next use, as every tick touches every sweep's spec)."""

from __future__ import annotations

from helpers import Clock, CountingSession, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.trials import SpecCache


def test_a_quiet_tick_reads_no_spec_with_more_active_sweeps_than_the_cache_started_with(aws, kube):
    kind = "pytorchjob"
    counting = CountingSession(aws)
    settings = Settings.load({}, backend=kind, namespace="sweepq", max_running=20)
    _, queue = bootstrap(counting, settings)
    d = make_dispatcher(counting, settings, {kind: make_backend(kind, api_client=kube.api_client,
                                                                namespace="sweepq")}, Clock(), queue)
    d.specs = SpecCache(d.store.get_spec, size=3)  # fewer than the active sweeps, as 512 was at 2,000
    sweeps = [submit(queue, grid_spec(f"cache{i}", 1, 1)) for i in range(8)]
    assert not d.tick().errors  # intake, claims, creates
    for sweep_id in sweeps:
        kube.set_job_phase(kind, f"{sweep_id}-0-a1", JobPhase.RUNNING)
    for _ in range(2):  # LAUNCHED, then RUNNING recorded: every sweep has a running trial
        d.clock.advance(10)
        assert not d.tick().errors
    counting.calls.reset()
    d.clock.advance(10)
    quiet = d.tick()
    assert not quiet.errors and quiet.running == 8 and quiet.launched == 0
    calls = dict(counting.calls.calls)
    assert calls.get("dynamodb.BatchGetItem"), calls  # the names are what the counter records
    assert calls.get("dynamodb.GetItem", 0) == 0, calls
