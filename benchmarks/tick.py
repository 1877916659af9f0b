"""Cost of one dispatcher tick as active sweeps and running jobs grow, over real HTTP.

AWS is moto's HTTP server (``ThreadedMotoServer`` on 127.0.0.1, boto3 pointed at it with
``endpoint_url``); Kubernetes is the API emulator (``tests/kube_emulator.py``) over HTTP with the
official client. AWS calls are counted by operation with botocore's ``before-call`` /
``after-call`` hooks (which also time them); Kubernetes calls come from the emulator's counters.

Each scenario ``SWEEPSxJOBS[:TRIALS][+KEPT]`` starts from an empty table and cluster, submits
``SWEEPS`` grid sweeps (``TRIALS`` trials each, default enough to keep ``JOBS`` busy), ticks until
``JOBS`` jobs exist (``max_running = JOBS``), marks them all Running as the operator would, ticks
once more to record that, and optionally puts ``KEPT`` finished jobs on the cluster (what a
``ttlSecondsAfterFinished`` of a day leaves behind). Then it measures, with one warm dispatcher:

* a **quiet** tick — nothing changed (median wall time of 3; the calls are the same each time);
* a **steady** tick — 10 % of the running jobs finished (at least 1): each is recorded and
  replaced by a new launch.

The wall time includes moto's and the emulator's own request handling, which run as threads of
this process (no network in between, but their CPU time is spent on these 2 cores).

    python benchmarks/tick.py            # about 2–3 minutes on 2 cores
    python benchmarks/tick.py --quick    # small scenarios only (~20 s)
    python benchmarks/tick.py --scenarios 2000x5000   # ten times the default's largest (minutes)
"""

from __future__ import annotations

import argparse
import collections
import copy
import logging
import math
import re
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    AwsCalls,
    CountingSession,
    Stopwatch,
    fast_moto_transactions,
    free_port,
    header,
    markdown_table,
    write_json,
)
from helpers import bootstrap, make_dispatcher, submit  # noqa: E402
from kube_emulator import KubeEmulator, job_status_patch  # noqa: E402

from dispatcher.backends import make_backend  # noqa: E402
from dispatcher.core.jobs import LABEL_SWEEP_ID, LABEL_TRIAL_INDEX, DryRun, JobPhase, JobStatus  # noqa: E402
from dispatcher.core.launch import MAX_DURATION_S  # noqa: E402
from dispatcher.settings import Settings  # noqa: E402
from dispatcher.tick import Dispatcher, TickReport  # noqa: E402
from dispatcher.wiring import backend_options  # noqa: E402

KIND = "pytorchjob"
NAMESPACE = "sweepq"
DEFAULT_SCENARIOS = "1x5:10,1x5:1000000,1x10,10x100,100x300,200x500+5000"
QUICK_SCENARIOS = "1x5:10,1x5:1000000,1x10,10x50"
SHORT_OPS = {  # column-friendly operation names
    "dynamodb.PutItem": "Put", "dynamodb.GetItem": "Get", "dynamodb.UpdateItem": "Update",
    "dynamodb.DeleteItem": "Delete", "dynamodb.Query": "Query", "dynamodb.BatchGetItem": "BatchGet",
    "dynamodb.TransactWriteItems": "TransactWrite", "dynamodb.Scan": "SCAN", "sqs.ReceiveMessage": "SQS Receive",
    "sqs.DeleteMessage": "SQS Delete", "sqs.SendMessage": "SQS Send",
}


# --------------------------------------------------------------------------- measuring


