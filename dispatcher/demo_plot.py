"""The demo's results plot (matplotlib, optional: no plot without it).

Top left, **the metric per trial**: one horizontal bar per trial, labelled by its swept
parameters (``learning_rate=0.001 batch_size=16``), best first, the best trial highlighted and
marked ★; the axis spans the values (0.957 and 0.963 are told apart, it does not start at 0);
trials whose value is not final (cancelled, failed, stopped) are hatched. Top right, **the
metric per epoch** of each trial (from its ``result.json``), the best one drawn bold. Bottom, **the
metric against each swept parameter** (log axis when a positive parameter spans a decade or
more; categories as they come), the best trial highlighted: which parameter the metric depends on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence, TypeGuard

from dispatcher.core.results import TrialRow, fmt_number

BEST = "tab:orange"
OTHER = "tab:blue"
CURVES = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "tab:red")
MAX_PARAM_PANELS = 4


def label(row: TrialRow, params: Sequence[str]) -> str:
    shown = " ".join(f"{p.rsplit('.', 1)[-1]}={fmt_number(row.flat.get(p))}" for p in params)
    return f"#{row.index} {shown}".strip()


def span(values: Sequence[float]) -> tuple[float, float]:
    """Axis limits around the values with a margin (never from 0 just because bars start there)."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 if high > low else max(abs(high) * 0.05, 0.01)
    return low - pad, high + pad


def _history(outputs: Path, row: TrialRow, metric: str) -> list[tuple[float, float]]:
    result = outputs / row.trial_id / "result.json"
    if not result.is_file():
        return []
    try:
        history = json.loads(result.read_text()).get("history", [])
    except ValueError:
        return []
    return [(float(h["epoch"]), float(h[metric])) for h in history
            if isinstance(h, dict) and isinstance(h.get(metric), (int, float)) and isinstance(h.get("epoch"), (int, float))]


def _numeric(values: Sequence[Any]) -> TypeGuard[Sequence[float]]:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def plot(rows: Sequence[TrialRow], *, params: Sequence[str], metric: str, goal: str, best_index: int | None,
         outputs: Path, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    scored = sorted([r for r in rows if r.metric is not None], key=lambda r: r.metric or 0.0, reverse=goal == "maximize")
    panels = list(params)[:MAX_PARAM_PANELS]
    fig = plt.figure(figsize=(max(13.0, 4.0 * len(panels)), 9.0 if panels else 4.8), layout="constrained")
    outer = fig.add_gridspec(2 if panels else 1, 1, height_ratios=[1.1, 1.0] if panels else [1.0])
    top_row = outer[0].subgridspec(1, 2, width_ratios=[1.25, 1.0])
    bars = fig.add_subplot(top_row[0])
    curves = fig.add_subplot(top_row[1])
    bottom = outer[1].subgridspec(1, len(panels)) if panels else None
    arrow = "higher is better" if goal == "maximize" else "lower is better"

    # the metric per trial
    if scored:
        names = [label(r, params) + (" ★" if r.index == best_index else "") for r in scored]
        values = [float(r.metric or 0.0) for r in scored]
        colours = [BEST if r.index == best_index else OTHER for r in scored]
        ypos = list(range(len(scored)))[::-1]
        drawn = bars.barh(ypos, values, color=colours, alpha=0.9)
        for bar, row in zip(drawn, scored, strict=True):
            if row.partial:
                bar.set_hatch("//")
                bar.set_alpha(0.45)
        bars.set_yticks(ypos, names, fontsize="small")
        low, high = span(values)
        bars.set_xlim(low, high)
        for y, value in zip(ypos, values, strict=True):
            bars.text(value, y, f" {value:.4f}", va="center", fontsize="x-small")
    else:
        bars.text(0.5, 0.5, "no trial reported the metric", ha="center", va="center", transform=bars.transAxes)
    bars.set_xlabel(f"{metric} ({arrow})")
    bars.set_title(f"{metric} per trial (hatched: not final)", fontsize="medium")

    # the metric per epoch
    others = 0
    plotted: list[float] = []  # every value drawn here, for the axis span
    for row in sorted(rows, key=lambda r: r.index):
        points = _history(outputs, row, metric)
        if points:
            plotted += [p[1] for p in points]
            best = row.index == best_index
            colour = BEST if best else CURVES[others % len(CURVES)]
            others += 0 if best else 1
            curves.plot([p[0] for p in points], [p[1] for p in points], marker="o", linewidth=2.8 if best else 1.2,
                        color=colour, label=label(row, params) + (" ★" if best else ""), zorder=3 if best else 2)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch")
    curves.set_ylabel(metric)
    curves.set_title(f"{metric} per epoch", fontsize="medium")
    if plotted:
        curves.legend(fontsize="x-small", loc="best", framealpha=0.8)
        curves.set_ylim(*span(plotted))

    # the metric against each swept parameter
    for col, name in enumerate(panels):
        assert bottom is not None
        ax = fig.add_subplot(bottom[col])
        dots = [(r.flat.get(name), float(r.metric or 0.0), r) for r in scored if r.flat.get(name) is not None]
        if not dots:
            ax.set_visible(False)
            continue
        raw = [d[0] for d in dots]
        if _numeric(raw):
            xs = [float(v) for v in raw]
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
        else:
            categories = list(dict.fromkeys(str(v) for v in raw))
            xs = [float(categories.index(str(v))) for v in raw]
            ax.set_xticks(range(len(categories)), categories)
        ax.scatter(xs, [d[1] for d in dots], color=[BEST if d[2].index == best_index else OTHER for d in dots],
                   s=[120 if d[2].index == best_index else 40 for d in dots], zorder=3)
        ax.set_ylim(*span([d[1] for d in dots]))
        ax.set_xlabel(name)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {name}", fontsize="medium")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{len(scored)} of {len(rows)} trials reported {metric}" + ("" if best_index is None else
                                                                              f"; best: trial {best_index} ★"))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

