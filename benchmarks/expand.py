"""Next-trial cost: sweepq's lazy grid vs W&B's ``sweeps`` engine, side by side in one run.

For grids of 10^3 … 10^6 points and ``k`` trials already launched (half the grid, and 10 before
the end), both engines produce the next 10 trials:

* sweepq: ``sweep.trial(i)`` for ``i`` in ``k..k+9`` — *warm* (the parsed sweep cached, as the
  tick's ``SpecCache`` holds it) and *cold* (``validate_sweep(raw)`` first, as a fresh Lambda does);
* ``sweeps``: ``grid_search_next_runs(runs, config, validate=False, n=10)`` with the ``k`` launched
  runs passed in as ``SweepRun`` objects, as the W&B controller does.

Both return the same 10 trials (checked). Times are the best of repeated calls; peak memory is
``tracemalloc``'s peak while producing the 10 trials (for ``sweeps`` including building the ``k``
runs it needs), measured in separate passes so tracing does not distort the times.

Every grid has the same three parameters (only their number of values grows), so per-trial cost
is compared at equal parameter count.

    python benchmarks/expand.py            # 10^3 … 10^6 (about 1–2 minutes on 2 cores)
    python benchmarks/expand.py --quick    # 10^3 and 10^4 (seconds)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Stopwatch, header, markdown_table, write_json  # noqa: E402

from dispatcher.core.identity import canonical  # noqa: E402
from dispatcher.core.spec import validate_sweep  # noqa: E402

N_NEXT = 10
# grid size → values per parameter (three parameters: the product is the size)
SHAPES = {10**2: (5, 10, 2), 10**3: (10, 10, 10), 10**4: (10, 10, 100), 10**5: (10, 100, 100), 10**6: (100, 100, 100)}


def sweep_config(size: int) -> dict[str, Any]:
    n_lr, n_layers, n_seed = SHAPES[size]
    return {
        "method": "grid",
        "program": "train.py",
        "metric": {"name": "eval/accuracy", "goal": "maximize"},
        "parameters": {
            "learning_rate": {"values": [round(1e-4 * (i + 1), 6) for i in range(n_lr)]},
            "layers": {"values": [2 + i for i in range(n_layers)]},
            "seed": {"min": 0, "max": n_seed - 1},
        },
    }


def best_seconds(fn: Callable[[], Any], *, repeats: int, budget_s: float = 2.0) -> float:
    """Best wall time of ``fn`` over up to ``repeats`` calls (fewer when a call is slow) — timeit's
    convention: the minimum is the figure least disturbed by other load on a shared machine."""
    times = []
    started = time.perf_counter()
    for _ in range(repeats):
        with Stopwatch() as sw:
            fn()
        times.append(sw.seconds)
        if time.perf_counter() - started > budget_s:
            break
    return min(times)


def peak_bytes(fn: Callable[[], Any]) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        result = fn()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def ours_next(raw: dict[str, Any], k: int, sweep: Any = None) -> list[dict[str, Any]]:
    sweep = sweep if sweep is not None else validate_sweep(raw)
    return [sweep.trial(i) for i in range(k, k + N_NEXT)]


def wandb_runs(sweep: Any, k: int) -> list[Any]:
    """The ``k`` launched runs as the W&B controller hands them to the engine."""
    from sweeps import RunState, SweepRun

    return [SweepRun(name=f"run-{i}", state=RunState.finished, config={name: {"value": value} for name, value in
                                                                        sweep.trial(i).items()}) for i in range(k)]


def wandb_next(runs: list[Any], raw: dict[str, Any]) -> list[dict[str, Any]]:
    from sweeps.grid_search import grid_search_next_runs

    suggested = grid_search_next_runs(runs, raw, validate=False, n=N_NEXT)
    return [{name: v["value"] for name, v in run.config.items()} for run in suggested if run is not None]


def measure(size: int, k: int, *, repeats: int, wandb_max_k: int) -> dict[str, Any]:
    raw = sweep_config(size)
    sweep = validate_sweep(raw)
    assert sweep.total == size
    row: dict[str, Any] = {"grid": size, "k": k}
    row["ours_warm_s"] = best_seconds(lambda: ours_next(raw, k, sweep), repeats=repeats * 20)
    row["ours_cold_s"] = best_seconds(lambda: ours_next(raw, k), repeats=repeats * 5)
    row["ours_peak_bytes"], ours = peak_bytes(lambda: ours_next(raw, k))
    if k > wandb_max_k:
        row["note"] = f"sweeps skipped: k={k:,} > --wandb-max-k={wandb_max_k:,} (it materialises all k runs)"
        return row
    holder: dict[str, Any] = {}

    def build_and_call() -> list[dict[str, Any]]:
        holder["runs"] = wandb_runs(sweep, k)
        return wandb_next(holder["runs"], raw)

    row["wandb_peak_bytes"], theirs = peak_bytes(build_and_call)
    with Stopwatch() as sw:
        holder["runs"] = wandb_runs(sweep, k)
    row["wandb_build_runs_s"] = sw.seconds
    runs = holder["runs"]
    row["wandb_call_s"] = best_seconds(lambda: wandb_next(runs, raw), repeats=max(1, repeats // 10), budget_s=1.0)
    row["same_trials"] = [canonical(t) for t in ours] == [canonical(t) for t in theirs]
    row["ratio_cold"] = row["wandb_call_s"] / row["ours_cold_s"]
    row["ratio_warm"] = row["wandb_call_s"] / row["ours_warm_s"]
    return row


def _size(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 2**10:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def table(rows: list[dict[str, Any]]) -> str:
    headers = ["grid points", "k launched", "sweepq warm (µs / 10 trials)", "sweepq cold (ms)",
               "sweeps call (ms)", "sweeps: building the k runs (ms)", "sweeps / sweepq cold", "sweeps / sweepq warm",
               "sweepq peak memory",
               "sweeps peak memory incl. k runs", "same trials"]
    out = []
    for r in rows:
        out.append([
            r["grid"], r["k"], r["ours_warm_s"] * 1e6, r["ours_cold_s"] * 1e3,
            r["wandb_call_s"] * 1e3 if "wandb_call_s" in r else None,
            r["wandb_build_runs_s"] * 1e3 if "wandb_build_runs_s" in r else None,
            f"{r['ratio_cold']:,.0f}×" if "ratio_cold" in r else None,
            f"{r['ratio_warm']:,.0f}×" if "ratio_warm" in r else None,
            _size(r["ours_peak_bytes"]), _size(r.get("wandb_peak_bytes")),
            ("yes" if r["same_trials"] else "NO") if "same_trials" in r else "skipped",
        ])
    return markdown_table(headers, out)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="grids of 10^3 and 10^4 only")
    parser.add_argument("--sizes", default="", help=f"comma-separated grid sizes from {sorted(SHAPES)}")
    parser.add_argument("--repeats", type=int, default=50,
                        help="sweepq calls per figure (×20 warm, ×5 cold); the best of them is shown")
    parser.add_argument("--wandb-max-k", type=int, default=600_000,
                        help="skip the sweeps side when more runs than this are launched (default 600000)")
    parser.add_argument("--json", help="also write the rows to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.sizes:
        sizes = [int(float(s)) for s in args.sizes.split(",")]
        unknown = [s for s in sizes if s not in SHAPES]
        if unknown:
            raise SystemExit(f"--sizes: {unknown} not supported — use sizes from {sorted(SHAPES)}")
    else:
        sizes = [10**3, 10**4] if args.quick else [10**3, 10**4, 10**5, 10**6]
    logging.getLogger("sweeps").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pydantic")
    started = time.perf_counter()
    measure(10**3, 10, repeats=2, wandb_max_k=args.wandb_max_k)  # warm-up: imports and first-call caches
    rows = []
    for size in sizes:
        for k in sorted({size // 2, size - N_NEXT}):
            row = measure(size, k, repeats=args.repeats, wandb_max_k=args.wandb_max_k)
            rows.append(row)
            print(f"  grid {size:>9,}  k {k:>9,}  done at {time.perf_counter() - started:6.1f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(header("Next 10 trials: sweepq vs W&B sweeps", __file__, argv))
    print(table(rows))
    for r in rows:
        if "note" in r:
            print(f"\nNote: grid {r['grid']:,}, k {r['k']:,}: {r['note']}.")
    print()
    per_trial = [r["ours_warm_s"] / N_NEXT for r in rows]
    spread = max(per_trial) / min(per_trial)
    print(f"sweepq per trial (warm): {min(per_trial) * 1e6:.1f}–{max(per_trial) * 1e6:.1f} µs across all grids and k "
          f"(max/min {spread:.1f}{': flat in grid size and k' if spread < 2 else ''}).")
    at_1e5 = [r for r in rows if r["grid"] == 10**5 and "ratio_cold" in r]
    if at_1e5:
        worst = min(r["ratio_cold"] for r in at_1e5)
        print(f"At 10^5 points sweeps takes {worst:,.0f}× sweepq's cold time or more "
              f"(goal ≥ 100×: {'met' if worst >= 100 else 'NOT met'}).")
    print(f"Runtime: {elapsed:.0f} s.")
    payload = {"benchmark": "expand", "argv": argv, "rows": rows, "runtime_s": elapsed}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
