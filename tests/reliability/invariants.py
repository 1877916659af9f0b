"""The three invariants of the reliability proof, in one reusable checker (:class:`Ledger`).

1. **Exactly once.** Each (sweep, trial, attempt) has at most one job ever created; a trial gets a
   new attempt only after the previous one ended (FAILED or LOST in its history); no trial is lost
   (a finished sweep has one terminal trial item per index and its counters add up).
2. **Caps.** Non-terminal jobs never exceed the global cap, any sweep's ``max_concurrent``, or one
   per trial — checked at *every job create* (inside the emulator, atomically with the create)
   and at every observation the test makes.
3. **Nothing disappears.** Every submitted body ends as a sweep in DynamoDB in a terminal state,
   or — unparseable — in the DLQ; every rejection has a readable reason.
4. **Nothing leaks.** Once every sweep has ended (and the scenario let a few ticks pass), no
   managed job is left that is not terminal — in any namespace, of any kind (``check_final``).

The ledger hooks the Kubernetes emulator's create handler, so it sees the creates of every client:
in-process dispatchers, threads, and ``python -m dispatcher.cli tick`` subprocesses alike. A
violation is recorded, never raised inside the emulator (that would turn into an HTTP 500); tests
call :meth:`Ledger.assert_ok`.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from dispatcher.core.jobs import LABEL_ATTEMPT, LABEL_MANAGED_BY, LABEL_SWEEP_ID, LABEL_TRIAL_INDEX, MANAGED_BY

JOB_PLURALS = ("pytorchjobs", "jobs", "trainjobs", "elasticjobs", "jobsets")
# what the ledger lists to observe the cluster (the emulator's names; jobsets: the template scenarios)
OBSERVED_KINDS = ("pytorchjob", "job", "trainjob", "elasticjob", "jobset.x-k8s.io/v1alpha2/jobsets")
TERMINAL_CONDITIONS = {"Succeeded", "Complete", "Completed", "Failed"}  # PyTorchJob / Job, TrainJob / JobSet / all
OUTCOMES = ("COMPLETED", "REJECTED", "CANCELLED", "FAILED", "DLQ", "TERMINAL")
UNREADABLE = ("Traceback", "input_value=", "errors.pydantic.dev", "object at 0x")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def is_terminal(obj: Mapping[str, Any]) -> bool:
    """What every kind's operator writes when a job ends: a True Succeeded/Complete/Failed condition."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") in TERMINAL_CONDITIONS and c.get("status") == "True" for c in conditions)


def readable(reason: Any) -> bool:
    """A rejection reason a researcher can act on: text, bounded, no Python or pydantic internals."""
    return (isinstance(reason, str) and 0 < len(reason) <= 4000 and not any(m in reason for m in UNREADABLE)
            and all(c.isprintable() or c in "\n\t" for c in reason))


@dataclass(frozen=True)
class Create:
    plural: str
    name: str
    sweep_id: str
    index: int
    attempt: int


@dataclass
class Expected:
    """What must become of one submitted body."""

    key: str  # sweep id, or the body itself for bodies that are not a sweep
    outcome: str  # one of OUTCOMES; TERMINAL = any terminal state
    total: int | None = None
    max_concurrent: int | None = None
    body: str | None = None
    reason: str | None = None  # fragment the rejection reason must contain


@dataclass
class Figures:
    sweeps: int = 0
    creates: int = 0
    duplicates: int = 0
    lost: int = 0
    observations: int = 0
    create_checks: int = 0
    dead_letters: int = 0
    rejected: int = 0
    valid_dead_lettered: int = 0
    recreated_after_loss: int = 0
    leaks: int = 0
    violations: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"sweeps {self.sweeps}, jobs created {self.creates}, duplicates {self.duplicates}, "
                f"lost {self.lost}, leaked {self.leaks}, re-created after the cluster lost them {self.recreated_after_loss}, "
                f"cap checks {self.create_checks + self.observations}, "
                f"rejected {self.rejected}, dead-lettered {self.dead_letters}, violations {len(self.violations)}")


