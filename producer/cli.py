"""``producer``: validate, expand and submit sweep files; watch and cancel sweeps.

Commands (each takes ``--output text|json``; text is for people, JSON for scripts)::

    producer validate FILE             is the file valid? how many trials, which ones first
    producer expand FILE [--limit N]   the trials in launch order, one JSON object a line
    producer submit FILE [--dry-run]   send the sweep to the team queue (one SQS message)
    producer schema                    JSON schema of a sweep file
    producer status [SWEEP_ID]         progress, counts per state, best trial (newest sweep by default)
    producer list                      sweeps, newest first
    producer cancel SWEEP_ID           ask the dispatcher to cancel a sweep

``FILE`` may be ``-`` for stdin. Researchers need only two AWS permissions: send to the queue
and read the table; the dispatcher creates, watches and deletes jobs.

Exit codes:

    0  success
    1  invalid input: the sweep file (or the message built from it, e.g. over 256 KiB) is invalid;
       ``producer validate`` says why, one problem a line
    2  usage error: unknown flag, bad flag value, missing or unreadable FILE
    3  AWS or configuration error: no queue, no region or credentials, table missing, throttled
       or unreachable AWS, invalid team defaults or SWEEPQ_* variable
    4  not found: the sweep id is not in the table (yet)

Errors print one line per problem on stderr, never a traceback (``SWEEPQ_DEBUG=1`` shows it).

Idempotency: ``submit`` derives the sweep id from a token, ``--idempotency-key`` or a fresh
uuid4 per invocation. boto3's own retries resend the same body, and the dispatcher stores a
sweep with a conditional put keyed by that id, so a retried send never makes two sweeps;
re-running ``producer submit`` with the same ``--idempotency-key`` (e.g. a CI job id) is safe too.

``submit --dry-run`` contacts no AWS service: its body names ``$USER`` as submitter, and the
manifest is built with this machine's ``SWEEPQ_*`` settings (namespace, state dir, ...), which
should match the dispatcher's for the preview to be exact.
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import os
import sys
from typing import Annotated, Any, Optional

import typer

from dispatcher.adapters.queue import Queue, resolve_queue_url
from dispatcher.adapters.store import Store
from dispatcher.core.errors import NotFound, SpecError, SweepqError
from dispatcher.core.identity import is_sweep_id
from dispatcher.core.launch import JOB_KINDS, parse_duration
from dispatcher.core.message import MAX_BODY_BYTES, encode_cancel
from dispatcher.core.records import SweepState
from dispatcher.core.spec import json_schema, validate_sweep
from dispatcher.settings import Settings
from producer import output as out
from producer import summary
from producer.aws import Aws, local_user, region_from_queue_url
from producer.output import Exit, Output, cli_errors, emit_json
from producer.sweepfile import (
    build_submit,
    dry_run,
    launch_layers,
    new_token,
    parse_sweep,
    pretty_body,
    read_source,
    resolve,
    utc_now,
)

log = logging.getLogger(__name__)
FIRST_TRIALS = 5

app = typer.Typer(
    name="producer",
    help="Submit W&B-style sweep files to the sweepq queue and follow them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class ExpandOutput(str, enum.Enum):
    jsonl = "jsonl"
    json = "json"
    text = "text"


Kind = enum.Enum("Kind", {k: k for k in JOB_KINDS}, type=str)  # type: ignore[misc]

FileArg = Annotated[str, typer.Argument(metavar="FILE", help="Sweep file (YAML); - reads stdin.", show_default=False)]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text for people, json for scripts.")]
MaxGridOpt = Annotated[Optional[int], typer.Option(
    "--max-grid-size", min=1, show_default=False,
    help="Refuse grids larger than this [default: $SWEEPQ_MAX_GRID_SIZE or 10000000].")]
TableOpt = Annotated[Optional[str], typer.Option("--table", show_default=False,
                                                 help="DynamoDB table [default: $SWEEPQ_TABLE or sweepq].")]
QueueOpt = Annotated[Optional[str], typer.Option(
    "--queue-url", show_default=False,
    help="SQS queue URL [default: $SWEEPQ_QUEUE_URL, else the URL of queue $SWEEPQ_QUEUE_NAME or sweepq].")]


def _sweep_id(value: Optional[str]) -> Optional[str]:
    if value is not None and not is_sweep_id(value):
        raise typer.BadParameter(f"{value!r} is not a sweep id (like bert-lr-abcdefgh) — copy it from `producer list`")
    return value


def _duration(value: Optional[str]) -> Optional[int]:
    try:
        return parse_duration(value, field="--max-runtime")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _nodes(value: Optional[str]) -> Optional[str]:
    if value is not None:
        parts = value.split(":")
        if len(parts) > 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
            raise typer.BadParameter(f"{value!r} is not N or MIN:MAX — write e.g. --nodes 2 or --nodes 1:4")
    return value


def _token(value: Optional[str]) -> Optional[str]:
    if value is not None and not 8 <= len(value) <= 128:
        raise typer.BadParameter(f"{value!r} must be 8 to 128 characters — e.g. a CI job id or a uuid")
    return value


def _aws(settings: Settings) -> Aws:
    return Aws(region_hint=region_from_queue_url(settings.queue_url))


# -- validate / expand / schema --------------------------------------------------------------------

@app.command()
def validate(file: FileArg, max_grid_size: MaxGridOpt = None, output: OutputOpt = Output.text) -> None:
    """Check a sweep file: exit 0 if valid, 1 if not (every problem, one a line)."""
    with cli_errors():
        settings = Settings.load(max_grid_size=max_grid_size)
        data, source = read_source(file)
        try:
            sweep = parse_sweep(data, source=source, max_grid_size=settings.max_grid_size)
        except SpecError as exc:
            if output is Output.json:
                emit_json({"valid": False, "trials": 0, "breakdown": [], "first": [], "errors": exc.problems})
            else:
                out.print_invalid(exc.source or source, exc.problems)
            raise typer.Exit(int(Exit.INVALID)) from exc
        first = [sweep.trial(i) for i in range(min(FIRST_TRIALS, sweep.total))]
        breakdown = sweep.breakdown()
        if output is Output.json:
            emit_json({"valid": True, "trials": sweep.total,
                       "breakdown": [{"name": name, "values": size} for name, size in breakdown],
                       "first": first, "errors": []})
        else:
            line = out.breakdown_line(breakdown, sweep.total, sweep.spec.method, sweep.spec.run_cap)
            out.print_valid(source, line, first, sweep.total)


@app.command()
def expand(
    file: FileArg,
    limit: Annotated[Optional[int], typer.Option(min=0, show_default=False, help="At most N trials.")] = None,
    start: Annotated[int, typer.Option(help="First trial index; negative counts from the end (-1 = last).")] = 0,
    max_grid_size: MaxGridOpt = None,
    output: Annotated[ExpandOutput, typer.Option("--output", "-o", help="jsonl: one object a line.")] = ExpandOutput.jsonl,
) -> None:
    """Print the trials in launch order: {"index": i, "params": {...}}. Lazy: any grid size is instant."""
    with cli_errors():
        settings = Settings.load(max_grid_size=max_grid_size)
        data, source = read_source(file)
        sweep = parse_sweep(data, source=source, max_grid_size=settings.max_grid_size)
        begin = max(sweep.total + start, 0) if start < 0 else min(start, sweep.total)
        end = sweep.total if limit is None else min(sweep.total, begin + limit)
        try:
            _write_trials(sweep, begin, end, output)
        except BrokenPipeError:
            # `producer expand big.yaml | head`: the reader has what it wanted; that is success.
            _silence_stdout()
            raise typer.Exit(int(Exit.OK)) from None


def _write_trials(sweep: Any, begin: int, end: int, output: ExpandOutput) -> None:
    write = sys.stdout.write
    if output is ExpandOutput.json:
        write("[")
    for i in range(begin, end):
        params = sweep.trial(i)
        if output is ExpandOutput.text:
            write(f"{i:>6}  {out.compact(params)}\n")
        else:
            item = json.dumps({"index": i, "params": params}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            write((("," if i > begin else "") + "\n" + item) if output is ExpandOutput.json else item + "\n")
    if output is ExpandOutput.json:
        write("\n]\n")
    sys.stdout.flush()


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not hit the closed pipe again."""
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@app.command()
def schema(output: OutputOpt = Output.json) -> None:
    """Print the JSON schema of a sweep file (W&B keys + the sweepq: block). It is JSON either way."""
    with cli_errors():
        emit_json(json_schema())


