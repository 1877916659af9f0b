#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow and soak cases included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not soak" -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports
.venv/bin/ruff check dispatcher producer trainer benchmarks tests
.venv/bin/mypy
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests — that is a failure here" >&2
  exit 1
fi
exit "$rc"
