"""``producer status / list / logs / cancel / pause / resume``: the commands that follow sweeps in the table."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Optional

import typer

from dispatcher.adapters.metrics import MetricsStore, trials_with_reported
from dispatcher.adapters.queue import Queue, resolve_queue_url
from dispatcher.adapters.store import Store
from dispatcher.clikit import setup_logging
from dispatcher.core.errors import NotFound, SpecError
from dispatcher.core.message import encode_cancel, encode_pause
from dispatcher.core.records import SweepState
from dispatcher.core.results import SORT_KEYS, TrialRow, sort_rows, swept_names, top, trial_rows
from dispatcher.core.spec import validate_sweep
from dispatcher.settings import Settings
from producer import output as out
from producer import queued, summary
from producer.app import OutputOpt, QueueOpt, TableOpt, VerboseOpt, app, sweep_id_arg
from producer.output import Output, cli_errors, emit_json
from producer.reader import Reader

SweepIdArg = Annotated[Optional[str], typer.Argument(
    metavar="SWEEP_ID", callback=sweep_id_arg, show_default=False, help="Sweep id [default: the newest sweep].")]


# -- status ----------------------------------------------------------------------------------------

@app.command(short_help="A sweep's progress, best trial, trials table (--trials) and failures.")
def status(
    sweep_id: SweepIdArg = None,
    trials: Annotated[bool, typer.Option("--trials", "-t", help="Add the table of launched trials, and the failures.")] = False,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", metavar="KEY", show_default=False,
        help=f"Order the trials by {', '.join(SORT_KEYS)} or a parameter name [default: index; metric with --top].")] = None,
    top_n: Annotated[Optional[int], typer.Option("--top", metavar="N", min=1, show_default=False,
                                                 help="Only the N best trials by the metric.")] = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Progress of a sweep: counts per state, best trial, why it ended; with --trials, each trial's
    parameters, state, attempts, elapsed time, epoch, metric and failure cause.

    A sweep sent from this machine that no dispatcher has stored yet shows as QUEUED."""
    setup_logging(verbose)
    with cli_errors(output):
        settings = Settings.load(table=table)
        reader = Reader(settings)
        meta = _find(reader, sweep_id)
        if meta is None:  # queued: _find raised NotFound otherwise
            entry = reader.queued(sweep_id)[0] if sweep_id else reader.queued()[0]
            doc = reader.queued_doc(entry)
            if output is Output.json:
                emit_json({**doc, "trials": []} if trials else doc)
            else:
                out.print_queued(doc, str(entry.get("name", "")))
            return
        queued.forget(str(meta["sweep_id"]))
        doc = summary.status_doc(meta)
        rows = None
        if trials:
            items, note = trials_with_reported(MetricsStore(str(settings.metrics_table), reader.aws.client("dynamodb")),
                                               reader.store.trials(str(meta["sweep_id"])), kind=meta.get("kind"))
            if note:
                typer.echo(f"note: {note}", err=True)
            rows = trial_rows(items, metric_name=meta.get("metric_name"), now=time.time())
            rows = _order(rows, sort=sort, top_n=top_n, goal=str(doc["goal"]))
        if output is Output.json:
            emit_json({**doc, "trials": [r.as_json() for r in rows]} if rows is not None else doc)
            return
        params = swept_names(rows, _declared(reader.store, str(meta["sweep_id"]))) if rows else []
        shown = f"top {top_n} by {doc['metric']}" if top_n else (f"sorted by {sort}" if sort else "")
        out.print_status(doc, str(meta.get("name", "")), rows, params=params, attempts=_attempts(meta), shown=shown,
                         gpus_per_trial=_gpus_per_trial(meta))


def _find(reader: Reader, sweep_id: str | None) -> dict[str, Any] | None:
    """The sweep's META item; None when it is only queued (from this machine); NotFound else."""
    table = reader.settings.table
    if sweep_id is not None:
        meta = reader.store.get_sweep(sweep_id, consistent=False)
        if meta is not None:
            return meta
        if reader.queued(sweep_id):
            return None
        raise NotFound(
            f"sweep {sweep_id} is not in table {table}, and this machine did not submit it — check the id with "
            "`producer list`; a sweep submitted from another machine shows up here once a dispatcher stores it"
        )
    newest = reader.store.list_sweeps(limit=1)
    waiting = reader.queued()
    if waiting and (not newest or str(waiting[0].get("submitted_at", "")) > str(newest[0].get("submitted_at", ""))):
        return None
    if not newest:
        raise NotFound(f"no sweeps in table {table} — submit one with `producer submit FILE`")
    return newest[0]


