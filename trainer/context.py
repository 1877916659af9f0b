"""The environment contract with the dispatcher: which trial and pod this process belongs to.

The dispatcher launches every attempt of a trial with these variables (CONTRACTS C2; all optional:
without them the trainer is a standalone run that writes files only):

============================  =====================================================================
``SWEEP_ID``                  sweep id, e.g. ``bert-lr-1a2b3c4d`` (also the W&B group)
``TRIAL_INDEX``               index of the trial in the sweep (int)
``TRIAL_ID``                  ``<sweep_id>-<index>``, stable across retry attempts (also the W&B run id)
``SWEEPQ_ATTEMPT``            1-based attempt number (written on the metrics item)
``SWEEPQ_JOB_NAME``           the attempt's job name (the metrics item's ``job``)
``SWEEPQ_KIND``               pytorchjob / elasticjob / trainjob / job / local (logged only)
``POD_NAME``                  this pod's name (downward API); the key of this pod's metrics item
``SWEEPQ_METRICS_TABLE``      DynamoDB table of per-pod metrics items (C1); none: nothing is written
``SWEEPQ_WAKE_QUEUE_URL``     SQS queue for ``sweepq.wake/v1`` triggers (never the sweep queue)
``SWEEPQ_OUTPUT_DIR``         output root; the run writes to ``<root>/<trial id or "standalone">/``
``WANDB_*``                   read by wandb itself; the key is never set or changed here
============================  =====================================================================

AWS credentials and endpoint come from boto3's default chain (``AWS_ENDPOINT_URL`` for moto).
The trainer never reads or writes the dispatcher's sweep table or its submission queue.
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
JOB_NAME = "SWEEPQ_JOB_NAME"
KIND = "SWEEPQ_KIND"
POD_NAME = "POD_NAME"
METRICS_TABLE = "SWEEPQ_METRICS_TABLE"
WAKE_QUEUE_URL = "SWEEPQ_WAKE_QUEUE_URL"
OUTPUT_DIR = "SWEEPQ_OUTPUT_DIR"
WANDB_PROJECT = "WANDB_PROJECT"
WANDB_RUN_ID = "WANDB_RUN_ID"

DEFAULT_OUTPUT_ROOT = "outputs"
STANDALONE = "standalone"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a DNS subdomain, as Kubernetes names pods
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


@dataclass(frozen=True)
class TrialContext:
    """Who this run is, where it writes, and where it reports. Built once from the environment."""

    sweep_id: str | None
    trial_index: int | None
    trial_id: str | None
    attempt: int
    output_root: Path
    wandb_project: str | None
    wandb_run_id: str | None
    job_name: str | None = None
    kind: str | None = None
    pod_name: str | None = None
    metrics_table: str | None = None
    wake_queue_url: str | None = None

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
        pod_name = environ.get(POD_NAME) or None
        if pod_name is not None and not _POD_NAME.match(pod_name):
            raise ConfigError(f"{POD_NAME}={pod_name!r} is not a Kubernetes pod name: the dispatcher sets it "
                              "from the downward API (metadata.name); the local backend to <job>-local-0")
        table = environ.get(METRICS_TABLE) or None
        if table is not None and not _TABLE_NAME.match(table):
            raise ConfigError(f"{METRICS_TABLE}={table!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)")
        attempt = _int_env(environ, ATTEMPT, minimum=1)
        root = output_dir or environ.get(OUTPUT_DIR) or DEFAULT_OUTPUT_ROOT
        return cls(
            sweep_id=sweep_id,
            trial_index=trial_index,
            trial_id=trial_id,
            attempt=attempt if attempt is not None else 1,
            output_root=Path(root),
            wandb_project=environ.get(WANDB_PROJECT) or None,
            wandb_run_id=environ.get(WANDB_RUN_ID) or None,
            job_name=environ.get(JOB_NAME) or None,
            kind=environ.get(KIND) or None,
            pod_name=pod_name,
            metrics_table=table,
            wake_queue_url=environ.get(WAKE_QUEUE_URL) or None,
        )

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<trial_id or "standalone">``: checkpoints here belong to this trial only."""
        return self.output_root / (self.trial_id or STANDALONE)

    @property
    def publishes_metrics(self) -> bool:
        """True when this pod has an item to write: ``POD_NAME`` and ``SWEEPQ_METRICS_TABLE`` are both set."""
        return self.pod_name is not None and self.metrics_table is not None


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