# -- submit ----------------------------------------------------------------------------------------

@app.command()
def submit(
    file: FileArg,
    queue_url: QueueOpt = None,
    dry_run_: Annotated[bool, typer.Option("--dry-run", help="Send nothing; print the body and trial 0's job.")] = False,
    idempotency_key: Annotated[Optional[str], typer.Option(
        callback=_token, show_default=False,
        help="Same key, same sweep id: a re-run cannot create a second sweep [default: a fresh uuid4].")] = None,
    defaults: Annotated[Optional[str], typer.Option(
        "--defaults", show_default=False, help="Team defaults: YAML of launch settings [default: $SWEEPQ_DEFAULTS].")] = None,
    kind: Annotated[Optional[Kind], typer.Option(show_default=False,
                                                help="Job kind [default: sweepq.kind, $SWEEPQ_BACKEND].")] = None,
    image: Annotated[Optional[str], typer.Option(show_default=False, help="Trial container image.")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option(min=0, max=64, show_default=False)] = None,
    nproc_per_node: Annotated[Optional[int], typer.Option(min=1, max=64, show_default=False)] = None,
    nodes: Annotated[Optional[str], typer.Option(callback=_nodes, show_default=False, help="N or MIN:MAX.")] = None,
    max_concurrent: Annotated[Optional[int], typer.Option(min=1, show_default=False)] = None,
    max_retries: Annotated[Optional[int], typer.Option(min=0, max=20, show_default=False)] = None,
    max_failed_trials: Annotated[Optional[int], typer.Option(min=1, show_default=False)] = None,
    max_runtime: Annotated[Optional[str], typer.Option(show_default=False, help="Per attempt: 3600, 90m, 2h.")] = None,
    priority: Annotated[Optional[int], typer.Option(min=-1000, max=1000, show_default=False)] = None,
    team: Annotated[Optional[str], typer.Option(show_default=False)] = None,
    kueue_queue: Annotated[Optional[str], typer.Option(show_default=False)] = None,
    max_grid_size: MaxGridOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Validate FILE, resolve its launch settings and send it to the queue as one message.

    Launch settings: team defaults < $SWEEPQ_BACKEND/$SWEEPQ_IMAGE < the file's sweepq: block < flags.
    """
    with cli_errors():
        overrides: dict[str, Any] = {
            "kind": kind.value if kind else None, "image": image, "gpus_per_node": gpus_per_node, "nproc_per_node": nproc_per_node,
            "nodes": nodes, "max_concurrent": max_concurrent, "max_retries": max_retries,
            "max_failed_trials": max_failed_trials, "max_runtime": _duration(max_runtime), "priority": priority,
            "team": team, "kueue_queue": kueue_queue,
        }
        settings = Settings.load(queue_url=queue_url, max_grid_size=max_grid_size)
        data, source = read_source(file)
        sweep = parse_sweep(data, source=source, max_grid_size=settings.max_grid_size)
        launch = resolve(sweep, defaults=launch_layers(defaults), overrides=overrides)
        token = idempotency_key or new_token()
        fields = {"token": token, "source": source, "submitted_at": utc_now()}
        msg, body = build_submit(sweep, launch, submitter=local_user(), **fields)  # size check before any AWS call
        if dry_run_:
            manifest = dry_run(settings, sweep, msg.sweep_id, launch)
            if output is Output.json:
                emit_json({"dry_run": True, "sweep_id": msg.sweep_id, "trials": sweep.total, "body": json.loads(body),
                           "kind": manifest.kind, "job_name": manifest.job_name, "manifest": str(manifest)})
                return
            text = out.console()
            text.print(f"Dry run: nothing was sent. Sweep {msg.sweep_id}, {sweep.total:,} trials.")
            text.print(f"\n# message body ({len(body.encode()):,} of {MAX_BODY_BYTES:,} bytes)")
            text.print(pretty_body(body))
            text.print(f"\n# trial 0 of {sweep.total:,}, attempt 1: {manifest.kind} job {manifest.job_name}")
            text.print(str(manifest).rstrip("\n"))
            return
        aws = _aws(settings)
        sqs = aws.client("sqs")
        url = resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name)
        msg, body = build_submit(sweep, launch, submitter=aws.caller(), **fields)
        message_id = Queue(sqs, url).send(body)
        log.debug("sent sweep %s as message %s to %s", msg.sweep_id, message_id, url)
        if output is Output.json:
            emit_json({"sweep_id": msg.sweep_id, "trials": sweep.total})
            return
        text = out.console()
        text.print(f"submitted sweep {msg.sweep_id}: {sweep.total:,} trials ({sweep.spec.method}) to {url}")
        text.print(f"watch it:  producer status {msg.sweep_id}")


# -- status / list / cancel ------------------------------------------------------------------------

@app.command()
def status(
    sweep_id: Annotated[Optional[str], typer.Argument(metavar="SWEEP_ID", callback=_sweep_id, show_default=False,
                                                      help="Sweep id [default: the newest sweep].")] = None,
    trials: Annotated[bool, typer.Option("--trials", help="Add a table of the launched trials.")] = False,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Progress of a sweep: counts per state, best trial, and why it ended if it did."""
    with cli_errors():
        settings = Settings.load(table=table)
        store = Store(settings.table, _aws(settings).client("dynamodb"))
        if sweep_id is None:
            newest = store.list_sweeps(limit=1)
            if not newest:
                raise NotFound(f"no sweeps in table {settings.table} — submit one with `producer submit FILE`")
            meta: dict[str, Any] | None = newest[0]
        else:
            meta = store.get_sweep(sweep_id, consistent=False)
        if meta is None:
            raise NotFound(
                f"sweep {sweep_id} is not in table {settings.table} — if you just submitted it, the dispatcher "
                "stores it on its next tick; `producer list` shows the known sweeps"
            )
        doc = summary.status_doc(meta)
        rows = None
        if trials:
            items = store.trials(str(meta["sweep_id"]))
            rows = sorted((summary.trial_row(i, meta.get("metric_name")) for i in items), key=lambda r: r["index"])
        if output is Output.json:
            emit_json({**doc, "trials": rows} if rows is not None else doc)
        else:
            swept = _swept_parameters(store, str(meta["sweep_id"])) if rows else None
            out.print_status(doc, str(meta.get("name", "")), rows, swept)


def _swept_parameters(store: Store, sweep_id: str) -> set[str] | None:
    """Dotted names of the non-constant parameters, from the stored spec (None if unreadable)."""
    raw = store.get_spec(sweep_id)
    try:
        sweep = validate_sweep(raw, source=sweep_id, max_grid_size=2**62)  # accepted already: no size limit
    except SpecError:
        return None  # a REJECTED sweep's spec: show the params as they are
    return {p.name for p in sweep.params if p.distribution != "constant"}


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most N sweeps.")] = 20,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Sweeps, newest first: id, name, submitter, state, progress (finished/total)."""
    with cli_errors():
        settings = Settings.load(table=table)
        store = Store(settings.table, _aws(settings).client("dynamodb"))
        rows = [summary.list_row(m) for m in store.list_sweeps(limit=limit)]
        if output is Output.json:
            emit_json(rows)
        else:
            out.print_list(rows, settings.table)


@app.command()
def cancel(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", callback=_sweep_id, show_default=False, help="Sweep id.")],
    queue_url: QueueOpt = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
) -> None:
    """Ask the dispatcher to cancel a sweep: its next tick deletes the sweep's jobs."""
    with cli_errors():
        settings = Settings.load(queue_url=queue_url, table=table)
        aws = _aws(settings)
        state = None
        try:
            meta = Store(settings.table, aws.client("dynamodb")).get_sweep(sweep_id, consistent=False)
            state = meta.get("state") if meta else None
        except SweepqError as exc:  # reading is advisory: the cancel request itself goes via the queue
            typer.echo(f"warning: could not read table {settings.table} ({exc}); sending the request anyway", err=True)
            meta = None
        if state and state != SweepState.ACTIVE.value:
            if output is Output.json:
                emit_json({"sweep_id": sweep_id, "cancel_requested": False, "state": state})
            else:
                out.console().print(f"sweep {sweep_id} is already {state}: nothing to cancel")
            return
        sqs = aws.client("sqs")
        url = resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name)
        Queue(sqs, url).send(encode_cancel(sweep_id=sweep_id, requested_by=aws.caller()))
        if output is Output.json:
            emit_json({"sweep_id": sweep_id, "cancel_requested": True, "state": state})
            return
        text = out.console()
        if meta is None:
            text.print(f"cancel request for {sweep_id} sent. It is not in table {settings.table} yet (still queued?): "
                       "the dispatcher will drop the sweep when its submit message arrives.")
        else:
            live = len(meta.get("live") or {})
            text.print(f"cancel request for {sweep_id} sent. The dispatcher's next tick launches no more of its "
                       f"trials and deletes its {live} live job{'s' if live != 1 else ''}; finished trials keep "
                       "their results.")
        text.print(f"follow it:  producer status {sweep_id}")


def main() -> None:
    """The ``producer`` console script."""
    logging.basicConfig(level=logging.DEBUG if out.debug() else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    app()
