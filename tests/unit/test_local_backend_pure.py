"""The local backend's pure parts: argv, env, rendering, phase table, and its file/procfs helpers.

No process is started here (see tests/integration/test_local_backend.py for that).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.backends import local_supervise as sv
from dispatcher.backends.local import DEFAULT_TERMINATION_GRACE_S, LocalBackend
from dispatcher.backends.local_build import job_status
from dispatcher.core.errors import ConfigError, PermanentError, SpecError
from dispatcher.core.jobs import Backend, DryRun, JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings


def make_request(
    argv: tuple[str, ...] = ("train.py", "--lr=0.1"),
    launcher: str | None = "torchrun",
    env: dict[str, str] | None = None,
    env_from_sweep: dict[str, str] | None = None,
    **launch: Any,
) -> LaunchRequest:
    return LaunchRequest(
        sweep_id="sw1",
        trial_index=7,
        trial_id="sw1-t7",
        attempt=3,
        job_name="sw1-t7-a3",
        namespace="default",
        params={"lr": 0.1},
        command=TrialCommand(argv=argv, launcher=launcher),
        launch=LaunchSettings(kind="local", env=env_from_sweep or {}, **launch),
        env=env or {},
    )


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    (tmp_path / "train.py").write_text("print('training')\n")  # the program make_request names
    return LocalBackend(tmp_path / "state", slots=3, python="/opt/py/bin/python", cwd=tmp_path)


def test_torchrun_argv_is_exact(backend: LocalBackend) -> None:
    request = make_request(gpus_per_node=0, nproc_per_node=4, max_restarts=2)
    assert backend.dryrun(request).request.argv == (
        "/opt/py/bin/python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
        "--max-restarts=2",
        "train.py",
        "--lr=0.1",
    )


def test_torchrun_workers_default_to_gpus_per_node(backend: LocalBackend) -> None:
    argv = backend.dryrun(make_request(("-m", "trainer"), gpus_per_node=2)).request.argv
    assert "--nproc-per-node=2" in argv and argv[-2:] == ("-m", "trainer")


def test_verbatim_argv0_is_resolved_on_the_requests_path(backend: LocalBackend, tmp_path: Path) -> None:
    tool = tmp_path / "bin" / "mytrain"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    request = make_request(("mytrain", "--x=$(id)"), launcher=None, env={"PATH": str(tool.parent)})
    assert backend.dryrun(request).request.argv == (str(tool), "--x=$(id)")


def test_verbatim_argv0_with_a_slash_is_relative_to_cwd(backend: LocalBackend, tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    assert backend.dryrun(make_request(("./run.sh",), launcher=None)).request.argv == (str(tmp_path / "run.sh"),)


@pytest.mark.parametrize(
    ("argv", "launcher", "message"),
    [
        (("no-such-program-sweepq",), None, "command[0]: 'no-such-program-sweepq' not found on PATH"),
        (("./missing.sh",), None, "command[0]: './missing.sh' is not an executable file"),
        ((), None, "command: empty"),
        ((), "torchrun", "command: nothing after ${interpreter}"),
        (("train.py",), "mpirun", "command.launcher: 'mpirun' is not supported"),
    ],
    ids=["not-on-path", "bad-relative-path", "empty-verbatim", "empty-torchrun", "unknown-launcher"],
)
def test_bad_commands_are_spec_errors_naming_the_field(
    backend: LocalBackend, argv: tuple[str, ...], launcher: str | None, message: str
) -> None:
    with pytest.raises(SpecError) as error:
        backend.dryrun(make_request(argv, launcher=launcher))
    assert message in str(error.value) and "—" in str(error.value)


def test_env_layers_request_over_sweep_and_sets_ours(backend: LocalBackend, tmp_path: Path) -> None:
    request = make_request(env={"A": "request", "SWEEP_ID": "sw1"}, env_from_sweep={"A": "sweep", "B": "sweep"})
    env = backend.dryrun(request).request.env
    assert env["A"] == "request" and env["B"] == "sweep" and env["SWEEP_ID"] == "sw1"
    assert env["SWEEPQ_OUTPUT_DIR"] == str(tmp_path / "state" / "outputs")
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env[sv.JOB_TAG_ENV] == str(tmp_path / "state" / "jobs" / "sw1-t7-a3")


def test_trials_know_their_job_and_pod_name_and_no_layer_overrides_them(backend: LocalBackend) -> None:
    # CONTRACTS C1: the trainer keys its metrics item by POD_NAME, which for a local job is <job>-local-0
    hostile = {"POD_NAME": "other-job-local-0", "SWEEPQ_JOB_NAME": "other", "SWEEPQ_KIND": "pytorchjob"}
    # a body that bypassed validation (the model refuses reserved names), and a request layer that carries them
    launch = LaunchSettings.model_construct(**{**LaunchSettings(kind="local").__dict__, "env": hostile})
    request = dataclasses.replace(make_request(env=hostile), launch=launch)
    env = backend.dryrun(request).request.env
    assert (env["POD_NAME"], env["SWEEPQ_JOB_NAME"], env["SWEEPQ_KIND"]) == ("sw1-t7-a3-local-0", "sw1-t7-a3", "local")


def test_request_may_choose_the_output_dir(backend: LocalBackend) -> None:
    env = backend.dryrun(make_request(env={"SWEEPQ_OUTPUT_DIR": "/data/out"})).request.env
    assert env["SWEEPQ_OUTPUT_DIR"] == "/data/out"


def test_dryrun_creates_nothing_and_renders_yaml_without_secrets(backend: LocalBackend) -> None:
    dryrun = backend.dryrun(make_request(env={"WANDB_API_KEY": "s3cret", "WANDB_PROJECT": "p"}))
    assert not backend.state_dir.exists()
    assert str(dryrun) == dryrun.rendered and "s3cret" not in dryrun.rendered
    shown = yaml.safe_load(dryrun.rendered)
    assert shown["argv"] == list(dryrun.request.argv)
    assert shown["env"]["WANDB_API_KEY"] == "<redacted>" and shown["env"]["WANDB_PROJECT"] == "p"
    assert shown["labels"] == {
        "app.kubernetes.io/managed-by": "sweepq",
        "sweepq.io/sweep-id": "sw1",
        "sweepq.io/trial-index": "7",
        "sweepq.io/attempt": "3",
    }
    assert shown["log"].endswith("jobs/sw1-t7-a3/log.txt")


def test_spec_record_keeps_labels_and_redacts_secret_values(backend: LocalBackend) -> None:
    spec = backend.dryrun(make_request(env={"HF_TOKEN": "hf_x"})).request.spec(created_at=5.0, kill_grace=1.0)
    assert (spec["sweep_id"], spec["trial_index"], spec["attempt"], spec["gpus"]) == ("sw1", 7, 3, 0)
    assert spec["env"]["HF_TOKEN"] == "<redacted>" and spec["created_at"] == 5.0


SPEC = {"job_name": "j", "sweep_id": "s", "trial_index": 1, "attempt": 2, "created_at": 10.0}
PID = {"pid": 1, "starttime": 1, "boot_id": "b", "started_at": 11.0}


@pytest.mark.parametrize(
    ("pid", "verdict", "phase", "reason"),
    [
        (None, None, JobPhase.PENDING, ""),
        (PID, None, JobPhase.RUNNING, ""),
        (PID, {"returncode": 0, "reason": "", "finished_at": 12.0}, JobPhase.SUCCEEDED, ""),
        (PID, {"returncode": 1, "reason": "exit code 1", "finished_at": 12.0}, JobPhase.FAILED, "exit code 1"),
        (PID, {"returncode": 2, "reason": ""}, JobPhase.FAILED, "exit code 2"),
        (PID, {"returncode": 0, "reason": "cancelled: exit code 0"}, JobPhase.FAILED, "cancelled: exit code 0"),
        (None, {"returncode": None, "reason": "never started"}, JobPhase.FAILED, "never started"),
    ],
    ids=["claimed", "running", "exit-0", "exit-1", "exit-2-no-reason", "cancelled-exit-0", "never-started"],
)
def test_job_status_table(pid: Any, verdict: Any, phase: JobPhase, reason: str) -> None:
    status = job_status(SPEC, pid, verdict)
    assert (status.phase, status.reason, status.trial_index, status.attempt, status.gpus) == (phase, reason, 1, 2, 0)
    assert status.created_at == 10.0 and status.started_at == (11.0 if pid else None)


def test_a_failed_jobs_reason_has_the_cause_from_its_log_tail_and_the_log_path() -> None:
    tail = ["loading", "Traceback (most recent call last):", '  File "t.py", line 3, in <module>', "KeyError: 'lr'"]
    status = job_status(SPEC, PID, {"returncode": 1, "reason": "exit code 1"}, tail=tail, log="/s/jobs/j/log.txt")
    lines = status.reason.splitlines()
    assert lines[0] == "exit code 1: KeyError: 'lr'" and lines[1] == "log: /s/jobs/j/log.txt"
    assert lines[-1] == "| KeyError: 'lr'"
    # a cancel is the researcher's own doing: no cause to find
    cancelled = job_status(SPEC, PID, {"returncode": -15, "reason": "cancelled: killed by signal 15 (SIGTERM)"},
                           tail=tail, log="/s/jobs/j/log.txt")
    assert cancelled.reason == "cancelled: killed by signal 15 (SIGTERM)"


def test_a_missing_program_is_refused_before_anything_runs(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "state", cwd=tmp_path)
    with pytest.raises(SpecError) as error:
        backend.dryrun(make_request(("train.py", "--lr=0.1")))
    message = str(error.value)
    assert f"program: 'train.py' is not a file in {tmp_path}" in message
    assert 'command: ["${env}", "${interpreter}", "-m", "trainer", "${args}"]' in message
    with pytest.raises(SpecError, match="command: module 'trainr' cannot be imported"):
        backend.dryrun(make_request(("-m", "trainr", "--lr=0.1")))
    # the reference trainer and a module found in the working directory are fine
    assert backend.dryrun(make_request(("-m", "trainer"))).request.argv[-2:] == ("-m", "trainer")
    (tmp_path / "mytrain.py").write_text("")
    assert backend.dryrun(make_request(("-m", "mytrain"))).request.argv[-2:] == ("-m", "mytrain")


def test_the_termination_grace_defaults_to_two_minutes(tmp_path: Path) -> None:
    assert LocalBackend(tmp_path).kill_grace == DEFAULT_TERMINATION_GRACE_S == 120.0
    assert LocalBackend(tmp_path, termination_grace_s=7).kill_grace == 7.0


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 300])
def test_unsafe_job_names_are_refused(backend: LocalBackend, name: str) -> None:
    with pytest.raises(PermanentError, match="job_name"):
        backend.job_dir(name)


def test_slots_is_the_cap_and_must_be_positive(tmp_path: Path) -> None:
    assert LocalBackend(tmp_path, slots=3).slots == 3 and LocalBackend(tmp_path).kind == "local"
    assert isinstance(LocalBackend(tmp_path), Backend)
    with pytest.raises(ConfigError, match="slots: 0"):
        LocalBackend(tmp_path, slots=0)


def test_submit_refuses_another_kinds_dryrun(backend: LocalBackend) -> None:
    with pytest.raises(PermanentError, match="dryrun.kind: 'job'"):
        backend.submit(DryRun(job_name="x", kind="job", request={}, rendered=""))


def test_submit_refuses_a_dryrun_made_for_another_state_dir(backend: LocalBackend, tmp_path: Path) -> None:
    foreign = LocalBackend(tmp_path / "elsewhere", cwd=tmp_path).dryrun(make_request())
    with pytest.raises(PermanentError, match="SWEEPQ_JOB_DIR"):
        backend.submit(foreign)
    assert not (backend.state_dir / "jobs" / "sw1-t7-a3").exists()


def test_observe_skips_directories_never_claimed_or_unreadable(backend: LocalBackend) -> None:
    assert backend.observe() == {}
    (backend.state_dir / "jobs" / "half-made").mkdir(parents=True)
    (backend.state_dir / "jobs" / "edited").mkdir()
    (backend.state_dir / "jobs" / "edited" / "spec.json").write_text("{not json")
    assert backend.observe() == {}


def test_exclusive_create_has_one_winner(tmp_path: Path) -> None:
    assert sv.create_json_exclusive(tmp_path / "f", {"who": 1})
    assert not sv.create_json_exclusive(tmp_path / "f", {"who": 2})
    assert sv.read_json(tmp_path / "f") == {"who": 1} and sv.read_json(tmp_path / "none") is None
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temp files left


def test_process_identity_detects_pid_reuse_and_reboots() -> None:
    me = sv.process_identity(os.getpid())
    assert me is not None and sv.is_alive(me)
    assert not sv.is_alive({**me, "starttime": me["starttime"] + 1})  # same pid, another process
    assert not sv.is_alive({**me, "boot_id": "another-boot"})
    assert sv.process_identity(2**22 + 1) is None  # above pid_max


@pytest.mark.parametrize(
    ("returncode", "text"),
    [(0, ""), (2, "exit code 2"), (-9, "killed by signal 9 (SIGKILL)"), (-15, "killed by signal 15 (SIGTERM)")],
)
def test_describe_returncode(returncode: int, text: str) -> None:
    assert sv.describe_returncode(returncode) == text


def test_supervisor_runs_isolated_from_the_package(tmp_path: Path) -> None:
    # -I: no PYTHONPATH, no cwd on sys.path — it must not need sweepq to be importable
    done = subprocess.run([sys.executable, "-I", sv.__file__], cwd=tmp_path, capture_output=True, text=True, timeout=20)
    assert done.returncode == 2 and "usage: python -I local_supervise.py <job_dir>" in done.stderr
