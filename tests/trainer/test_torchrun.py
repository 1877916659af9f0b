"""Real ``torchrun`` on CPU (gloo), two ranks: sharded evaluation, rank-0-only side effects, elastic restart.

Two launches are shared by the tests of this module: an uninterrupted reference run (its pod's
metrics item and wake triggers on moto's server, W&B offline) and a run whose rank 1 dies
mid-epoch on the first attempt.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import boto3
import pytest
import torch
from trainer_support import REPO, create_metrics_table, plain_item, torchrun_command, wandb_run_end

from trainer.checkpoint import checkpoint_path
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.evaluate import evaluate
from trainer.train import build_components

pytestmark = pytest.mark.slow

SWEEP_ID = "bert-lr-1a2b3c4d"
TABLE = "sweepq-torchrun-metrics"
JOB = f"{SWEEP_ID}-0-a2"
POD = f"{JOB}-worker-0"


@pytest.fixture(scope="module")
def config(tiny):
    # 480 training examples, a global batch of 32 (16 per rank on 2): 15 optimizer steps per epoch, 30 in all.
    return tiny(synthetic_samples=600, epochs=2, checkpoint_every=4, batch_size=32)


@pytest.fixture(scope="module")
def reference(config, moto_server, tmp_path_factory, torchrun, child_env):
    """Attempt 2 of trial 0, as the dispatcher launches it, with the metrics table, a wake queue and W&B offline."""
    root = tmp_path_factory.mktemp("reference")
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server)
    create_metrics_table(dynamodb, TABLE)
    sqs = boto3.client("sqs", endpoint_url=moto_server)
    queue_url = sqs.create_queue(QueueName="torchrun-wake")["QueueUrl"]
    env = child_env(SWEEP_ID=SWEEP_ID, TRIAL_INDEX="0", TRIAL_ID=f"{SWEEP_ID}-0", SWEEPQ_ATTEMPT="2",
                    SWEEPQ_JOB_NAME=JOB, POD_NAME=POD, SWEEPQ_METRICS_TABLE=TABLE, SWEEPQ_WAKE_QUEUE_URL=queue_url,
                    SWEEPQ_OUTPUT_DIR=str(root), AWS_ENDPOINT_URL=moto_server, WANDB_MODE="offline",
                    WANDB_RUN_GROUP=SWEEP_ID, WANDB_RUN_ID=f"{SWEEP_ID}-0")
    torchrun(config, env=env)
    run_dir = root / f"{SWEEP_ID}-0"
    return {
        "root": root, "run_dir": run_dir, "result": json.loads((run_dir / "result.json").read_text()),
        "item": plain_item(dynamodb, TABLE, POD),
        "items": dynamodb.scan(TableName=TABLE)["Items"],
        "messages": sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []),
    }


def test_two_ranks_metrics_equal_a_single_process_evaluation(reference, config):
    # GIVEN the weights the 2-rank run ended with, evaluated again in this single process
    context = TrialContext.from_env({"TRIAL_ID": f"{SWEEP_ID}-0"}, output_dir=str(reference["root"]))
    parts = build_components(config, DistInfo(), context)  # reuses the trial's saved tokenizer
    parts.model.load_state_dict(torch.load(checkpoint_path(reference["run_dir"]), weights_only=True)["model"])
    metrics = reference["result"]["metrics"]
    for split, loader in (("eval", parts.validation), ("test", parts.test)):
        single = evaluate(parts.model, loader, num_labels=3, dist=DistInfo()).metrics
        # THEN counts-based metrics are identical and the loss equal up to float summation order
        assert single["accuracy"] == metrics[f"{split}/accuracy"]
        assert single["f1"] == metrics[f"{split}/f1"]
        assert single["loss"] == pytest.approx(metrics[f"{split}/loss"], rel=1e-5)
    assert reference["result"]["world_size"] == 2 and metrics["global_step"] == 30


def test_one_wandb_run_per_trial_created_by_rank_0(reference):
    runs = list(reference["root"].rglob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(f"-{SWEEP_ID}-0")
    log = (runs[0] / "logs" / "debug.log").read_text()
    assert "'learning_rate': 0.002" in log and "'world_size': 2" in log  # config = all hyperparameters


def test_local_rank_0_writes_the_pods_item_and_rank_0_wakes(reference):
    # one pod (one torchrun) with two local ranks: exactly one item, keyed by the pod's name
    assert [entry["pod"]["S"] for entry in reference["items"]] == [POD]
    item = reference["item"]
    assert (item["attempt"], item["world_size"], item["status"], item["job"]) == (2, 2, "finished", JOB)
    assert float(item["metrics"]["eval/accuracy"]) == pytest.approx(reference["result"]["metrics"]["eval/accuracy"])
    assert {"test/f1", "best/eval/accuracy", "samples_per_s", "train/loss"} <= set(item["final"])
    assert sorted(item["history"]) == ["0", "1"]
    bodies = [json.loads(message["Body"]) for message in reference["messages"]]
    assert bodies[-1] == {"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": SWEEP_ID, "job": JOB,
                          "pod": POD}


def test_rank_1_crash_resumes_mid_epoch_and_matches_the_uninterrupted_run(reference, config, tmp_path, torchrun,
                                                                        child_env):
    # GIVEN rank 1 exits hard right after step 10 of the first attempt; checkpoints every 4 steps
    env = child_env(TRIAL_ID="crash-0", SWEEPQ_OUTPUT_DIR=str(tmp_path), WANDB_MODE="disabled",
                    SWEEPQ_TEST_CRASH_AT_STEP="10")
    # WHEN torchrun may restart the workers once
    completed = torchrun(config, env=env, max_restarts=1)
    # THEN the restart resumed at step 8, mid-epoch 0, ...
    assert "exits hard at step 10" in completed.stdout + completed.stderr
    result = json.loads((tmp_path / "crash-0" / "result.json").read_text())
    assert result["restart_count"] == 1
    assert result["resumed_from"] == {"epoch": 0, "step_in_epoch": 8, "global_step": 8, "world_size": 2}
    # ... and ended with exactly the weights and metrics of the uninterrupted run with the same seed
    crashed = torch.load(checkpoint_path(tmp_path / "crash-0"), weights_only=True)["model"]
    uninterrupted = torch.load(checkpoint_path(reference["run_dir"]), weights_only=True)["model"]
    assert crashed.keys() == uninterrupted.keys()
    assert all(torch.equal(crashed[name], uninterrupted[name]) for name in crashed)
    for key in ("eval/loss", "eval/accuracy", "test/f1", "train/loss"):
        assert result["metrics"][key] == reference["result"]["metrics"][key]


def _wait_for(paths, process, what, limit_s=240.0):
    """Block until every path exists (readiness, not timing: the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit_s
    while not all(path.exists() for path in paths):
        if process.poll() is not None or time.monotonic() > deadline:
            out, err = process.communicate(timeout=30) if process.poll() is not None else ("", "")
            raise AssertionError(f"{what} never happened ({process.returncode}):\n{out[-3000:]}\n{err[-6000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sigterm_run(config, moto_server, tmp_path_factory, child_env):
    """torchrun (one pod, 2 ranks) gets SIGTERM while both ranks stand after step 6 of epoch 0."""
    root = tmp_path_factory.mktemp("sigterm")
    dynamodb, sqs = (boto3.client(name, endpoint_url=moto_server) for name in ("dynamodb", "sqs"))
    table, job = "sweepq-sigterm-metrics", f"{SWEEP_ID}-1-a1"
    create_metrics_table(dynamodb, table)
    queue_url = sqs.create_queue(QueueName="sigterm-wake")["QueueUrl"]
    env = child_env(SWEEP_ID=SWEEP_ID, TRIAL_INDEX="1", SWEEPQ_ATTEMPT="1", SWEEPQ_JOB_NAME=job,
                    POD_NAME=f"{job}-worker-0", SWEEPQ_METRICS_TABLE=table, SWEEPQ_WAKE_QUEUE_URL=queue_url,
                    SWEEPQ_OUTPUT_DIR=str(root), AWS_ENDPOINT_URL=moto_server, WANDB_MODE="offline",
                    TORCH_ELASTIC_SHUTDOWN_TIMEOUT="200", SWEEPQ_TEST_WAIT_AT_STEP="6")
    run_dir = root / f"{SWEEP_ID}-1"
    process = subprocess.Popen(torchrun_command(config, nproc=2), env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _wait_for([run_dir / f".test-waiting-rank{rank}" for rank in (0, 1)], process, "both ranks reaching step 6")
    process.send_signal(signal.SIGTERM)  # what the kubelet sends the pod's first process
    out, err = process.communicate(timeout=240)
    stopped = {"returncode": process.returncode, "output": out + err,
               "result": json.loads((run_dir / "result.json").read_text()),
               "item": plain_item(dynamodb, table, f"{job}-worker-0"), "wandb": wandb_run_end(run_dir),
               "wakes": [json.loads(m["Body"]) for m in sqs.receive_message(
                   QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])]}
    del env["SWEEPQ_TEST_WAIT_AT_STEP"]
    resumed = subprocess.run(torchrun_command(config, nproc=2), env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    return {"run_dir": run_dir, "stopped": stopped, "resumed": json.loads((run_dir / "result.json").read_text()),
            "item_after_resume": plain_item(dynamodb, table, f"{job}-worker-0")}


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step_with_a_checkpoint(sigterm_run):
    stopped = sigterm_run["stopped"]
    assert stopped["returncode"] != 0 and "stopping at this optimizer step" in stopped["output"]
    result = stopped["result"]
    # both ranks were signalled at step 6 and agreed at the next boundary (the reduce started at 6)
    assert (result["status"], result["exit_code"], result["global_step"]) == ("stopped", 143, 7)
    assert result["stop"] == {"signal": "SIGTERM", "received_here": True, "at_step": 7} and result["resumable"]
    assert "exitcode  : 143" in stopped["output"] or "exit code 143" in stopped["output"]


def test_sigterm_marks_the_pods_item_wakes_the_dispatcher_and_ends_the_wandb_run_preempted(sigterm_run):
    stopped = sigterm_run["stopped"]
    item = stopped["item"]
    assert (item["status"], item["metrics"]["global_step"], item["world_size"]) == ("stopped", 7, 2)
    assert stopped["wakes"][-1]["event"] == "trial-stopped"
    end = stopped["wandb"]["last"]
    assert end["exit_codes"] == [143] and end["preempting"] and "stopped" in end["tags"]


def test_after_sigterm_the_resume_ends_bit_identical_to_the_uninterrupted_run(sigterm_run, reference):
    resumed = sigterm_run["resumed"]
    assert resumed["resumed_from"] == {"epoch": 0, "step_in_epoch": 7, "global_step": 7, "world_size": 2}
    assert resumed["status"] == "completed" and resumed["global_step"] == 30
    after = torch.load(checkpoint_path(sigterm_run["run_dir"]), weights_only=True)["model"]
    uninterrupted = torch.load(checkpoint_path(reference["run_dir"]), weights_only=True)["model"]
    assert all(torch.equal(after[name], uninterrupted[name]) for name in after)
    assert sigterm_run["item_after_resume"]["status"] == "finished"


def test_sigterm_to_one_of_two_pods_stops_both_and_each_pod_writes_its_own_item(config, moto_server, tmp_path,
                                                                                  child_env):
    # GIVEN two pods (two torchrun agents, one rank each, c10d rendezvous) of one job
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server)
    table, job = "sweepq-two-pods-metrics", f"{SWEEP_ID}-2-a1"
    create_metrics_table(dynamodb, table)
    port = str(_free_port())
    rendezvous = ("--nnodes=2", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=two-pods")
    common = dict(SWEEP_ID=SWEEP_ID, TRIAL_INDEX="2", SWEEPQ_ATTEMPT="1", SWEEPQ_JOB_NAME=job,
                  SWEEPQ_METRICS_TABLE=table, SWEEPQ_OUTPUT_DIR=str(tmp_path), AWS_ENDPOINT_URL=moto_server,
                  WANDB_MODE="disabled", TORCH_ELASTIC_SHUTDOWN_TIMEOUT="200")
    pods = {}
    for name, extra in (("worker-0", {}), ("worker-1", {"SWEEPQ_TEST_WAIT_AT_STEP": "6"})):
        env = child_env(POD_NAME=f"{job}-{name}", **common, **extra)
        pods[name] = subprocess.Popen(torchrun_command(config, nproc=1, rendezvous=rendezvous), env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / f"{SWEEP_ID}-2"
    waiting = [run_dir / f".test-waiting-rank{rank}" for rank in (0, 1)]
    deadline = time.monotonic() + 240
    while not any(path.exists() for path in waiting):  # worker-1's rank, whichever rank it got
        assert time.monotonic() < deadline and all(p.poll() is None for p in pods.values()), "never reached step 6"
        time.sleep(0.1)
    # WHEN only worker-1's pod is deleted (its node drained)
    pods["worker-1"].send_signal(signal.SIGTERM)
    outputs = {name: process.communicate(timeout=240) for name, process in pods.items()}
    # THEN both ranks stopped at step 7 with a checkpoint there, and each pod's LOCAL_RANK 0 wrote its own item:
    # the signalled pod says "stopped", the other "preempted" (part of its job went away)
    items = {name: plain_item(dynamodb, table, f"{job}-{name}") for name in pods}
    assert {name: item["status"] for name, item in items.items()} == {"worker-0": "preempted", "worker-1": "stopped"}, \
        {name: out[1][-3000:] for name, out in outputs.items()}
    assert {int(item["metrics"]["global_step"]) for item in items.values()} == {7}
    assert all(item["job"] == job and item["world_size"] == 2 for item in items.values())
    assert torch.load(checkpoint_path(run_dir), weights_only=True)["progress"]["global_step"] == 7
    assert all(process.returncode != 0 for process in pods.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
