"""Real ``torchrun`` on CPU (gloo), two ranks: sharded evaluation, rank-0-only side effects, elastic restart.

Two launches are shared by the tests of this module: an uninterrupted reference run (reporting to
moto's server, W&B offline) and a run whose rank 1 dies mid-epoch on the first attempt.
"""

from __future__ import annotations

import json

import boto3
import pytest
import torch

from trainer.checkpoint import checkpoint_path
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.evaluate import evaluate
from trainer.report import trial_key
from trainer.train import build_components

pytestmark = pytest.mark.slow

SWEEP_ID = "bert-lr-1a2b3c4d"
TABLE = "sweepq-torchrun"


@pytest.fixture(scope="module")
def config(tiny):
    # 480 training examples, 2 ranks x 16 per batch: 15 optimizer steps per epoch, 30 in all.
    return tiny(synthetic_samples=600, epochs=2, checkpoint_every=4)


@pytest.fixture(scope="module")
def reference(config, moto_server, tmp_path_factory, torchrun, child_env):
    """Attempt 2 of trial 0, as the dispatcher launches it, with DynamoDB, a wake queue and W&B offline."""
    root = tmp_path_factory.mktemp("reference")
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server)
    dynamodb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}])
    dynamodb.put_item(TableName=TABLE, Item={**trial_key(SWEEP_ID, 0), "attempt": {"N": "2"}})
    sqs = boto3.client("sqs", endpoint_url=moto_server)
    queue_url = sqs.create_queue(QueueName="torchrun-wake")["QueueUrl"]
    env = child_env(SWEEP_ID=SWEEP_ID, TRIAL_INDEX="0", TRIAL_ID=f"{SWEEP_ID}-0", SWEEPQ_ATTEMPT="2",
                    SWEEPQ_TABLE=TABLE, SWEEPQ_QUEUE_URL=queue_url, SWEEPQ_OUTPUT_DIR=str(root),
                    AWS_ENDPOINT_URL=moto_server, WANDB_MODE="offline", WANDB_RUN_GROUP=SWEEP_ID,
                    WANDB_RUN_ID=f"{SWEEP_ID}-0")
    torchrun(config, env=env)
    run_dir = root / f"{SWEEP_ID}-0"
    return {
        "root": root, "run_dir": run_dir, "result": json.loads((run_dir / "result.json").read_text()),
        "item": dynamodb.get_item(TableName=TABLE, Key=trial_key(SWEEP_ID, 0))["Item"],
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


def test_metrics_reported_once_per_attempt_and_one_wake(reference):
    item = reference["item"]
    assert item["metrics_attempt"] == {"N": "2"}
    assert float(item["metrics"]["M"]["eval/accuracy"]["N"]) == pytest.approx(
        reference["result"]["metrics"]["eval/accuracy"])
    assert {"test/f1", "best/eval/accuracy", "samples_per_s", "train/loss"} <= set(item["metrics"]["M"])
    (message,) = reference["messages"]
    assert json.loads(message["Body"])["ok"] is True and json.loads(message["Body"])["attempt"] == 2


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
    assert result["resumed_from"] == {"epoch": 0, "batches_in_epoch": 8, "global_step": 8}
    # ... and ended with exactly the weights and metrics of the uninterrupted run with the same seed
    crashed = torch.load(checkpoint_path(tmp_path / "crash-0"), weights_only=True)["model"]
    uninterrupted = torch.load(checkpoint_path(reference["run_dir"]), weights_only=True)["model"]
    assert crashed.keys() == uninterrupted.keys()
    assert all(torch.equal(crashed[name], uninterrupted[name]) for name in crashed)
    for key in ("eval/loss", "eval/accuracy", "test/f1", "train/loss"):
        assert result["metrics"][key] == reference["result"]["metrics"][key]
