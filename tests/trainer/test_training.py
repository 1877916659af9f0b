"""In-process training runs (one process, tiny model): results, reporting, resume, local models."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest
import torch
from trainer_support import create_metrics_table, plain_item

from trainer.checkpoint import checkpoint_path
from trainer.config import ConfigError
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.synthetic import LABEL_NAMES, synthetic_examples
from trainer.train import run, training_function

SUMMARY_KEYS = {"eval/loss", "eval/accuracy", "eval/f1", "test/loss", "test/accuracy", "test/f1", "train/loss",
                "epoch", "global_step", "samples_per_s", "best/eval/accuracy"}
SENTINEL_KEY = "sentinel-key-from-the-kubernetes-secret"
JOB = "demo-1a2b3c4d-5-a1"
POD = f"{JOB}-local-0"


@pytest.fixture(scope="module")
def dispatched_run(tmp_path_factory, tiny):
    """``run()`` as the dispatcher launches it: trial env, moto DynamoDB + SQS, W&B offline, a key set."""
    from moto import mock_aws

    root = tmp_path_factory.mktemp("dispatched")
    config = tiny(synthetic_samples=1200, epochs=2, log_every=10)
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        import boto3

        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
        create_metrics_table(dynamodb, "sweepq-metrics")
        queue_url = sqs.create_queue(QueueName="sweepq-wake")["QueueUrl"]
        env = {"SWEEP_ID": "demo-1a2b3c4d", "TRIAL_INDEX": "5", "TRIAL_ID": "demo-1a2b3c4d-5", "SWEEPQ_ATTEMPT": "1",
               "SWEEPQ_JOB_NAME": JOB, "SWEEPQ_KIND": "local", "POD_NAME": POD,
               "SWEEPQ_METRICS_TABLE": "sweepq-metrics", "SWEEPQ_WAKE_QUEUE_URL": queue_url,
               "SWEEPQ_OUTPUT_DIR": str(root), "WANDB_MODE": "offline", "WANDB_API_KEY": SENTINEL_KEY,
               "WANDB_PROJECT": "sweepq-tests"}
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("WANDB_DIR", raising=False)
        result = run(config, os.environ)
        key_after = os.environ["WANDB_API_KEY"]
        item = plain_item(dynamodb, "sweepq-metrics", POD)
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return {"config": config, "result": result, "run_dir": root / "demo-1a2b3c4d-5", "key_after": key_after,
            "item": item, "messages": messages, "root": root}


def test_tiny_model_learns_the_synthetic_task(dispatched_run):
    metrics = dispatched_run["result"]["metrics"]
    assert metrics["test/accuracy"] > 0.6 and metrics["eval/accuracy"] > 0.6  # chance is 1/3
    assert metrics["global_step"] == 2 * 60 and metrics["epoch"] == 2


def test_result_json_and_predictions(dispatched_run):
    run_dir = dispatched_run["run_dir"]
    result = json.loads((run_dir / "result.json").read_text())
    assert SUMMARY_KEYS <= set(result["metrics"])
    assert [entry["epoch"] for entry in result["history"]] == [1, 2]
    assert result["best"]["value"] == max(entry["eval/accuracy"] for entry in result["history"])
    assert result["config"]["learning_rate"] == 2e-3 and result["samples_per_s"] > 0 and result["wall_time_s"] > 0
    with (run_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120 and set(rows[0]) >= {"index", "text", "label", "predicted", "p_positive"}
    accuracy = sum(row["label"] == row["predicted"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(result["metrics"]["test/accuracy"])


def test_metrics_item_of_the_pod_has_summary_history_and_final(dispatched_run):
    item, result = dispatched_run["item"], dispatched_run["result"]
    assert (item["pod"], item["job"], item["trial_id"], item["attempt"], item["world_size"], item["status"]) == \
        (POD, JOB, "demo-1a2b3c4d-5", 1, 1, "finished")
    assert set(item["metrics"]) == SUMMARY_KEYS | {"best/epoch", "best/position"}
    assert float(item["metrics"]["test/accuracy"]) == pytest.approx(result["metrics"]["test/accuracy"])
    assert item["final"] == item["metrics"]
    # one history position per epoch, the same values as result.json's history
    assert sorted(item["history"]) == ["0", "1"]
    for position, point in enumerate(result["history"]):
        assert {k: float(v) for k, v in item["history"][str(position)].items()} == pytest.approx(point)


def test_wake_triggers_carry_job_and_pod_and_end_with_finished(dispatched_run):
    bodies = [json.loads(message["Body"]) for message in dispatched_run["messages"]]
    assert bodies[-1] == {"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": "demo-1a2b3c4d",
                          "job": JOB, "pod": POD}
    # progress triggers (at most one per 30 s) come before it; the first evaluation always sends one
    assert bodies[0]["event"] == "trial-progress" and {b["event"] for b in bodies[:-1]} == {"trial-progress"}


def test_wandb_offline_run_keyed_by_trial_and_key_untouched(dispatched_run):
    assert dispatched_run["key_after"] == SENTINEL_KEY
    runs = list((dispatched_run["run_dir"] / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith("-demo-1a2b3c4d-5")
    assert b"demo-1a2b3c4d" in (runs[0] / "run-demo-1a2b3c4d-5.wandb").read_bytes()  # the group


def test_rerun_of_a_finished_trial_resumes_at_the_end(dispatched_run):
    # GIVEN the finished trial's directory WHEN the same trial runs again (a retry after a lost status)
    context = TrialContext.from_env({"TRIAL_ID": "demo-1a2b3c4d-5"}, output_dir=str(dispatched_run["root"]))
    again = training_function(dispatched_run["config"], context, DistInfo())
    # THEN nothing is retrained and the metrics are the same
    assert again["resumed_from"] == {"epoch": 2, "step_in_epoch": 0, "global_step": 120, "world_size": 1}
    first = dispatched_run["result"]["metrics"]
    assert {k: again["metrics"][k] for k in SUMMARY_KEYS} == {k: first[k] for k in SUMMARY_KEYS}


def test_changed_hyperparameters_do_not_load_the_checkpoint(dispatched_run):
    context = TrialContext.from_env({"TRIAL_ID": "demo-1a2b3c4d-5"}, output_dir=str(dispatched_run["root"]))
    changed = dataclasses.replace(dispatched_run["config"], learning_rate=0.01)
    with pytest.raises(ConfigError, match="learning_rate: 0.002 -> 0.01"):
        training_function(changed, context, DistInfo())


def test_resume_false_starts_over(tmp_path, tiny):
    context = TrialContext.from_env({}, output_dir=str(tmp_path))
    first = training_function(tiny(), context, DistInfo())
    again = training_function(tiny(resume=False, learning_rate=1e-3), context, DistInfo())
    assert again["resumed_from"] is None and again["global_step"] == first["global_step"] == 15
    assert checkpoint_path(context.run_dir).exists()


def test_local_model_directory_and_csv_data(tmp_path, tiny):
    """``--model=<dir>`` (what a hub name resolves to) with a prepared CSV directory."""
    from transformers import BertConfig, BertForSequenceClassification

    from trainer.model import train_wordpiece, wrap_tokenizer
    from trainer.prepare import PrepareConfig, prepare

    # GIVEN a prepared data directory and a saved model + tokenizer directory
    raw = tmp_path / "raw.csv"
    with raw.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((text, LABEL_NAMES[label]) for text, label in synthetic_examples(300, seed=9))
    prepare(PrepareConfig(input=str(raw), output_dir=str(tmp_path / "data")))
    tokenizer = wrap_tokenizer(train_wordpiece([t for t, _ in synthetic_examples(300, seed=9)], 500).to_str())
    model_dir = tmp_path / "model"
    BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    # WHEN trained on it
    config = tiny(model=str(model_dir), data=str(tmp_path / "data"), dropout=0.2)
    result = training_function(config, TrialContext.from_env({}, output_dir=str(tmp_path / "out")), DistInfo())
    # THEN the three labels were used and the results written
    assert result["metrics"]["global_step"] == 15 and result["metrics"]["test/accuracy"] >= 0
    rows = list(csv.DictReader((tmp_path / "out" / "standalone" / "predictions.csv").open()))
    assert {row["label"] for row in rows} <= set(LABEL_NAMES) and "p_neutral" in rows[0]


def test_micro_batches_change_memory_not_the_result(tmp_path, tiny):
    # GIVEN the same trial trained with the whole global batch of 16 per forward, and in micro-batches of 4
    whole = training_function(tiny(dropout=0.0), TrialContext.from_env({}, output_dir=str(tmp_path / "a")), DistInfo())
    split = training_function(tiny(dropout=0.0, micro_batch_size=4),
                              TrialContext.from_env({}, output_dir=str(tmp_path / "b")), DistInfo())
    # THEN the same 15 optimizer steps and weights equal up to float summation order
    assert whole["global_step"] == split["global_step"] == 15
    a, b = (torch.load(checkpoint_path(tmp_path / d / "standalone"), weights_only=True)["model"] for d in "ab")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    assert split["metrics"]["eval/loss"] == pytest.approx(whole["metrics"]["eval/loss"], rel=1e-3)


@pytest.mark.slow
def test_an_evaluation_checkpointed_but_never_reported_reaches_the_item_at_the_next_start(tmp_path, moto_server,
                                                                                          child_env):
    import subprocess
    import sys

    import boto3

    # GIVEN a run that evaluated epoch 1 and checkpointed it, but never reported it (stopped at step 16)
    args = [sys.executable, "-m", "trainer", "--synthetic_samples=300", "--epochs=2", "--max_length=16",
            "--batch_size=16", "--checkpoint_every=0"]
    base = dict(TRIAL_ID="late-0", SWEEPQ_OUTPUT_DIR=str(tmp_path), WANDB_MODE="disabled")
    first = subprocess.run(args, env=child_env(**base, SWEEPQ_TEST_SIGNAL_AT_STEP="16"), capture_output=True,
                           text=True, timeout=240)
    assert first.returncode == 143, first.stderr[-3000:]
    # WHEN the next start reports to the metrics table and dies right after one more step
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server)
    create_metrics_table(dynamodb, "sweepq-late-metrics")
    env = child_env(**base, POD_NAME="late-0-a1-local-0", SWEEPQ_JOB_NAME="late-0-a1", AWS_ENDPOINT_URL=moto_server,
                    SWEEPQ_METRICS_TABLE="sweepq-late-metrics", SWEEPQ_TEST_CRASH_AT_STEP="17",
                    SWEEPQ_TEST_CRASH_RANK="0")
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 13, second.stderr[-3000:]
    # THEN the item already holds epoch 1's evaluation, from the checkpoint
    item = plain_item(dynamodb, "sweepq-late-metrics", "late-0-a1-local-0")
    assert item["status"] == "running" and sorted(item["history"]) == ["0"]
    assert item["history"]["0"]["global_step"] == 15 and item["metrics"]["global_step"] == 16


def test_eval_every_positions_survive_a_stop_and_resume_unshifted(tmp_path, tiny, monkeypatch):
    from trainer.stop import StopRequests

    # GIVEN evaluations every 6 of 2 x 15 steps: positions at steps 6, 12, 18, 24 and the last one, 30
    config = tiny(epochs=2, eval_every=6, checkpoint_every=5)
    reference = training_function(config, TrialContext.from_env({"TRIAL_ID": "ref-0"}, output_dir=str(tmp_path)),
                                  DistInfo())
    assert [point["global_step"] for point in reference["history"]] == [6, 12, 18, 24, 30]
    assert [point["epoch"] for point in reference["history"]] == [0.4, 0.8, 1.2, 1.6, 2.0]
    # WHEN the same trial is stopped after step 14 (2 positions taken) and resumed
    context = TrialContext.from_env({"TRIAL_ID": "stopped-0"}, output_dir=str(tmp_path))
    monkeypatch.setenv("SWEEPQ_TEST_SIGNAL_AT_STEP", "14")
    stop = StopRequests(DistInfo()).install()
    try:
        stopped = training_function(config, context, DistInfo(), stop=stop)
    finally:
        stop.uninstall()
    monkeypatch.delenv("SWEEPQ_TEST_SIGNAL_AT_STEP")
    assert stopped["status"] == "stopped" and len(stopped["history"]) == 2
    resumed = training_function(config, context, DistInfo())
    # THEN the resumed run continues the numbering: the same five positions with the same values
    assert resumed["history"] == reference["history"]
    assert resumed["best"]["position"] == reference["best"]["position"]
