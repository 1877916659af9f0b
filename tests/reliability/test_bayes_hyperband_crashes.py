"""Exactly once for bayes suggestions and Hyperband stops, under crashes (issue 14).

One bayes sweep with ``early_terminate`` lives from submit to COMPLETED while each run of the
dispatcher is a fresh process (clients crash-proxied, :mod:`crash`); the run dies at a chosen
point — *after a suggestion* (right before the claim transaction that would store it), *after the
claim* (stored, job not created), *after a stop was decided* (nothing written), *after the stop
was recorded* (job not deleted yet), *after the stop's delete* — and fresh dispatchers carry on.

Invariants, checked after every tick and at the end:
* a trial index never has two parameter sets: what its trial item stores never changes, and every
  job ever created for it renders exactly those;
* a stop is never lost: an early-stopped trial's job is gone at the end, it is never retried (no
  later attempt), and the sweep completes with every trial succeeded or early-stopped, none failed;
* each (trial, attempt) is created under one name; nothing runs at the end.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from crash import Crash, Crasher, Proxy, Session
from helpers import Clock, bootstrap, submit
from helpers import pytorchjob_phase as phase_of

from dispatcher.adapters.dynamo import ser
from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import Queue
from dispatcher.adapters.store import Store
from dispatcher.backends import make_backend
from dispatcher.core.identity import parse_job_name, trial_id
from dispatcher.core.jobs import LABEL_ATTEMPT, LABEL_TRIAL_INDEX, JobPhase
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

pytest.importorskip("sweeps")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
KIND = "pytorchjob"
RUN_CAP = 5
POSITIONS = 3  # evaluations a trial reports before its job succeeds
SPEC = {
    "name": "bohb", "method": "bayes", "run_cap": RUN_CAP, "program": "train.py",
    "metric": {"name": "eval/loss", "goal": "minimize"},
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
    "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1}},
}


def loss(params: dict[str, Any], position: int) -> float:
    return (math.log10(params["lr"]) + 3) ** 2 + 1.0 / (position + 1)


class RoleCrasher(Crasher):
    """Dies at the ``nth`` call of a ``role``: ``claim`` (the transaction that stores a fresh
    trial), ``stop`` (the one that records EARLY_STOPPED), ``delete`` (the job delete right after a stop)."""

    def __init__(self, role: str | None = None, nth: int = 1, mode: str = "before") -> None:
        super().__init__()
        self.role, self.nth, self.mode = role, nth, mode
        self.seen: dict[str, int] = {}
        self._after_stop = False

    def _role(self, what: str, kwargs: dict[str, Any]) -> str | None:
        if what == "dynamodb.transact_write_items":
            text = json.dumps(kwargs.get("TransactItems", []), default=str)
            self._after_stop = "EARLY_STOPPED" in text
            if self._after_stop:
                return "stop"
            return "claim" if '"Put"' in text and "TRIAL#" in text else None
        if what == "kube.cancel" and self._after_stop:
            self._after_stop = False
            return "delete"
        return None

    def around(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.log.append(what)
        role = self._role(what, kwargs)
        hit = False
        if role is not None:
            self.seen[role] = self.seen.get(role, 0) + 1
            hit = role == self.role and self.seen[role] == self.nth
        if hit and self.mode == "before":
            raise Crash(f"before {role} #{self.nth}")
        result = fn(*args, **kwargs)
        if hit and self.mode == "after":
            raise Crash(f"after {role} #{self.nth}")
        return result


class Recorder:
    """The backend, recording the parameters every created job was rendered with."""

    def __init__(self, backend: Any, created: list[tuple[str, dict[str, Any]]]) -> None:
        self.backend, self.kind, self.namespace, self.created = backend, backend.kind, backend.namespace, created
        self._params: dict[str, dict[str, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def dryrun(self, request: Any) -> Any:
        self._params[request.job_name] = json.loads(json.dumps(request.params))
        return self.backend.dryrun(request)

    def submit(self, dryrun: Any) -> str:
        name = self.backend.submit(dryrun)
        self.created.append((dryrun.job_name, self._params[dryrun.job_name]))
        return name


def run_life(aws: Any, kube: Any, crasher: RoleCrasher) -> dict[str, Any]:
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq", lease_seconds=60)
    store, queue = bootstrap(aws, settings, visibility_timeout=0)
    MetricsStore(str(settings.metrics_table), aws.client("dynamodb")).create_table()
    sid = submit(queue, SPEC, {"max_retries": 1}, token="bohb-token-0001")
    clock, crashed, created = Clock(), [], []
    session = Session(aws, crasher)
    dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
    raw = aws.client("dynamodb")
    params_seen: dict[int, dict[str, Any]] = {}
    positions: dict[str, int] = {}
    for _ in range(60):
        backend = Proxy(Recorder(make_backend(KIND, api_client=kube.api_client, namespace="sweepq"), created),
                        crasher, "kube")
        d = Dispatcher(settings=settings, store=Store(settings.table, dynamodb), queue=Queue(sqs, queue.url),
                       backends={KIND: backend}, clock=clock,
                       metrics=MetricsStore(str(settings.metrics_table), dynamodb))
        try:
            d.tick()
        except Crash as crash:
            crashed.append(str(crash))
            clock.advance(settings.lease_seconds + 1)  # the dead run's lease must expire first
            continue
        stored = {int(t["index"]): json.loads(t["params"]) for t in store.trials(sid)}
        for index, params in stored.items():
            assert params_seen.setdefault(index, params) == params, f"trial {index} got two parameter sets"
        if (store.get_sweep(sid) or {}).get("state") == "COMPLETED":
            break
        for job in kube.list_objects(KIND):  # the cluster and the trainer make progress
            name, phase = job["metadata"]["name"], phase_of(job)
            if phase.terminal:
                continue
            if phase is JobPhase.PENDING:
                kube.set_job_phase(KIND, name, JobPhase.RUNNING)
                continue
            _, index, attempt = parse_job_name(name)
            reached = positions.get(name, 0) + 1
            positions[name] = reached
            history = {str(p): {"eval/loss": loss(stored[index], p)} for p in range(reached)}
            item = {"pod": f"{name}-worker-0", "job": name, "trial_id": trial_id(sid, index), "attempt": attempt,
                    "world_size": 1, "status": "finished" if reached >= POSITIONS else "running",
                    "updated_at": clock(), "history": history,
                    "metrics": {"eval/loss": loss(stored[index], reached - 1)}}
            if reached >= POSITIONS:
                item["final"] = item["metrics"]  # the tick copies these onto the trial item at SUCCEEDED
            raw.put_item(TableName=str(settings.metrics_table), Item=ser(item))
            if reached >= POSITIONS:
                kube.set_job_phase(KIND, name, JobPhase.SUCCEEDED)
        clock.advance(30)
    return {"meta": store.get_sweep(sid), "trials": store.trials(sid), "jobs": kube.list_objects(KIND),
            "created": created, "crashed": crashed, "params": params_seen, "seen": dict(crasher.seen)}


def check(result: dict[str, Any]) -> None:
    meta, trials = result["meta"], result["trials"]
    assert meta["state"] == "COMPLETED", (meta.get("state"), meta.get("reason"), result["crashed"])
    assert meta["failed"] == 0 and meta["succeeded"] + meta.get("early_stopped", 0) == RUN_CAP, meta
    assert sorted(int(t["index"]) for t in trials) == list(range(RUN_CAP))
    stored = {int(t["index"]): json.loads(t["params"]) for t in trials}
    for name, params in result["created"]:
        _, index, _ = parse_job_name(name)
        assert params == stored[index], f"job {name} rendered other parameters than trial {index} stores"
    stopped = {int(t["index"]) for t in trials if t["state"] == "EARLY_STOPPED"}
    assert {int(t["index"]) for t in trials if t["state"] == "SUCCEEDED"} | stopped == set(range(RUN_CAP))
    for job in result["jobs"]:
        index, attempt = int(job["metadata"]["labels"][LABEL_TRIAL_INDEX]), job["metadata"]["labels"][LABEL_ATTEMPT]
        assert phase_of(job).terminal, f"job {job['metadata']['name']} still runs at the end"
        assert not (index in stopped and attempt != "1"), f"early-stopped trial {index} was retried"
    names = [name for name, _ in result["created"]]
    assert all(parse_job_name(n)[2] == 1 for n in names), "an attempt beyond the first: something was retried"


def test_a_crash_free_life_for_reference(aws, kube) -> None:
    result = run_life(aws, kube, RoleCrasher())
    check(result)
    assert result["crashed"] == []
    assert result["seen"].get("stop", 0) >= 1, "the reference life must stop a trial"
    # the fresh claims of one tick are one transaction (the sweep's unit of work): the first tick
    # claims max_running (3) trials at once, so there are fewer claim transactions than trials
    assert 1 <= result["seen"]["claim"] < RUN_CAP


# The fast suite: after a suggestion (before its claim), after a claim, after a stop was recorded,
# after its delete (~10 s a life: W&B's GP runs for real); the soak marker covers the others.
ROLES = [("claim", 1, "before"), ("claim", 2, "after"), ("stop", 1, "after"), ("delete", 1, "after")]
SOAK = [(role, nth, mode) for role, most in (("claim", RUN_CAP), ("stop", 2), ("delete", 2))
        for nth in range(1, most + 1) for mode in ("before", "after") if (role, nth, mode) not in ROLES]
CASES = [pytest.param(*case, id="-".join(map(str, case))) for case in ROLES] + \
        [pytest.param(*case, id="-".join(map(str, case)), marks=pytest.mark.soak) for case in SOAK]


@pytest.mark.parametrize("role,nth,mode", CASES)
def test_a_crash_at_a_suggestion_claim_or_stop_never_gives_two_params_or_loses_a_stop(aws, kube, role, nth, mode):
    result = run_life(aws, kube, RoleCrasher(role, nth, mode))
    if result["seen"].get(role, 0) >= nth:
        assert result["crashed"], "the crash point was reached but nothing crashed"
    else:
        pytest.skip(f"this life had only {result['seen'].get(role, 0)} {role} call(s)")  # the soak's far points
    check(result)
