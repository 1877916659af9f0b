"""The ``producer`` Typer app and the options its commands share (commands in cli_files / cli_sweeps)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dispatcher.clikit import OutputOpt, VerboseOpt, make_app
from dispatcher.core.identity import is_sweep_id

app = make_app("producer", "Validate and submit W&B-style sweep files to the sweepq queue; follow, inspect, cancel, pause and resume sweeps.")

FileArg = Annotated[str, typer.Argument(metavar="FILE", help="Sweep file (YAML); - reads stdin.", show_default=False)]
MaxGridOpt = Annotated[Optional[int], typer.Option(
    "--max-grid-size", min=1, show_default=False,
    help="Refuse grids larger than this [default: $SWEEPQ_MAX_GRID_SIZE or 10000000].")]
TableOpt = Annotated[Optional[str], typer.Option(
    "--table", show_default=False, help="DynamoDB table [default: $SWEEPQ_TABLE or sweepq].")]
QueueOpt = Annotated[Optional[str], typer.Option(
    "--queue-url", show_default=False,
    help="SQS queue URL [default: $SWEEPQ_QUEUE_URL, else the URL of queue $SWEEPQ_QUEUE_NAME or sweepq].")]

__all__ = ["app", "FileArg", "MaxGridOpt", "OutputOpt", "QueueOpt", "TableOpt", "VerboseOpt", "sweep_id_arg"]


def sweep_id_arg(value: Optional[str]) -> Optional[str]:
    if value is not None and not is_sweep_id(value):
        raise typer.BadParameter(f"{value!r} is not a sweep id (like bert-lr-abcdefgh) — copy it from `producer list`")
    return value
