"""``dispatcher`` command line: ``tick`` (CronJob), ``run`` (loop), ``bootstrap``, ``local-stack``, ``demo``.

Exit codes: 0 ok, 1 the tick reported errors, 3 configuration/AWS error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional

import typer

from dispatcher.core.errors import ConfigError, SweepqError
from dispatcher.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="sweepq dispatcher: queue → table → cluster.")
log = logging.getLogger("dispatcher")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from exc


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, os.environ.get("SWEEPQ_LOG_LEVEL", "INFO")),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(3) from exc


@app.command()
def tick(
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
    backend: Optional[str] = typer.Option(None, help="Default job kind (SWEEPQ_BACKEND)."),
    max_running: Optional[int] = typer.Option(None, help="Global cap on running jobs (SWEEPQ_MAX_RUNNING)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run one tick: intake, observe, reconcile, launch. For the CronJob."""
    _setup_logging(verbose)
    settings = _settings(backend=backend, max_running=max_running)
    from dispatcher.wiring import build_dispatcher

    try:
        report = build_dispatcher(settings).tick()
    except SweepqError as exc:
        _fail(exc)
    data = report.as_dict()
    if output == "json":
        typer.echo(json.dumps(data, sort_keys=True))
    else:
        typer.echo(
            f"accepted {report.accepted}, rejected {report.rejected}, launched {report.launched}, "
            f"running {report.running}, finished {report.finished}, failed {report.failed}, "
            f"capacity {report.capacity}, {report.duration_s:.2f} s"
            + (", lease busy" if report.lease == "busy" else "")
        )
        for err in report.errors:
            typer.echo(f"  ! {err}", err=True)
    raise typer.Exit(1 if report.errors else 0)


@app.command()
def run(
    interval: float = typer.Option(60.0, help="Seconds between ticks at most."),
    watch: bool = typer.Option(True, help="Also tick within seconds of a job change or a new message."),
    until_idle: bool = typer.Option(False, help="Exit once no sweep is active."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Tick in a loop (a long-running Deployment, or local development), event-driven by default."""
    _setup_logging(verbose)
    settings = _settings()
    from dispatcher.wiring import build_dispatcher

    try:
        dispatcher = build_dispatcher(settings)
    except SweepqError as exc:
        _fail(exc)
    from dispatcher.wake import Waker, run_loop, start_watchers

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    waker = Waker() if watch else None
    if waker is not None:
        start_watchers(dispatcher, waker, stop)
    try:
        run_loop(dispatcher, interval=interval, stop=stop, until_idle=until_idle, waker=waker)
    except KeyboardInterrupt:
        stop.set()


@app.command()
def bootstrap(
    output: str = typer.Option("text", "--output", "-o"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Idempotently create the queue (SWEEPQ_QUEUE_NAME), its DLQ and the table (SWEEPQ_TABLE)."""
    _setup_logging(verbose)
    settings = _settings()
    import boto3

    from dispatcher.adapters.queue import create_queues
    from dispatcher.adapters.store import Store

    try:
        session = boto3.session.Session()
        url, dlq = create_queues(session.client("sqs"), settings.queue_name)
        created = Store(settings.table, session.client("dynamodb")).create_table()
    except SweepqError as exc:
        _fail(exc)
    except Exception as exc:  # botocore's NoCredentialsError / NoRegionError and friends
        _fail(ConfigError(f"AWS: {exc} — set AWS credentials and AWS_DEFAULT_REGION, or AWS_ENDPOINT_URL for moto"))
    if output == "json":
        typer.echo(json.dumps({"queue_url": url, "dlq_url": dlq, "table": settings.table, "table_created": created}))
    else:
        typer.echo(url)


@app.command("local-stack")
def local_stack(
    port: int = typer.Option(5000, help="Loopback port for moto's AWS endpoint."),
) -> None:
    """Run an AWS endpoint (moto) on loopback for local development; prints the env to use."""
    from dispatcher.localstack import serve_forever

    serve_forever(port)


@app.command()
def demo(
    sweep_file: str = typer.Argument("examples/sweep.yaml"),
    slots: int = typer.Option(2, help="Trials running at once."),
    state_dir: str = typer.Option(".sweepq/demo", help="Where logs, checkpoints and results go."),
    interval: float = typer.Option(2.0, help="Seconds between ticks."),
    live: bool = typer.Option(True, help="Live terminal view."),
    output: str = typer.Option("text", "--output", "-o"),
) -> None:
    """The whole loop on this machine: moto on loopback, bootstrap, submit, local trials, results."""
    from dispatcher.localdemo import run_demo

    raise typer.Exit(run_demo(sweep_file, slots=slots, state_dir=state_dir, interval=interval, live=live, output=output))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
