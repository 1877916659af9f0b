"""Graceful stop on SIGTERM in one process, and the agreement of several ranks (real gloo groups).

The torchrun version (SIGTERM to the launcher, two ranks, two pods) is in test_torchrun_stop.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch
from dist_workers import resume_agreement, run_spawned, stop_agreement
from trainer_support import create_metrics_table, plain_item, wandb_run_end

from trainer import checkpoint as ckpt
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.loop import TEST_SIGNAL_AT_STEP
from trainer.stop import StopDecision, StopRequests
from trainer.train import exit_code, training_function

TABLE = "sweepq-stop-metrics"
JOB = "stop-1a2b3c4d-0-a1"
POD = f"{JOB}-local-0"


def _context(root, queue_url=None):
    env = {"SWEEP_ID": "stop-1a2b3c4d", "TRIAL_INDEX": "0", "SWEEPQ_ATTEMPT": "1", "SWEEPQ_JOB_NAME": JOB,
           "POD_NAME": POD, "SWEEPQ_METRICS_TABLE": TABLE, "SWEEPQ_OUTPUT_DIR": str(root)}
    if queue_url:
        env["SWEEPQ_WAKE_QUEUE_URL"] = queue_url
    return TrialContext.from_env(env)


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, tiny):
    """One trial stopped by SIGTERM after step 7 of 15, then resumed; and the same trial uninterrupted."""
    from moto import mock_aws

    root = tmp_path_factory.mktemp("stop")
    config = tiny(checkpoint_every=4, log_every=1)
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        import boto3

        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        patch.setenv("WANDB_MODE", "offline")
        patch.delenv("WANDB_DIR", raising=False)
        dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        create_metrics_table(dynamodb, TABLE)
        queue_url = sqs.create_queue(QueueName="stop-wake")["QueueUrl"]
        patch.setenv(TEST_SIGNAL_AT_STEP, "7")
        stop = StopRequests(DistInfo()).install()
        try:
            stopped = training_function(config, _context(root / "a", queue_url), DistInfo(), stop=stop)
        finally:
            stop.uninstall()
        item_after_stop = plain_item(dynamodb, TABLE, POD)
        wakes = [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue_url,
                                                                      MaxNumberOfMessages=10).get("Messages", [])]
        wandb_after_stop = wandb_run_end(root / "a")
        stopped_checkpoint = ckpt.load_checkpoint(ckpt.checkpoint_path(root / "a" / "stop-1a2b3c4d-0"),
                                                  trial_id="stop-1a2b3c4d-0", hyperparameters=config.hyperparameters())
        result_file = json.loads((root / "a" / "stop-1a2b3c4d-0" / "result.json").read_text())
        patch.delenv(TEST_SIGNAL_AT_STEP)
        resumed = training_function(config, _context(root / "a"), DistInfo())
        item_after_resume = plain_item(dynamodb, TABLE, POD)
        patch.setenv("WANDB_MODE", "disabled")
        uninterrupted = training_function(config, TrialContext.from_env({"TRIAL_ID": "ref-0"},
                                                                        output_dir=str(root / "b")), DistInfo())
    return {"root": root, "stopped": stopped, "resumed": resumed, "uninterrupted": uninterrupted, "wakes": wakes,
            "item_after_stop": item_after_stop, "item_after_resume": item_after_resume,
            "wandb": wandb_after_stop, "checkpoint": stopped_checkpoint, "result_file": result_file}


def test_sigterm_stops_at_the_next_step_with_a_checkpoint_and_a_marked_result(stopped_and_resumed):
    result = stopped_and_resumed["stopped"]
    assert (result["status"], result["exit_code"], result["resumable"], exit_code(result)) == ("stopped", 143, True, 143)
    assert result["stop"] == {"signal": "SIGTERM", "received_here": True, "at_step": 7}
    assert stopped_and_resumed["checkpoint"]["progress"]["global_step"] == 7  # not the step-4 one: nothing lost
    on_disk = stopped_and_resumed["result_file"]
    assert (on_disk["status"], on_disk["global_step"], on_disk["resumable"]) == ("stopped", 7, True)


def test_the_metrics_item_says_stopped_and_the_dispatcher_is_woken(stopped_and_resumed):
    item = stopped_and_resumed["item_after_stop"]
    assert (item["status"], item["metrics"]["global_step"], item["history"]) == ("stopped", 7, {})
    assert stopped_and_resumed["wakes"][-1] == {"schema": "sweepq.wake/v1", "event": "trial-stopped",
                                                "sweep_id": "stop-1a2b3c4d", "job": JOB, "pod": POD}


def test_the_wandb_run_ends_preempted_not_crashed(stopped_and_resumed):
    end = stopped_and_resumed["wandb"]["last"]
    assert end["exit_codes"] == [143] and end["preempting"] is True
    assert "stopped" in end["tags"] and json.loads(end["summary"]["sweepq/status"]) == "stopped"


def test_the_resume_continues_from_the_stop_and_ends_exactly_like_an_uninterrupted_run(stopped_and_resumed):
    resumed, uninterrupted = stopped_and_resumed["resumed"], stopped_and_resumed["uninterrupted"]
    assert resumed["resumed_from"] == {"epoch": 0, "step_in_epoch": 7, "global_step": 7, "world_size": 1}
    assert resumed["status"] == "completed" and resumed["global_step"] == uninterrupted["global_step"] == 15
    a = torch.load(ckpt.checkpoint_path(stopped_and_resumed["root"] / "a" / "stop-1a2b3c4d-0"), weights_only=True)
    b = torch.load(ckpt.checkpoint_path(stopped_and_resumed["root"] / "b" / "ref-0"), weights_only=True)
    assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
    for key in ("eval/loss", "eval/accuracy", "test/f1", "train/loss"):
        assert resumed["metrics"][key] == uninterrupted["metrics"][key]
    item = stopped_and_resumed["item_after_resume"]
    assert item["status"] == "finished" and sorted(item["history"]) == ["0"]


def test_signal_handling_is_idempotent_and_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequests(DistInfo()).install()
    try:
        stop._on_signal(signal.SIGINT, None)
        stop._on_signal(signal.SIGTERM, None)  # torchrun forwarding a second signal changes nothing
        assert stop.received == signal.SIGINT and stop.poll() is True
        assert stop.decision == StopDecision(signal_number=signal.SIGINT, local=True)
        assert stop.decision.exit_code == 130 and stop.decision.status == "stopped"
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_all_ranks_stop_at_the_same_step_and_a_peer_stop_is_a_preemption(tmp_path):
    # GIVEN 3 ranks; rank 2 gets SIGTERM after its 3rd step boundary
    seen = run_spawned(stop_agreement, 3, tmp_path, 2, 3)
    # THEN every rank stops at boundary 5 (the reduce started at 4 carries the flag), with the signal's exit code
    assert [s["stopped_at"] for s in seen] == [5, 5, 5] and {s["exit_code"] for s in seen} == {143}
    # AND only the signalled rank says "stopped": for the others part of the job went away
    assert [s["status"] for s in seen] == ["preempted", "preempted", "stopped"]


@pytest.mark.slow
def test_ranks_without_a_shared_volume_resume_from_the_newest_checkpoint_any_rank_has(tmp_path):
    from test_checkpoint import _save

    # GIVEN rank 1 sees the trial's checkpoint at step 9 and rank 0 (another node, own volume) none
    dirs = [tmp_path / "node-0", tmp_path / "node-1"]
    _, checkpoint_id = _save(ckpt.checkpoint_path(dirs[1]), progress=ckpt.Progress(global_step=9))
    # WHEN both resume
    seen = run_spawned(resume_agreement, 2, tmp_path, [str(d) for d in dirs], "s-1")
    # THEN both continue from rank 1's checkpoint
    assert seen == [{"checkpoint_id": checkpoint_id, "global_step": 9}] * 2


@pytest.mark.slow
def test_a_wrong_checkpoint_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    from test_checkpoint import _save

    dirs = [tmp_path / "node-0", tmp_path / "node-1"]
    _save(ckpt.checkpoint_path(dirs[1]), trial_id="another-trial-7")
    seen = run_spawned(resume_agreement, 2, tmp_path, [str(d) for d in dirs], "s-1")
    assert seen[1]["error"].startswith("ConfigError: ") and "belongs to trial 'another-trial-7'" in seen[1]["error"]
    assert seen[0]["error"].startswith("ConfigError: rank 1: ")


@pytest.mark.slow
def test_the_cli_exits_with_the_signals_code(tmp_path, child_env):
    env = child_env(SWEEPQ_OUTPUT_DIR=str(tmp_path), WANDB_MODE="disabled", **{TEST_SIGNAL_AT_STEP: "3"})
    completed = subprocess.run([sys.executable, "-m", "trainer", "--synthetic_samples=300", "--epochs=1",
                                "--max_length=16", "--batch_size=16"], env=env, capture_output=True, text=True,
                               timeout=240)
    assert completed.returncode == 143, completed.stderr[-3000:]
    assert json.loads((tmp_path / "standalone" / "result.json").read_text())["stop"]["at_step"] == 3
