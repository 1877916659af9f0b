"""Deployment shapes of issue 12, as pieces the scenarios and regressions share.

* :func:`deployment` — settings + queue + a dispatcher factory for one deployment (scope,
  namespace, kinds), on a table other deployments may share. ``fresh()`` builds a dispatcher the
  way a new process does (``wiring.build_backends`` from the settings alone: every CronJob run,
  every cold Lambda), so nothing it learnt in an earlier tick survives.
* The JobSet template of kind ``template`` and :func:`set_jobset_phase` (JobSet's conditions).
* :class:`PausingBackend` — a backend whose create pauses (a GC pause, a frozen VM) and may die
  right after the create reached the cluster.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Callable

from crash import Crash

from dispatcher.adapters.queue import Queue, create_queues
from dispatcher.adapters.store import Store
from dispatcher.core.jobs import JobPhase
from dispatcher.core.policy import Policy
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher
from dispatcher.wiring import build_backends

JOBSET = "jobset.x-k8s.io/v1alpha2/jobsets"  # the emulator's name of the JobSet resource
JOBSET_RESOURCE = "jobsets.jobset.x-k8s.io/v1alpha2"  # SWEEPQ_TEMPLATE_RESOURCES form
JOBSET_TEMPLATE: dict[str, Any] = {
    "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
    "spec": {"replicatedJobs": [{"name": "w", "replicas": "{{max_nodes | int}}", "template": {"spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "t", "image": "{{image}}", "command": ["torchrun", "{{args}}"]}]}}}}}]},
}
JOBSET_CONDITION = {JobPhase.RUNNING: "Running", JobPhase.SUCCEEDED: "Completed", JobPhase.FAILED: "Failed"}


def set_jobset_phase(kube: Any, name: str, phase: JobPhase, *, namespace: str | None = None) -> None:
    """What the JobSet controller writes: one True condition of the phase."""
    kube.patch_status(JOBSET, name, {"conditions": [{
        "type": JOBSET_CONDITION[phase], "status": "True", "reason": JOBSET_CONDITION[phase],
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}, namespace)


@dataclass
class Deployment:
    """One dispatcher deployment: its settings, its queue, the (possibly shared) table (``store``:
    the test's own, unscoped reads)."""

    session: Any
    kube: Any
    settings: Settings
    queue: Queue
    store: Store
    clock: Callable[[], float]
    policy: Policy | None = None  # the operator policy (None: the safe default)

    def fresh(self, *, owner: str | None = None, settings: Settings | None = None, session: Any = None,
              backends: dict[str, Any] | None = None, clock: Callable[[], float] | None = None,
              policy: Policy | None = None) -> Dispatcher:
        """A dispatcher as a new process builds it (backends from the settings and the policy alone)."""
        s = settings or self.settings
        aws = session or self.session
        current = policy or self.policy or Policy.default()
        return Dispatcher(settings=s, store=Store(s.table, aws.client("dynamodb")),
                          queue=Queue(aws.client("sqs"), self.queue.url),
                          backends=backends or build_backends(s, api_client=self.kube.api_client,
                                                              policy=lambda: current),
                          clock=clock or self.clock, owner=owner, policy=current)


def deployment(session: Any, kube: Any, clock: Callable[[], float], *, queue_name: str = "sweepq",
               table: str = "sweepq", namespace: str = "sweepq", visibility_timeout: int = 0,
               policy: Policy | None = None, **settings: Any) -> Deployment:
    s = Settings.load({}, queue_name=queue_name, table=table, namespace=namespace, lease_seconds=60, **settings)
    url, _ = create_queues(session.client("sqs"), queue_name, visibility_timeout=visibility_timeout)
    store = Store(table, session.client("dynamodb"))  # the test's own reads, across every scope
    store.create_table()
    return Deployment(session, kube, s, Queue(session.client("sqs"), url), store, clock, policy)


class PausingBackend:
    """Wraps a backend; its first create waits for :attr:`resume` (after :attr:`paused` is set),
    then goes through; with ``die_after_create`` the dispatcher dies right after that create
    reached the cluster (a :class:`~crash.Crash`, which nothing in the product catches)."""

    def __init__(self, backend: Any, *, die_after_create: bool = False) -> None:
        self.backend, self.kind = backend, backend.kind
        self.die_after_create = die_after_create
        self.paused, self.resume = threading.Event(), threading.Event()
        self.submits: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def dryrun(self, request: Any) -> Any:
        return self.backend.dryrun(request)

    def observe(self) -> Any:
        return self.backend.observe()

    def cancel(self, name: str) -> None:
        self.backend.cancel(name)

    def submit(self, dryrun: Any) -> str:
        first = not self.paused.is_set()
        if first:
            self.paused.set()
            if not self.resume.wait(30):
                raise Crash("never resumed")
        self.submits.append(dryrun.job_name)
        name = self.backend.submit(dryrun)
        if first and self.die_after_create:
            raise Crash(f"died right after creating {name}")
        return name


def writes_of(sweep_id: str, error: BaseException) -> Any:
    """A botocore hook: every TransactWriteItems touching ``sweep_id``'s items raises ``error``."""
    armed = [True]

    def hook(params: dict[str, Any], **_: Any) -> None:
        if armed[0] and f"SWEEP#{sweep_id}" in json.dumps(params.get("TransactItems", []), default=str):
            raise error

    hook.armed = armed  # type: ignore[attr-defined]
    return hook


def tick_catching_crash(dispatcher: Any) -> None:
    try:
        dispatcher.tick()
    except Crash:
        pass  # the process died: no cleanup, like a SIGKILL
