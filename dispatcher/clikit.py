"""What both command lines (``producer``, ``dispatcher``) share, so they look and behave alike.

* one help style (plain, no boxes, fits 80 columns), ``-h`` and ``--help``, ``--version``;
* ``--output text|json`` on every command; an unknown value is a usage error (exit 2);
* errors: with ``text``, one line per problem on stderr, ``error: ...``; with ``json``, exactly one
  JSON object on **stdout** (where a script reads the result) and nothing on stderr::

      {"error": {"code": 4, "type": "not_found", "message": "sweep x-abcdefgh is not in table sweepq ...",
                 "problems": ["sweep x-abcdefgh is not in table sweepq ..."]}}

  ``code`` is the exit code, ``type`` its name (:data:`ERROR_TYPES`), ``message`` the first
  problem, ``problems`` all of them (a sweep file can have several). Usage errors (a bad flag,
  exit 2) come out the same way when ``-o json`` / ``--output json`` is on the command line;
* never a traceback (``SWEEPQ_DEBUG=1`` shows it); SDK loggers (botocore, urllib3, kubernetes...)
  at WARNING unless ``--verbose``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Sequence, cast

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:  # the classes the look-ups below find, as the installed typer (which vendors click) names them
    from typer._click.exceptions import ClickException, UsageError

DEBUG_ENV = "SWEEPQ_DEBUG"
SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "kubernetes", "werkzeug", "moto")
ERROR_TYPES = {1: "invalid", 2: "usage", 3: "config", 4: "not_found", 130: "interrupted"}
# click's (or typer's vendored copy of click's) base classes, whichever this typer raises.
_USAGE_ERROR = cast("type[UsageError]", next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"))
_CLICK_EXCEPTION = cast("type[ClickException]",
                        next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Output(str, enum.Enum):
    text = "text"
    json = "json"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="text for people, json for scripts (errors too).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs, SDK logs included.")]


def version() -> str:
    try:
        return metadata.version("sweepq")
    except metadata.PackageNotFoundError:
        return "unknown"


def debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def wants_json(args: Sequence[str]) -> bool:
    """Is ``-o json`` on this command line? (Read before parsing, for usage errors.)"""
    for i, arg in enumerate(args):
        if arg in ("-o", "--output") and i + 1 < len(args) and args[i + 1] == "json":
            return True
        if arg in ("-ojson", "--output=json"):
            return True
    return False


def error_doc(code: int, problems: Sequence[str]) -> dict[str, Any]:
    lines = [p for p in problems if p] or ["error"]
    return {"error": {"code": code, "type": ERROR_TYPES.get(code, "error"), "message": lines[0], "problems": list(lines)}}


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def report_error(code: int, problems: Sequence[str], *, as_json: bool) -> None:
    if as_json:
        emit_json(error_doc(code, problems))
    else:
        for line in problems:
            typer.echo(f"error: {line}", err=True)


class SweepqGroup(TyperGroup):
    """Runs a command and turns usage errors into the documented shape (JSON when asked)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            code = result if isinstance(result, int) else 0
        except _USAGE_ERROR as exc:
            if wants_json(argv):
                report_error(exc.exit_code, [exc.format_message()], as_json=True)
            else:
                exc.show()
            code = exc.exit_code
        except _CLICK_EXCEPTION as exc:
            report_error(exc.exit_code, [exc.format_message()], as_json=wants_json(argv))
            code = exc.exit_code
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            code = 130
        except KeyboardInterrupt:
            code = 130
        if standalone_mode:
            sys.exit(code)
        return code


def _show_version(ctx: typer.Context, value: bool) -> None:
    if value:
        typer.echo(f"{ctx.find_root().info_name} (sweepq) {version()}")
        raise typer.Exit(0)


def _root(
    _version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                           help="Print the version and exit.")] = False,
) -> None:
    """Options before the command."""


def make_app(name: str, help_text: str) -> typer.Typer:
    """A Typer app in the shared style, with ``--version``."""
    app = typer.Typer(
        name=name,
        help=help_text,
        cls=SweepqGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )

    app.callback()(_root)
    return app


@contextlib.contextmanager
def cli_errors(output: Output, exit_code: Callable[[BaseException], int], *,
               handled: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Our typed errors (``handled``) → the documented exit code, one line each on stderr or one
    JSON object on stdout. Anything unexpected is reported the same way (exit 1), with no
    traceback unless ``SWEEPQ_DEBUG=1``. The framework's own exits pass through."""
    as_json = output is Output.json
    try:
        yield
    except (typer.Exit, typer.Abort, BrokenPipeError, _CLICK_EXCEPTION):
        raise
    except handled as exc:
        if debug():
            raise
        report_error(exit_code(exc), error_lines(exc), as_json=as_json)
        raise typer.Exit(exit_code(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the CLI promises no tracebacks
        if debug():
            raise
        report_error(1, [f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)"], as_json=as_json)
        raise typer.Exit(1) from exc


def error_lines(exc: BaseException) -> list[str]:
    problems = getattr(exc, "problems", None)
    if problems:
        source = getattr(exc, "source", None)
        return [f"{source}: {p}" if source else str(p) for p in problems]
    return str(exc).splitlines() or [type(exc).__name__]


class _Handler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it), and lets SDK
    records through only from ``sdk_level`` up. Filtering here, not by setting the SDK loggers'
    levels, leaves the process's other handlers (a test's capture, say) getting what they asked."""

    sdk_level = logging.WARNING

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in SDK_LOGGERS and record.levelno < self.sdk_level:
            return False
        return bool(super().filter(record))


_HANDLER = _Handler()
_HANDLER.setFormatter(logging.Formatter(_LOG_FORMAT))


def setup_logging(verbose: bool, *, level: str | int = logging.WARNING) -> None:
    """Our logs at ``level`` (DEBUG with ``verbose``) on stderr; SDK logs (botocore, urllib3,
    kubernetes...) only from WARNING up (INFO with ``verbose``). The root logger's level is only
    ever lowered, never raised, so nothing else that listens loses records."""
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    chosen = logging.DEBUG if verbose else (logging.getLevelName(level.upper()) if isinstance(level, str) else level)
    if not isinstance(chosen, int):
        chosen = logging.INFO
    _HANDLER.setLevel(chosen)
    _HANDLER.sdk_level = logging.INFO if verbose else logging.WARNING
    if root.level == logging.NOTSET or root.level > chosen:
        root.setLevel(chosen)
