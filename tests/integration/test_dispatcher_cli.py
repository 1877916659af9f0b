"""``dispatcher`` as an operator runs it: bootstrap, tick and run with --output, JSON errors, quiet SDK
logs, local-stack's environment. AWS is moto (in-process; its HTTP server for local-stack)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from moto import mock_aws
from typer.testing import CliRunner

from dispatcher.cli import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_ENDPOINT")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWEEPQ_BACKEND", "local")
    monkeypatch.setenv("SWEEPQ_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SWEEPQ_HOME", str(tmp_path / "home"))
    with mock_aws():
        yield


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_bootstrap_tick_and_run_speak_json(aws_env: None) -> None:
    boot = json.loads(run("bootstrap", "-o", "json").stdout)
    assert boot["table"] == "sweepq" and boot["queue_url"].endswith("/sweepq")
    tick = run("tick", "-o", "json")
    assert tick.exit_code == 0, tick.output
    report = json.loads(tick.stdout)
    assert report["lease"] == "held" and report["errors"] == [] and report["active_sweeps"] == 0
    # `run` takes tick's options and prints one JSON object per tick (JSON lines)
    loop = run("run", "--until-idle", "--no-watch", "--interval", "0.1", "--backend", "local", "--max-running", "1",
               "-o", "json")
    assert loop.exit_code == 0, loop.output
    lines = loop.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["active_sweeps"] == 0
    text = run("tick")
    assert text.stdout.startswith("accepted 0, rejected 0, launched 0, running 0")


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_bootstrap_makes_the_metrics_table_and_the_wake_queue_once(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from dispatcher.adapters.metrics import MetricsStore

    first = json.loads(run("bootstrap", "-o", "json").stdout)
    assert (first["metrics_table"], first["metrics_table_created"]) == ("sweepq-metrics", True)
    assert first["wake_queue_url"].endswith("/sweepq-wake")
    # THEN it is the table the dispatcher reads (its key schema checked), and a rerun changes nothing
    assert MetricsStore("sweepq-metrics", boto3.client("dynamodb", region_name="us-east-1")).create_table() is False
    again = json.loads(run("bootstrap", "-o", "json").stdout)
    assert (again["metrics_table_created"], again["wake_queue_url"]) == (False, first["wake_queue_url"])
    # a wake queue given by URL (the stack's) is not created; SWEEPQ_WAKE=0 creates none
    monkeypatch.setenv("SWEEPQ_WAKE_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/team-wake")
    assert json.loads(run("bootstrap", "-o", "json").stdout)["wake_queue_url"].endswith("/team-wake")
    monkeypatch.delenv("SWEEPQ_WAKE_QUEUE_URL")
    monkeypatch.setenv("SWEEPQ_WAKE", "0")
    monkeypatch.setenv("SWEEPQ_QUEUE_NAME", "other")
    assert json.loads(run("bootstrap", "-o", "json").stdout)["wake_queue_url"] is None
    queues = boto3.client("sqs", region_name="us-east-1").list_queues()["QueueUrls"]
    assert sorted(url.rsplit("/", 1)[1] for url in queues) == ["other", "other-dlq", "sweepq", "sweepq-dlq", "sweepq-wake"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_sdk_logs_are_quiet_unless_verbose(aws_env: None) -> None:
    run("bootstrap")
    quiet = run("tick")
    assert "botocore" not in quiet.stderr and "Found credentials" not in quiet.stderr
    assert '"event": "tick"' in quiet.stderr  # our own one JSON line per tick (SWEEPQ_LOG_LEVEL=INFO)
    loud = run("tick", "--verbose")
    assert "botocore" in loud.stderr


def test_nothing_bootstrapped_is_exit_3_as_text_or_one_json_object(aws_env: None) -> None:
    text = run("tick")
    assert text.exit_code == 3 and text.stderr.splitlines()[-1].startswith("error: find queue 'sweepq'")
    doc = run("tick", "-o", "json")
    assert doc.exit_code == 3
    error = json.loads(doc.stdout)["error"]
    assert (error["code"], error["type"]) == (3, "config") and "find queue 'sweepq'" in error["message"]


def test_an_invalid_setting_is_a_configuration_error(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWEEPQ_MAX_RUNNING", "lots")
    result = run("tick", "-o", "json")
    assert result.exit_code == 3
    assert "SWEEPQ_MAX_RUNNING: 'lots' is not a valid int" in json.loads(result.stdout)["error"]["message"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_local_stack_prints_the_environment_as_json_then_serves() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWEEPQ_", "AWS_"))}
    stack = subprocess.Popen([sys.executable, "-m", "dispatcher.cli", "local-stack", "--port", "0", "-o", "json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    try:
        assert stack.stdout is not None
        doc = json.loads(stack.stdout.readline())
        assert doc["env"]["AWS_ENDPOINT_URL"] == doc["endpoint"] and doc["env"]["SWEEPQ_BACKEND"] == "local"
        # the endpoint answers: bootstrap against it
        boot = subprocess.run([sys.executable, "-m", "dispatcher.cli", "bootstrap", "-o", "json"], capture_output=True,
                              text=True, cwd=ROOT, env={**env, **doc["env"]}, timeout=120)
        assert boot.returncode == 0, boot.stderr
        assert json.loads(boot.stdout)["table_created"] is True
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=60)
