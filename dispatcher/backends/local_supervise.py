"""Supervisor of one local trial, and the procfs plumbing the local backend shares with it.

The local backend never runs a trial as its own child. It starts this file as a small supervisor
in a new session::

    python -I dispatcher/backends/local_supervise.py <state_dir>/jobs/<job_name>

The supervisor reads ``spec.json``, starts the trial (``torchrun`` or the verbatim argv) in a
process group of its own, waits, and records ``exit_code`` atomically. The dispatcher may exit or
restart meanwhile: the job directory, not the dispatcher's memory, is the source of truth.

Guarantees:

* **No orphans.** The supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so torchrun
  workers (each in a session of their own) that outlive torchrun are re-parented to it. Every
  process of a trial also inherits ``SWEEPQ_JOB_DIR=<job_dir>``; after the trial exits, on
  cancel and on ``max_runtime``, every process so tagged or descended from the supervisor is
  terminated, then killed after ``kill_grace`` seconds.
* **Exactly one verdict.** ``exit_code`` is created with ``link()`` (first writer wins): the
  supervisor, a cancelling dispatcher, or an observer that found the job "never started" or
  "process vanished". A supervisor that starts after a verdict exists does not start the trial.

Stdlib only and started with ``-I``: it does not depend on sweepq being installed, on the
working directory, or on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
PID_FILE = "pid"
EXIT_FILE = "exit_code"
CANCEL_FILE = "cancel_requested"
LOG_FILE = "log.txt"
JOB_TAG_ENV = "SWEEPQ_JOB_DIR"  # inherited by every process of a trial; used to find stragglers

_PR_SET_CHILD_SUBREAPER = 36
_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL_S = 0.1


# --- files: atomic writes, first-writer-wins creation -------------------------------------------


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_temp(path: Path, data: dict[str, Any]) -> Path:
    tmp = _temp_path(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` whole or not at all (temp file + rename)."""
    tmp = _write_temp(path, data)
    os.replace(tmp, path)


def create_json_exclusive(path: Path, data: dict[str, Any]) -> bool:
    """Create ``path`` with ``data`` unless it exists. True if this call created it.

    The content is complete before the name appears (temp file + ``link``), so a reader never
    sees a half-written file and two racing writers cannot both win.
    """
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None if the file does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__} — delete the file")
    return data


# --- procfs: process identity that survives pid reuse and reboots ---------------------------------


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state, ppid, pgrp, ...), or None if there is no such pid."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()  # comm may contain spaces and parentheses


