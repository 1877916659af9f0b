"""The ``local`` job backend: every trial attempt is a real process group on this machine.

Same interface as the Kubernetes kinds (see :mod:`dispatcher.core.jobs`). The "cluster" is a
directory, ``<state_dir>/jobs/<job_name>/``, holding:

============== =========================================================================
``spec.json``  argv, cwd, the environment *added* to the dispatcher's (secret-looking values
               redacted), labels (sweep id, trial index, attempt), ``created_at``. Its
               creation is the claim: ``link()`` of a complete temp file, so exactly one
               ``submit`` wins and a reader never sees half a spec.
``pid``        the supervisor's pid, its start time (``/proc/<pid>/stat`` field 22) and the
               boot id, so a reused pid or a reboot is never mistaken for the trial.
``log.txt``    stdout and stderr of the supervisor, torchrun and every worker.
``exit_code``  the verdict, written once: ``{returncode, reason, finished_at}``.
``tail.json``  for a failed job, the last lines of ``log.txt`` (cleaned, secrets redacted, see
               :mod:`dispatcher.backends.local_logs`), written once when the failure is first
               observed; the job's ``reason`` is built from it (:mod:`dispatcher.core.failures`).
``cancel_requested`` when a cancel was asked for (the supervisor then says "cancelled").
============== =========================================================================

Cancel is asynchronous, like deleting a pod: it SIGTERMs the trial's supervisor and returns; the
supervisor forwards SIGTERM to the trial's process group and SIGKILLs whatever is left after
``termination_grace_s`` (default 120 s, ``SWEEPQ_TERMINATION_GRACE_S``: time for the trainer to
write its checkpoint). Until then the job stays RUNNING and counts against the caps. A supervisor
that does not finish the job within the grace (plus a margin) is bypassed: every process of the
trial is killed and the verdict recorded by whoever observes or cancels it next.

The trial runs under a supervisor (:mod:`dispatcher.backends.local_supervise`) started in its
own session, so it outlives the dispatcher: a restarted dispatcher finds the running job, and
its exit code, in the directory. Phases, by what the directory holds:

==================================== ============================================
``exit_code`` with returncode 0      SUCCEEDED
``exit_code`` otherwise              FAILED, reason from the record
``pid``, supervisor alive            RUNNING
``pid``, supervisor gone             FAILED "process vanished" (recorded)
neither, younger than ``start_grace`` PENDING (claimed, not spawned yet)
neither, older                       FAILED "never started" (recorded; retried)
==================================== ============================================
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from dispatcher.backends import local_supervise as sv
from dispatcher.backends.local_build import (
    KIND,
    OUTPUT_DIR_ENV,
    LocalLaunch,
    build_argv,
    build_env,
    check_program,
    job_labels,
    job_status,
    render,
)
from dispatcher.backends.local_logs import read_tail
from dispatcher.core.errors import ConfigError, PermanentError
from dispatcher.core.jobs import DryRun, JobStatus, LaunchRequest

logger = logging.getLogger(__name__)

SUPERVISOR = Path(sv.__file__).resolve()
_SAFE_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_SUPERVISOR_MARGIN_S = 5.0  # a supervisor gets grace + this to end a cancelled trial by itself
DEFAULT_TERMINATION_GRACE_S = 120.0  # SIGTERM → SIGKILL (SWEEPQ_TERMINATION_GRACE_S)
TAIL_FILE = "tail.json"


# --- the backend --------------------------------------------------------------------------------


class LocalBackend:
    """Runs trials as supervised local process groups; state lives in ``state_dir``.

    ``slots`` is the number of trials this machine runs at once; the dispatcher's planner uses
    it as the global cap (the backend itself never refuses a submit). ``clock`` dates records
    and ages claims (``start_grace``) and cancels; ``termination_grace_s`` is the SIGTERM →
    SIGKILL delay of a cancel or of ``max_runtime``.
    """

    kind = KIND

    def __init__(
        self,
        state_dir: Path | str,
        slots: int = 2,
        python: str = sys.executable,
        clock: Callable[[], float] = time.time,
        *,
        cwd: Path | str | None = None,
        termination_grace_s: float = DEFAULT_TERMINATION_GRACE_S,
        start_grace: float = 30.0,
    ) -> None:
        if slots < 1:
            raise ConfigError(f"slots: {slots} — the local backend needs at least 1 slot (SWEEPQ_LOCAL_SLOTS)")
        self.state_dir = Path(state_dir).resolve()
        self.slots = slots
        self.python = python
        self.clock = clock
        self.cwd = str(Path(cwd).resolve()) if cwd is not None else os.getcwd()
        self.kill_grace = float(termination_grace_s)
        self.start_grace = start_grace
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # supervisors we started; reaped in observe

    # -- paths

    def job_dir(self, name: str) -> Path:
        if not _SAFE_JOB_NAME.fullmatch(name):
            raise PermanentError(f"job_name: {name!r} is not a safe directory name — use a DNS-1123 job name")
        return self.state_dir / "jobs" / name

    def log_path(self, name: str) -> Path:
        return self.job_dir(name) / sv.LOG_FILE

    # -- the Backend interface

    def dryrun(self, request: LaunchRequest) -> DryRun:
        job_dir = self.job_dir(request.job_name)
        check_program(request.command, python=self.python, cwd=self.cwd)
        env = build_env(request, output_dir=self.state_dir / "outputs", job_dir=job_dir)
        argv = build_argv(
            request.command, request.launch, python=self.python, cwd=self.cwd, path=env.get("PATH", os.environ.get("PATH"))
        )
        launch = LocalLaunch(
            job_name=request.job_name,
            sweep_id=request.sweep_id,
            trial_index=request.trial_index,
            trial_id=request.trial_id,
            attempt=request.attempt,
            argv=argv,
            cwd=self.cwd,
            env=env,
            labels=job_labels(request),
            max_runtime=request.launch.max_runtime,
        )
        return DryRun(job_name=request.job_name, kind=KIND, request=launch, rendered=render(launch, job_dir))

    def submit(self, dryrun: DryRun) -> str:
        """Claim the job directory, then start its supervisor. A second submit is a no-op."""
        launch = dryrun.request
        if dryrun.kind != KIND or not isinstance(launch, LocalLaunch):
            raise PermanentError(f"dryrun.kind: {dryrun.kind!r} — the local backend submits only its own dry runs")
        job_dir = self.job_dir(launch.job_name)
        if launch.env.get(sv.JOB_TAG_ENV) != str(job_dir):
            raise PermanentError(
                f"dryrun.request.env.{sv.JOB_TAG_ENV}: {launch.env.get(sv.JOB_TAG_ENV)!r} is not {job_dir} — "
                "submit a dry run made by a backend on the same state_dir"
            )
        job_dir.mkdir(parents=True, exist_ok=True)
        spec = launch.spec(created_at=self.clock(), kill_grace=self.kill_grace)
        if not sv.create_json_exclusive(job_dir / sv.SPEC_FILE, spec):
            logger.debug("job %s already submitted; not starting it again", launch.job_name)
            return launch.job_name
        (Path(launch.cwd) / launch.env[OUTPUT_DIR_ENV]).mkdir(parents=True, exist_ok=True)
        self._spawn(job_dir, launch)
        return launch.job_name

    def observe(self) -> dict[str, JobStatus]:
        self._reap()
        try:
            entries = sorted(os.scandir(self.state_dir / "jobs"), key=lambda entry: entry.name)
        except FileNotFoundError:
            return {}
        statuses = {}
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                status = self._observe_one(Path(entry.path))
            except (ValueError, KeyError, TypeError) as error:  # hand-edited files; never ours (atomic)
                logger.warning("job dir %s unreadable, skipped: %s — fix or delete it", entry.path, error)
                continue
            if status is not None:
                statuses[status.name] = status
        return statuses

    def cancel(self, name: str, *, wait: float = 0.0) -> None:
        """Ask the trial to stop: SIGTERM now, SIGKILL after the grace (by its supervisor).
        Idempotent; returns at once unless ``wait`` > 0 (then waits that long for it to end)."""
        job_dir = self.job_dir(name)
        if not (job_dir / sv.SPEC_FILE).exists() or (job_dir / sv.EXIT_FILE).exists():
            logger.debug("cancel %s: unknown or finished; nothing to do", name)
            return
        first = sv.create_json_exclusive(job_dir / sv.CANCEL_FILE, {"requested_at": self.clock()})
        pid = sv.read_json(job_dir / sv.PID_FILE)
        if pid is None or not sv.is_alive(pid):
            self._verdict(job_dir, "cancelled", grace=0.0)  # not started, or its supervisor is gone
            self._reap()
            return
        if first:
            logger.info("cancel %s: SIGTERM to supervisor %s (SIGKILL after %.0f s)", name, pid["pid"], self.kill_grace)
            try:
                os.kill(pid["pid"], signal.SIGTERM)
            except ProcessLookupError:
                logger.debug("cancel %s: supervisor exited meanwhile", name)
        else:
            self._escalate_if_overdue(job_dir, pid)
        if wait > 0:
            self.wait_stopped([name], timeout=wait)

    def wait_stopped(self, names: list[str], *, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for these jobs' processes to end; the names still running."""
        deadline = time.monotonic() + timeout
        running = list(names)
        while running:
            self._reap()
            running = [n for n in running if self._supervisor_alive(self.job_dir(n))]
            if not running or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return running

    # -- internals

    def _spawn(self, job_dir: Path, launch: LocalLaunch) -> None:
        env = {**os.environ, **launch.env}
        command = [sys.executable, "-I", str(SUPERVISOR), str(job_dir)]
        with open(job_dir / sv.LOG_FILE, "ab") as log:
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=job_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as error:
                logger.warning("job %s: cannot start its supervisor: %s", launch.job_name, error)
                self._verdict(job_dir, f"cannot start supervisor: {error}", grace=0.0)
                return
        self._children[launch.job_name] = proc
        identity = sv.process_identity(proc.pid)
        if identity is not None:  # None only if it vanished already; observe then says so
            sv.create_json_exclusive(job_dir / sv.PID_FILE, {**identity, "started_at": self.clock()})
        logger.debug("job %s: supervisor pid %s", launch.job_name, proc.pid)

    def _observe_one(self, job_dir: Path) -> JobStatus | None:
        spec = sv.read_json(job_dir / sv.SPEC_FILE)
        if spec is None:
            return None  # a submit crashed before its claim: not a job
        verdict = sv.read_json(job_dir / sv.EXIT_FILE)
        pid = sv.read_json(job_dir / sv.PID_FILE)
        if verdict is None and pid is None and self.clock() - float(spec["created_at"]) > self.start_grace:
            verdict = self._verdict(job_dir, "never started", grace=self.kill_grace)
        elif verdict is None and pid is not None and not sv.is_alive(pid):
            # It may have recorded its exit between our two reads; only then is it really gone.
            verdict = sv.read_json(job_dir / sv.EXIT_FILE) or self._verdict(
                job_dir, "process vanished", grace=self.kill_grace
            )
        elif verdict is None and pid is not None:
            verdict = self._escalate_if_overdue(job_dir, pid)
        if verdict is None or (verdict.get("returncode") == 0 and not verdict.get("reason")):
            return job_status(spec, pid, verdict)
        log = job_dir / sv.LOG_FILE
        return job_status(spec, pid, verdict, tail=self._tail(job_dir), log=str(log) if log.exists() else "")

    def _tail(self, job_dir: Path) -> list[str]:
        """The redacted end of a failed job's log, read once and kept in ``tail.json``."""
        kept = sv.read_json(job_dir / TAIL_FILE)
        if kept is None:
            sv.create_json_exclusive(job_dir / TAIL_FILE, {"lines": read_tail(job_dir / sv.LOG_FILE)})
            kept = sv.read_json(job_dir / TAIL_FILE) or {}
        return [str(line) for line in kept.get("lines", [])]

    def _escalate_if_overdue(self, job_dir: Path, pid: Mapping[str, Any]) -> dict[str, Any] | None:
        """A cancel older than the grace (plus a margin) whose supervisor still runs: end it all."""
        requested = sv.read_json(job_dir / sv.CANCEL_FILE)
        if requested is None or self.clock() - float(requested["requested_at"]) <= self.kill_grace + _SUPERVISOR_MARGIN_S:
            return None
        logger.warning("cancel %s: supervisor %s did not end the trial within %.0f s; killing it all",
                       job_dir.name, pid["pid"], self.kill_grace)
        return self._verdict(job_dir, "cancelled: supervisor unresponsive", grace=0.0)

    def _supervisor_alive(self, job_dir: Path) -> bool:
        pid = sv.read_json(job_dir / sv.PID_FILE)
        return pid is not None and sv.is_alive(pid)

    def _verdict(self, job_dir: Path, reason: str, *, grace: float) -> dict[str, Any]:
        """Record a verdict unless one exists, then end every process of the job.

        The order matters: the supervisor writes ``pid`` *before* it checks for ``exit_code``,
        and we write ``exit_code`` *before* we look for ``pid``. So a supervisor that missed our
        verdict is always seen here, and terminated.
        """
        record = {"returncode": None, "reason": reason, "finished_at": self.clock()}
        if sv.create_json_exclusive(job_dir / sv.EXIT_FILE, record):
            logger.info("job %s: FAILED (%s)", job_dir.name, reason)
        pid = sv.read_json(job_dir / sv.PID_FILE)
        root = int(pid["pid"]) if pid is not None and sv.is_alive(pid) else None
        if pid is not None:
            sv.terminate_job_processes(job_dir, grace, root=root)
        recorded = sv.read_json(job_dir / sv.EXIT_FILE)
        assert recorded is not None  # created above or by someone before us; never deleted
        return recorded

    def _reap(self) -> None:
        for name, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[name]
