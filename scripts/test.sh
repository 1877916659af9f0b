#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow and soak cases included, on every core
# (pytest-xdist; SWEEPQ_TEST_WORKERS=1 runs it in one process). The 15 slowest tests are printed.
#   bash scripts/test.sh            everything (what CI runs)
#   bash scripts/test.sh --fast     unit and main integration tests, no slow/soak cases (≈2 min)
# Other arguments go to pytest, e.g. `bash scripts/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/lint-imports
.venv/bin/ruff check dispatcher producer trainer benchmarks tests
.venv/bin/mypy
args=()
if [ "${1:-}" = "--fast" ]; then
  shift
  args+=(-m "not slow and not soak" tests/unit tests/integration)
fi
workers=${SWEEPQ_TEST_WORKERS:-$(nproc)}
if [ "$workers" -gt 1 ]; then
  args+=(-n "$workers" --dist worksteal)
fi
set +e
.venv/bin/python -m pytest --durations=15 "${args[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests — that is a failure here" >&2
  exit 1
fi
exit "$rc"
