"""The README's examples are valid: every YAML block parses (a sweep file validates), and every
``producer`` / ``dispatcher`` command line in a code block names a command and flags that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from dispatcher.cli import app as dispatcher_app
from dispatcher.core.spec import validate_sweep
from dispatcher.core.yamlsafe import load_yaml
from producer.cli import app as producer_app

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
CLIS = {"producer": producer_app, "dispatcher": dispatcher_app}


def blocks(*languages: str) -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) in languages]


YAML_BLOCKS = blocks("yaml", "yml")


def test_the_readme_has_yaml_examples() -> None:
    assert YAML_BLOCKS, "no ```yaml block found: the extraction is broken"


@pytest.mark.parametrize(("line", "body"), YAML_BLOCKS, ids=[f"line-{n}" for n, _ in YAML_BLOCKS])
def test_every_yaml_block_parses_and_a_sweep_file_validates(line: int, body: str) -> None:
    data = load_yaml(body.encode(), source=f"README.md:{line}")  # sweepq's own loader: YAML errors with line/column
    if isinstance(data, dict) and ("parameters" in data or "method" in data):
        sweep = validate_sweep(data, source=f"README.md:{line}")
        assert sweep.total >= 1


def _command_lines() -> list[tuple[int, str]]:
    found = []
    for start, body in blocks("bash", "sh", "", "console", "text"):
        for offset, raw in enumerate(body.splitlines()):
            line = raw.split(" #", 1)[0].strip().removeprefix("$ ")
            for part in re.split(r"&&|\|\||;|\|", line):
                words = part.strip().split()
                while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                    words = words[1:]  # VAR=value prefixes
                if words and words[0].rsplit("/", 1)[-1] in CLIS:
                    found.append((start + offset + 1, " ".join(words)))
    return found


COMMAND_LINES = _command_lines()


def test_the_readme_shows_both_command_lines() -> None:
    assert {line.split()[0].rsplit("/", 1)[-1] for _, line in COMMAND_LINES} == set(CLIS)


@pytest.mark.parametrize(("line", "command"), COMMAND_LINES, ids=[f"line-{n}" for n, _ in COMMAND_LINES])
def test_every_command_line_names_real_commands_and_flags(line: int, command: str) -> None:
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    group = typer.main.get_command(CLIS[words[0].rsplit("/", 1)[-1]])
    flags = [w.split("=", 1)[0] for w in words[1:] if w.startswith("-") and not w.startswith("---")]
    subcommand = next((w for w in words[1:] if not w.startswith("-")), None)
    if subcommand is None or subcommand not in group.commands:  # `producer --version`, or a typo
        assert subcommand is None and flags, f"README.md:{line}: unknown command in {command!r}"
        known = {opt for p in group.params for opt in (*p.opts, *p.secondary_opts)}
    else:
        known = {opt for p in group.commands[subcommand].params for opt in (*p.opts, *p.secondary_opts)}
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"README.md:{line}: {command!r} uses {unknown}, not flags of {words[0]} {subcommand or ''}"
