"""Event-driven top-up for long-running dispatchers (``dispatcher run``, a Deployment, the demo).

A freed GPU or a new submission should not wait for the next scheduled tick. Wake sources run in
daemon threads and signal a :class:`Waker`; the run loop ticks as soon as one fires (after a short
debounce that coalesces a storm of events into one tick), and in any case every ``interval``:

* :func:`watch_queue` — polls the sweep queue's and the wake queue's ``ApproximateNumberOfMessages``
  (a receive would count towards the DLQ's ``maxReceiveCount``; a cheap attribute read does not;
  the tick deletes the wake queue's triggers unread);
* :func:`watch_jobs` — a Kubernetes **watch** on each kind's resource with the sweepq label
  selector (reconnecting with backoff; any event wakes), or, for backends without one (``local``),
  a poll of ``observe()`` that wakes when a job's phase changes.

In Lambda mode the same effect comes from the SQS event source (see ``lambda_handler``) and the
trainer's ``sweepq.wake/v1`` message; overlapping runs are made safe by the lease, and a run that
finds the lease taken marks it dirty so the holder ticks once more.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

from dispatcher.core.errors import SweepqError

log = logging.getLogger(__name__)


class Waker:
    """Collects wake signals from any thread; :meth:`wait` returns why the loop woke."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._reasons: collections.Counter[str] = collections.Counter()
        self.total = 0

    def wake(self, reason: str) -> None:
        with self._lock:
            self._reasons[reason] += 1
            self.total += 1
        self._event.set()

    def wait(self, timeout: float, *, debounce: float = 1.0, stop: threading.Event | None = None) -> dict[str, int]:
        """Block until a wake (then ``debounce`` seconds more to coalesce a burst) or ``timeout``."""
        deadline = time.monotonic() + timeout
        fired = False
        while not fired and not (stop is not None and stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            fired = self._event.wait(min(remaining, 0.5))  # short slices: a stop is seen promptly
        if fired and debounce > 0:
            (stop or threading.Event()).wait(debounce)
        with self._lock:
            self._event.clear()
            reasons, self._reasons = dict(self._reasons), collections.Counter()
        return reasons


def _loop(name: str, body: Callable[[], None], stop: threading.Event, *, backoff: float = 5.0) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            try:
                body()
            except Exception as exc:  # noqa: BLE001 - a wake source must never die; the interval still ticks
                log.warning("wake source %s: %s — retrying in %.0f s", name, exc, backoff)
                stop.wait(backoff)

    thread = threading.Thread(target=run, name=f"wake-{name}", daemon=True)
    thread.start()
    return thread


def watch_queue(sqs: Any, url: str, waker: Waker, stop: threading.Event, *, poll_s: float = 5.0) -> threading.Thread:
    def body() -> None:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        if int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0)) > 0:
            waker.wake("queue")
        stop.wait(poll_s)

    return _loop("queue", body, stop)


def watch_jobs(backend: Any, waker: Waker, stop: threading.Event, *, poll_s: float = 2.0,
               watch_timeout_s: int = 60) -> list[threading.Thread]:
    """Kubernetes watch when the backend offers ``watch_streams``, else a phase-diff poll."""
    if hasattr(backend, "watch_streams"):
        threads = []
        for ref_name, stream in backend.watch_streams(timeout_s=watch_timeout_s):
            def body(stream: Callable[[], Any] = stream, ref_name: str = ref_name) -> None:
                for event in stream():
                    if stop.is_set():
                        return
                    waker.wake(f"{ref_name}:{event.get('type', '?')}")
            threads.append(_loop(f"watch-{ref_name}", body, stop))
        return threads
    last: dict[str, Any] = {}

    def poll() -> None:
        nonlocal last
        now = {name: status.phase for name, status in backend.observe().items()}
        if last and now != last:
            waker.wake(f"{backend.kind}:changed")
        last = now
        stop.wait(poll_s)

    return [_loop(f"poll-{backend.kind}", poll, stop)]


def run_loop(dispatcher: Any, *, interval: float, stop: threading.Event, until_idle: bool = False,
             on_tick: Callable[[Any], None] | None = None, waker: Waker | None = None,
             debounce: float = 1.0, clock: Callable[[], float] = time.monotonic) -> int:
    """Tick now, then whenever woken (debounced) and at least every ``interval`` seconds, until
    ``stop`` is set or, with ``until_idle``, no sweep is active. Returns the number of ticks."""
    ticks = 0
    while not stop.is_set():
        try:
            report = dispatcher.tick()
        except SweepqError as exc:
            # A tick whose lease call failed (AWS throttling past the SDK's retries, an outage) used
            # to end `dispatcher run` here. Nothing is lost by going on: every step is safe to
            # re-run, and the lease we may still hold is ours to re-acquire (or expires).
            log.warning("tick failed: %s — ticking again within %.0f s", exc, interval)
        else:
            ticks += 1
            if on_tick is not None:
                on_tick(report)
            if until_idle and report.lease == "held" and report.active_sweeps == 0 and not report.errors:
                return ticks
        if waker is None:
            stop.wait(interval)
        else:
            reasons = waker.wait(interval, debounce=debounce, stop=stop)
            if reasons:
                log.debug("woken by %s", reasons)
    return ticks


def start_watchers(dispatcher: Any, waker: Waker, stop: threading.Event, *, poll_s: float = 2.0) -> list[threading.Thread]:
    threads = []
    for queue in (dispatcher.queue, getattr(dispatcher, "wake_queue", None)):  # submissions; trials' triggers
        if queue is not None:
            threads.append(watch_queue(queue.client, queue.url, waker, stop, poll_s=max(poll_s, 1.0)))
    for backend in dispatcher.backends.values():
        threads += watch_jobs(backend, waker, stop, poll_s=poll_s)
    return threads
