"""``producer validate / expand / schema / submit``: the commands that start from a sweep file."""

from __future__ import annotations

import contextlib
import enum
import inspect
import io
import json
import logging
import os
import sys
from typing import Annotated, Any, Optional

import typer

from dispatcher.adapters.queue import Queue, resolve_queue_url
from dispatcher.clikit import setup_logging
from dispatcher.core.errors import SpecError
from dispatcher.core.message import MAX_BODY_BYTES
from dispatcher.core.spec import json_schema
from dispatcher.settings import Settings
from producer import launch_flags, queued
from producer import output as out
from producer.app import FileArg, MaxGridOpt, OutputOpt, QueueOpt, VerboseOpt, app
from producer.aws import Aws, local_user, region_from_queue_url
from producer.output import Exit, Output, cli_errors, emit_json
from producer.sweepfile import (
    build_submit,
    dry_run,
    file_block,
    kind_source,
    new_token,
    parse_sweep,
    pretty_body,
    read_source,
    resolve,
    team_defaults,
    utc_now,
)
from producer.wandb_sweep import Attachment, attach, decide

log = logging.getLogger("producer")
FIRST_TRIALS = 5


def aws_for(settings: Settings) -> Aws:
    return Aws(region_hint=region_from_queue_url(settings.queue_url))


# -- validate / expand / schema --------------------------------------------------------------------

@app.command(short_help="Is a sweep file valid? Trial count, breakdown, first trials.")
def validate(file: FileArg, max_grid_size: MaxGridOpt = None, output: OutputOpt = Output.text,
             verbose: VerboseOpt = False) -> None:
    """Check a sweep file: exit 0 if valid, 1 if not (every problem, one a line, each with its fix)."""
    setup_logging(verbose)
    with cli_errors(output):
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
        first = sweep.preview(FIRST_TRIALS)  # [] for bayes: its trials are suggested as results arrive
        breakdown = sweep.breakdown()
        warnings = list(sweep.warnings)
        if output is Output.json:
            emit_json({"valid": True, "trials": sweep.total,
                       "breakdown": [{"name": name, "values": size} for name, size in breakdown],
                       "first": first, "errors": [], "warnings": warnings})
        else:
            line = out.breakdown_line(breakdown, sweep.total, sweep.spec.method, sweep.spec.run_cap)
            out.print_valid(source, line, first, sweep.total)
            for warning in warnings:
                out.console(stderr=True).print(f"warning: {warning}")


class ExpandOutput(str, enum.Enum):
    jsonl = "jsonl"
    json = "json"
    text = "text"


@app.command(short_help="The trials in launch order, one JSON object a line.")
def expand(
    file: FileArg,
    limit: Annotated[Optional[int], typer.Option(min=0, show_default=False, help="At most N trials.")] = None,
    start: Annotated[int, typer.Option(help="First trial index; negative counts from the end (-1 = last).")] = 0,
    max_grid_size: MaxGridOpt = None,
    output: Annotated[ExpandOutput, typer.Option(
        "--output", "-o", help="jsonl: one object a line; json: one array; text: aligned.")] = ExpandOutput.jsonl,
    verbose: VerboseOpt = False,
) -> None:
    """Print the trials in launch order: {"index": i, "params": {...}}. Lazy: any grid size is instant."""
    setup_logging(verbose)
    with cli_errors(Output.json if output is ExpandOutput.json else Output.text):
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


@app.command(short_help="JSON schema of a sweep file.")
def schema(output: OutputOpt = Output.json, verbose: VerboseOpt = False) -> None:
    """Print the JSON schema of a sweep file (W&B keys + the sweepq: block). It is JSON either way."""
    setup_logging(verbose)
    with cli_errors(output):
        emit_json(json_schema())


# -- submit ----------------------------------------------------------------------------------------

