#!/usr/bin/env bash
# Create .venv (once) and install sweepq with the trainer and dev extras.
# torch is pinned to 2.13.0: on our machines that is a CPU wheel on local disk (a bare `torch`
# would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sweepq-installed
# constraints.txt pins every package to what CI tested (refresh: scripts/lock.sh).
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[trainer,dev]"
  touch "$stamp"
fi
# checkov (tests/infra/test_checkov.py) pins libraries far below ours: it gets its own venv.
if [ ! -x build/checkov-venv/bin/checkov ]; then
  "$PY" -m venv build/checkov-venv
  build/checkov-venv/bin/python -m pip install -q -r tests/infra/checkov-requirements.txt
fi
