"""Event-driven top-up: a finished job leads to the next launch without waiting for the interval."""

from __future__ import annotations

import threading
import time

import pytest

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from dispatcher.wake import Waker, run_loop, start_watchers
from helpers import bootstrap, grid_spec, make_dispatcher, submit

KIND = "pytorchjob"


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def loop(aws, kube):
    settings = Settings.load({}, backend=KIND, max_running=1, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    dispatcher = make_dispatcher(aws, settings, {KIND: make_backend(KIND, api_client=kube.api_client, namespace="sweepq")},
                                 time.time, queue)
    stop, waker, ticks = threading.Event(), Waker(), []
    threads = start_watchers(dispatcher, waker, stop, poll_s=0.2)
    runner = threading.Thread(
        target=run_loop, kwargs=dict(dispatcher=dispatcher, interval=300, stop=stop, waker=waker, debounce=0.3,
                                     on_tick=ticks.append), daemon=True)

    class Loop:
        pass

    lp = Loop()
    lp.queue, lp.kube, lp.store, lp.ticks, lp.waker, lp.start = queue, kube, store, ticks, waker, runner.start
    yield lp
    stop.set()
    runner.join(timeout=10)
    for t in threads:
        t.join(timeout=0.1)


def test_a_finished_job_is_replaced_within_seconds_not_at_the_next_interval(loop):
    # GIVEN a 2-trial sweep, a global cap of 1 and a 300 s interval
    submit(loop.queue, grid_spec("topup", 1, 2))
    loop.start()
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 1, 15), "the new submission was not picked up"
    (first,) = loop.kube.list_objects(KIND)
    # WHEN its job succeeds
    started = time.monotonic()
    loop.kube.set_job_phase(KIND, first["metadata"]["name"], JobPhase.SUCCEEDED)
    # THEN the second trial launches within seconds (the watch woke the loop)
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 2, 15)
    assert time.monotonic() - started < 15 < 300


def test_a_wake_storm_coalesces_into_few_ticks(loop):
    submit(loop.queue, grid_spec("storm", 1, 1))
    loop.start()
    assert wait_for(lambda: len(loop.kube.list_objects(KIND)) == 1, 15)
    (job,) = loop.kube.list_objects(KIND)
    time.sleep(1.0)
    before = len(loop.ticks)
    # WHEN 40 status changes arrive in a burst
    for i in range(40):
        loop.kube.patch_status(KIND, job["metadata"]["name"], {"observedGeneration": i})
    time.sleep(2.0)
    # THEN they cost a handful of ticks, not 40
    assert 1 <= len(loop.ticks) - before <= 4, len(loop.ticks) - before


def test_waker_returns_reasons_and_times_out():
    waker = Waker()
    assert waker.wait(0.05, debounce=0) == {}
    for _ in range(5):
        waker.wake("queue")
    waker.wake("jobs")
    assert waker.wait(1, debounce=0) == {"queue": 5, "jobs": 1}
    assert waker.wait(0.01, debounce=0) == {}
