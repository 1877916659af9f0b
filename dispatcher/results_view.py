"""Results tables and failure blocks for a terminal (rich), from :mod:`dispatcher.core.results` rows.

Used by ``producer status --trials`` and ``dispatcher demo``, so both show a sweep the same way::

      #  batch_size  learning_rate  state      att  elapsed  epoch  eval/accuracy (max)  reason
      0          16          0.001  SUCCEEDED    1    1m02s      2               0.9634
      1          16         0.0003  CANCELLED    1      31s      1              0.8812*
      2          32          0.001  FAILED     1/3       4s                              exit code 2: trainer: …

Numeric columns are right-aligned and never wrapped; the reason column is cut with "…" (the
whole reason is below the table, in the failures block). The best trial's row is bold green.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from dispatcher.core.failures import parse_failure
from dispatcher.core.outcomes import signature
from dispatcher.core.results import (
    PARTIAL_MARK,
    PARTIAL_NOTE,
    TrialRow,
    early_stop_savings,
    fmt_duration,
    fmt_epoch,
    fmt_metric,
    fmt_number,
    metric_label,
)

MIN_REASON_WIDTH = 16
OPTIONAL = ("elapsed", "epoch")  # left out when no trial has a value, or (epoch first) when the width is short
SEPARATOR = 2  # spaces between two columns
STATE_STYLE = {"SUCCEEDED": "green", "RUNNING": "cyan", "LAUNCHED": "cyan", "PENDING": "cyan", "WAITING": "yellow",
               "FAILED": "red", "CANCELLED": "yellow", "EARLY_STOPPED": "blue", "LOST": "red", "QUEUED": "magenta",
               "ACTIVE": "cyan", "PAUSED": "yellow", "COMPLETED": "green", "REJECTED": "red"}


def results_table(rows: Sequence[TrialRow], *, params: Sequence[str], metric_name: str | None, goal: str,
                  best_index: int | None = None, attempts: int | None = None, reasons: bool = True,
                  title: str | None = None, width: int = 80) -> Table:
    """``attempts``: the trials' attempt budget (``max_retries + 1``), shown as ``2/3`` once retried.

    Every column but the reason is as wide as its widest cell: a number is never cut. To fit
    ``width`` (the terminal's), the epoch column, then the elapsed column, are left out, then long
    parameter names are shortened with "…"; the reason gets what is left and is cut with "…" —
    or is left out when too little is left (the failures block below the table has it in full)."""
    headers = ["#", *params, "state", "att", "elapsed", "epoch", metric_label(metric_name, goal)]
    body = []
    for row in rows:
        attempt = f"{row.attempt}/{attempts}" if attempts and (row.attempt > 1 or row.state == "FAILED") else str(row.attempt)
        body.append([str(row.index), *(fmt_number(row.flat.get(p)) for p in params), row.state, attempt,
                     fmt_duration(row.elapsed_s), fmt_epoch(row.epoch), fmt_metric(row)])
    # no column of blanks; and within the width, the optional columns go first, then long headers shrink
    drop = {col for col, header in enumerate(headers) if header in OPTIONAL and not any(cells[col] for cells in body)}
    for optional in OPTIONAL[::-1]:
        if _fixed_width(headers, body, drop) <= width:
            break
        drop.add(headers.index(optional))
    headers = [h for col, h in enumerate(headers) if col not in drop]
    body = [[c for col, c in enumerate(cells) if col not in drop] for cells in body]
    state_col = 1 + len(params)
    for col in range(1, state_col):  # parameter headers: cut to their values' width (≥ 6) while too wide
        if _fixed_width(headers, body, set()) <= width:
            break
        values = max([len(cells[col]) for cells in body] + [6])
        if len(headers[col]) > values:
            headers[col] = headers[col][: values - 1] + "…"
    widths = [max([len(header)] + [len(cells[col]) for cells in body]) for col, header in enumerate(headers)]
    left = width - _fixed_width(headers, body, set()) - SEPARATOR
    show_reasons = reasons and left >= MIN_REASON_WIDTH and any(last_failure(r) for r in rows)
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  header_style="bold")
    for col, (header, size) in enumerate(zip(headers, widths, strict=True)):
        table.add_column(header, justify="left" if col == state_col else "right", no_wrap=True, min_width=size)
    if show_reasons:
        table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=left)
    for row, cells in zip(rows, body, strict=True):
        shown: list[Text | str] = list(cells)
        shown[state_col] = Text(row.state, STATE_STYLE.get(row.state, ""))
        if show_reasons:
            shown.append(last_failure(row))
        table.add_row(*shown, style="bold green" if best_index is not None and row.index == best_index else None)
    return table


def _fixed_width(headers: Sequence[str], body: Sequence[Sequence[str]], drop: set[int]) -> int:
    """The printed width of these columns: each as wide as its widest cell, two spaces between."""
    kept = [col for col in range(len(headers)) if col not in drop]
    return sum(max([len(headers[col])] + [len(cells[col]) for cells in body]) for col in kept) + SEPARATOR * (len(kept) - 1)


def last_failure(row: TrialRow) -> str:
    """Why the trial failed, in one line: its final reason, or (while it is retried) its last
    failed attempt's, prefixed with that attempt."""
    if row.state == "SUCCEEDED":
        return ""
    if row.state == "EARLY_STOPPED":
        return row.reason  # hyperband's: its value at the band and the threshold
    if row.state in ("FAILED", "LOST", "WAITING"):
        return row.summary
    failed = [a for a in row.attempts if a.get("outcome") in ("FAILED", "LOST") and a.get("reason")]
    if row.reason and not any(row.reason.startswith(str(a.get("reason"))) for a in row.attempts):
        return row.summary  # newer than any ended attempt: a Kueue eviction (the attempt goes on)
    if not failed:
        return ""
    last = failed[-1]
    return f"attempt {last.get('attempt')}: {parse_failure(str(last['reason'])).summary}"


def footnotes(rows: Sequence[TrialRow], *, gpus_per_trial: int = 0) -> list[str]:
    """Lines under the table: what a partial metric means; what Hyperband's stops saved."""
    lines = [PARTIAL_NOTE] if any(r.partial and fmt_metric(r).endswith(PARTIAL_MARK) for r in rows) else []
    savings = early_stop_savings(rows, gpus_per_trial=gpus_per_trial)
    return lines + ([savings.line()] if savings is not None else [])


def _failure_of(row: TrialRow) -> tuple[str, str] | None:
    """(the full reason, how the trial stands) of a row that failed, or failed an attempt."""
    if row.state == "FAILED" and row.reason:
        return row.reason, "failed"
    if row.state in ("WAITING", "LOST") and row.reason:
        return row.reason, f"failed attempt {row.attempt}, will be retried"
    failed = [a for a in row.attempts if a.get("outcome") in ("FAILED", "LOST") and a.get("reason")]
    if row.state != "SUCCEEDED" and failed:
        return str(failed[-1]["reason"]), f"failed attempt {failed[-1].get('attempt')}, retried"
    return None


def failure_lines(rows: Sequence[TrialRow], sweep_id: str) -> list[str]:
    """The failed trials' causes in full, trials that failed the same way grouped, with the way to
    their whole log. Plain text lines (empty when nothing failed)."""
    groups: dict[str, list[tuple[TrialRow, str, str]]] = {}
    for row in rows:
        found = _failure_of(row)
        if found is not None:
            groups.setdefault(signature(found[0]), []).append((row, *found))
    if not groups:
        return []
    lines = [f"failures — the whole log of a trial: producer logs {sweep_id} TRIAL"]
    for group in groups.values():
        row, reason, how = group[0]
        failure = parse_failure(reason)
        if len(group) == 1:
            lines.append(f"  trial {row.index} {how}" + (f" ({failure.note})" if failure.note else ""))
        else:
            lines.append(f"  trials {', '.join(str(r.index) for r, _, _ in group)} failed the same way"
                         + (f" ({failure.note})" if failure.note else ""))
        lines.append(f"    {failure.ended}" + (f": {failure.cause}" if failure.cause else ""))
        if failure.log:
            lines.append(f"    log: {failure.log}")
        tail = list(failure.tail)
        if tail and failure.cause and _same(tail[-1], failure.cause):
            tail = tail[:-1]  # the cause was just printed
        lines.extend(f"    | {line}" for line in tail)
    return lines


def _same(one: str, other: str) -> bool:
    """Equal up to where either was cut ("…")."""
    a, b = one.rstrip("…").strip(), other.rstrip("…").strip()
    return bool(a and b) and (a.startswith(b) or b.startswith(a))
