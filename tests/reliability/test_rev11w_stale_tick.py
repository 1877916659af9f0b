"""rev11w — a tick whose lease expired while it was listing the cluster deletes the job its
successor just created (issue 12: "Kubernetes calls are not fenced by the lease").

The create path renews the lease before every create (``Launching._ensure_lease``); the delete path
does not. A tick that loaded its sweeps, then stalled (a GC pause, a frozen Lambda, a slow list of
a busy API server) past its lease, judges the jobs it lists against the records it loaded *before*
the stall: a job another dispatcher claimed and created meanwhile is "orphan: no live trial owns
this job" in that stale view, and is deleted before the stale tick makes a single fenced write.

Real adapters (moto, the Kubernetes emulator over HTTP); the stall is a wrapper around the real
backend, like :class:`shapes.PausingBackend`, that pauses before its list.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from helpers import Clock, grid_spec, submit
from invariants import is_terminal
from shapes import deployment

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase

KIND = "pytorchjob"


class PausingObserve:
    """The real backend; its first ``observe`` waits for :attr:`resume` (after setting :attr:`paused`)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.kind = backend, backend.kind
        self.paused, self.resume = threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def dryrun(self, request: Any) -> Any:
        return self.backend.dryrun(request)

    def submit(self, dryrun: Any) -> str:
        return self.backend.submit(dryrun)

    def cancel(self, name: str) -> None:
        self.backend.cancel(name)

    def observe(self) -> Any:
        if not self.paused.is_set():
            self.paused.set()
            assert self.resume.wait(30)
        return self.backend.observe()


def alive(kube: Any) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.list_objects(KIND) if not is_terminal(o))


def test_rev11w_a_tick_that_lost_its_lease_mid_tick_never_deletes_its_successors_job(atomic_aws, kube) -> None:
    # GIVEN a one-trial sweep that may not retry, and dispatcher A that accepts it, loads it
    # (cursor 0, nothing live) and stalls right before it lists the cluster
    clock = Clock(start=time.time())
    d = deployment(atomic_aws, kube, clock, backend=KIND, max_running=1)
    sweep_id = submit(d.queue, grid_spec("stale", 1, 1), {"max_retries": 0})
    stalling = PausingObserve(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"))
    a, b = d.fresh(owner="A", backends={KIND: stalling}), d.fresh(owner="B")
    thread = threading.Thread(target=a.tick)
    thread.start()
    assert stalling.paused.wait(30)
    # WHEN A's lease expires, B takes over and launches the trial
    clock.advance(d.settings.lease_seconds * 1.2)
    assert b.tick().launched == 1
    assert alive(kube) == [f"{sweep_id}-0-a1"]
    # AND A wakes up and finishes its tick
    stalling.resume.set()
    thread.join(30)
    # THEN B's job still runs: A holds no lease, so it must not act on what it loaded before
    survivors = alive(kube)
    # AND the trial completes instead of being failed for a job the dispatcher itself deleted
    for name in alive(kube):
        kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
    for _ in range(2):
        clock.advance(30)
        b.tick()
    meta = d.store.get_sweep(sweep_id)
    outcome = (meta["state"], meta.get("succeeded"), meta.get("failed"))
    assert survivors == [f"{sweep_id}-0-a1"] and outcome == ("COMPLETED", 1, 0), (
        f"the stale tick deleted the job its successor had just created (alive after A: {survivors}); the sweep "
        f"ended {outcome} — {meta.get('reason')!r}; trial: {d.store.get_trial(sweep_id, 0).get('reason')!r}")