def submit(
    file: str,
    queue_url: Optional[str],
    dry_run_: bool,
    idempotency_key: Optional[str],
    defaults: Optional[str],
    max_grid_size: Optional[int],
    output: Output,
    verbose: bool,
    wandb_sweep: Optional[bool] = None,
    **flags: Any,
) -> None:
    """Validate FILE, resolve its launch settings and send it to the queue as one message.

    Launch settings: team defaults < $SWEEPQ_BACKEND/$SWEEPQ_IMAGE < the file's sweepq: block < the
    flags below (one per sweepq: key). Right after sending, `producer status ID` shows the sweep
    QUEUED until the dispatcher stores it.

    With W&B credentials (`wandb login` or WANDB_API_KEY) the sweep is also registered with W&B, so
    its runs appear as one sweep in W&B's UI; --wandb-sweep/--no-wandb-sweep (or the team defaults'
    wandb_sweep: true|false) decide instead.
    """
    setup_logging(verbose)
    with cli_errors(output):
        settings = Settings.load(queue_url=queue_url, max_grid_size=max_grid_size)
        data, source = read_source(file)
        sweep = parse_sweep(data, source=source, max_grid_size=settings.max_grid_size, launchable=True)
        defaults_ = team_defaults(defaults)
        team = defaults_.launch
        requested = defaults_.wandb_sweep if wandb_sweep is None else wandb_sweep
        block = file_block(sweep)
        overrides = launch_flags.overrides(flags, lower=[team, block])
        launch = resolve(sweep, defaults=team, overrides=overrides)
        token = idempotency_key or new_token()
        fields = {"token": token, "source": source, "submitted_at": utc_now()}
        msg, body = build_submit(sweep, launch, submitter=local_user(), **fields)  # size check before any AWS call
        if dry_run_:  # never registers anything with W&B: it only says whether submit would
            _print_dry_run(settings, sweep, msg, body, launch, kind_source(defaults=team, overrides=overrides, block=block),
                           output, wandb=_dry_run_wandb(launch, requested))
            return
        aws = aws_for(settings)
        sqs = aws.client("sqs")
        url = resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name)
        submitter = aws.caller()
        # After the queue is found (no W&B sweep for a submit that cannot send), before sending.
        attached = attach(sweep, launch, sweepq_sweep_id=msg.sweep_id, requested=requested,
                          project=settings.wandb_project)
        msg, body = build_submit(sweep, attached.launch, submitter=submitter, **fields)
        message_id = Queue(sqs, url).send(body)
        log.debug("sent sweep %s as message %s to %s", msg.sweep_id, message_id, url)
        queued.record({"sweep_id": msg.sweep_id, "name": sweep.spec.name or "", "total": sweep.total,
                       "method": sweep.spec.method, "table": settings.table, "region": aws.region, "queue_url": url,
                       "message_id": message_id, "submitter": submitter, "submitted_at": msg.submitted_at,
                       "source": source})
        if output is Output.json:
            emit_json({"sweep_id": msg.sweep_id, "trials": sweep.total, "state": queued.QUEUED, "queue_url": url,
                       "wandb_sweep": _wandb_json(attached)})
            return
        text = out.console()
        text.print(f"submitted sweep {msg.sweep_id}: {sweep.total:,} trials ({sweep.spec.method}) to {url}")
        text.print("it is QUEUED until a dispatcher's next tick stores it")
        if attached.wandb is not None:
            text.print(f"W&B sweep: {attached.wandb.url or attached.wandb.path} (every trial's run appears under it)")
        text.print(f"watch it:  producer status {msg.sweep_id}")


def _wandb_json(attached: Attachment) -> dict[str, Any] | None:
    """The W&B sweep the trials attach to, for ``-o json`` (null when none)."""
    launch = attached.launch
    if not launch.wandb_sweep_id:
        return None
    url = attached.wandb.url if attached.wandb is not None else None
    return {"id": launch.wandb_sweep_id, "entity": launch.wandb_entity, "project": launch.wandb_project, "url": url,
            "registered": attached.wandb is not None}


def _dry_run_wandb(launch: Any, requested: Optional[bool]) -> dict[str, Any]:
    """Whether a real submit would register the sweep with W&B, and why (nothing is registered)."""
    if launch.wandb_sweep_id:
        return {"register": False, "reason": f"the launch settings name W&B sweep {launch.wandb_sweep_id}"}
    decision = decide(requested)
    return {"register": decision.register, "reason": decision.reason}


