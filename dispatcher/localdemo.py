"""``dispatcher demo``: the whole sweepq loop on one machine, no AWS account, cluster or GPU.

moto's AWS endpoint on loopback → ``bootstrap`` → submit the sweep file → the dispatcher ticks with
the ``local`` backend (real ``torchrun`` process groups) until every trial is terminal → results
table, best trial, where logs and checkpoints are, and a PNG plot.

Ctrl-C stops cleanly: running trials are cancelled, the table is snapshotted to the state directory
and the next ``dispatcher demo`` resumes from it (the interrupted trials are retried from their
checkpoints, using one of their ``max_retries``). The snapshot uses a Scan — fine here, on a local
in-memory table; the dispatcher's tick never scans.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dispatcher.core.errors import SweepqError
from dispatcher.localstack import start_moto, use_endpoint

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "REJECTED")


def _snapshot(client: Any, table: str, path: Path) -> None:
    items, kwargs = [], {"TableName": table}
    while True:
        out = client.scan(**kwargs)
        items += [i for i in out["Items"] if i["pk"]["S"] != "LEASE"]
        if "LastEvaluatedKey" not in out:
            break
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(items))
    tmp.replace(path)


def _restore(client: Any, table: str, path: Path) -> list[dict[str, Any]]:
    items = json.loads(path.read_text())
    for item in items:
        client.put_item(TableName=table, Item=item)
    return items


def _submit(sweep_file: str) -> str:
    """Submit exactly as a researcher would: ``producer submit FILE`` against the local endpoint.
    (A subprocess, so the dispatcher package never imports the producer.)"""
    out = subprocess.run(
        [sys.executable, "-m", "producer", "submit", sweep_file, "--output", "json"],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SweepqError(f"producer submit {sweep_file} failed (exit {out.returncode}): {out.stderr.strip()}")
    return str(json.loads(out.stdout)["sweep_id"])


def _metric(trial: dict[str, Any], name: str | None) -> float | None:
    value = (trial.get("metrics") or {}).get(name) if name else None
    return float(value) if isinstance(value, (int, float)) else None


def trial_rows(store: Any, sweep_id: str, now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta = store.get_sweep(sweep_id) or {}
    rows = []
    for t in sorted(store.trials(sweep_id), key=lambda t: t["index"]):
        start = t.get("started_at") or t.get("claimed_at") or now
        end = t.get("finished_at") or now
        rows.append({
            "index": t["index"], "trial_id": t.get("trial_id"), "params": json.loads(t.get("params", "{}")),
            "state": t.get("state"), "attempt": t.get("attempt"), "elapsed_s": round(end - start, 1),
            "metric": _metric(t, meta.get("metric_name")), "reason": t.get("reason", ""),
        })
    return meta, rows


def _varying(rows: list[dict[str, Any]]) -> set[str]:
    """Parameters whose value differs between trials (constants would only add noise)."""
    keys = {k for r in rows for k in r["params"]}
    varying = {k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in rows}) > 1}
    return varying or keys


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    metric = meta.get("metric_name") or "metric"
    done = meta.get("succeeded", 0) + meta.get("failed", 0) + meta.get("cancelled", 0)
    table = Table(title=f"sweep {meta.get('sweep_id')} — {meta.get('state')} — {done}/{meta.get('total', '?')} trials done")
    for col in ("#", "parameters", "state", "attempt", "elapsed", metric):
        table.add_column(col, justify="right" if col in ("#", "attempt", "elapsed", metric) else "left")
    swept = _varying(rows)
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in sorted(r["params"].items()) if k in swept)
        value = "" if r["metric"] is None else f"{r['metric']:.4f}"
        table.add_row(str(r["index"]), params, r["state"], str(r["attempt"]), f"{r['elapsed_s']:.0f}s", value)
    return table


def plot(meta: dict[str, Any], rows: list[dict[str, Any]], outputs: Path, path: Path) -> Path | None:
    """Bar chart of the final metric per trial and, from each result.json, the metric per epoch."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    metric = meta.get("metric_name") or "metric"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [str(r["index"]) for r in rows]
    left.bar(labels, [r["metric"] or 0.0 for r in rows], color="tab:blue")
    left.set_xlabel("trial")
    left.set_ylabel(metric)
    left.set_title(f"{metric} per trial")
    for r in rows:
        result = outputs / str(r["trial_id"]) / "result.json"
        if result.is_file():
            history = json.loads(result.read_text()).get("history", [])
            points = [(h.get("epoch"), h.get(metric)) for h in history if h.get(metric) is not None]
            if points:
                right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"trial {r['index']}")
    right.set_xlabel("epoch")
    right.set_ylabel(metric)
    right.set_title(f"{metric} per epoch")
    if right.lines:
        right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_demo(sweep_file: str, *, slots: int, state_dir: str, interval: float, live: bool, output: str) -> int:
    import boto3
    from rich.console import Console
    from rich.live import Live

    from dispatcher.adapters.queue import create_queues
    from dispatcher.adapters.store import Store
    from dispatcher.settings import Settings
    from dispatcher.wiring import build_dispatcher

    console = Console(stderr=output == "json")
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    snapshot = state / "table.json"
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
        if snapshot.is_file():
            items = _restore(session.client("dynamodb"), settings.table, snapshot)
            sweep_id = next(i["sweep_id"]["S"] for i in items if i["sk"]["S"] == "META")
            console.print(f"[bold]resuming[/] sweep {sweep_id} from {snapshot}")
        else:
            os.environ["SWEEPQ_QUEUE_URL"] = url
            sweep_id = _submit(sweep_file)
            console.print(f"submitted {sweep_file} as sweep [bold]{sweep_id}[/] (AWS endpoint {endpoint})")
        dispatcher = build_dispatcher(settings, session=session)
        started = time.time()
        meta: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        with Live(console=console, refresh_per_second=2, transient=False) if live else _NoLive() as view:
            while not stop.is_set():
                report = dispatcher.tick()
                for err in report.errors:
                    console.print(f"[yellow]! {err}[/]")
                meta, rows = trial_rows(store, sweep_id, time.time())
                view.update(render(meta, rows))
                if meta.get("state") in TERMINAL:
                    break
                stop.wait(interval)
        if stop.is_set() and meta.get("state") not in TERMINAL:
            backend = dispatcher.backends["local"]
            for t in (meta.get("live") or {}).values():
                if t.get("job"):
                    backend.cancel(t["job"])
            _snapshot(session.client("dynamodb"), settings.table, snapshot)
            console.print(f"[bold]interrupted[/]: running trials stopped, state saved to {snapshot}; "
                          "run the same command again to resume")
            return 130
        snapshot.unlink(missing_ok=True)
        return _finish(console, meta, rows, state, time.time() - started, output)
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


