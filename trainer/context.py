"""The environment contract with the dispatcher: which trial this process belongs to.

The dispatcher launches every attempt of a trial with these variables (all optional; without
them the trainer is a standalone run):

============================  =====================================================================
``SWEEP_ID``                  sweep id, e.g. ``bert-lr-1a2b3c4d`` (also the W&B group)
``TRIAL_INDEX``               index of the trial in the sweep (int)
``TRIAL_ID``                  ``<sweep_id>-<index>``, stable across retry attempts (also the W&B run id)
``SWEEPQ_ATTEMPT``            1-based attempt number; guards the DynamoDB report
``SWEEPQ_TABLE``              DynamoDB table holding the trial item
``SWEEPQ_OUTPUT_DIR``         output root; the run writes to ``<root>/<trial id or "standalone">/``
``SWEEPQ_QUEUE_URL``          SQS queue that gets one "trial finished" wake message from rank 0
``WANDB_*``                   read by wandb itself; the key is never set or changed here
============================  =====================================================================

AWS credentials and endpoint come from boto3's default chain (``AWS_ENDPOINT_URL`` for moto).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer.config import ConfigError

SWEEP_ID = "SWEEP_ID"
TRIAL_INDEX = "TRIAL_INDEX"
TRIAL_ID = "TRIAL_ID"
ATTEMPT = "SWEEPQ_ATTEMPT"
TABLE = "SWEEPQ_TABLE"
OUTPUT_DIR = "SWEEPQ_OUTPUT_DIR"
QUEUE_URL = "SWEEPQ_QUEUE_URL"
WANDB_PROJECT = "WANDB_PROJECT"
WANDB_RUN_ID = "WANDB_RUN_ID"

DEFAULT_OUTPUT_ROOT = "outputs"
STANDALONE = "standalone"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class TrialContext:
    """Who this run is, where it writes, and where it reports. Built once from the environment."""

    sweep_id: str | None
    trial_index: int | None
    trial_id: str | None
    attempt: int
    table: str | None
    output_root: Path
    queue_url: str | None
    wandb_project: str | None
    wandb_run_id: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, output_dir: str | None = None) -> TrialContext:
        """Explicit ``output_dir`` (the ``--output_dir`` argument) beats ``SWEEPQ_OUTPUT_DIR``."""
        sweep_id = environ.get(SWEEP_ID) or None
        trial_index = _int_env(environ, TRIAL_INDEX, minimum=0)
        trial_id = environ.get(TRIAL_ID) or None
        if trial_id is None and sweep_id is not None and trial_index is not None:
            trial_id = f"{sweep_id}-{trial_index}"
        if trial_id is not None and not _SAFE_ID.match(trial_id):
            raise ConfigError(
                f"{TRIAL_ID}={trial_id!r} is not usable as a directory and W&B run id: "
                "use letters, digits, '.', '_' and '-' (at most 128)"
            )
        attempt = _int_env(environ, ATTEMPT, minimum=1)
        root = output_dir or environ.get(OUTPUT_DIR) or DEFAULT_OUTPUT_ROOT
        return cls(
            sweep_id=sweep_id,
            trial_index=trial_index,
            trial_id=trial_id,
            attempt=attempt if attempt is not None else 1,
            table=environ.get(TABLE) or None,
            output_root=Path(root),
            queue_url=environ.get(QUEUE_URL) or None,
            wandb_project=environ.get(WANDB_PROJECT) or None,
            wandb_run_id=environ.get(WANDB_RUN_ID) or None,
        )

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<trial_id or "standalone">``: checkpoints here belong to this trial only."""
        return self.output_root / (self.trial_id or STANDALONE)

    @property
    def reports_to_table(self) -> bool:
        """True when the dispatcher's environment (table, sweep id, trial index) is present."""
        return self.table is not None and self.sweep_id is not None and self.trial_index is not None


def _int_env(environ: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer: the dispatcher sets it to e.g. 3") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}")
    return value
