"""The ``producer`` console script as a shell sees it: exit codes, stderr, pipes, SWEEPQ_DEBUG."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HUGE = ROOT / "tests" / "data" / "specs" / "good" / "huge-grid.yaml"
MAIN = "from producer.cli import main; main()"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEPQ_", "AWS_")) or k == "SWEEPQ_HOME"}
    return {**env, "NO_COLOR": "1", **extra}


def producer(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True, env=_env(**env),
                          cwd=ROOT, timeout=60)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_invalid_file_exit_1_one_line_per_problem_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters: {lr: {values: []}}\n")
    done = producer("submit", str(bad), "--dry-run")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines()[0] == "error: bad.yaml: parameters.lr.values: is empty — give at least one value"
    assert done.stderr.splitlines()[1].startswith("error: bad.yaml: program: missing — the command runs ${program}")
    assert "or run the reference trainer with command:" in done.stderr.splitlines()[1]
    assert len(done.stderr.splitlines()) == 2
    debug = producer("submit", str(bad), "--dry-run", SWEEPQ_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "SpecError" in debug.stderr


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_expand_into_a_closed_pipe_is_success() -> None:
    # GIVEN `producer expand <10^9 grid> | head -1`
    expand = subprocess.Popen([sys.executable, "-c", MAIN, "expand", str(HUGE), "--max-grid-size", str(10**9)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    assert expand.stdout is not None and expand.stderr is not None
    first = expand.stdout.readline()
    expand.stdout.close()  # the reader leaves
    # THEN the producer stops quietly with exit 0
    assert expand.wait(timeout=60) == 0
    assert first.startswith(b'{"index":0,')
    assert expand.stderr.read() == b""
