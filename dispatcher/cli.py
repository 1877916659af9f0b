"""``dispatcher`` command line: ``tick`` (CronJob), ``run`` (loop), ``bootstrap``, ``local-stack``, ``demo``.

Every command takes ``--output text|json`` (``-o``), ``--verbose`` (``-v``) and ``-h``; the app
takes ``--version``. Errors as in :mod:`dispatcher.clikit` (JSON on stdout with ``-o json``).
``run -o json`` prints one JSON object per tick (JSON lines), ``local-stack -o json`` one object
with the environment to export, then serves until Ctrl-C.

Exit codes: 0 ok, 1 the tick reported errors (or the demo's sweep file is invalid or its sweep
did not succeed), 2 usage error, 3 configuration/AWS error, 130 interrupted (the demo saves its
state first).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
import threading
from typing import Annotated, Any, Optional

import typer

from dispatcher.clikit import Output, OutputOpt, VerboseOpt, cli_errors, emit_json, make_app, setup_logging
from dispatcher.core.errors import ConfigError, PermanentError, SweepqError
from dispatcher.core.launch import JOB_KINDS
from dispatcher.report import TickReport
from dispatcher.settings import Settings

app = make_app("dispatcher", "The sweepq dispatcher: drains the sweep queue into the table and runs the trials "
                             "as jobs on the cluster (or on this machine).")
log = logging.getLogger("dispatcher")
LOG_LEVEL_ENV = "SWEEPQ_LOG_LEVEL"

# Built from JOB_KINDS so --backend offers every kind; mypy cannot list an Enum's members computed at run time.
BackendKind = enum.Enum("BackendKind", {k: k for k in JOB_KINDS if k != "template"}, type=str)  # type: ignore[misc]
BackendOpt = Annotated[Optional[BackendKind], typer.Option(
    "--backend", show_default=False,
    help="Default job kind of sweeps that name none [default: $SWEEPQ_BACKEND or pytorchjob].")]
MaxRunningOpt = Annotated[Optional[int], typer.Option(
    "--max-running", min=0, show_default=False, help="Global cap on running jobs [default: $SWEEPQ_MAX_RUNNING or 8].")]


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, PermanentError):
        return 1  # the demo's sweep file is invalid
    return 3  # configuration or AWS: no table/queue, no credentials, a bad SWEEPQ_* value


def _errors(output: Output) -> Any:
    return cli_errors(output, _exit_code, handled=(SweepqError,))


def _logging(verbose: bool) -> None:
    """Our own logs at $SWEEPQ_LOG_LEVEL (INFO: the tick's one JSON line), SDKs quiet."""
    setup_logging(verbose, level=os.environ.get(LOG_LEVEL_ENV, "INFO"))


def _settings(**overrides: Any) -> Settings:
    values = {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in overrides.items() if v is not None}
    return Settings.load(**values)


def summary_line(report: TickReport) -> str:
    return (f"accepted {report.accepted}, rejected {report.rejected}, launched {report.launched}, "
            f"running {report.running}, finished {report.finished}, failed {report.failed}, "
            f"retried {report.retried}, capacity {report.capacity}, {report.duration_s:.2f} s"
            + (", lease busy" if report.lease == "busy" else ""))


def _print_report(report: TickReport, output: Output, *, lines: bool = False) -> None:
    if output is Output.json:
        text = json.dumps(report.as_dict(), sort_keys=True)
        typer.echo(text) if lines else emit_json(report.as_dict())
        return
    typer.echo(summary_line(report))
    for err in report.errors:
        typer.echo(f"  ! {err}", err=True)


@app.command(short_help="One tick: intake, observe, reconcile, launch (the CronJob).")
def tick(
    backend: BackendOpt = None,
    max_running: MaxRunningOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Run one tick: intake, observe, reconcile, plan, launch, report. Exit 1 if the tick reported errors."""
    _logging(verbose)
    with _errors(output):
        from dispatcher.wiring import build_dispatcher

        settings = _settings(backend=backend, max_running=max_running)
        report = build_dispatcher(settings).tick()
        _print_report(report, output)
    raise typer.Exit(1 if report.errors else 0)


@app.command(short_help="Tick in a loop, within seconds of a job change or a new message.")
def run(
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks at most.")] = 60.0,
    watch: Annotated[bool, typer.Option(help="Also tick within seconds of a job change or a new message.")] = True,
    until_idle: Annotated[bool, typer.Option(help="Exit once no sweep is active.")] = False,
    backend: BackendOpt = None,
    max_running: MaxRunningOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Tick in a loop (a long-running Deployment, or local development), event-driven by default.
    Prints one line per tick (one JSON object per tick with -o json); SIGTERM or Ctrl-C stops it."""
    _logging(verbose)
    with _errors(output):
        from dispatcher.wake import Waker, run_loop, start_watchers
        from dispatcher.wiring import build_dispatcher

        dispatcher = build_dispatcher(_settings(backend=backend, max_running=max_running))
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        waker = Waker() if watch else None
        if waker is not None:
            start_watchers(dispatcher, waker, stop)
        try:
            run_loop(dispatcher, interval=interval, stop=stop, until_idle=until_idle, waker=waker,
                     on_tick=lambda report: _print_report(report, output, lines=True))
        except KeyboardInterrupt:
            stop.set()


@app.command(short_help="Create the queues and the tables (idempotent).")
def bootstrap(output: OutputOpt = Output.text, verbose: VerboseOpt = False) -> None:
    """Idempotently create the queue (SWEEPQ_QUEUE_NAME), its DLQ, the table (SWEEPQ_TABLE), the
    trials' metrics table (SWEEPQ_METRICS_TABLE) and, unless SWEEPQ_WAKE_QUEUE_URL names one or
    SWEEPQ_WAKE is off, the wake queue (SWEEPQ_WAKE_QUEUE_NAME); print the queue URL."""
    _logging(verbose)
    with _errors(output):
        import boto3

        from dispatcher.adapters.metrics import MetricsStore
        from dispatcher.adapters.queue import create_queues
        from dispatcher.adapters.store import Store
        from dispatcher.adapters.wake_queue import create_wake_queue

        settings = _settings()
        try:
            session = boto3.session.Session()
            sqs, dynamodb = session.client("sqs"), session.client("dynamodb")
            url, dlq = create_queues(sqs, settings.queue_name)
            created = Store(settings.table, dynamodb).create_table()
            metrics_created = MetricsStore(str(settings.metrics_table), dynamodb).create_table()
            wake_url = settings.wake_queue_url
            if wake_url is None and settings.wake:
                wake_url = create_wake_queue(sqs, str(settings.wake_queue_name))
        except SweepqError:
            raise
        except Exception as exc:  # botocore's NoCredentialsError / NoRegionError and friends
            raise ConfigError(f"AWS: {exc} — set AWS credentials and AWS_DEFAULT_REGION, or AWS_ENDPOINT_URL for moto") from exc
        if output is Output.json:
            emit_json({"queue_url": url, "dlq_url": dlq, "table": settings.table, "table_created": created,
                       "metrics_table": settings.metrics_table, "metrics_table_created": metrics_created,
                       "wake_queue_url": wake_url})
        else:
            typer.echo(url)


@app.command("local-stack", short_help="AWS (moto) on loopback for local development.")
def local_stack(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Loopback port for moto's AWS endpoint (0: any free one).")] = 5000,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Run an AWS endpoint (moto) on loopback for local development; print the environment that
    points the other terminals at it (JSON with -o json), then serve until Ctrl-C."""
    _logging(verbose)
    with _errors(output):
        from dispatcher.localstack import serve_forever

        serve_forever(port, as_json=output is Output.json)


@app.command(short_help="The whole loop on this machine (README command 1).")
def demo(
    sweep_file: Annotated[str, typer.Argument(metavar="FILE", help="The sweep file.")] = "examples/sweep.yaml",
    slots: Annotated[int, typer.Option(min=1, help="Trials running at once.")] = 2,
    state_dir: Annotated[str, typer.Option(help="Where logs, checkpoints and results go.")] = ".sweepq/demo",
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks.")] = 2.0,
    live: Annotated[bool, typer.Option(help="Live terminal view.")] = True,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """moto on loopback, bootstrap, submit FILE, run its trials locally, then the results table,
    the best trial and a plot. State is kept per sweep file: Ctrl-C, then the same command resumes;
    another file starts its own sweep."""
    setup_logging(verbose)  # the live table is the output; the tick's log lines only with --verbose
    with _errors(output):
        from dispatcher.localdemo import run_demo

        code = run_demo(sweep_file, slots=slots, state_dir=state_dir, interval=interval, live=live, output=output.value)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