def process_identity(pid: int) -> dict[str, Any] | None:
    """``{pid, starttime, boot_id}`` of a live process; None if it does not exist.

    ``starttime`` is field 22 of /proc/<pid>/stat (clock ticks since boot): a pid reused by another
    process, or the same pid after a reboot, has a different (starttime, boot_id) pair.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return {"pid": pid, "starttime": int(fields[19]), "boot_id": boot_id()}


def is_alive(identity: dict[str, Any]) -> bool:
    """True while the process recorded in ``identity`` runs (zombies count as dead)."""
    if identity.get("boot_id") != boot_id():
        return False
    fields = _stat_fields(int(identity["pid"]))
    return fields is not None and int(fields[19]) == identity["starttime"] and fields[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` in the parent tree."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def tagged_processes(job_dir: Path) -> set[int]:
    """Processes whose environment holds ``SWEEPQ_JOB_DIR=<job_dir>`` (this user's only)."""
    tag = f"{JOB_TAG_ENV}={job_dir}".encode()
    found = set()
    for pid in _all_pids():
        try:
            entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if tag in entries:
            found.add(pid)
    return found


def job_processes(job_dir: Path, root: int | None = None) -> set[int]:
    """All processes of one trial except the caller: tagged ones plus ``root``'s descendants."""
    found = tagged_processes(job_dir)
    if root is not None:
        found |= descendants(root)
    found.discard(os.getpid())
    return found


def signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            logger.warning("pid %s: no permission to send %s; it belongs to another user", pid, sig)


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _reap_children() -> None:
    """Collect exited children (re-parented orphans included) so they leave no zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def terminate_job_processes(job_dir: Path, grace: float, root: int | None = None) -> None:
    """SIGTERM every process of the trial, then SIGKILL what is left after ``grace`` seconds."""
    pids = job_processes(job_dir, root)
    if not pids:
        return
    logger.info("terminating %d leftover process(es) of %s: %s", len(pids), job_dir.name, sorted(pids))
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap_children()
        pids = {pid for pid in pids if _running(pid)}
        if not pids:
            return
        time.sleep(_POLL_S)
    signal_all(job_processes(job_dir, root), signal.SIGKILL)
    time.sleep(_POLL_S)
    _reap_children()


def describe_returncode(returncode: int) -> str:
    """``"exit code 1"`` or ``"killed by signal 9 (SIGKILL)"``; empty for success."""
    if returncode == 0:
        return ""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"


# --- the supervisor -----------------------------------------------------------------------------


class Supervisor:
    """Runs one trial to completion and records its verdict in ``<job_dir>/exit_code``."""

    def __init__(self, job_dir: Path, spec: dict[str, Any]) -> None:
        self.job_dir = job_dir
        self.argv: list[str] = list(spec["argv"])
        self.cwd: str = spec["cwd"]
        self.kill_grace = float(spec.get("kill_grace", 5.0))
        self.max_runtime: float | None = spec.get("max_runtime")
        self.child: subprocess.Popen[bytes] | None = None
        self.terminate_since: float | None = None  # monotonic time of the first termination request
        self.reason_prefix = ""

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._request_termination(f"supervisor got {signal.Signals(signum).name}")

    def _request_termination(self, why: str) -> None:
        if self.terminate_since is not None:
            return
        self.terminate_since = time.monotonic()
        self.reason_prefix = why
        logger.info("%s: terminating the trial (SIGTERM, SIGKILL after %.1fs)", why, self.kill_grace)
        self._forward_sigterm()

    def _forward_sigterm(self) -> None:
        if self.child is None:
            return  # run() forwards it once the trial exists
        try:
            os.killpg(self.child.pid, signal.SIGTERM)
        except ProcessLookupError:
            logger.debug("trial process group %s already gone", self.child.pid)

    def install_signal_handlers(self) -> None:
        for sig in _TERMINATION_SIGNALS:
            signal.signal(sig, self._on_signal)

    def run(self) -> int:
        if self.terminate_since is not None:  # cancelled while starting up: never start the trial
            self._record(None, f"{self._final_prefix()}: before the trial started")
            return 128 + signal.SIGTERM
        try:
            self.child = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            logger.error("cannot start %s: %s", self.argv[0], error)
            self._record(127, f"cannot start {self.argv[0]!r}: {error}")
            return 127
        logger.info("started trial pid %s: %s", self.child.pid, self.argv)
        if self.terminate_since is not None:  # a signal arrived while spawning
            self._forward_sigterm()
        returncode = self._wait(self.child)
        terminate_job_processes(self.job_dir, self.kill_grace, root=os.getpid())
        reason = describe_returncode(returncode)
        prefix = self._final_prefix()
        self._record(returncode, f"{prefix}: {reason or 'exit code 0'}" if prefix else reason)
        return returncode if returncode >= 0 else 128 - returncode

    def _final_prefix(self) -> str:
        """Why the trial was ended early, if it was: a cancel wins over the signal that carried it."""
        return "cancelled" if (self.job_dir / CANCEL_FILE).exists() else self.reason_prefix

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        started = time.monotonic()
        killed = False
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):  # still running: check the limits, wait again
                return child.wait(timeout=_POLL_S * 5)
            now = time.monotonic()
            if self.max_runtime is not None and now - started > self.max_runtime:
                self._request_termination(f"max_runtime {self.max_runtime:g}s exceeded")
            if not killed and self.terminate_since is not None and now - self.terminate_since > self.kill_grace:
                logger.warning("trial still running %.1fs after SIGTERM: SIGKILL", self.kill_grace)
                signal_all(job_processes(self.job_dir, root=os.getpid()) | {child.pid}, signal.SIGKILL)
                killed = True

    def _record(self, returncode: int | None, reason: str) -> None:
        record = {"returncode": returncode, "reason": reason, "finished_at": time.time()}
        if create_json_exclusive(self.job_dir / EXIT_FILE, record):
            logger.info("trial finished: %s", reason or "exit code 0")
        else:
            logger.warning("a verdict was already recorded for %s; keeping it", self.job_dir.name)


def _become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    except (OSError, AttributeError) as error:
        logger.warning("cannot become a child subreaper (%s); stragglers are found by %s only", error, JOB_TAG_ENV)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="[sweepq-supervise %(asctime)s] %(message)s", stream=sys.stderr)
    if len(argv) != 2:
        logger.error("usage: python -I local_supervise.py <job_dir>")
        return 2
    job_dir = Path(argv[1]).resolve()
    spec = read_json(job_dir / SPEC_FILE)
    if spec is None:
        logger.error("%s: no %s — the job was never claimed; nothing to run", job_dir, SPEC_FILE)
        return 2
    supervisor = Supervisor(job_dir, spec)
    supervisor.install_signal_handlers()  # from here on a cancel always ends in a recorded verdict
    identity = process_identity(os.getpid())
    assert identity is not None  # our own pid always exists
    create_json_exclusive(job_dir / PID_FILE, {**identity, "started_at": time.time()})  # unless the dispatcher did
    if (job_dir / EXIT_FILE).exists():  # checked after the pid file is visible: see LocalBackend._verdict
        logger.warning("%s: a verdict exists already (cancelled or given up); not starting", job_dir.name)
        return 0
    _become_subreaper()
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
