"""Printing for the producer: JSON for scripts, rich text for people, errors as the CLI kit says.

Text goes through rich (colour only on a terminal; ``NO_COLOR`` is honoured by rich itself).
Markup is off everywhere: sweep files are full of ``[...]`` that rich would eat otherwise.
JSON is plain ``json.dumps`` on stdout, never coloured. Errors: see :mod:`dispatcher.clikit`.
"""

from __future__ import annotations

import contextlib
import enum
import json
from typing import Any, Iterator, Mapping, Sequence

from rich import box
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dispatcher import clikit
from dispatcher.clikit import Output, debug, emit_json
from dispatcher.core.errors import ConfigError, MessageError, NotFound, PermanentError, SpecError, SweepqError
from dispatcher.core.results import TrialRow
from dispatcher.results_view import STATE_STYLE, failure_lines, footnotes, results_table

__all__ = ["Exit", "Output", "cli_errors", "console", "debug", "emit_json", "exit_code"]


class Exit(enum.IntEnum):
    OK = 0
    INVALID = 1  # the sweep file (or the message built from it) is invalid
    USAGE = 2  # bad flags or arguments (click's own code for usage errors)
    CONFIG = 3  # AWS or configuration: no queue, no credentials, no region, table missing
    NOT_FOUND = 4  # the sweep (or trial, or log) does not exist


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, NotFound):
        return Exit.NOT_FOUND
    if isinstance(exc, (SpecError, MessageError, PermanentError)):
        return Exit.INVALID
    if isinstance(exc, (ConfigError, SweepqError)):  # includes TransientError: AWS unreachable/throttled
        return Exit.CONFIG
    return Exit.INVALID


@contextlib.contextmanager
def cli_errors(output: Output = Output.text) -> Iterator[None]:
    """Our typed errors → one line per problem on stderr (or one JSON object on stdout with
    ``-o json``) and the documented exit code. A missing FILE is a usage error (exit 2)."""
    import typer

    with clikit.cli_errors(output, exit_code, handled=(SweepqError,)):
        try:
            yield
        except FileNotFoundError as exc:
            raise typer.BadParameter(f"{exc.args[0] if exc.args else exc!s}: no such file", param_hint="FILE") from exc


def console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=True)


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), ensure_ascii=False, default=str)


# -- validate ---------------------------------------------------------------------------------------

def breakdown_line(breakdown: Sequence[tuple[str, int]], total: int, method: str, run_cap: int | None) -> str:
    if method in ("random", "bayes"):
        return f"{method}: {total:,} trials (run_cap)"
    word = "trial" if total == 1 else "trials"
    if not breakdown:
        return f"1 {word} (constants only)"
    product = " × ".join(f"{name} ({size:,})" for name, size in breakdown)
    grid = 1
    for _, size in breakdown:
        grid *= size
    capped = f", capped by run_cap {run_cap:,}" if run_cap and run_cap < grid else ""
    return f"{product} = {grid:,} {'trial' if grid == 1 else 'trials'}{capped}"


def print_valid(source: str, line: str, first: Sequence[Mapping[str, Any]], total: int) -> None:
    out = console()
    out.print(Text.assemble(("✓ ", "green"), (f"{source}: valid", "bold")))
    out.print(line)
    if first:
        out.print(f"first {len(first)} of {total:,}:" if total > len(first) else "trials:")
        for i, params in enumerate(first):
            out.print(f"  {i:>3}  {compact(params)}")


def print_invalid(source: str, problems: Sequence[str]) -> None:
    out = console()
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    out.print(Text.assemble(("✗ ", "red"), (f"{source}: invalid — {count}", "bold")))
    for problem in problems:
        out.print(f"  - {problem}")


# -- status / list ----------------------------------------------------------------------------------

def _header(doc: Mapping[str, Any], name: str) -> None:
    out = console()
    state = str(doc["state"])
    out.print(Text.assemble(("sweep ", ""), (str(doc["sweep_id"]), "bold"), (f"  {name}" if name else "", ""),
                            ("  ", ""), (state, STATE_STYLE.get(state, ""))))
    out.print(f"submitted by {short_submitter(str(doc['submitter'] or '?'))} at {doc['submitted_at'] or '?'}")


