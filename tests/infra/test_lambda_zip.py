"""infra/aws/build_lambda_zip.sh packs the dispatcher for the Lambda runtime (no torch, no trainer).

The full build downloads the core dependencies as manylinux wheels from PyPI; these tests use
``--no-deps`` (the layout) and take the dependencies from this environment.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from infra_expected import REPO

SCRIPT = REPO / "infra" / "aws" / "build_lambda_zip.sh"


def build(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), "--no-deps", "--out", str(out), *extra], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "dispatcher.zip"
    result = build(out)
    assert result.returncode == 0, result.stderr
    return out


def test_zip_holds_the_dispatcher_package_only(lambda_zip):
    names = zipfile.ZipFile(lambda_zip).namelist()
    assert "dispatcher/lambda_handler.py" in names and "dispatcher/py.typed" in names
    assert {n.split("/")[0] for n in names} == {"dispatcher"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "dispatcher").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert set(names) == on_disk


def test_zip_is_reproducible(lambda_zip, tmp_path):
    again = tmp_path / "again.zip"
    assert build(again).returncode == 0
    assert again.read_bytes() == lambda_zip.read_bytes()


def test_the_handler_imports_from_the_zip_without_torch(lambda_zip, tmp_path):
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import dispatcher.lambda_handler as h; "
        "assert h.__file__.startswith(sys.argv[1]), h.__file__; assert callable(h.handler); "
        "assert 'torch' not in sys.modules and 'trainer' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(lambda_zip)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.stdout.strip() == "ok", result.stderr


def test_unknown_architecture_is_refused(tmp_path):
    result = build(tmp_path / "x.zip", "--arch", "sparc")
    assert result.returncode == 2 and "x86_64 or arm64" in result.stderr
