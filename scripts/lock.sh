#!/usr/bin/env bash
# Re-resolve the dependencies in a throw-away venv and write constraints.txt (the versions
# scripts/setup.sh installs). Run after editing dependencies in pyproject.toml; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q "torch==2.13.0"   # the CPU wheel on local disk; see setup.sh
"$tmp/venv/bin/python" -m pip install -q -e ".[trainer,dev]"
{
  echo "# Exact versions scripts/setup.sh installs (pip -c), so a fresh clone resolves what CI tested."
  echo "# Refresh with \`bash scripts/lock.sh\` after changing dependencies in pyproject.toml; commit the result."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -e '^-e ' -e '^sweepq'
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