class TimedBackend:
    """Delegates to the real backend and adds up the time spent in it (Kubernetes calls + parsing)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.kind, self.seconds = backend, backend.kind, 0.0

    def _timed(self, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - started

    def dryrun(self, request: Any) -> DryRun:
        return self._timed(self.backend.dryrun, request)

    def submit(self, dryrun: DryRun) -> str:
        return self._timed(self.backend.submit, dryrun)

    def observe(self) -> dict[str, JobStatus]:
        return self._timed(self.backend.observe)

    def cancel(self, name: str) -> None:
        self._timed(self.backend.cancel, name)


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    sweeps: int
    jobs: int
    trials: int  # per sweep
    kept: int = 0  # then measured again with this many finished jobs left on the cluster

    @classmethod
    def parse(cls, text: str) -> "Scenario":
        match = re.fullmatch(r"(\d+)x(\d+)(?::(\d+))?(?:\+(\d+))?", text.strip())
        if not match:
            raise SystemExit(f"--scenarios: {text!r} is not SWEEPSxJOBS[:TRIALS][+KEPT] — e.g. 200x500 or 1x5:1000000")
        sweeps, jobs = int(match[1]), int(match[2])
        finishing = max(1, jobs // 10)
        trials = int(match[3]) if match[3] else max(10, 4 * math.ceil(jobs / sweeps))
        if sweeps * trials < jobs + finishing:
            raise SystemExit(f"--scenarios: {text}: {sweeps} sweeps × {trials} trials cannot keep {jobs} jobs busy "
                             f"and replace {finishing} — give more trials (:{math.ceil((jobs + finishing) / sweeps)})")
        return cls(sweeps, jobs, trials, int(match[4] or 0))

    @property
    def label(self) -> str:
        return f"{self.sweeps}x{self.jobs}:{self.trials}" + (f"+{self.kept}" if self.kept else "")


def sweep_spec(name: str, trials: int) -> dict[str, Any]:
    """A grid of exactly ``trials`` points: learning rates × seeds (seeds only when over 100)."""
    n_lr = trials if trials <= 100 else 100
    if trials > 100 and trials % 100:
        raise SystemExit(f"--scenarios: {trials} trials per sweep — use at most 100 or a multiple of 100")
    parameters: dict[str, Any] = {"learning_rate": {"values": [round(1e-5 * (i + 1), 7) for i in range(n_lr)]}}
    if trials > 100:
        parameters["seed"] = {"min": 0, "max": trials // 100 - 1}
    return {"name": name, "method": "grid", "program": "train.py",
            "metric": {"name": "eval/accuracy", "goal": "maximize"}, "parameters": parameters}


@dataclass
class Measured:
    scenario: Scenario
    tick: str  # quiet | steady
    report: TickReport
    wall_s: float
    aws_s: float
    kube_s: float
    aws_calls: dict[str, int]
    kube_calls: dict[str, int]
    kept: int = 0  # finished jobs on the cluster when measured
    walls: list[float] = field(default_factory=list)
    touched: int = 0  # sweeps with a job that finished or was created in the tick

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario.label, "sweeps": self.scenario.sweeps, "jobs": self.scenario.jobs,
                "trials_per_sweep": self.scenario.trials, "kept_finished_jobs": self.kept, "tick": self.tick,
                "launched": self.report.launched, "finished": self.report.finished, "running": self.report.running,
                "active_sweeps": self.report.active_sweeps, "wall_s": self.wall_s, "walls_s": self.walls,
                "aws_s": self.aws_s, "kube_s": self.kube_s, "aws_calls": self.aws_calls, "kube_calls": self.kube_calls,
                "touched_sweeps": self.touched}


class Bench:
    """moto's HTTP server and the Kubernetes emulator, shared by all scenarios (reset between them)."""

    def __init__(self, *, moto_as_is: bool = False) -> None:
        from moto.server import ThreadedMotoServer

        if not moto_as_is:
            fast_moto_transactions()

        port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.kube = KubeEmulator().start()
        self.aws = AwsCalls()

    def close(self) -> None:
        self.kube.stop()
        self.moto.stop()

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=30)
        self.kube.reset()

    def running_jobs(self) -> list[dict[str, Any]]:
        return [j for j in self.kube.list_objects(KIND)
                if {"Running"} == {c["type"] for c in (j.get("status") or {}).get("conditions", [])
                                   if c["status"] == "True"} - {"Created"}]

    def run(self, scenario: Scenario) -> list[Measured]:
        self.reset()
        settings = Settings.load({}, backend=KIND, max_running=scenario.jobs, namespace=NAMESPACE,
                                 table=f"bench-{uuid.uuid4().hex[:8]}")
        session = CountingSession(self.endpoint, self.aws)
        store, queue = bootstrap(session, settings)
        backend = TimedBackend(make_backend(KIND, api_client=self.kube.api_client, namespace=NAMESPACE,
                                            **backend_options(KIND, settings)))
        dispatcher = make_dispatcher(session, settings, {KIND: backend}, time.time, queue)
        for i in range(scenario.sweeps):
            # start_timeout at its most: the jobs stay Pending until _settle, and filling 2000x5000 takes
            # longer than the default 30 minutes (its first trials were retried before they were measured)
            submit(queue, sweep_spec(f"bench-{i:03d}", scenario.trials), {"start_timeout": MAX_DURATION_S})
        self._fill(dispatcher, scenario)
        results = []
        for kept in (0, scenario.kept) if scenario.kept else (0,):
            if kept:
                self._keep_finished(kept)
            results.append(self._measure(dispatcher, backend, scenario, "quiet", kept, repeats=3))
            jobs = sorted(self.running_jobs(), key=lambda j: j["metadata"]["name"])
            finishing = max(1, scenario.jobs // 10)
            finished = jobs[:: max(1, len(jobs) // finishing)][:finishing]
            for job in finished:
                self.kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.SUCCEEDED)
            results.append(self._measure(dispatcher, backend, scenario, "steady", kept, repeats=1,
                                         finished={j["metadata"]["labels"][LABEL_SWEEP_ID] for j in finished}))
            self._settle(dispatcher, scenario)
        return results

    def _fill(self, dispatcher: Dispatcher, scenario: Scenario) -> None:
        """Tick until the cap is reached, mark every job Running, record that."""
        for _ in range(2 + scenario.jobs // dispatcher.settings.max_launches_per_tick):
            report = dispatcher.tick()
            if report.errors:
                raise RuntimeError(f"setup tick failed: {report.errors}")
            if len(self.kube.list_objects(KIND)) >= scenario.jobs:
                break
        jobs = self.kube.list_objects(KIND)
        if len(jobs) != scenario.jobs or report.active_sweeps != scenario.sweeps:
            raise RuntimeError(f"setup reached {len(jobs)} jobs / {report.active_sweeps} sweeps, wanted "
                               f"{scenario.jobs} / {scenario.sweeps}")
        self._settle(dispatcher, scenario)

    def _settle(self, dispatcher: Dispatcher, scenario: Scenario) -> None:
        """Mark every job not yet Running as Running (the operator's part) and tick to record it —
        more than once when the last tick replaced more finished trials than one tick launches
        (2000x5000: 500 finished, ``max_launches_per_tick`` 200)."""
        for _ in range(2 + scenario.jobs // dispatcher.settings.max_launches_per_tick):
            for job in self.kube.list_objects(KIND):
                if not (job.get("status") or {}).get("startTime"):
                    self.kube.set_job_phase(KIND, job["metadata"]["name"], JobPhase.RUNNING)
            report = dispatcher.tick()
            if report.errors:
                raise RuntimeError(f"recording Running failed: {report.as_dict()}")
            if report.running == scenario.jobs and report.launched == 0:
                return
        raise RuntimeError(f"recording Running did not settle: {report.as_dict()}")

    def _keep_finished(self, count: int) -> None:
        """``count`` succeeded jobs of earlier trials, shaped like the real ones (same size)."""
        template = self.kube.list_objects(KIND)[0]
        status = job_status_patch(KIND, JobPhase.SUCCEEDED)
        for n in range(count):
            obj = copy.deepcopy(template)
            labels = obj["metadata"]["labels"]
            index = 10_000_000 + n
            obj["metadata"]["name"] = f"{labels[LABEL_SWEEP_ID]}-{index}-a1"
            obj["metadata"]["uid"] = str(uuid.uuid4())
            labels[LABEL_TRIAL_INDEX] = str(index)
            obj["status"] = status
            self.kube.put_object(KIND, obj, NAMESPACE)

    def _measure(self, dispatcher: Dispatcher, backend: TimedBackend, scenario: Scenario, tick: str, kept: int,
                 *, repeats: int, finished: set[str] | frozenset[str] = frozenset()) -> Measured:
        """``finished``: the sweeps whose jobs were made to finish before the tick."""
        runs = []
        for _ in range(repeats):
            existing = {j["metadata"]["name"] for j in self.kube.list_objects(KIND)}
            self.aws.reset()
            self.kube.reset_counts()
            backend.seconds = 0.0
            with Stopwatch() as sw:
                report = dispatcher.tick()
            if report.errors:
                raise RuntimeError(f"{tick} tick of {scenario.label} failed: {report.errors}")
            kube_calls = {f"{verb} {plural}": n for (verb, plural), n in sorted(self.kube.requests.items()) if n}
            created = {j["metadata"]["labels"][LABEL_SWEEP_ID] for j in self.kube.list_objects(KIND)
                       if j["metadata"]["name"] not in existing}
            runs.append(Measured(scenario, tick, report, sw.seconds, self.aws.seconds, backend.seconds,
                                 dict(sorted(self.aws.calls.items())), kube_calls, kept,
                                 touched=len(set(finished) | created)))
        walls = [m.wall_s for m in runs]
        median = sorted(runs, key=lambda m: m.wall_s)[len(runs) // 2]
        median.walls = walls
        return median


# --------------------------------------------------------------------------- output


def _ops(calls: dict[str, int]) -> str:
    return ", ".join(f"{SHORT_OPS.get(op, op)} {n}" for op, n in calls.items())


def table(results: list[Measured]) -> str:
    headers = ["active sweeps", "trials / sweep", "running jobs", "finished jobs kept", "tick", "launches",
               "finished", "sweeps touched", "AWS calls", "AWS calls by operation", "k8s calls", "k8s calls by verb", "wall (s)",
               "in AWS calls (s)", "in k8s backend (s)", "sweepq's own code (s)"]
    rows = []
    for m in results:
        s = m.scenario
        rows.append([s.sweeps, s.trials, s.jobs, m.kept, m.tick, m.report.launched, m.report.finished, m.touched,
                     sum(m.aws_calls.values()), _ops(m.aws_calls), sum(m.kube_calls.values()),
                     ", ".join(f"{k} {v}" for k, v in m.kube_calls.items()), round(m.wall_s, 3), round(m.aws_s, 3),
                     round(m.kube_s, 3), round(max(0.0, m.wall_s - m.aws_s - m.kube_s), 3)])
    return markdown_table(headers, rows)


def expected_aws_calls(m: Measured) -> int:
    """Lease put + queue receive + lease renew (after intake, and again after listing the cluster) +
    index query + ⌈sweeps/100⌉ batch gets + lease release;
    the finished (succeeded) trials' items and their metrics items (the metrics table, CONTRACTS C1:
    a pytorchjob's first pod is known by name) in one BatchGetItem of each table per 100;
    one transaction per touched sweep — its finished trials, its claims, the LAUNCHED of a job
    the previous tick created (recorded by the next tick that lists it, in that tick's transaction
    of the sweep) — plus, per sweep that ended in the tick, its ``end_sweep`` (and ``active_sweeps``
    counts the sweeps still active after the tick: the ended ones were loaded too). The benchmark's
    ticks end no sweep, and ``touched`` there is the sweeps with a job that finished or was created
    (the tick before each measured one creates nothing; rev17 finding 7). A sweep
    whose changes of one tick pass a transaction's limits (99 items + the lease check, 4 MB, the
    META expression budget: a few dozen trials changing at once) is written in more than one: none of
    these scenarios has one, and if one did, :func:`checks` would report the tick as a mismatch
    (rev16 finding 5: the formula is exact only below those limits)."""
    ended = getattr(m, "ended", 0)  # sweeps that ended in the tick: their unit of work, then end_sweep
    return (6 + math.ceil((m.report.active_sweeps + ended) / 100) + 2 * math.ceil(m.report.finished / 100)
            + m.touched + ended)


def checks(results: list[Measured]) -> list[str]:
    lines = []
    scans = sum(m.aws_calls.get("dynamodb.Scan", 0) for m in results)
    lines.append(f"- DynamoDB Scan calls in all measured ticks: {scans} (goal 0).")
    lists = {m.kube_calls.get("list pytorchjobs", 0) for m in results}
    lines.append(f"- Kubernetes list calls per tick: {sorted(lists)} (goal exactly one per job kind; one kind here).")
    mismatched = [m for m in results if sum(m.aws_calls.values()) != expected_aws_calls(m)
                  or sum(m.kube_calls.values()) != 1 + m.report.launched]
    lines.append("- Every tick made exactly 6 + ⌈sweeps/100⌉ + 2·⌈finished/100⌉ + sweeps touched AWS calls and "
                 "1 + launches Kubernetes calls — independent of trials per sweep and of finished jobs kept: "
                 + ("yes." if not mismatched else f"NO for {[(m.scenario.label, m.tick, m.kept) for m in mismatched]}."))
    by_trials = collections.defaultdict(dict)
    for m in results:
        s = m.scenario
        if s.sweeps == 1 and not m.kept:
            by_trials[(s.jobs, m.tick)][s.trials] = m
    for (jobs, tick), found in sorted(by_trials.items()):
        if len(found) > 1:
            lo, hi = min(found), max(found)
            same = found[lo].aws_calls == found[hi].aws_calls and found[lo].kube_calls == found[hi].kube_calls
            lines.append(f"- {tick} tick, 1 sweep, {jobs} jobs: a {hi:,}-trial sweep makes "
                         f"{sum(found[hi].aws_calls.values())} AWS + {sum(found[hi].kube_calls.values())} k8s calls, "
                         f"a {lo:,}-trial sweep {sum(found[lo].aws_calls.values())} + "
                         f"{sum(found[lo].kube_calls.values())} ({'identical by operation' if same else 'DIFFERENT'}).")
    for m in results:
        s = m.scenario
        if (s.sweeps, s.jobs) == (200, 500):
            lines.append(f"- {m.tick} tick, 200 sweeps / 500 jobs, {m.kept:,} finished jobs kept: {m.wall_s:.2f} s "
                         f"(goal < 3 s: {'met' if m.wall_s < 3 else 'NOT met'}).")
            if m.tick == "steady":
                calls = sum(m.aws_calls.values())
                lines.append(f"- steady tick, 200 sweeps / 500 jobs, {m.kept:,} finished jobs kept: {calls} AWS calls "
                             f"(goal ≤ 60: {'met' if calls <= 60 else 'NOT met'}).")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"scenarios {QUICK_SCENARIOS}")
    parser.add_argument("--scenarios", default="",
                        help=f"SWEEPSxJOBS[:TRIALS][+KEPT],... (default {DEFAULT_SCENARIOS})")
    parser.add_argument("--moto-as-is", action="store_true",
                        help="keep moto's whole-table copy per transaction (O(table) per call; see _common.py)")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    chosen = args.scenarios or (QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS)
    scenarios = [Scenario.parse(s) for s in chosen.split(",")]
    logging.getLogger("dispatcher").setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto server's request log
    started = time.perf_counter()
    bench = Bench(moto_as_is=args.moto_as_is)
    results: list[Measured] = []
    try:
        for scenario in scenarios:
            results += bench.run(scenario)
            print(f"  {scenario.label:<22} done at {time.perf_counter() - started:6.1f} s", file=sys.stderr)
    finally:
        bench.close()
    elapsed = time.perf_counter() - started
    print(header("One tick: AWS and Kubernetes calls and wall time as sweeps and jobs grow", __file__, argv))
    print(table(results))
    print()
    print("\n".join(checks(results)))
    print(f"\nRuntime: {elapsed:.0f} s (setup included).")
    payload = {"benchmark": "tick", "argv": argv, "results": [m.as_dict() for m in results], "runtime_s": elapsed}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
