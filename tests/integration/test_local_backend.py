"""The local backend with real processes: supervisors, torchrun on CPU, signals, restarts.

No mocks. The trial is tests/data/local/trial.py, which records its pid, argv and environment
in a directory, so the tests can check what arrived and which processes are still alive.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from dispatcher.backends import local_supervise as sv
from dispatcher.backends.local import LocalBackend
from dispatcher.core.failures import parse_failure
from dispatcher.core.jobs import DryRun, JobPhase, JobStatus, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

REPO = Path(__file__).resolve().parents[2]
TRIAL = REPO / "tests" / "data" / "local" / "trial.py"
NASTY_ARGS = (
    "--lr=0.1; rm -rf ~",
    "--name=$(whoami) && echo `id` | cat > /tmp/x",
    "--glob=*.py",
    "--quoted='a b' \"c\"",
    "--multi=line1\nline2",
    "--empty=",
)


def make_request(
    records: Path,
    *trial_args: str,
    name: str = "sw1-t0-a1",
    launcher: str | None = None,
    nproc: int = 1,
    env: dict[str, str] | None = None,
    max_runtime: int | None = None,
) -> LaunchRequest:
    args = ("--record", str(records), *trial_args)
    argv = (str(TRIAL), *args) if launcher == "torchrun" else (sys.executable, str(TRIAL), *args)
    return LaunchRequest(
        sweep_id="sw1",
        trial_index=4,
        trial_id="sw1-t4",
        attempt=2,
        job_name=name,
        namespace="default",
        params={},
        command=TrialCommand(argv=argv, launcher=launcher),
        launch=LaunchSettings(kind="local", gpus_per_node=0, nproc_per_node=nproc, max_restarts=0, max_runtime=max_runtime),
        env=env or {},
    )


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_terminal(backend: LocalBackend, name: str, timeout: float = 20.0) -> JobStatus:
    def terminal() -> JobStatus | None:
        status = backend.observe().get(name)
        return status if status is not None and status.phase.terminal else None

    return wait_for(terminal, f"{name} to finish", timeout)


def read_records(records: Path, count: int, role: str = "") -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        files = sorted(records.glob(f"{role}*.json"))
        return [json.loads(f.read_text()) for f in files] if len(files) >= count else None

    return wait_for(found, f"{count} {role or 'process'} record(s) in {records}")


def alive(pid: int) -> bool:
    """os.kill(pid, 0), except that a zombie is dead: an orphan waits for init to reap it."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


@pytest.fixture
def backend(tmp_path: Path):
    backend = LocalBackend(tmp_path / "state", termination_grace_s=1.0, cwd=tmp_path)
    yield backend
    for name, status in backend.observe().items():  # leave no process behind, even on failure
        if not status.phase.terminal:
            backend.cancel(name, wait=10)


def test_verbatim_argv_env_and_success_are_recorded(backend: LocalBackend, records: Path, tmp_path: Path) -> None:
    # GIVEN a full command with shell metacharacters in its hyperparameters and a secret in env
    request = make_request(records, *NASTY_ARGS, env={"FOO": "bar", "WANDB_API_KEY": "s3cret-value"})
    # WHEN it is submitted and runs to the end
    assert backend.submit(backend.dryrun(request)) == "sw1-t0-a1"
    status = wait_terminal(backend, "sw1-t0-a1")
    # THEN argv and env arrive verbatim, and the job SUCCEEDED with its times recorded
    (record,) = read_records(records, 1)
    assert record["argv"][1:] == ["--record", str(records), *NASTY_ARGS]
    assert record["env"]["FOO"] == "bar"
    assert record["env"]["WANDB_API_KEY"] == "s3cret-value"
    assert record["env"]["SWEEPQ_OUTPUT_DIR"] == str(tmp_path / "state" / "outputs")
    assert record["env"]["PYTHONUNBUFFERED"] == "1"
    assert status.phase is JobPhase.SUCCEEDED and status.reason == ""
    assert (status.sweep_id, status.trial_index, status.attempt, status.gpus) == ("sw1", 4, 2, 0)
    assert (record["env"]["POD_NAME"], record["env"]["SWEEPQ_JOB_NAME"]) == ("sw1-t0-a1-local-0", "sw1-t0-a1")
    assert status.created_at <= status.started_at + 0.05 and status.started_at <= status.finished_at
    # ... the log is where log_path says, and the secret value is written nowhere
    assert f"pid {record['pid']}" in backend.log_path("sw1-t0-a1").read_text()
    job_dir = backend.job_dir("sw1-t0-a1")
    assert all(b"s3cret-value" not in f.read_bytes() for f in job_dir.iterdir())
    assert json.loads((job_dir / "spec.json").read_text())["env"]["WANDB_API_KEY"] == "<redacted>"