def print_status(doc: Mapping[str, Any], name: str, rows: Sequence[TrialRow] | None, *, params: Sequence[str] = (),
                 attempts: int | None = None, shown: str = "", gpus_per_trial: int = 0) -> None:
    out = console()
    _header(doc, name)
    state = str(doc["state"])
    c, total = doc["counts"], int(doc["total"])
    done = c["succeeded"] + c["failed"] + c["cancelled"] + c.get("early_stopped", 0)
    if total:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total, completed=done, width=40),
                    Text(f"{done:,}/{total:,} finished ({100 * done // total}%)"))
        out.print(bar)
    out.print("  ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in c.items()))
    best = doc["best"]
    if best:
        value = best.get("value")
        shown_value = f"{value:.4f}" if isinstance(value, float) else str(value)
        out.print(f"best: trial {best.get('trial_index')} {best.get('metric')}={shown_value} "
                  f"({best.get('goal', '')}) {compact(best.get('params', {}))}")
    if doc["reason"]:
        out.print(Text.assemble(("reason: ", "bold"), (str(doc["reason"]), STATE_STYLE.get(state, ""))))
    if doc.get("policy_hold"):
        out.print(Text.assemble(("held by the operator policy: ", "bold yellow"), str(doc["policy_hold"])))
    if state == "PAUSED":
        out.print(f"paused: no new trial starts, running ones go on — `producer resume {doc['sweep_id']}` continues it")
    refused = doc.get("control_refused")
    if refused:
        out.print(Text.assemble(("refused: ", "bold"), (str(refused["reason"]), "yellow")))
    if rows is None:
        return
    if not rows:
        out.print("no trial has been launched yet")
    else:
        best_index = best.get("trial_index") if best else None
        out.print(results_table(rows, params=params, metric_name=doc.get("metric"), goal=str(doc.get("goal", "minimize")),
                                best_index=best_index, attempts=attempts, width=out.width))
        for line in footnotes(rows, gpus_per_trial=gpus_per_trial) + ([shown] if shown else []):
            out.print(line)
        lines = failure_lines(rows, str(doc["sweep_id"]))
        if lines:
            out.print("")
            for line in lines:
                out.print(line)
    if c["not_started"]:
        out.print(f"{c['not_started']:,} more trial{'s' if c['not_started'] != 1 else ''} not started yet")


def print_queued(doc: Mapping[str, Any], name: str) -> None:
    out = console()
    _header(doc, name)
    queue = doc.get("queue") or {}
    depth = queue.get("depth")
    out.print(f"{int(doc['total']):,} trials, none stored yet: the submit message is in the queue {queue.get('url') or ''}")
    if depth is None:
        out.print("queue depth unknown (this identity may not call sqs:GetQueueAttributes)")
    else:
        out.print(f"the queue holds ~{depth.get('waiting', 0):,} message(s) waiting and ~{depth.get('in_flight', 0):,} "
                  "being taken by a dispatcher (SQS gives no position)")
    out.print("the dispatcher stores it on its next tick; if it never does, check that a dispatcher runs "
              "(`dispatcher run`, the CronJob or the Lambda) and its logs")


def short_submitter(arn: str) -> str:
    """``arn:aws:sts::123:assumed-role/Researcher/alice`` → ``alice`` (the JSON keeps the full ARN)."""
    return arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


def _progress(row: Mapping[str, Any]) -> str:
    text = f"{row['finished']:,}/{row['total']:,}"
    failed = int(row.get("failed") or 0)
    return f"{text} ({failed:,} failed)" if failed and row.get("state") != "FAILED" else text


def print_list(rows: Sequence[Mapping[str, Any]], table_name: str) -> None:
    out = console()
    if not rows:
        out.print(f"no sweeps in table {table_name}")
        return
    cells = [[str(r["sweep_id"]), str(r["name"]), short_submitter(str(r["submitter"])), str(r["state"]), _progress(r),
              str(r["submitted_at"])[:16].replace("T", " ") + ("Z" if r["submitted_at"] else "")] for r in rows]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for col, header in enumerate(("sweep id", "name", "submitter", "state", "progress", "submitted")):
        width = max([len(header)] + [len(c[col]) for c in cells])
        shrinks = header in ("name", "submitter")  # ids, states and numbers are never cut
        table.add_column(header, no_wrap=True, overflow="ellipsis", min_width=min(width, 12) if shrinks else width)
    for row, cell in zip(rows, cells, strict=True):
        state = str(row["state"])
        table.add_row(*cell[:3], Text(state, STATE_STYLE.get(state, "")), *cell[4:])
    out.print(table)
    queued = sum(1 for r in rows if r["state"] == "QUEUED")
    if queued:
        out.print(f"{queued} sweep{'s' if queued != 1 else ''} QUEUED: sent from this machine, not stored by a "
                  "dispatcher yet (`producer status ID` shows the queue)")
