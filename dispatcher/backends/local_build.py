"""What a local trial *is*: the pure builders behind ``LocalBackend.dryrun`` and ``observe``.

Purely computational, no side effects: argv (torchrun or verbatim), the environment added to the
dispatcher's, labels, the YAML-ish rendering, the ``spec.json`` record (secret values redacted),
and the phase a job directory's records stand for. The effects live in
:mod:`dispatcher.backends.local`; the supervisor in :mod:`dispatcher.backends.local_supervise`.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from dispatcher.backends.local_supervise import JOB_TAG_ENV, LOG_FILE
from dispatcher.core.errors import SpecError
from dispatcher.core.failures import format_failure
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
from dispatcher.core.launch import SECRET_ENV, LaunchSettings

KIND = "local"
OUTPUT_DIR_ENV = "SWEEPQ_OUTPUT_DIR"
REDACTED = "<redacted>"
# The reference trainer, as the examples run it: what a hint for a missing program points to.
TRAINER_COMMAND = '["${env}", "${interpreter}", "-m", "trainer", "${args}"]'


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
    # sweepq's own names always win (CONTRACTS C1/C2): the pod name the trainer keys its metrics by
    env["SWEEPQ_JOB_NAME"] = request.job_name
    env["SWEEPQ_KIND"] = KIND
    env["POD_NAME"] = pod_name(request.job_name)
    env[JOB_TAG_ENV] = str(job_dir)  # reserved: finds every process of the trial on cancel
    return env


def pod_name(job_name: str) -> str:
    """The one "pod" of a local job, named like the grammar of CONTRACTS C1 (``<job>-local-<n>``)."""
    return f"{job_name}-local-0"


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


def check_program(command: TrialCommand, *, python: str, cwd: str) -> None:
    """Refuse, before anything runs, a torchrun program that cannot exist: a script that is not a
    file in ``cwd`` (where the local backend runs trials), or — when trials run with this very
    interpreter — a ``-m`` module it cannot find. Intake renders trial 0, so such a sweep is
    REJECTED with this message instead of failing every attempt with ``can't open file``."""
    if command.launcher != "torchrun" or not command.argv:
        return
    first = command.argv[0]
    if first == "-m":
        module = command.argv[1] if len(command.argv) > 1 else ""
        top = module.split(".", 1)[0]
        if top and python == sys.executable and importlib.machinery.PathFinder.find_spec(top, [cwd, *sys.path]) is None:
            raise SpecError(
                f"command: module {module!r} cannot be imported by {python} in {cwd}, where the local backend runs "
                f"trials — fix the module name (-m NAME), install it, or use the reference trainer: command: {TRAINER_COMMAND}"
            )
        return
    if not first.startswith("-") and not os.path.isfile(os.path.join(cwd, first)):
        raise SpecError(
            f"program: {first!r} is not a file in {cwd}, where the local backend runs trials — write program: as a "
            f"path relative to that directory, or run the reference trainer with command: {TRAINER_COMMAND}"
        )


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


def failure_reason(verdict: Mapping[str, Any], *, tail: Sequence[str] = (), log: str = "") -> str:
    """The reason of a failed verdict as :mod:`dispatcher.core.failures` reads it: how it ended,
    the telling line of the (redacted) log tail, and where the log is. A cancel needs no cause."""
    ended = str(verdict.get("reason") or f"exit code {verdict.get('returncode')}")
    if ended.startswith("cancelled"):
        return ended
    return format_failure(ended, log_lines=tail, log=log)


def job_status(
    spec: Mapping[str, Any],
    pid: Mapping[str, Any] | None,
    verdict: Mapping[str, Any] | None,
    *,
    tail: Sequence[str] = (),
    log: str = "",
) -> JobStatus:
    """The phase a job directory's files stand for (purely computational; liveness checked before).
    ``tail``: the last lines of the log of a failed job, already redacted; ``log``: its path."""
    reason = ""
    if verdict is not None:
        succeeded = verdict.get("returncode") == 0 and not verdict.get("reason")
        phase = JobPhase.SUCCEEDED if succeeded else JobPhase.FAILED
        reason = "" if succeeded else failure_reason(verdict, tail=tail, log=log)
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
        reason=reason,
    )