def _finish(console: Any, meta: dict[str, Any], rows: list[dict[str, Any]], state: Path, wall: float, output: str) -> int:
    goal = meta.get("metric_goal", "minimize")
    scored = [r for r in rows if r["metric"] is not None]
    ranked = sorted(scored, key=lambda r: r["metric"], reverse=goal == "maximize") + [r for r in rows if r["metric"] is None]
    png = plot(meta, rows, state / "outputs", state / "results.png")
    result = {
        "sweep_id": meta.get("sweep_id"), "state": meta.get("state"), "total": meta.get("total"),
        "succeeded": meta.get("succeeded", 0), "failed": meta.get("failed", 0), "metric": meta.get("metric_name"),
        "goal": goal, "best": meta.get("best"), "trials": ranked, "wall_s": round(wall, 1),
        "logs": str(state / "jobs"), "outputs": str(state / "outputs"), "plot": str(png) if png else None,
    }
    (state / "results.json").write_text(json.dumps(result, indent=2, default=str))
    if output == "json":
        print(json.dumps(result, default=str))
    else:
        console.print(render(meta, ranked))
        best = meta.get("best")
        if best:
            console.print(f"[bold green]best trial[/] {best.get('trial_id')}: {best.get('metric')} = {best.get('value'):.4f} "
                          f"with {best.get('params')}")
        console.print(f"logs: {state / 'jobs'}/<job>/   checkpoints and result.json: {state / 'outputs'}/<trial id>/")
        if png:
            console.print(f"plot: {png}")
        console.print(f"finished in {wall:.0f} s — results in {state / 'results.json'}")
    return 0 if meta.get("state") == "COMPLETED" and not meta.get("failed") else 1
