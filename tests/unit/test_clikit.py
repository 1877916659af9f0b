"""Both command lines alike: help style, -h, --version, --output everywhere, JSON errors, quiet SDK logs."""

from __future__ import annotations

import inspect
import json
import logging

import pytest
import typer
from typer.testing import CliRunner

from dispatcher import clikit
from dispatcher.cli import app as dispatcher_app
from producer.cli import app as producer_app

APPS = {"producer": producer_app, "dispatcher": dispatcher_app}


def commands(app: typer.Typer) -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]


@pytest.mark.parametrize("name", list(APPS))
def test_version_and_short_help(name: str) -> None:
    app = APPS[name]
    version = CliRunner().invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout == f"{name} (sweepq) {clikit.version()}\n"
    for command in commands(app):
        short, long = (CliRunner().invoke(app, [command, flag]) for flag in ("-h", "--help"))
        assert short.exit_code == 0 and short.stdout == long.stdout, command
        assert short.stdout.startswith(f"Usage: {name} {command} ")
        assert "-o, --output" in short.stdout and "-v, --verbose" in short.stdout, command
        assert not any(ch in short.stdout for ch in "╭│╰━"), f"{name} {command}: boxed help"


def test_output_is_a_choice_everywhere() -> None:
    result = CliRunner().invoke(dispatcher_app, ["tick", "-o", "yaml"])
    assert result.exit_code == 2 and "'yaml' is not one of 'text', 'json'" in result.output
    result = CliRunner().invoke(producer_app, ["status", "-o", "yaml"])
    assert result.exit_code == 2


def test_usage_errors_are_json_when_json_is_asked() -> None:
    result = CliRunner().invoke(dispatcher_app, ["run", "--interval", "soon", "-o", "json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["error"]["type"] == "usage" and "--interval" in doc["error"]["message"]
    assert clikit.wants_json(["x", "--output=json"]) and clikit.wants_json(["-ojson"])
    assert not clikit.wants_json(["-o", "text", "json"])


def test_sdk_logs_are_quiet_unless_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    for verbose in (False, True):
        clikit.setup_logging(verbose, level="INFO")
        logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
        logging.getLogger("dispatcher.tick").info('{"event": "tick"}')
        logging.getLogger("dispatcher.tick").debug("details")
        err = capsys.readouterr().err
        assert ('{"event": "tick"}' in err, "Found credentials" in err, "details" in err) == (True, verbose, verbose)


def test_logging_setup_never_raises_the_root_level_others_rely_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # someone (a test, a host application) listens to everything
    clikit.setup_logging(False)  # a command that prints only warnings
    logging.getLogger("botocore.endpoint").debug("wire log")
    assert logging.getLogger().level == logging.DEBUG and "wire log" in caplog.text


def test_run_takes_the_options_tick_has() -> None:
    def options(name: str) -> set[str]:
        command = next(c for c in dispatcher_app.registered_commands if (c.name or c.callback.__name__) == name)
        return set(inspect.signature(command.callback).parameters)

    assert options("tick") <= options("run")


def test_an_unexpected_error_is_one_line_or_one_object() -> None:
    def boom() -> None:
        raise RuntimeError("disk on fire")

    for output, check in ((clikit.Output.text, lambda r: r.stderr == "error: unexpected RuntimeError: disk on fire "
                                                         "(set SWEEPQ_DEBUG=1 for the traceback)\n"),
                          (clikit.Output.json, lambda r: json.loads(r.stdout)["error"]["code"] == 1)):
        app = clikit.make_app("probe", "probe")

        @app.command()
        def fail() -> None:
            with clikit.cli_errors(output, lambda exc: 3):  # noqa: B023 — invoked within this iteration
                boom()

        @app.command()
        def other() -> None:
            """So that the app is a group."""

        result = CliRunner().invoke(app, ["fail"])
        assert result.exit_code == 1 and check(result), result.output