@pytest.mark.parametrize(
    ("exit_code", "phase", "reason"),
    [
        (0, JobPhase.SUCCEEDED, ""),
        (3, JobPhase.FAILED, "exit code 3"),
        (-9, JobPhase.FAILED, "killed by signal 9 (SIGKILL)"),
    ],
    ids=["exit-0-succeeds", "exit-3-fails", "sigkill-fails"],
)
def test_running_then_terminal_phase_from_exit_code(
    backend: LocalBackend, records: Path, exit_code: int, phase: JobPhase, reason: str
) -> None:
    backend.submit(backend.dryrun(make_request(records, "--sleep", "0.5", "--exit", str(exit_code))))
    assert backend.observe()["sw1-t0-a1"].phase is JobPhase.RUNNING
    status = wait_terminal(backend, "sw1-t0-a1")
    assert (status.phase, parse_failure(status.reason).ended if reason else status.reason) == (phase, reason)
    if reason:  # the log is named in the reason of every failure
        assert f"log: {backend.log_path('sw1-t0-a1')}" in status.reason


def test_a_failure_carries_the_cause_from_the_log_tail_without_secrets(
    backend: LocalBackend, records: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a dispatcher holding a W&B key (inherited by its trials), and a trial that prints it and fails
    monkeypatch.setenv("WANDB_API_KEY", "wandb-key-9f8e7d6c5b4a")
    say = ["--say", "config: api_key=wandb-key-9f8e7d6c5b4a lr=0.1", "--say", "Traceback (most recent call last):",
           "--say", '  File "train.py", line 9, in <module>', "--say", "ValueError: learning_rate must be positive"]
    backend.submit(backend.dryrun(make_request(records, *say, "--exit", "1")))
    status = wait_terminal(backend, "sw1-t0-a1")
    # THEN its reason names how it ended, the exception, the log, and the last lines — the key in none of them
    lines = status.reason.splitlines()
    assert lines[0] == "exit code 1: ValueError: learning_rate must be positive"
    assert lines[1] == f"log: {backend.log_path('sw1-t0-a1')}"
    assert "| config: api_key=<redacted> lr=0.1" in lines and lines[-1] == "| ValueError: learning_rate must be positive"
    assert "wandb-key-9f8e7d6c5b4a" not in status.reason
    job_dir = backend.job_dir("sw1-t0-a1")
    assert "wandb-key-9f8e7d6c5b4a" not in (job_dir / "tail.json").read_text()
    assert backend.observe()["sw1-t0-a1"].reason == status.reason  # read once, the same ever after


def test_submit_twice_starts_one_process(backend: LocalBackend, records: Path, tmp_path: Path) -> None:
    dryrun = backend.dryrun(make_request(records, "--sleep", "0.3"))
    other_dispatcher = LocalBackend(tmp_path / "state", cwd=tmp_path)
    assert [backend.submit(dryrun), backend.submit(dryrun), other_dispatcher.submit(dryrun)] == ["sw1-t0-a1"] * 3
    wait_terminal(backend, "sw1-t0-a1")
    time.sleep(0.3)  # a duplicate, had one started, would have recorded itself by now
    assert len(list(records.glob("*.json"))) == 1
    assert backend.log_path("sw1-t0-a1").read_text().count("started trial pid") == 1


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_restarted_dispatcher_finds_running_job_and_its_exit_code(records: Path, tmp_path: Path) -> None:
    # GIVEN a dispatcher process that submits a trial and exits while it runs
    state = tmp_path / "state"
    dryrun = LocalBackend(state, cwd=tmp_path).dryrun(make_request(records, "--sleep", "1.5", "--exit", "5"))
    submit_and_exit = (
        "import pickle, sys; from pathlib import Path; from dispatcher.backends.local import LocalBackend; "
        "print(LocalBackend(Path(sys.argv[1])).submit(pickle.load(sys.stdin.buffer)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", submit_and_exit, str(state)], input=pickle.dumps(dryrun), cwd=REPO, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    # WHEN a new dispatcher looks at the same state directory
    restarted = LocalBackend(state, cwd=tmp_path)
    # THEN it sees the trial running, cannot start it twice, and reads its exit code in the end
    assert restarted.observe()["sw1-t0-a1"].phase is JobPhase.RUNNING
    restarted.submit(dryrun)
    status = wait_terminal(restarted, "sw1-t0-a1")
    assert (status.phase, parse_failure(status.reason).ended) == (JobPhase.FAILED, "exit code 5")
    assert len(list(records.glob("*.json"))) == 1


def test_cancel_kills_stubborn_trial_and_its_escaped_daemon(backend: LocalBackend, records: Path) -> None:
    # GIVEN a trial that ignores SIGTERM and started a daemon in a session of its own
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60", "--ignore-term", "--daemon")))
    pids = [r["pid"] for r in read_records(records, 1, "trial") + read_records(records, 1, "daemon")]
    # WHEN it is cancelled (twice, and an unknown job too)
    backend.cancel("sw1-t0-a1")
    backend.cancel("sw1-t0-a1")
    backend.cancel("no-such-job")
    # THEN both are gone once the supervisor's SIGKILL grace (1 s here) is over, and the verdict says cancelled
    assert backend.wait_stopped(["sw1-t0-a1"], timeout=20) == []
    assert not any(alive(pid) for pid in pids)
    status = backend.observe()["sw1-t0-a1"]
    assert status.phase is JobPhase.FAILED and status.reason.startswith("cancelled")


def test_daemon_left_behind_by_a_finished_trial_is_reaped(backend: LocalBackend, records: Path) -> None:
    backend.submit(backend.dryrun(make_request(records, "--daemon")))
    (daemon,) = read_records(records, 1, "daemon")
    assert wait_terminal(backend, "sw1-t0-a1").phase is JobPhase.SUCCEEDED
    assert not alive(daemon["pid"])


def test_vanished_supervisor_fails_the_job_and_ends_its_processes(backend: LocalBackend, records: Path) -> None:
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60")))
    (trial,) = read_records(records, 1)
    supervisor = json.loads((backend.job_dir("sw1-t0-a1") / "pid").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)  # as the OOM killer or a reboot would
    status = wait_terminal(backend, "sw1-t0-a1")
    assert (status.phase, parse_failure(status.reason).ended) == (JobPhase.FAILED, "process vanished")
    assert not alive(trial["pid"])


def test_max_runtime_terminates_the_trial(backend: LocalBackend, records: Path) -> None:
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60", max_runtime=1)))
    status = wait_terminal(backend, "sw1-t0-a1")
    assert status.phase is JobPhase.FAILED
    assert status.reason.startswith("max_runtime 1s exceeded: killed by signal 15 (SIGTERM): trial trial pid")


class _DiesAfterClaim(LocalBackend):
    """A dispatcher that crashes right after claiming the job directory, before spawning."""

    def _spawn(self, job_dir: Path, launch: Any) -> None:
        raise KeyboardInterrupt("simulated crash between claim and spawn")


def test_crash_between_claim_and_spawn_fails_as_never_started(records: Path, tmp_path: Path) -> None:
    # GIVEN a dispatcher that died between claim and spawn at t=1000
    state = tmp_path / "state"
    now = [1000.0]
    dryrun: DryRun = LocalBackend(state, cwd=tmp_path).dryrun(make_request(records))
    with pytest.raises(KeyboardInterrupt):
        _DiesAfterClaim(state, clock=lambda: now[0], cwd=tmp_path).submit(dryrun)
    restarted = LocalBackend(state, clock=lambda: now[0], cwd=tmp_path, start_grace=30.0)
    # WHEN the restarted dispatcher observes it within, then after, the start grace
    now[0] = 1020.0
    assert restarted.observe()["sw1-t0-a1"].phase is JobPhase.PENDING
    assert restarted.submit(dryrun) == "sw1-t0-a1"  # already claimed: starts nothing
    now[0] = 1031.0
    status = restarted.observe()["sw1-t0-a1"]
    # THEN it is FAILED "never started" (so the dispatcher retries with a new attempt) ...
    assert (status.phase, status.reason, status.finished_at) == (JobPhase.FAILED, "never started", 1031.0)
    # ... and a supervisor that comes too late does not run the trial
    late = subprocess.run([sys.executable, "-I", str(sv.__file__), str(restarted.job_dir("sw1-t0-a1"))], timeout=20)
    assert late.returncode == 0
    assert list(records.iterdir()) == []
    assert restarted.observe()["sw1-t0-a1"].reason == "never started"


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_torchrun_two_workers_get_verbatim_args(backend: LocalBackend, records: Path) -> None:
    request = make_request(records, *NASTY_ARGS, launcher="torchrun", nproc=2)
    backend.submit(backend.dryrun(request))
    status = wait_terminal(backend, "sw1-t0-a1", timeout=60)
    assert status.phase is JobPhase.SUCCEEDED, backend.log_path("sw1-t0-a1").read_text()
    workers = read_records(records, 2)
    assert sorted(w["env"]["RANK"] for w in workers) == ["0", "1"]
    assert {w["env"]["WORLD_SIZE"] for w in workers} == {"2"}
    assert all(w["argv"][1:] == ["--record", str(records), *NASTY_ARGS] for w in workers)


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_torchrun_cancel_leaves_no_worker_alive(backend: LocalBackend, records: Path) -> None:
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60", launcher="torchrun", nproc=2)))
    workers = read_records(records, 2, "trial")
    pids = {w["pid"] for w in workers} | {w["ppid"] for w in workers}  # the workers and torchrun
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    backend.cancel("sw1-t0-a1", wait=30)
    assert not any(alive(pid) for pid in pids)
    status = backend.observe()["sw1-t0-a1"]
    assert status.phase is JobPhase.FAILED and status.reason.startswith("cancelled"), status


def test_cancel_gives_a_graceful_trial_its_grace_and_returns_at_once(records: Path, tmp_path: Path) -> None:
    # GIVEN a trial that saves a checkpoint and exits 0 on SIGTERM, under a 2-minute grace
    backend = LocalBackend(tmp_path / "state", cwd=tmp_path)  # the default termination grace
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60", "--on-term", "0")))
    read_records(records, 1)
    # WHEN it is cancelled: the call only asks (a tick never blocks for the grace)
    backend.cancel("sw1-t0-a1")
    # THEN the trial ends by itself, never SIGKILLed, and the verdict is a cancel
    assert backend.wait_stopped(["sw1-t0-a1"], timeout=60) == []
    status = backend.observe()["sw1-t0-a1"]
    assert (status.phase, status.reason) == (JobPhase.FAILED, "cancelled: exit code 0")
    log = backend.log_path("sw1-t0-a1").read_text()
    assert "got SIGTERM: checkpoint saved" in log and "after SIGTERM: SIGKILL" not in log  # the supervisor's escalation


def test_a_supervisor_that_does_not_end_a_cancelled_trial_is_bypassed_after_the_grace(
    records: Path, tmp_path: Path
) -> None:
    # GIVEN a running trial whose supervisor is frozen (SIGSTOP: it cannot act on the cancel)
    now = [1000.0]
    backend = LocalBackend(tmp_path / "state", cwd=tmp_path, clock=lambda: now[0], termination_grace_s=30)
    backend.submit(backend.dryrun(make_request(records, "--sleep", "60")))
    (trial,) = read_records(records, 1)
    supervisor = json.loads((backend.job_dir("sw1-t0-a1") / "pid").read_text())["pid"]
    os.kill(supervisor, signal.SIGSTOP)
    try:
        backend.cancel("sw1-t0-a1")
        # WHEN observed within the grace, it still runs; past the grace and the margin, it is ended
        now[0] = 1030.0
        assert backend.observe()["sw1-t0-a1"].phase is JobPhase.RUNNING and alive(trial["pid"])
        now[0] = 1036.0
        status = backend.observe()["sw1-t0-a1"]
        # THEN every process of the trial is gone and the verdict says why
        assert (status.phase, status.reason) == (JobPhase.FAILED, "cancelled: supervisor unresponsive")
        assert not alive(trial["pid"]) and not alive(supervisor)
    finally:
        if alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)
