"""The end of a local trial's log, fit to be copied into the table: bounded, cleaned, redacted.

The log (``<job_dir>/log.txt``) holds whatever the trial printed, and a trial inherits the
dispatcher's environment, secrets included (``WANDB_API_KEY``, AWS keys...). A program that
prints its environment or config would put a secret there, and the failure reason is copied into
DynamoDB, where every researcher can read it. So before any line leaves the job directory:

* the *values* of every secret-looking variable (names matched by
  :data:`dispatcher.core.launch.SECRET_ENV`: ``*_KEY``, ``*_TOKEN``, ``*SECRET*``, ``*PASSWORD*``,
  ``*CREDENTIALS*``) of the environment the trial got are replaced by ``<redacted>``, wherever
  they appear, and
* ``NAME=value`` / ``NAME: value`` with a secret-looking ``NAME`` have their value redacted,
  whatever the value.

Also dropped: the supervisor's own lines, terminal escapes, and progress bars redrawn with ``\\r``
(only the last redraw of a line is kept).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from dispatcher.core.launch import SECRET_ENV

REDACTED = "<redacted>"
TAIL_BYTES = 64 * 1024
TAIL_LINES = 40
MIN_SECRET_LEN = 4  # shorter values ("1", "on") would redact half the log and protect nothing
SUPERVISOR_PREFIX = "[sweepq-supervise "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_NAMED_VALUE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)(\s*[=:]\s*)(['\"]?)([^\s'\",;]+)")


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The values to redact: those of secret-looking names, longest first (a value that contains
    another is redacted whole)."""
    values = {value for name, value in env.items() if SECRET_ENV.search(name) and len(value) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact_line(line: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in line:
            line = line.replace(value, REDACTED)

    def named(match: re.Match[str]) -> str:
        name, sep, quote, value = match.groups()
        if SECRET_ENV.search(name) and value != REDACTED:
            return f"{name}{sep}{quote}{REDACTED}"
        return match.group(0)

    return _NAMED_VALUE.sub(named, line)


def clean_lines(text: str) -> list[str]:
    lines = []
    for raw in text.split("\n"):  # not splitlines(): a "\r" redraw is part of its line
        line = _ANSI.sub("", raw.rstrip("\r").rsplit("\r", 1)[-1])
        if not line.startswith(SUPERVISOR_PREFIX):
            lines.append(line)
    return lines


def read_tail(path: Path, *, env: Mapping[str, str] | None = None, max_lines: int = TAIL_LINES,
              max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last ``max_lines`` lines of ``path`` (at most ``max_bytes`` read), cleaned and redacted
    with the secrets of ``env`` (default: this process's environment, which the trial inherited).
    An absent log is an empty tail."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - max_bytes, 0))
            data = handle.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]  # the first line read is partial
    secrets = secret_values(os.environ if env is None else env)
    return [redact_line(line, secrets) for line in clean_lines(text.rstrip("\n"))[-max_lines:]]
