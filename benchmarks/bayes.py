"""Cost of one ``method: bayes`` suggestion at 10, 100 and 1,000 finished trials, side by side:
``dispatcher.core.search.suggest`` (sweepq's building block) and W&B's ``sweeps.next_runs`` called
directly on the same ``SweepRun`` objects (what W&B's controller does), in one run.

The search space is a typical one (log-uniform learning rate, uniform weight decay, int layers,
categorical optimizer); the finished trials are random points with a smooth synthetic loss, and
``--running`` more are claimed or running (fantasised by the engine). For each size the script
reports, per suggestion:

* **GP fits** and the **points per fit** — counted by wrapping W&B's own
  ``fit_normalized_gaussian_process``: one fit on at most 100 finished trials (W&B samples 100 at
  random above that), and a second one with the running trials' fantasies when any are running;
* the time of ``suggest`` (one suggestion, as a tick with one free slot makes) and of a tick
  with ``--slots`` free slots (``n`` suggestions: each sees the previous ones as pending);
* the time of ``sweeps.next_runs`` itself on prebuilt runs — the difference is sweepq's cost of
  rebuilding runs from observations;
* the time to rebuild the runs alone, and ``tracemalloc``'s peak while suggesting.

Times are the best of ``--repeats`` calls (the figure least disturbed by other load on a shared
machine); they are printed, never asserted. Counts are exact and checked by the smoke test.

    python benchmarks/bayes.py             # 10, 100, 1,000 finished trials (about 1.5 minutes on 2 cores)
    python benchmarks/bayes.py --quick     # 10 and 100

Measured on the shared 2-core development machine (x86_64, Python 3.11.7, sweeps 0.3.0,
scikit-learn 1.9.1) with other work running; two runs of 100 and 1,000 differed by up to 2×:

| finished | running | GP fits / suggestion | points per fit | sweepq suggest | sweeps.next_runs | rebuild runs | tick with 4 free slots | peak memory |
| ---: | ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: |
| 10 | 4 | 2 | 10 + 14 | 250 ms | 320 ms | 0.1 ms | 1.41 s | 19.5 MiB |
| 100 | 4 | 2 | 100 + 104 | 915 ms | 989 ms | 1.5 ms | 2.01 s | 21.1 MiB |
| 1,000 | 4 | 2 | 100 + 104 | 2,203 ms | 1,455 ms | 36 ms | 7.27 s | 23.6 MiB |

Above 100 finished trials the GP is fitted on 100 drawn at random (W&B's rule), so its cost stops
growing; what grows is W&B's own Python pass over every run (the 36 ms of rebuilding runs is
sweepq's). A cProfile of one suggestion at 100 finished: 86% is scikit-learn's L-BFGS search of
the kernel's length scales (2 fits × 3 restarts, ~7 likelihood evaluations each).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header, markdown_table, write_json  # noqa: E402

from dispatcher.core import search  # noqa: E402
from dispatcher.core.search import Observation, default_seed, engine_config, suggest  # noqa: E402
from dispatcher.core.spec import validate_sweep  # noqa: E402

SPEC = {
    "method": "bayes", "run_cap": 100_000, "program": "train.py",
    "metric": {"name": "eval/loss", "goal": "minimize"},
    "parameters": {
        "learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        "weight_decay": {"min": 0.0, "max": 0.1},
        "layers": {"min": 2, "max": 12},
        "optimizer": {"values": ["adamw", "sgd", "adafactor"]},
    },
}


def loss(p: dict[str, Any]) -> float:
    return (math.log10(p["learning_rate"]) + 3) ** 2 + 3 * p["weight_decay"] + 0.05 * abs(p["layers"] - 6) + (
        0.5 if p["optimizer"] == "sgd" else 0.0)


def observations(n_finished: int, n_running: int, rng: random.Random) -> list[Observation]:
    out = []
    for i in range(n_finished + n_running):
        p = {"learning_rate": 10 ** rng.uniform(-5, -1), "weight_decay": rng.uniform(0, 0.1),
             "layers": rng.randint(2, 12), "optimizer": rng.choice(["adamw", "sgd", "adafactor"])}
        if i < n_finished:
            value = loss(p) + rng.gauss(0, 0.05)
            out.append(Observation(index=i, params=p, outcome="finished", metric=value, history=(value + 0.5, value)))
        else:
            out.append(Observation(index=i, params=p, outcome=rng.choice(["running", "pending"])))
    return out


class FitCounter:
    """Counts W&B's GP fits and the points each one is fitted on (wraps the engine's own function)."""

    def __init__(self) -> None:
        import sweeps.bayes_search as engine

        self.engine, self.original = engine, engine.fit_normalized_gaussian_process
        self.points: list[int] = []

    def __enter__(self) -> "FitCounter":
        def counted(X: Any, y: Any, nu: float = 1.5) -> Any:
            self.points.append(len(y))
            return self.original(X, y, nu=nu)

        self.engine.fit_normalized_gaussian_process = counted
        return self

    def __exit__(self, *exc: Any) -> None:
        self.engine.fit_normalized_gaussian_process = self.original


def best(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(n_finished: int, n_running: int, slots: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    from sweeps import next_runs

    sweep = validate_sweep(SPEC)
    obs = observations(n_finished, n_running, random.Random(n_finished))
    nxt = len(obs)
    seed = default_seed(sweep, nxt)
    with FitCounter() as fits:
        [one] = suggest(sweep, observations=obs, indices=[nxt], seed=seed)
    fits_one = list(fits.points)
    with FitCounter() as fits_tick:
        tick = suggest(sweep, observations=obs, indices=list(range(nxt, nxt + slots)), seed=seed)
    metric = sweep.spec.metric.name
    build = best(lambda: [search._run(o, metric) for o in obs], repeats)
    runs = [search._run(o, metric) for o in obs]
    config = engine_config(sweep)

    def direct() -> Any:
        np.random.seed(seed)
        return next_runs(config, runs, validate=False, n=1)

    same = {k: search._plain(v["value"]) for k, v in direct()[0].config.items()} == one.params
    ours_s = best(lambda: suggest(sweep, observations=obs, indices=[nxt], seed=seed), repeats)
    wandb_s = best(direct, repeats)
    tick_s = best(lambda: suggest(sweep, observations=obs, indices=list(range(nxt, nxt + slots)), seed=seed), repeats)
    tracemalloc.start()
    suggest(sweep, observations=obs, indices=[nxt], seed=seed)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "finished": n_finished, "running": n_running, "slots": slots,
        "fits_per_suggestion": len(fits_one), "points_per_fit": fits_one,
        "fits_per_tick": len(fits_tick.points), "suggestions_per_tick": len(tick),
        "ours_s": ours_s, "wandb_s": wandb_s, "build_runs_s": build, "tick_s": tick_s, "peak_bytes": peak,
        "same_suggestion": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finished", default="10,100,1000", help="comma list of finished-trial counts")
    parser.add_argument("--running", type=int, default=4, help="trials running or claimed (fantasised)")
    parser.add_argument("--slots", type=int, default=4, help="free slots in the tick: suggestions per tick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10 and 100 finished trials, 1 repeat")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    sizes = [10, 100] if args.quick else [int(s) for s in args.finished.split(",")]
    repeats = 1 if args.quick else args.repeats
    warnings.filterwarnings("ignore")  # sklearn's GP convergence notes: W&B's engine silences them too
    print(header("bayes — one suggestion from W&B's engine, by finished trials", __file__, sys.argv[1:]
                 if argv is None else argv))
    rows = [measure(n, args.running, args.slots, repeats) for n in sizes]
    print(markdown_table(
        ["finished", "running", "GP fits / suggestion", "points per fit", "sweepq suggest", "sweeps.next_runs",
         "rebuild runs", f"tick with {args.slots} free slots", "peak memory", "same suggestion"],
        [[r["finished"], r["running"], r["fits_per_suggestion"], " + ".join(map(str, r["points_per_fit"])),
          f"{r['ours_s'] * 1000:.0f} ms", f"{r['wandb_s'] * 1000:.0f} ms", f"{r['build_runs_s'] * 1000:.1f} ms",
          f"{r['tick_s']:.2f} s", f"{r['peak_bytes'] / 2**20:.1f} MiB", "yes" if r["same_suggestion"] else "NO"]
         for r in rows]))
    last = rows[-1]
    print(f"\nAt {last['finished']:,} finished trials one suggestion costs {last['ours_s'] * 1000:.0f} ms "
          f"({last['fits_per_suggestion']} GP fits on at most {max(last['points_per_fit'])} points: W&B samples "
          f"100 finished trials above that), so the cost per tick is bounded by its free slots, not the sweep's size.")
    write_json(args.json, {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