def _order(rows: list[TrialRow], *, sort: str | None, top_n: int | None, goal: str) -> list[TrialRow]:
    if sort is not None and sort not in SORT_KEYS and not any(sort in r.flat for r in rows):
        names = sorted({n for r in rows for n in r.flat})
        raise SpecError(f"--sort: {sort!r} is neither a column nor a parameter — use one of "
                        f"{', '.join(list(SORT_KEYS) + names)}")
    if top_n is not None:
        rows = top(rows, top_n, goal=goal)
        return sort_rows(rows, sort, goal=goal) if sort else rows
    return sort_rows(rows, sort, goal=goal) if sort else rows


def _declared(store: Store, sweep_id: str) -> set[str] | None:
    """Dotted names of the non-constant parameters, from the stored spec (None if unreadable)."""
    raw = store.get_spec(sweep_id)
    try:
        sweep = validate_sweep(raw, source=sweep_id, max_grid_size=2**62)  # accepted already: no size limit
    except SpecError:
        return None  # a REJECTED sweep's spec: show the params that vary
    return {p.name for p in sweep.params if p.distribution != "constant"}


def _gpus_per_trial(meta: dict[str, Any]) -> int:
    """GPUs one trial holds (for the GPU-minutes early stopping saved); 0 when unknown."""
    from dispatcher.core.launch import LaunchSettings

    try:
        return LaunchSettings.model_validate(json.loads(meta.get("launch") or "{}")).gpus_per_trial
    except ValueError:  # pydantic's ValidationError too: a record from another version shows no GPU-minutes
        return 0


def _attempts(meta: dict[str, Any]) -> int | None:
    try:
        return int(json.loads(meta.get("launch") or "{}").get("max_retries", 2)) + 1
    except (TypeError, ValueError):
        return None


# -- list ------------------------------------------------------------------------------------------

@app.command("list", short_help="Sweeps, newest first, QUEUED ones included.")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most N sweeps.")] = 20,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Sweeps, newest first: id, name, submitter, state, progress (finished/total, failures).
    Sweeps this machine sent that no dispatcher stored yet come first, as QUEUED."""
    setup_logging(verbose)
    with cli_errors(output):
        settings = Settings.load(table=table)
        reader = Reader(settings)
        rows = [queued.list_row(e) for e in reader.queued()]
        rows += [summary.list_row(m) for m in reader.store.list_sweeps(limit=limit)]
        rows = rows[:limit]
        if output is Output.json:
            emit_json(rows)
        else:
            out.print_list(rows, settings.table)


# -- cancel ----------------------------------------------------------------------------------------

@app.command(short_help="Ask the dispatcher to cancel a sweep (its jobs are deleted).")
def cancel(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", callback=sweep_id_arg, show_default=False, help="Sweep id.")],
    force: Annotated[bool, typer.Option("--force", help="Send the request even for an id neither the table nor this "
                                                        "machine knows (a sweep queued from another machine).")] = False,
    queue_url: QueueOpt = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Ask the dispatcher to cancel a sweep: its next tick deletes the sweep's jobs and launches
    nothing more. An id that is neither in the table nor queued from this machine is refused (exit 4)
    and nothing is sent, unless --force."""
    setup_logging(verbose)
    with cli_errors(output):
        settings = Settings.load(queue_url=queue_url, table=table)
        reader = Reader(settings)
        meta = reader.store.get_sweep(sweep_id, consistent=False)
        waiting = reader.queued(sweep_id) if meta is None else []
        if meta is None and not waiting and not force:
            raise NotFound(f"sweep {sweep_id} is not in table {settings.table}, and this machine did not submit it: "
                           "nothing sent — check the id with `producer list` (--force sends the request anyway)")
        state = meta.get("state") if meta else (queued.QUEUED if waiting else None)
        if meta is not None and state != SweepState.ACTIVE.value:
            if output is Output.json:
                emit_json({"sweep_id": sweep_id, "cancel_requested": False, "state": state})
            else:
                out.console().print(f"sweep {sweep_id} is already {state}: nothing to cancel")
            return
        sqs = reader.aws.client("sqs")
        url = resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name)
        Queue(sqs, url).send(encode_cancel(sweep_id=sweep_id, requested_by=reader.aws.caller()))
        if output is Output.json:
            emit_json({"sweep_id": sweep_id, "cancel_requested": True, "state": state})
            return
        text = out.console()
        if meta is None:
            text.print(f"cancel request for {sweep_id} sent. It is still queued: the dispatcher drops the sweep "
                       "when it takes its submit message.")
        else:
            live = len(meta.get("live") or {})
            text.print(f"cancel request for {sweep_id} sent. The dispatcher's next tick launches no more of its "
                       f"trials and deletes its {live} live job{'s' if live != 1 else ''}; finished trials keep "
                       "their results.")
        text.print(f"follow it:  producer status {sweep_id}")



