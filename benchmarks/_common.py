"""Shared plumbing of the benchmarks: import paths, fake AWS credentials, the Markdown table, the
exact command line, and the optional JSON result file the smoke test reads.

Every benchmark is a script (``python benchmarks/NAME.py``); it inserts the repository root and
``tests/`` (for ``helpers`` and ``kube_emulator``) into ``sys.path`` through this module.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# Benchmarks never reach real AWS or W&B: moto needs credentials to exist, any will do.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ["WANDB_MODE"] = "offline"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The exact command that reproduces this run, relative to the repository root."""
    return " ".join(["python", f"benchmarks/{Path(script).name}", *map(shlex.quote, argv)])


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers are right-aligned."""
    rows = [[_cell(v) for v in row] for row in rows]
    align = ["---:" if rows and all(_numeric(r[i]) for r in rows) else ":---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("×", "").replace("—", "0").replace("%", "").strip()
    try:
        float(stripped)
        return True
    except ValueError:
        return False


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.started


def header(title: str, script: str, argv: Sequence[str]) -> str:
    return f"## {title}\n\nCommand: `{command_line(script, argv)}`  \nMachine: {machine()}\n"
