"""Argument parsing (W&B ``${args}`` style) and the dispatcher environment contract. Pure, no torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.config import ConfigError, TrainConfig, parse_args
from trainer.context import TrialContext


def test_wandb_style_arguments_reach_the_config():
    # GIVEN the arguments a W&B sweep agent produces from ${args}
    argv = ["--learning_rate=0.001", "--batch_size=16", "--resume=False", "--optimizer=sgd", "--epochs=2.0"]
    # WHEN parsed
    config = parse_args(argv)
    # THEN every value has its field's type
    assert (config.learning_rate, config.batch_size, config.resume, config.optimizer, config.epochs) == \
        (0.001, 16, False, "sgd", 2)


def test_space_separated_values_dashes_and_bare_flags():
    config = parse_args(["--learning-rate", "3e-4", "--seed", "-1", "--warmup_ratio", "0", "--resume"])
    assert (config.learning_rate, config.seed, config.warmup_ratio, config.resume) == (3e-4, -1, 0.0, True)


@pytest.mark.parametrize("raw, expected", [("True", True), ("false", False), ("1", True), ("no", False)])
def test_boolean_spellings(raw, expected):
    assert parse_args([f"--resume={raw}"]).resume is expected


def test_optional_value_none():
    assert parse_args(["--output_dir=None"]).output_dir is None
    assert parse_args(["--output_dir=/tmp/x"]).output_dir == "/tmp/x"


def test_unknown_argument_names_it_suggests_and_lists_valid_ones():
    with pytest.raises(ConfigError) as error:
        parse_args(["--learning_rat=0.1"])
    message = str(error.value)
    assert "--learning_rat" in message and "did you mean --learning_rate?" in message
    assert "--batch_size" in message and "--warmup_ratio" in message


@pytest.mark.parametrize("argv, fragment", [
    (["--batch_size=1.5"], "--batch_size='1.5' is not an integer"),
    (["--learning_rate=fast"], "--learning_rate='fast' is not a number"),
    (["--resume=maybe"], "--resume='maybe' is not a boolean"),
    (["--optimizer=adam"], "--optimizer='adam' is not one of adamw, sgd"),
    (["--learning_rate=-1"], "--learning_rate=-1.0 is out of range"),
    (["--warmup_ratio=1.5"], "--warmup_ratio=1.5 is out of range"),
    (["--seed=1", "--seed=2"], "--seed is given twice"),
    (["--epochs"], "--epochs needs a value"),
    (["learning_rate=0.1"], "unexpected argument 'learning_rate=0.1'"),
], ids=["float-for-int", "word-for-float", "bad-bool", "bad-choice", "negative-lr", "warmup>1", "twice",
        "missing-value", "positional"])
def test_invalid_values_name_field_and_value(argv, fragment):
    with pytest.raises(ConfigError) as error:
        parse_args(argv)
    assert fragment in str(error.value)


def test_retired_accumulation_argument_says_what_replaced_it():
    with pytest.raises(ConfigError) as error:
        parse_args(["--gradient_accumulation_steps=4"])
    assert "--batch_size is the global batch" in str(error.value) and "--micro_batch_size" in str(error.value)


def test_new_arguments_parse_and_are_checked():
    config = parse_args(["--precision=fp16", "--micro_batch_size=8", "--eval_every=50", "--compile=True"])
    assert (config.precision, config.micro_batch_size, config.eval_every, config.compile) == ("fp16", 8, 50, True)
    for bad in ("--micro_batch_size=-1", "--eval_every=-5"):
        with pytest.raises(ConfigError, match="out of range"):
            parse_args([bad])


def test_hyperparameters_exclude_operational_fields():
    hyper = TrainConfig(output_dir="/x", checkpoint_every=7).hyperparameters()
    assert "learning_rate" in hyper and "seed" in hyper and "eval_every" in hyper
    assert not {"output_dir", "checkpoint_every", "resume", "micro_batch_size", "compile"} & set(hyper)


def test_cli_reports_bad_arguments_with_exit_code_2(capsys):
    assert main(["--nope=1"]) == 2
    assert "unknown argument --nope" in capsys.readouterr().err


def test_cli_help_lists_every_field(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--learning_rate=float" in out and "--optimizer=adamw|sgd" in out
    assert "--precision=auto|bf16|fp16|fp32" in out and "global batch size" in out and "--eval_every=int" in out


def test_dispatcher_environment_contract():
    # GIVEN the environment the dispatcher sets for attempt 2 of trial 7 (CONTRACTS C2)
    env = {"SWEEP_ID": "bert-lr-1a2b3c4d", "TRIAL_INDEX": "7", "TRIAL_ID": "bert-lr-1a2b3c4d-7",
           "SWEEPQ_ATTEMPT": "2", "SWEEPQ_JOB_NAME": "bert-lr-1a2b3c4d-7-a2", "SWEEPQ_KIND": "pytorchjob",
           "POD_NAME": "bert-lr-1a2b3c4d-7-a2-worker-0", "SWEEPQ_METRICS_TABLE": "sweepq-metrics",
           "SWEEPQ_WAKE_QUEUE_URL": "http://q-wake", "SWEEPQ_OUTPUT_DIR": "/shared/out", "WANDB_PROJECT": "proj"}
    context = TrialContext.from_env(env)
    assert context.run_dir == Path("/shared/out/bert-lr-1a2b3c4d-7")
    assert (context.attempt, context.trial_index, context.publishes_metrics) == (2, 7, True)
    assert (context.job_name, context.pod_name, context.metrics_table, context.wake_queue_url, context.kind) == \
        ("bert-lr-1a2b3c4d-7-a2", "bert-lr-1a2b3c4d-7-a2-worker-0", "sweepq-metrics", "http://q-wake", "pytorchjob")
    # the sweep table is none of the trainer's business any more
    assert not {"table", "queue_url"} & set(vars(context))
    # --output_dir beats SWEEPQ_OUTPUT_DIR
    assert TrialContext.from_env(env, output_dir="/elsewhere").run_dir == Path("/elsewhere/bert-lr-1a2b3c4d-7")


def test_standalone_without_environment():
    context = TrialContext.from_env({})
    assert context.run_dir == Path("outputs/standalone")
    assert (context.trial_id, context.attempt, context.publishes_metrics) == (None, 1, False)


def test_trial_id_derived_from_sweep_and_index():
    assert TrialContext.from_env({"SWEEP_ID": "s-1", "TRIAL_INDEX": "4"}).trial_id == "s-1-4"


@pytest.mark.parametrize("env, fragment", [
    ({"TRIAL_INDEX": "x"}, "TRIAL_INDEX='x' is not an integer"),
    ({"SWEEPQ_ATTEMPT": "0"}, "SWEEPQ_ATTEMPT=0 is below 1"),
    ({"TRIAL_ID": "../other"}, "TRIAL_ID='../other' is not usable"),
])
def test_bad_environment_is_a_config_error(env, fragment):
    with pytest.raises(ConfigError) as error:
        TrialContext.from_env(env)
    assert fragment in str(error.value)
