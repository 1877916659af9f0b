"""In-process training runs (one process, tiny model): results, reporting, resume, local models."""

from __future__ import annotations

import csv
import dataclasses
import json
import os

import pytest

from trainer.checkpoint import checkpoint_path
from trainer.config import ConfigError
from trainer.context import TrialContext
from trainer.distributed import DistInfo
from trainer.report import trial_key
from trainer.synthetic import LABEL_NAMES, synthetic_examples
from trainer.train import run, training_function

SUMMARY_KEYS = {"eval/loss", "eval/accuracy", "eval/f1", "test/loss", "test/accuracy", "test/f1", "train/loss",
                "epoch", "global_step", "samples_per_s", "best/eval/accuracy"}
SENTINEL_KEY = "sentinel-key-from-the-kubernetes-secret"


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
        dynamodb.create_table(TableName="sweepq", BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                              KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                         {"AttributeName": "sk", "KeyType": "RANGE"}])
        dynamodb.put_item(TableName="sweepq", Item={**trial_key("demo-1a2b3c4d", 5), "attempt": {"N": "1"}})
        queue_url = sqs.create_queue(QueueName="sweepq-wake")["QueueUrl"]
        env = {"SWEEP_ID": "demo-1a2b3c4d", "TRIAL_INDEX": "5", "TRIAL_ID": "demo-1a2b3c4d-5", "SWEEPQ_ATTEMPT": "1",
               "SWEEPQ_TABLE": "sweepq", "SWEEPQ_OUTPUT_DIR": str(root), "SWEEPQ_QUEUE_URL": queue_url,
               "WANDB_MODE": "offline", "WANDB_API_KEY": SENTINEL_KEY, "WANDB_PROJECT": "sweepq-tests"}
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv("WANDB_DIR", raising=False)
        result = run(config, os.environ)
        key_after = os.environ["WANDB_API_KEY"]
        raw_item = dynamodb.get_item(TableName="sweepq", Key=trial_key("demo-1a2b3c4d", 5))["Item"]
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return {"config": config, "result": result, "run_dir": root / "demo-1a2b3c4d-5", "key_after": key_after,
            "item": raw_item, "messages": messages, "root": root}


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


def test_metrics_reach_the_trial_item_with_the_summary_keys(dispatched_run):
    item = dispatched_run["item"]
    assert set(item["metrics"]["M"]) == SUMMARY_KEYS | {"best/epoch"}
    assert float(item["metrics"]["M"]["test/accuracy"]["N"]) == pytest.approx(
        dispatched_run["result"]["metrics"]["test/accuracy"])
    assert item["metrics_attempt"] == {"N": "1"}


def test_one_wake_message_when_finished(dispatched_run):
    (message,) = dispatched_run["messages"]
    body = json.loads(message["Body"])
    assert body == {"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": "demo-1a2b3c4d",
                    "trial_id": "demo-1a2b3c4d-5", "trial_index": 5, "attempt": 1, "ok": True}


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
    assert again["resumed_from"] == {"epoch": 2, "batches_in_epoch": 0, "global_step": 120}
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


def test_gradient_accumulation_makes_one_step_per_window(tmp_path, tiny):
    # 240 examples / 16 = 15 batches per epoch; windows of 4 -> 4 optimizer steps (the last one of 3 batches)
    result = training_function(tiny(gradient_accumulation_steps=4), TrialContext.from_env({}, output_dir=str(tmp_path)),
                               DistInfo())
    assert result["global_step"] == 4 and result["history"][0]["global_step"] == 4