def _print_dry_run(settings: Settings, sweep: Any, msg: Any, body: str, launch: Any, source: str, output: Output,
                   wandb: dict[str, Any]) -> None:
    manifest = dry_run(settings, sweep, msg.sweep_id, launch)
    if source:
        where = f"{manifest.kind} (from {source})"
    else:
        where = (f"{manifest.kind} — the file names no kind, so the dispatcher's own $SWEEPQ_BACKEND decides; this "
                 f"preview uses this machine's ({settings.backend}). Preview another with --kind or SWEEPQ_BACKEND")
    if output is Output.json:
        emit_json({"dry_run": True, "sweep_id": msg.sweep_id, "trials": sweep.total, "body": json.loads(body),
                   "kind": manifest.kind, "kind_source": source or None, "job_name": manifest.job_name,
                   "manifest": str(manifest), "wandb": wandb})
        return
    text = out.console()
    text.print(f"Dry run: nothing was sent. Sweep {msg.sweep_id}, {sweep.total:,} trials.")
    text.print(f"\n# message body ({len(body.encode()):,} of {MAX_BODY_BYTES:,} bytes)")
    text.print(pretty_body(body))
    text.print(f"\n# kind: {where}")
    if wandb["register"]:
        text.print(f"# W&B: submit would register this sweep with W&B ({wandb['reason']}); its trials then get "
                   "WANDB_SWEEP_ID, WANDB_ENTITY and WANDB_PROJECT (not in this preview)")
    else:
        text.print(f"# W&B: no W&B sweep is registered ({wandb['reason']})")
    text.print(f"# trial 0 of {sweep.total:,}, attempt 1: {manifest.kind} job {manifest.job_name}")
    text.print(str(manifest).rstrip("\n"))


def _token(value: Optional[str]) -> Optional[str]:
    if value is not None and not 8 <= len(value) <= 128:
        raise typer.BadParameter(f"{value!r} must be 8 to 128 characters — e.g. a CI job id or a uuid")
    return value


def _fixed(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def _register_submit() -> None:
    """``submit`` with one flag per sweepq: key, generated from the launch model."""
    fixed = [
        _fixed("file", FileArg, inspect.Parameter.empty),
        _fixed("queue_url", QueueOpt),
        _fixed("dry_run_", Annotated[bool, typer.Option("--dry-run", help="Send nothing; print the body and the job "
                                                       "trial 0 becomes (its exact manifest).")], False),
        _fixed("idempotency_key", Annotated[Optional[str], typer.Option(
            callback=_token, show_default=False,
            help="Same key, same sweep id: a re-run cannot create a second sweep [default: a fresh uuid4].")]),
        _fixed("defaults", Annotated[Optional[str], typer.Option(
            "--defaults", show_default=False, help="Team defaults: YAML of launch settings [default: $SWEEPQ_DEFAULTS].")]),
        _fixed("max_grid_size", MaxGridOpt),
        _fixed("output", OutputOpt, Output.text),
        _fixed("verbose", VerboseOpt, False),
        _fixed("wandb_sweep", Annotated[Optional[bool], typer.Option(
            "--wandb-sweep/--no-wandb-sweep", show_default=False,
            help="Register the sweep with W&B so its runs appear as one sweep in W&B's UI (--wandb-sweep: "
                 "fail if W&B cannot be reached), or never [default: the team defaults' wandb_sweep, else "
                 "only when you have W&B credentials].")]),
    ]
    params = fixed + [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in launch_flags.parameters()]

    def command(**kwargs: Any) -> None:
        # submit()'s named parameters, in its order; what is left are the launch flags (its **flags)
        names = ("file", "queue_url", "dry_run_", "idempotency_key", "defaults", "max_grid_size", "output", "verbose",
                 "wandb_sweep")
        fixed_values = [kwargs.pop(n) for n in names]
        submit(*fixed_values, **kwargs)

    # typeshed's function type does not declare __signature__, the attribute inspect.signature (and typer) reads
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = submit.__doc__
    command.__name__ = "submit"
    app.command("submit", short_help="Send a sweep file to the queue (--dry-run: show what would run).")(command)


_register_submit()
