"""Printing for the producer: JSON for scripts, rich text for people, one line per error.

Text goes through rich (colour only on a terminal; ``NO_COLOR`` is honoured by rich itself).
Markup is off everywhere: sweep files are full of ``[...]`` that rich would eat otherwise.
JSON is plain ``json.dumps`` on stdout, never coloured. Errors go to stderr, one line each.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys
from typing import Any, Iterator, Mapping, Sequence

import typer
from rich.console import Console
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from dispatcher.core.errors import ConfigError, MessageError, NotFound, PermanentError, SpecError, SweepqError

log = logging.getLogger(__name__)
DEBUG_ENV = "SWEEPQ_DEBUG"
# Exceptions the CLI framework handles itself (usage errors exit 2). Typer ≥0.20 vendors click, so
# its classes are found through typer rather than imported from click.
_FRAMEWORK = (typer.Exit, typer.Abort, BrokenPipeError) + tuple(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class Exit(enum.IntEnum):
    OK = 0
    INVALID = 1  # the sweep file (or the message built from it) is invalid
    USAGE = 2  # bad flags or arguments (click's own code for usage errors)
    CONFIG = 3  # AWS or configuration: no queue, no credentials, no region, table missing
    NOT_FOUND = 4  # the sweep does not exist


class Output(str, enum.Enum):
    text = "text"
    json = "json"


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def error_lines(exc: BaseException) -> list[str]:
    if isinstance(exc, SpecError):
        head = f"{exc.source}: " if exc.source else ""
        return [f"error: {head}{p}" for p in exc.problems]
    return [f"error: {line}" for line in str(exc).splitlines() or [type(exc).__name__]]


def exit_code(exc: BaseException) -> Exit:
    if isinstance(exc, NotFound):
        return Exit.NOT_FOUND
    if isinstance(exc, (SpecError, MessageError, PermanentError)):
        return Exit.INVALID
    if isinstance(exc, (ConfigError, SweepqError)):  # includes TransientError: AWS unreachable/throttled
        return Exit.CONFIG
    return Exit.INVALID


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn our typed errors into one line per problem on stderr and the documented exit code.

    Click's own exceptions (usage errors, ``typer.Exit``) pass through untouched. Anything
    unexpected prints one line too, unless ``SWEEPQ_DEBUG=1`` asks for the traceback.
    """
    try:
        yield
    except _FRAMEWORK:
        raise  # usage errors exit 2; a closed pipe (`producer expand | head`) is the framework's business
    except SweepqError as exc:
        if debug():
            raise
        for line in error_lines(exc):
            typer.echo(line, err=True)
        raise typer.Exit(int(exit_code(exc))) from exc
    except FileNotFoundError as exc:
        raise typer.BadParameter(f"{exc.args[0] if exc.args else exc!s}: no such file", param_hint="FILE") from exc
    except Exception as exc:  # noqa: BLE001 - the CLI promises no tracebacks
        if debug():
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)", err=True)
        raise typer.Exit(int(Exit.INVALID)) from exc


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), ensure_ascii=False, default=str)


# -- validate ---------------------------------------------------------------------------------------

def breakdown_line(breakdown: Sequence[tuple[str, int]], total: int, method: str, run_cap: int | None) -> str:
    if method == "random":
        return f"random: {total:,} trials (run_cap)"
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

STATE_STYLE = {"ACTIVE": "cyan", "COMPLETED": "green", "FAILED": "red", "CANCELLED": "yellow", "REJECTED": "red"}


def swept_only(params: Any, swept: set[str] | None) -> Any:
    """The swept parameters of a trial, dotted (``optimizer.lr``); constants add nothing to a table."""
    if swept is None or not isinstance(params, Mapping):
        return params
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name in swept:
                flat[name] = value
            elif isinstance(value, Mapping):
                walk(value, name + ".")

    walk(params, "")
    return flat


def print_status(doc: Mapping[str, Any], name: str, trials: Sequence[Mapping[str, Any]] | None,
                 swept: set[str] | None = None) -> None:
    out = console()
    state = str(doc["state"])
    out.print(Text.assemble(("sweep ", ""), (str(doc["sweep_id"]), "bold"), (f"  {name}" if name else "", ""),
                            ("  ", ""), (state, STATE_STYLE.get(state, ""))))
    out.print(f"submitted by {doc['submitter'] or '?'} at {doc['submitted_at'] or '?'}")
    c, total = doc["counts"], int(doc["total"])
    done = c["succeeded"] + c["failed"] + c["cancelled"]
    if total:
        bar = Table.grid(padding=(0, 1))
        bar.add_row(ProgressBar(total=total, completed=done, width=40),
                    Text(f"{done:,}/{total:,} finished ({100 * done // total}%)"))
        out.print(bar)
    out.print("  ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in c.items()))
    best = doc["best"]
    if best:
        out.print(f"best: trial {best.get('trial_index')} {best.get('metric')}={best.get('value')} "
                  f"({best.get('goal', '')}) {compact(best.get('params', {}))}")
    if doc["reason"]:
        out.print(Text.assemble(("reason: ", "bold"), (str(doc["reason"]), STATE_STYLE.get(state, ""))))
    if trials is not None:
        table = Table("index", "params" if swept is None else "swept params", "state", "attempt", "metric", show_edge=False)
        for row in trials:
            table.add_row(str(row["index"]), compact(swept_only(row["params"], swept)), str(row["state"]), str(row["attempt"]),
                          "" if row["metric"] is None else str(row["metric"]))
        out.print(table if trials else "no trial has been launched yet")
        if c["not_started"]:
            out.print(f"{c['not_started']:,} more trial{'s' if c['not_started'] != 1 else ''} not started yet")


def short_submitter(arn: str) -> str:
    """``arn:aws:sts::123:assumed-role/Researcher/alice`` → ``alice`` (the JSON keeps the full ARN)."""
    return arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


def print_list(rows: Sequence[Mapping[str, Any]], table_name: str) -> None:
    out = console()
    if not rows:
        out.print(f"no sweeps in table {table_name}")
        return
    table = Table(show_edge=False)
    table.add_column("sweep id", no_wrap=True, min_width=21)  # ids are copied into other commands: never cut
    table.add_column("name")
    table.add_column("submitter")
    for header in ("state", "progress", "submitted"):
        table.add_column(header, no_wrap=True)
    for row in rows:
        state = str(row["state"])
        table.add_row(str(row["sweep_id"]), str(row["name"]), short_submitter(str(row["submitter"])),
                      Text(state, STATE_STYLE.get(state, "")), f"{row['finished']:,}/{row['total']:,}",
                      str(row["submitted_at"])[:16].replace("T", " ") + ("Z" if row["submitted_at"] else ""))
    out.print(table)