# -- pause / resume --------------------------------------------------------------------------------

def _control(sweep_id: str, *, resume: bool, queue_url: str | None, table: str | None, output: Output) -> None:
    """Send ``producer pause`` / ``resume`` for a stored, active sweep (the dispatcher checks that
    the sender — this machine's IAM principal — is its submitter or an operator)."""
    action = "resume" if resume else "pause"
    settings = Settings.load(queue_url=queue_url, table=table)
    reader = Reader(settings)
    meta = reader.store.get_sweep(sweep_id, consistent=False)
    if meta is None:
        where = ("it is still queued: " if reader.queued(sweep_id) else
                 "check the id with `producer list`; ")
        raise NotFound(f"sweep {sweep_id} is not in table {settings.table} — nothing sent; {where}{action} it once "
                       "`producer status` shows it")
    state, paused = meta.get("state"), bool(meta.get("paused"))
    if state != SweepState.ACTIVE.value or paused != resume:
        now = state if state != SweepState.ACTIVE.value else ("PAUSED" if paused else "running (not paused)")
        if output is Output.json:
            emit_json({"sweep_id": sweep_id, f"{action}_requested": False, "state": summary.shown_state(meta)})
        else:
            out.console().print(f"sweep {sweep_id} is already {now}: nothing to {action}")
        return
    sqs = reader.aws.client("sqs")
    url = resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name)
    Queue(sqs, url).send(encode_pause(sweep_id=sweep_id, requested_by=reader.aws.caller(), resume=resume))
    if output is Output.json:
        emit_json({"sweep_id": sweep_id, f"{action}_requested": True, "state": summary.shown_state(meta)})
        return
    text = out.console()
    if resume:
        text.print(f"resume request for {sweep_id} sent. The dispatcher's next tick launches its trials again, "
                   "from where it stopped.")
    else:
        running = summary.counts(meta)
        live = running["pending"] + running["launched"] + running["running"]
        text.print(f"pause request for {sweep_id} sent. The dispatcher's next tick launches none of its trials; "
                   f"its {live} running trial{'s' if live != 1 else ''} go on. `producer resume {sweep_id}` "
                   "continues it.")
    text.print(f"follow it:  producer status {sweep_id}")


@app.command(short_help="Ask the dispatcher to pause a sweep (nothing new starts; running trials go on).")
def pause(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", callback=sweep_id_arg, show_default=False, help="Sweep id.")],
    queue_url: QueueOpt = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Ask the dispatcher to pause an active sweep: it launches none of its trials (retries
    included) until `producer resume`; its running trials go on. Only the sweep's submitter and the
    operator policy's operators may pause it (a refusal shows in `producer status`). An id not in
    the table is refused (exit 4) and nothing is sent."""
    setup_logging(verbose)
    with cli_errors(output):
        _control(sweep_id, resume=False, queue_url=queue_url, table=table, output=output)


@app.command(short_help="Ask the dispatcher to resume a paused sweep.")
def resume(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", callback=sweep_id_arg, show_default=False, help="Sweep id.")],
    queue_url: QueueOpt = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Ask the dispatcher to resume a paused sweep: it launches its trials again, from where it
    stopped (trials already run are not repeated). Authorised like `producer pause`."""
    setup_logging(verbose)
    with cli_errors(output):
        _control(sweep_id, resume=True, queue_url=queue_url, table=table, output=output)
