#!/usr/bin/env bash
# Set up (if needed) and run a whole sweep on this machine: moto on loopback, the dispatcher with
# the local backend (2 slots), the tiny BERT trained on synthetic sentiment data.
# Extra arguments go to `dispatcher demo`, e.g. `bash scripts/demo.sh examples/random.yaml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dispatcher demo "$@"
