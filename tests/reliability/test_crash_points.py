"""Crash at every external call of a whole sweep's life; a fresh dispatcher always finishes the job.

Invariants checked at the end of every scenario (and caps after every tick):
* every trial ends SUCCEEDED (one injected failure is retried), none is lost;
* each (trial, attempt) has at most one job, and a trial never has two live jobs at once;
* running jobs never exceed the global cap.
"""

from __future__ import annotations

from collections import Counter

import pytest
from crash import Crash, Crasher, Proxy, Session
from helpers import Clock, bootstrap, grid_spec, submit
from helpers import pytorchjob_phase as _phase

from dispatcher.adapters.queue import Queue
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.jobs import LABEL_ATTEMPT, LABEL_SWEEP_ID, LABEL_TRIAL_INDEX, JobPhase
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

KIND = "pytorchjob"
CAP = 2




def run_life(aws, kube, crasher: Crasher) -> dict:
    """One sweep (3 trials, trial 1 fails once) from submit to COMPLETED, crashing at crasher.at."""
    settings = Settings.load({}, backend=KIND, max_running=CAP, namespace="sweepq", lease_seconds=60)
    # visibility 0: a message received by a run that then died is visible again at once (real SQS
    # would wait out the visibility timeout, in real seconds, which this virtual clock can't skip)
    store, queue = bootstrap(aws, settings, visibility_timeout=0)
    sid = submit(queue, grid_spec("life", 1, 3), {"max_retries": 1}, token="life-token-0001")
    clock = Clock()
    crashed = []
    failed_once = set()
    session = Session(aws, crasher)  # clients are built once (expensive); each tick is a fresh Dispatcher
    dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
    for _ in range(40):
        backend = Proxy(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"), crasher, "kube")
        d = Dispatcher(settings=settings, store=Store(settings.table, dynamodb),
                       queue=Queue(sqs, queue.url), backends={KIND: backend}, clock=clock)
        try:
            d.tick()
        except Crash as crash:
            crashed.append(str(crash))
            clock.advance(settings.lease_seconds + 1)  # the dead run's lease must expire first
            continue
        live = [j for j in kube.list_objects(KIND) if not _phase(j).terminal]
        assert len(live) <= CAP, "global cap exceeded"
        per_trial = Counter(j["metadata"]["labels"][LABEL_TRIAL_INDEX] for j in live)
        assert max(per_trial.values(), default=0) <= 1, "two live jobs for one trial"
        if (store.get_sweep(sid) or {}).get("state") == "COMPLETED":
            break
        for j in live:
            name, index = j["metadata"]["name"], j["metadata"]["labels"][LABEL_TRIAL_INDEX]
            if _phase(j) is JobPhase.PENDING:
                kube.set_job_phase(KIND, name, JobPhase.RUNNING)
            elif index == "1" and index not in failed_once:
                failed_once.add(index)
                kube.set_job_phase(KIND, name, JobPhase.FAILED, reason="injected")
            else:
                kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
        clock.advance(5)
    meta = store.get_sweep(sid)
    jobs = kube.list_objects(KIND)
    return {"meta": meta, "trials": store.trials(sid), "jobs": jobs, "crashed": crashed, "calls": crasher.calls}


def check(result) -> None:
    meta, trials, jobs = result["meta"], result["trials"], result["jobs"]
    assert meta["state"] == "COMPLETED", (meta, result["crashed"])
    assert (meta["succeeded"], meta["failed"]) == (3, 0)
    assert sorted(t["index"] for t in trials) == [0, 1, 2]
    assert {t["state"] for t in trials} == {"SUCCEEDED"}
    keys = [(j["metadata"]["labels"][LABEL_TRIAL_INDEX], j["metadata"]["labels"][LABEL_ATTEMPT]) for j in jobs]
    assert len(keys) == len(set(keys)), "a (trial, attempt) got two jobs"
    assert all(j["metadata"]["labels"][LABEL_SWEEP_ID] == meta["sweep_id"] for j in jobs)


# An upper bound of the external calls a whole life makes; the reference test keeps it honest.
CALLS = 80
# The normal suite crashes at a spread of points (both modes); the soak marker covers every call.
FAST = {2, 9, 17, 27, 38, 52}


def test_a_crash_free_life_for_reference(aws, kube):
    result = run_life(aws, kube, Crasher())
    check(result)
    assert result["crashed"] == []
    assert 20 < result["calls"] <= CALLS, f"update CALLS: a life now makes {result['calls']} calls"


CASES = [
    pytest.param(at, mode, id=f"{mode}-call-{at}", marks=() if at in FAST else pytest.mark.soak)
    for at in range(1, CALLS + 1)
    for mode in ("before", "after")
]


@pytest.mark.parametrize("at,mode", CASES)
def test_crash_at_every_call(aws, kube, at, mode):
    # GIVEN a run that dies at external call `at` (before or after it happens)
    result = run_life(aws, kube, Crasher(at=at, mode=mode))
    # THEN fresh dispatchers finish the sweep with no duplicate, lost or over-cap trial
    if at <= result["calls"]:
        assert result["crashed"], "the crash point was never reached"
    check(result)