class Ledger:
    """Records job creates through the emulator and checks the invariants. ``cap`` is the global
    cap (``SWEEPQ_MAX_RUNNING``); per-sweep caps come from :meth:`expect`."""

    def __init__(self, kube: Any, *, cap: int | None = None) -> None:
        self.kube = kube
        self.cap = cap
        self.namespace_caps: dict[str, int] = {}  # per deployment (namespace), for several scopes on one cluster
        self.creates: list[Create] = []
        self.api_deletes: set[str] = set()  # job names some client deleted through the API
        self.expected: dict[str, Expected] = {}
        self.violations: list[str] = []
        self.create_checks = 0
        self.observations = 0
        self._lock = threading.Lock()

    # -- wiring -------------------------------------------------------------------------------
    def install(self, monkeypatch: Any) -> None:
        """Wrap the emulator's create handler (class-level, undone by ``monkeypatch``)."""
        from kube_emulator import SweepqKubeEmulator

        original = SweepqKubeEmulator._create
        ledger = self

        async def _create(handler: Any, request: Any) -> Any:
            response = await original(handler, request)
            if response.status == 201 and request.resource.plural in JOB_PLURALS:
                # No await between the create and this snapshot: on the emulator's event loop the
                # two are one atomic step, exactly the moment a cap could be exceeded.
                body = request.data or {}
                ledger._record(request.resource.plural, body)
                live = [obj.raw for key, obj in handler.objects.items()
                        if not obj.deleted and key[0].plural in JOB_PLURALS]
                ledger._check_caps(live, where=f"create of {(body.get('metadata') or {}).get('name')}")
            return response

        original_modify = SweepqKubeEmulator._modify

        async def _modify(handler: Any, request: Any, verb: str) -> Any:
            response = await original_modify(handler, request, verb)
            if verb == "delete" and response.status == 200 and request.resource.plural in JOB_PLURALS:
                with ledger._lock:
                    ledger.api_deletes.add(request.name)
            return response

        monkeypatch.setattr(SweepqKubeEmulator, "_create", _create)
        monkeypatch.setattr(SweepqKubeEmulator, "_modify", _modify)

    def expect(self, key: str, outcome: str, *, total: int | None = None, max_concurrent: int | None = None,
               body: str | None = None, reason: str | None = None) -> None:
        assert outcome in OUTCOMES, outcome
        with self._lock:
            self.expected[key] = Expected(key, outcome, total, max_concurrent, body, reason)

    # -- recording ----------------------------------------------------------------------------
    def _record(self, plural: str, body: Mapping[str, Any]) -> None:
        labels = labels_of(body)
        name = (body.get("metadata") or {}).get("name", "")
        try:
            create = Create(plural, name, labels[LABEL_SWEEP_ID], int(labels[LABEL_TRIAL_INDEX]),
                            int(labels[LABEL_ATTEMPT]))
        except (KeyError, ValueError):
            self._violate(f"job {name} was created without the sweepq labels: {labels}")
            return
        with self._lock:
            self.creates.append(create)

    def _violate(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)

    def _check_caps(self, objects: Iterable[Mapping[str, Any]], *, where: str) -> None:
        live = [o for o in objects if labels_of(o).get(LABEL_MANAGED_BY) == MANAGED_BY and not is_terminal(o)]
        with self._lock:
            if where.startswith("create"):
                self.create_checks += 1
            else:
                self.observations += 1
            caps = {k: e.max_concurrent for k, e in self.expected.items() if e.max_concurrent}
        if self.cap is not None and len(live) > self.cap:
            self._violate(f"{where}: {len(live)} live jobs over the global cap {self.cap}")
        per_namespace = collections.Counter((o.get("metadata") or {}).get("namespace") for o in live)
        for namespace, count in per_namespace.items():
            if namespace in self.namespace_caps and count > self.namespace_caps[namespace]:
                self._violate(f"{where}: {count} live jobs in {namespace}, over its cap {self.namespace_caps[namespace]}")
        per_sweep = collections.Counter(labels_of(o).get(LABEL_SWEEP_ID) for o in live)
        for sweep_id, count in per_sweep.items():
            if sweep_id in caps and count > caps[sweep_id]:
                self._violate(f"{where}: sweep {sweep_id} has {count} live jobs, max_concurrent {caps[sweep_id]}")
        per_trial = collections.Counter((labels_of(o).get(LABEL_SWEEP_ID), labels_of(o).get(LABEL_TRIAL_INDEX))
                                        for o in live)
        for (sweep_id, index), count in per_trial.items():
            if count > 1:
                self._violate(f"{where}: trial {sweep_id}/{index} has {count} live jobs")

    def managed_jobs(self) -> list[dict[str, Any]]:
        """Every sweepq-managed job object on the cluster, any kind, any namespace."""
        return [o for kind in OBSERVED_KINDS for o in self.kube.list_objects(kind)
                if labels_of(o).get(LABEL_MANAGED_BY) == MANAGED_BY]

    def observe(self) -> None:
        """Check the caps against what the cluster holds now (call after every tick/step)."""
        self._check_caps(self.managed_jobs(), where="observation")

    def check_no_leaks(self) -> int:
        """Invariant 4: no managed job that is not terminal. Returns how many leaked."""
        leaked = sorted(f"{(o.get('metadata') or {}).get('namespace')}/{(o.get('metadata') or {}).get('name')}"
                        for o in self.managed_jobs() if not is_terminal(o))
        for name in leaked:
            self._violate(f"leak: job {name} still runs after every sweep ended")
        return len(leaked)

    # -- final checks -------------------------------------------------------------------------
    def creates_by_trial(self) -> dict[tuple[str, int], list[int]]:
        out: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
        with self._lock:
            for c in self.creates:
                out[(c.sweep_id, c.index)].append(c.attempt)
        return out

    def check_final(self, store: Any, *, dlq_bodies: Iterable[str] = ()) -> Figures:
        """Every expected outcome reached, every trial accounted for. Returns the figures."""
        dlq = list(dlq_bodies)
        figures = Figures(sweeps=len(self.expected), creates=len(self.creates))
        by_trial = self.creates_by_trial()
        for (sweep_id, index), attempts in by_trial.items():
            dups = [a for a, n in collections.Counter(attempts).items() if n > 1]
            # The one re-create sweepq accepts: the cluster lost the job (deleted behind every
            # client's back, never through the API) before any write could record that it existed,
            # so its trial still said PENDING — "the job may not exist yet: create it". The first
            # job is gone, the second runs alone; see docs/RELIABILITY.md.
            lost_by_cluster = [a for a in dups if f"{sweep_id}-{index}-a{a}" not in self.api_deletes]
            figures.recreated_after_loss += len(lost_by_cluster)
            dups = [a for a in dups if a not in lost_by_cluster]
            if dups:
                figures.duplicates += len(dups)
                self._violate(f"trial {sweep_id}/{index}: attempts {dups} got more than one job (the first was "
                              "deleted through the API in between)")
        known = {e.key for e in self.expected.values()}
        for sweep_id in {s for s, _ in by_trial} - known:
            self._violate(f"jobs were created for {sweep_id}, which nobody submitted")
        for exp in self.expected.values():
            if exp.outcome == "DLQ":
                figures.dead_letters += 1
                if exp.body not in dlq:
                    self._violate(f"body {exp.key[:60]!r} did not reach the DLQ")
                continue
            if store.get_sweep(exp.key) is None and any(exp.key in body for body in dlq):
                # SQS redrove a valid sweep after maxReceiveCount failed receives: not silent (the DLQ
                # alarm fires and the body can be redriven), but not what should happen here either
                figures.valid_dead_lettered += 1
                self._violate(f"sweep {exp.key} was dead-lettered by SQS before it could be stored")
                continue
            figures.lost += self._check_sweep(store, exp, by_trial)
            if exp.outcome == "REJECTED":
                figures.rejected += 1
        figures.leaks = self.check_no_leaks()
        figures.observations, figures.create_checks = self.observations, self.create_checks
        figures.violations = list(self.violations)
        return figures

    def _check_sweep(self, store: Any, exp: Expected, by_trial: Mapping[tuple[str, int], list[int]]) -> int:
        """Checks one sweep; returns how many of its trials are lost."""
        meta = store.get_sweep(exp.key)
        if meta is None:
            self._violate(f"sweep {exp.key} disappeared: not in DynamoDB")
            return exp.total or 1
        state = meta.get("state")
        if state == "ACTIVE":
            self._violate(f"sweep {exp.key} is still ACTIVE ({meta.get('succeeded')}/{meta.get('total')} done)")
            return 0
        if exp.outcome == "COMPLETED" and state == "FAILED" and str(meta.get("reason", "")).startswith(
                "no trial succeeded:"):
            state = "COMPLETED"  # ran to the end, every trial failed (injected faults): issue 18 calls that FAILED
        if exp.outcome not in ("TERMINAL", state):
            self._violate(f"sweep {exp.key} ended {state} ({meta.get('reason')!r}), expected {exp.outcome}")
        if state == "REJECTED":
            reason = meta.get("reason")
            if not readable(reason):
                self._violate(f"sweep {exp.key}: rejection reason is not readable: {str(reason)[:300]!r}")
            if exp.reason and exp.reason not in str(reason):
                self._violate(f"sweep {exp.key}: reason {str(reason)[:300]!r} lacks {exp.reason!r}")
            if any(s == exp.key for s, _ in by_trial):
                self._violate(f"rejected sweep {exp.key} has jobs")
            return 0
        trials = {int(t["index"]): t for t in store.trials(exp.key)}
        lost = 0
        if state == "COMPLETED":
            total = int(meta["total"])
            if exp.total is not None and total != exp.total:
                self._violate(f"sweep {exp.key}: total {total}, expected {exp.total}")
            done = int(meta.get("succeeded", 0)) + int(meta.get("failed", 0)) + int(meta.get("cancelled", 0))
            if done != total or meta.get("live") or int(meta.get("cursor", 0)) != total:
                self._violate(f"sweep {exp.key}: counters {done}/{total}, live {meta.get('live')}")
            missing = [i for i in range(total) if trials.get(i, {}).get("state") not in ("SUCCEEDED", "FAILED")]
            if missing:
                lost += len(missing)
                self._violate(f"sweep {exp.key}: trials {missing[:10]} lost (not SUCCEEDED/FAILED)")
        for index, trial in trials.items():
            self._check_attempts(exp.key, index, trial, by_trial.get((exp.key, index), []))
        return lost

    def _check_attempts(self, sweep_id: str, index: int, trial: Mapping[str, Any], created: list[int]) -> None:
        final = int(trial.get("attempt", 1))
        if any(a > final for a in created):
            self._violate(f"trial {sweep_id}/{index}: a job for attempt {max(created)} beyond its claim {final}")
        ended = {int(h["attempt"]) for h in trial.get("attempts") or [] if h.get("outcome") in ("FAILED", "LOST")}
        relaunched_early = [a for a in set(created) if a < final and a not in ended]
        if relaunched_early:
            self._violate(f"trial {sweep_id}/{index}: attempt {final} launched while {relaunched_early} had not ended")
        if trial.get("state") == "SUCCEEDED" and final not in created:
            self._violate(f"trial {sweep_id}/{index}: SUCCEEDED without a job for attempt {final}")

    def assert_ok(self, figures: Figures | None = None) -> None:
        problems = list(self.violations)
        assert not problems, f"{len(problems)} invariant violations:\n" + "\n".join(problems[:40])
        if figures is not None:
            assert figures.duplicates == 0 and figures.lost == 0 and figures.leaks == 0, figures.line()
