"""``dispatcher demo``: the whole sweepq loop on one machine, no AWS account, cluster or GPU.

moto's AWS endpoint on loopback → ``bootstrap`` → submit the sweep file → the dispatcher ticks with
the ``local`` backend (real ``torchrun`` process groups) until every trial is terminal → results
table, best trial, the failures with their cause, where logs and checkpoints are, and a PNG plot.

**State per sweep file.** Each file gets its own directory, ``<state_dir>/sweeps/<name>-<hash>/``,
keyed by the file's content (its name for reading, the SHA-256 of its bytes for identity), which
holds the table snapshot, ``results.json`` and ``results.png``. Ctrl-C stops cleanly: running
trials are stopped (SIGTERM, then SIGKILL after the termination grace), the table is snapshotted
there, and the same command (the same file, unchanged) resumes it — the interrupted trials are
retried from their checkpoints, using one of their ``max_retries``. Another file, or an edited
one, is another sweep: it starts fresh, and the demo says which interrupted sweeps it could resume.
The snapshot uses a Scan — fine here, on a local in-memory table; the dispatcher's tick never scans.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dispatcher.core.errors import SpecError, SweepqError
from dispatcher.core.results import TrialRow, swept_names, trial_rows
from dispatcher.localstack import start_moto, use_endpoint

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "REJECTED")
SNAPSHOT = "table.json"
STOP_MARGIN_S = 10.0


def sweep_dir(state: Path, sweep_file: str) -> Path:
    """The directory of one sweep file's demo state: its name and 12 hex digits of its content's hash."""
    data = Path(sweep_file).read_bytes()
    stem = re.sub(r"[^a-z0-9]+", "-", Path(sweep_file).stem.lower()).strip("-") or "sweep"
    return state / "sweeps" / f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}"


def interrupted(state: Path) -> list[Path]:
    """Sweep directories holding a snapshot (an interrupted demo), newest first."""
    snapshots = (state / "sweeps").glob(f"*/{SNAPSHOT}")
    return [p.parent for p in sorted(snapshots, key=lambda p: p.stat().st_mtime, reverse=True)]


def _snapshot(client: Any, table: str, path: Path, source: str) -> None:
    items, kwargs = [], {"TableName": table}
    while True:
        out = client.scan(**kwargs)
        items += [i for i in out["Items"] if i["pk"]["S"] != "LEASE"]
        if "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"source": source, "items": items}))
    tmp.replace(path)


def _restore(client: Any, table: str, path: Path) -> list[dict[str, Any]]:
    saved = json.loads(path.read_text())
    items = saved["items"] if isinstance(saved, dict) else saved
    for item in items:
        client.put_item(TableName=table, Item=item)
    return items


def _submit(sweep_file: str, home: Path) -> str:
    """Submit exactly as a researcher would: ``producer submit FILE`` against the local endpoint.
    (A subprocess, so the dispatcher package never imports the producer; its record of queued
    sweeps goes to the demo's state, not the user's home.)"""
    out = subprocess.run(
        [sys.executable, "-m", "producer", "submit", sweep_file, "--output", "json"],
        capture_output=True, text=True, check=False, env={**os.environ, "SWEEPQ_HOME": str(home)},
    )
    if out.returncode != 0:
        try:
            problems = json.loads(out.stdout)["error"]["problems"]
        except (ValueError, KeyError, TypeError):
            problems = [out.stderr.strip() or out.stdout.strip()]
        error = SpecError if out.returncode == 1 else SweepqError
        raise error("\n".join(f"producer submit {sweep_file}: {p}" for p in problems))
    return str(json.loads(out.stdout)["sweep_id"])


def rows_of(store: Any, sweep_id: str, now: float, metrics: Any = None) -> tuple[dict[str, Any], list[TrialRow]]:
    """The sweep's META item and its trials' rows: a succeeded trial's final metrics from its trial
    item (the dispatcher copied them there), the others' latest report from ``metrics`` (the
    metrics table, a :class:`~dispatcher.adapters.metrics.MetricsStore`) when given."""
    from dispatcher.adapters.metrics import trials_with_reported

    meta = store.get_sweep(sweep_id) or {}
    items = store.trials(sweep_id)
    if metrics is not None:
        items, _ = trials_with_reported(metrics, items, kind=meta.get("kind"))
    return meta, trial_rows(items, metric_name=meta.get("metric_name"), now=now)


def _declared(store: Any, sweep_id: str) -> set[str] | None:
    from dispatcher.core.spec import validate_sweep

    raw = store.get_spec(sweep_id)
    if raw is None:
        return None
    sweep = validate_sweep(raw, source=sweep_id, max_grid_size=2**62)
    return {p.name for p in sweep.params if p.distribution != "constant"}


def render(meta: dict[str, Any], rows: list[TrialRow], params: list[str], width: int = 80) -> Any:
    from dispatcher.results_view import results_table

    done = sum(int(meta.get(k, 0)) for k in ("succeeded", "failed", "cancelled", "early_stopped"))  # terminal
    title = f"sweep {meta.get('sweep_id')} — {meta.get('state')} — {done}/{meta.get('total', '?')} trials done"
    best = (meta.get("best") or {}).get("trial_index")
    return results_table(rows, params=params, metric_name=meta.get("metric_name"), goal=meta.get("metric_goal", "minimize"),
                         best_index=best, title=title, width=width)


def _grace(settings: Any) -> float:
    from dispatcher.backends.local import DEFAULT_TERMINATION_GRACE_S

    return float(getattr(settings, "termination_grace_s", DEFAULT_TERMINATION_GRACE_S))


def run_demo(sweep_file: str, *, slots: int, state_dir: str, interval: float, live: bool, output: str) -> int:
    import boto3
    from rich.console import Console
    from rich.live import Live

    from dispatcher.adapters.metrics import MetricsStore
    from dispatcher.adapters.queue import create_queues
    from dispatcher.adapters.store import Store
    from dispatcher.adapters.wake_queue import create_wake_queue
    from dispatcher.backends.local import LocalBackend
    from dispatcher.settings import Settings
    from dispatcher.wiring import build_dispatcher

    console = Console(stderr=output == "json")
    state = Path(state_dir).resolve()
    if not Path(sweep_file).is_file():
        raise SweepqError(f"FILE: {sweep_file} is not a file — e.g. `dispatcher demo examples/sweep.yaml`")
    mine = sweep_dir(state, sweep_file)
    mine.mkdir(parents=True, exist_ok=True)
    snapshot = mine / SNAPSHOT
    server, endpoint = start_moto()
    use_endpoint(endpoint)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        settings = Settings.load(
            backend="local", kinds=("local",), max_running=slots, local_slots=slots, state_dir=str(state),
            output_dir=str(state / "outputs"), queue_name="sweepq-demo", table="sweepq-demo", intake_budget_s=5.0,
        )
        session = boto3.session.Session()
        url, _ = create_queues(session.client("sqs"), settings.queue_name)
        store = Store(settings.table, session.client("dynamodb"))
        store.create_table()
        metrics = MetricsStore(str(settings.metrics_table), session.client("dynamodb"))  # what trials report
        metrics.create_table()
        create_wake_queue(session.client("sqs"), str(settings.wake_queue_name))  # their "trial finished" triggers
        if snapshot.is_file():
            items = _restore(session.client("dynamodb"), settings.table, snapshot)
            sweep_id = next(i["sweep_id"]["S"] for i in items if i["sk"]["S"] == "META")
            console.print(f"[bold]resuming[/] sweep {sweep_id} of {sweep_file} from {snapshot}")
        else:
            others = [d for d in interrupted(state) if d != mine]
            if others:
                console.print(f"note: {len(others)} other interrupted sweep(s) kept in {state / 'sweeps'}; run the demo "
                              f"with their file to resume: {', '.join(d.name for d in others)}")
            os.environ["SWEEPQ_QUEUE_URL"] = url
            sweep_id = _submit(sweep_file, state / "producer")
            console.print(f"submitted {sweep_file} as sweep [bold]{sweep_id}[/] (AWS endpoint {endpoint})")
        backend = LocalBackend(settings.state_dir, slots=settings.local_slots, termination_grace_s=_grace(settings))
        dispatcher = build_dispatcher(settings, session=session, backends={"local": backend})
        declared: set[str] | None = None  # the swept parameters, once the first tick stored the sweep
        started = time.time()
        meta: dict[str, Any] = {}
        rows: list[TrialRow] = []
        with Live(console=console, refresh_per_second=2, transient=False) if live else _NoLive() as view:
            while not stop.is_set():
                report = dispatcher.tick()
                for err in report.errors:
                    console.print(f"[yellow]! {err}[/]")
                meta, rows = rows_of(store, sweep_id, time.time(), metrics)
                if declared is None and meta:
                    declared = _declared(store, sweep_id)
                view.update(render(meta, rows, swept_names(rows, declared) if rows else [], console.width))
                if meta.get("state") in TERMINAL:
                    break
                stop.wait(interval)
        if stop.is_set() and meta.get("state") not in TERMINAL:
            jobs = [t["job"] for t in (meta.get("live") or {}).values() if t.get("job")]
            for job in jobs:
                backend.cancel(job)
            console.print(f"stopping {len(jobs)} running trial(s) (SIGTERM; SIGKILL after {backend.kill_grace:.0f} s)…")
            backend.wait_stopped(jobs, timeout=backend.kill_grace + STOP_MARGIN_S)
            _snapshot(session.client("dynamodb"), settings.table, snapshot, sweep_file)
            console.print(f"[bold]interrupted[/]: running trials stopped, state saved to {snapshot}; "
                          f"run the same command again to resume: dispatcher demo {sweep_file}")
            return 130
        snapshot.unlink(missing_ok=True)
        return _finish(console, meta, rows, params=swept_names(rows, declared) if rows else [], state=state, mine=mine,
                       wall=time.time() - started, output=output)
    finally:
        signal.signal(signal.SIGINT, previous)
        server.stop()


class _NoLive:
    def __enter__(self) -> "_NoLive":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, renderable: Any) -> None:
        return None


def _finish(console: Any, meta: dict[str, Any], rows: list[TrialRow], *, params: list[str], state: Path, mine: Path,
            wall: float, output: str) -> int:
    from rich.markup import escape

    from dispatcher.core.results import sort_rows
    from dispatcher.demo_plot import plot
    from dispatcher.results_view import failure_lines, footnotes
    from dispatcher.trials import record_from_item

    goal = meta.get("metric_goal", "minimize")
    metric = meta.get("metric_name") or "metric"
    ranked = sort_rows(rows, "metric", goal=goal)
    best = meta.get("best") or None
    png = plot(rows, params=params, metric=metric, goal=goal, best_index=best.get("trial_index") if best else None,
               outputs=state / "outputs", path=mine / "results.png")
    result = {
        "sweep_id": meta.get("sweep_id"), "state": meta.get("state"), "reason": meta.get("reason", ""),
        "total": meta.get("total"), "succeeded": meta.get("succeeded", 0), "failed": meta.get("failed", 0),
        "metric": meta.get("metric_name"), "goal": goal, "best": best, "params": params,
        "trials": [r.as_json() for r in ranked], "wall_s": round(wall, 1),
        "logs": str(state / "jobs"), "outputs": str(state / "outputs"), "plot": str(png) if png else None,
    }
    (mine / "results.json").write_text(json.dumps(result, indent=2, default=str))
    if output == "json":
        print(json.dumps(result, default=str))
    else:
        console.print(render(meta, ranked, params, console.width))
        gpus = record_from_item(meta).launch.gpus_per_trial if meta.get("launch") else 0
        for line in footnotes(ranked, gpus_per_trial=gpus) + failure_lines(rows, str(meta.get("sweep_id"))):
            console.print(line, markup=False, highlight=False)
        if meta.get("reason"):
            console.print(f"[bold]{meta.get('state')}[/]: {escape(str(meta.get('reason')))}", highlight=False)
        if best:
            console.print(f"[bold green]best trial[/] {escape(str(best.get('trial_id')))}: {escape(str(best.get('metric')))} = "
                          f"{best.get('value'):.4f} with {escape(str(best.get('params')))}", highlight=False)
        console.print(f"logs: {state / 'jobs'}/<job>/log.txt   checkpoints and result.json: {state / 'outputs'}/<trial id>/")
        if png:
            console.print(f"plot: {png}")
        console.print(f"finished in {wall:.0f} s — results in {mine / 'results.json'}")
    return 0 if meta.get("state") == "COMPLETED" and not meta.get("failed") else 1
