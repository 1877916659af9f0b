"""A non-root trial with a read-only home: every library cache goes somewhere writable, or the run says why not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import ConfigError
from trainer.paths import CACHE_VARIABLES, check_output_writable, is_writable, writable_cache_environment

# A path under a regular file can never be created, not even by root (the tests may run as root,
# for whom chmod does not make a directory read-only).
UNWRITABLE = Path("/dev/null/home")


def test_probe_creates_nothing_and_sees_through_root(tmp_path):
    assert is_writable(tmp_path / "a" / "b") and not (tmp_path / "a").exists()
    assert not is_writable(UNWRITABLE / ".cache")


def test_read_only_home_moves_every_unset_cache_under_tmpdir(tmp_path):
    env = {"HOME": str(UNWRITABLE), "TMPDIR": str(tmp_path), "HF_HOME": "/models/hf"}
    additions = writable_cache_environment(env, output_root=tmp_path / "out")
    assert set(additions) == set(CACHE_VARIABLES) - {"HF_HOME"}  # a variable that is set is never changed
    assert all(Path(value).parent.parent == tmp_path for value in additions.values())


def test_writable_home_changes_nothing_but_inductors_cache(tmp_path):
    additions = writable_cache_environment({"HOME": str(tmp_path)}, output_root=tmp_path / "out")
    assert set(additions) == {"TORCHINDUCTOR_CACHE_DIR"}  # its default asks the password database for a name


def test_no_writable_tmp_falls_back_to_the_output_root(tmp_path):
    writable = lambda path: str(path).startswith(str(tmp_path / "out"))  # noqa: E731 - only the output volume
    additions = writable_cache_environment({"HOME": str(UNWRITABLE), "TMPDIR": str(UNWRITABLE)},
                                           output_root=tmp_path / "out", writable=writable)
    assert additions["HF_HOME"] == str(tmp_path / "out" / ".cache" / "huggingface")


def test_unwritable_output_directory_is_a_config_error_naming_the_fix():
    with pytest.raises(ConfigError, match="is not writable by this user .* set SWEEPQ_OUTPUT_DIR or --output_dir"):
        check_output_writable(UNWRITABLE / "outputs" / "standalone")


@pytest.mark.slow
def test_trainer_runs_with_an_unwritable_home(tmp_path, child_env):
    # GIVEN a home directory nothing can be written to, as in the restricted trial pod
    env = child_env(HOME=str(UNWRITABLE), TMPDIR=str(tmp_path / "tmp"), SWEEPQ_OUTPUT_DIR=str(tmp_path / "out"),
                    WANDB_MODE="offline", XDG_CONFIG_HOME=str(UNWRITABLE / ".config"))
    (tmp_path / "tmp").mkdir()
    # WHEN the trainer trains a tiny model with W&B offline
    completed = subprocess.run([sys.executable, "-m", "trainer", "--synthetic_samples=100", "--epochs=1",
                                "--max_length=16", "--batch_size=16"], env=env, capture_output=True, text=True,
                               timeout=240, cwd=tmp_path)
    # THEN it completes, and the libraries' caches were placed under TMPDIR
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "standalone" / "result.json").read_text())["status"] == "completed"
    assert "library caches placed" in completed.stderr and f"HF_HOME={tmp_path / 'tmp'}" in completed.stderr
