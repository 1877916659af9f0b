"""Weights & Biases, on global rank 0 only.

One W&B run per trial: ``id`` = trial id with ``resume="allow"``, so an elastic restart or a retry
attempt continues the same run instead of leaving orphans; ``group`` = sweep id; ``config`` = every
hyperparameter. The API key is wandb's business: it reads ``WANDB_API_KEY`` (or its netrc login)
itself; this module never sets or changes it. ``WANDB_MODE=offline|disabled`` need no network, and
with no key and no ``WANDB_MODE`` at all the run is logged offline (``wandb sync`` uploads it).

Metrics are plotted against ``global_step`` (a defined step metric), so the steps a restart replays
after resuming from a checkpoint are accepted rather than dropped as non-monotonic.

How a run ends in W&B: ``completed`` → *Finished* (exit code 0); a graceful stop (``stopped`` or
``preempted``: SIGTERM, checkpoint written, resumable) → ``mark_preempting()`` and the signal's
exit code (143), which W&B shows as *Preempted* — the only interrupted-but-not-failed state a
client can set (*Killed* is set by W&B's server only) — with the summary ``sweepq/status`` and a
tag saying which; a failure → *Failed* (exit code 1). Only a SIGKILL leaves a *Crashed* run.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

DEFAULT_PROJECT = "sweepq"


class Tracker:
    """Thin wrapper over a W&B run; ``Tracker(None)`` (other ranks, or W&B disabled) does nothing."""

    def __init__(self, run: Any = None) -> None:
        self.run = run

    @classmethod
    def start(cls, *, is_main: bool, run_id: str, group: str | None, project: str | None,
              config: dict[str, Any], run_dir: Path, environ: Mapping[str, str] = os.environ) -> Tracker:
        if not is_main or environ.get("WANDB_MODE") == "disabled":
            return cls(None)
        import wandb

        mode: Literal["offline"] | None = None if _wandb_configured(environ) else "offline"
        if mode == "offline":
            logger.info("no W&B key and no WANDB_MODE: logging offline; `wandb sync` uploads the run later")
        run_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project or DEFAULT_PROJECT,
            id=run_id,
            name=environ.get("WANDB_NAME") or run_id,
            resume="allow",
            group=environ.get("WANDB_RUN_GROUP") or group,
            job_type="trial",
            config=config,
            mode=mode,
            dir=None if environ.get("WANDB_DIR") else str(run_dir),
        )
        run.define_metric("global_step")
        run.define_metric("*", step_metric="global_step")
        logger.info("W&B run %s (group %s) started", run_id, group)
        return cls(run)

    def log(self, metrics: dict[str, float], *, global_step: int) -> None:
        if self.run is not None:
            self.run.log({**metrics, "global_step": global_step})

    def summarize(self, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def finish(self, status: str, *, exit_code: int | None = None) -> None:
        """End the run: ``completed`` | ``stopped`` | ``preempted`` | ``failed`` (see the module docstring)."""
        if self.run is None:
            return
        run, self.run = self.run, None
        if status == "completed":
            run.finish(exit_code=0)
            return
        run.summary["sweepq/status"] = status
        if status in ("stopped", "preempted"):
            run.tags = tuple(sorted({*(run.tags or ()), status}))
            run.mark_preempting()
        run.finish(exit_code=exit_code or 1)


def _wandb_configured(environ: Mapping[str, str]) -> bool:
    """True if wandb has a mode or a key to work with (the key's value is never read here)."""
    if environ.get("WANDB_MODE") or environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
