"""What a local trial *is*: the pure builders behind ``LocalBackend.dryrun`` and ``observe``.

Purely computational, no side effects: argv (torchrun or verbatim), the environment added to the
dispatcher's, labels, the YAML-ish rendering, the ``spec.json`` record (secret values redacted),
and the phase a job directory's records stand for. The effects live in
:mod:`dispatcher.backends.local`; the supervisor in :mod:`dispatcher.backends.local_supervise`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from dispatcher.backends.local_supervise import JOB_TAG_ENV, LOG_FILE
from dispatcher.core.launch import SECRET_ENV
from dispatcher.core.errors import SpecError
from dispatcher.core.jobs import (
    LABEL_ATTEMPT,
    LABEL_MANAGED_BY,
    LABEL_SWEEP_ID,
    LABEL_TRIAL_INDEX,
    MANAGED_BY,
    JobPhase,
    JobStatus,
    LaunchRequest,
    TrialCommand,
)
from dispatcher.core.launch import LaunchSettings

KIND = "local"
OUTPUT_DIR_ENV = "SWEEPQ_OUTPUT_DIR"
REDACTED = "<redacted>"


@dataclass(frozen=True)
class LocalLaunch:
    """The ``request`` of a local :class:`DryRun`: exactly the process one attempt becomes.

    ``env`` is *added* to the dispatcher's environment, which the trial inherits (so secrets
    such as ``WANDB_API_KEY`` reach it without ever being written down).
    """

    job_name: str
    sweep_id: str
    trial_index: int
    trial_id: str
    attempt: int
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    max_runtime: int | None = None

    def spec(self, *, created_at: float, kill_grace: float) -> dict[str, Any]:
        """The ``spec.json`` record: everything but secret values."""
        return {
            "job_name": self.job_name,
            "kind": KIND,
            "sweep_id": self.sweep_id,
            "trial_index": self.trial_index,
            "trial_id": self.trial_id,
            "attempt": self.attempt,
            "gpus": 0,
            "labels": dict(self.labels),
            "argv": list(self.argv),
            "cwd": self.cwd,
            "env": redact(self.env),
            "inherits_env": True,
            "max_runtime": self.max_runtime,
            "kill_grace": kill_grace,
            "created_at": created_at,
        }


def job_labels(request: LaunchRequest) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SWEEP_ID: request.sweep_id,
        LABEL_TRIAL_INDEX: str(request.trial_index),
        LABEL_ATTEMPT: str(request.attempt),
    }


def redact(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking names replaced by ``<redacted>``."""
    return {name: (REDACTED if SECRET_ENV.search(name) else value) for name, value in sorted(env.items())}


def build_env(request: LaunchRequest, *, output_dir: Path, job_dir: Path) -> dict[str, str]:
    """What the trial's environment adds to the dispatcher's: sweep settings, then the request."""
    env = {**request.launch.env, **request.env}
    env.setdefault(OUTPUT_DIR_ENV, str(output_dir))
    env["PYTHONUNBUFFERED"] = "1"
    env[JOB_TAG_ENV] = str(job_dir)  # reserved: finds every process of the trial on cancel
    return env


def resolve_executable(name: str, *, cwd: str, path: str | None) -> str:
    """``argv[0]`` as an absolute path: relative to ``cwd`` if it holds a '/', else on ``PATH``."""
    if "/" in name:
        candidate = os.path.normpath(os.path.join(cwd, name))
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        raise SpecError(f"command[0]: {name!r} is not an executable file in {cwd} — fix the path or chmod +x it")
    found = shutil.which(name, path=path)
    if found is None:
        raise SpecError(f"command[0]: {name!r} not found on PATH — install it or write its full path")
    return os.path.abspath(found)


def build_argv(
    command: TrialCommand, launch: LaunchSettings, *, python: str, cwd: str, path: str | None
) -> tuple[str, ...]:
    """The exact argv, never passed through a shell."""
    if command.launcher == "torchrun":
        if not command.argv:
            raise SpecError("command: nothing after ${interpreter} — name the training script, e.g. train.py")
        return (
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a free rendezvous port per trial: concurrent trials never collide
            "--nnodes=1",
            f"--nproc-per-node={launch.workers_per_node}",
            f"--max-restarts={launch.max_restarts}",
            *command.argv,
        )
    if command.launcher is None:
        if not command.argv:
            raise SpecError("command: empty — write the program to run, e.g. ['python', 'train.py']")
        return (resolve_executable(command.argv[0], cwd=cwd, path=path), *command.argv[1:])
    raise SpecError(
        f"command.launcher: {command.launcher!r} is not supported by the local backend — "
        "use 'torchrun' (${interpreter}) or none (argv run verbatim)"
    )


def render(launch: LocalLaunch, job_dir: Path) -> str:
    """YAML-ish view of a dry run; secret-looking values redacted."""
    document = {
        "kind": KIND,
        "job": launch.job_name,
        "labels": dict(launch.labels),
        "cwd": launch.cwd,
        "argv": list(launch.argv),
        "env": redact(launch.env),
        "max_runtime": launch.max_runtime,
        "job_dir": str(job_dir),
        "log": str(job_dir / LOG_FILE),
    }
    header = "# local trial: supervised process group on this machine; env is added to the dispatcher's\n"
    return header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)


def job_status(
    spec: Mapping[str, Any], pid: Mapping[str, Any] | None, verdict: Mapping[str, Any] | None
) -> JobStatus:
    """The phase a job directory's files stand for (purely computational; liveness checked before)."""
    if verdict is not None:
        succeeded = verdict.get("returncode") == 0 and not verdict.get("reason")
        phase = JobPhase.SUCCEEDED if succeeded else JobPhase.FAILED
    else:
        phase = JobPhase.RUNNING if pid is not None else JobPhase.PENDING
    return JobStatus(
        name=spec["job_name"],
        kind=KIND,
        sweep_id=spec["sweep_id"],
        trial_index=int(spec["trial_index"]),
        attempt=int(spec["attempt"]),
        phase=phase,
        gpus=0,
        created_at=spec.get("created_at"),
        started_at=pid.get("started_at") if pid else None,
        finished_at=verdict.get("finished_at") if verdict else None,
        reason=(verdict.get("reason") or "") if verdict else "",
    )
