"""rev17 — adversarial review of the tick's unit of work after its rev16 fixes (issue 16).

Each test drives ``Dispatcher.tick`` (or ``Store.commit_sweep``) on moto + the Kubernetes API
emulator and asserts what dispatcher/tick.py, dispatcher/launching.py and
dispatcher/adapters/sweep_writes.py promise. A failing test is a finding (see the rev17 report);
a passing one is a guard.
"""

from __future__ import annotations

from typing import Any

from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit

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
