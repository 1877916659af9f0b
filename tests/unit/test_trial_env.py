"""CONTRACTS C2: the trial environment — sweepq's own variables always win over the sender's."""

from __future__ import annotations

import pytest
from helpers import grid_spec

from dispatcher.backends import make_backend
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.spec import validate_sweep
from dispatcher.settings import Settings
from dispatcher.trials import launch_request, trial_env

SWEEP = "envs-abcdefgh"
HOSTILE = {"SWEEP_ID": "someone-elses", "TRIAL_ID": "x", "WANDB_RUN_ID": "hijack", "SWEEPQ_TABLE": "sweepq",
           "SWEEPQ_QUEUE_URL": "https://sqs/evil", "SWEEPQ_ATTEMPT": "9", "FOO": "bar", "WANDB_TAGS": "a,b"}


def _sweep():
    return validate_sweep({**grid_spec("envs", 1, 1), "project": "proj"}, source=SWEEP)


def _hostile(kind: str) -> LaunchSettings:
    """Launch settings carrying names sweepq owns, built past validation (which refuses them): as if
    stored before the rule existed — the trial environment must still be sweepq's (defence in depth)."""
    return LaunchSettings(kind=kind).model_copy(update={"env": HOSTILE})


def test_validation_refuses_a_sender_env_that_names_a_variable_sweepq_owns():
    with pytest.raises(ValueError, match="env.SWEEP_ID"):
        LaunchSettings(kind="pytorchjob", env=HOSTILE)


def test_sweepq_variables_win_and_the_sender_cannot_set_names_sweepq_owns():
    settings = Settings.load({}, backend="pytorchjob", table="team", wake_queue_url="https://sqs/team-wake")
    launch = _hostile("pytorchjob")
    env = trial_env(settings, _sweep(), SWEEP, launch, 0, 2)
    assert (env["SWEEP_ID"], env["TRIAL_ID"], env["WANDB_RUN_ID"], env["SWEEPQ_ATTEMPT"]) == \
        (SWEEP, f"{SWEEP}-0", f"{SWEEP}-0", "2")
    assert (env["SWEEPQ_JOB_NAME"], env["SWEEPQ_KIND"], env["SWEEPQ_METRICS_TABLE"]) == \
        (f"{SWEEP}-0-a2", "pytorchjob", "team-metrics")
    assert env["SWEEPQ_WAKE_QUEUE_URL"] == "https://sqs/team-wake" and env["WANDB_PROJECT"] == "proj"
    # no handle on the sweep table or the sweep queue, whoever asks for one
    assert "SWEEPQ_TABLE" not in env and "SWEEPQ_QUEUE_URL" not in env
    # the sender's own names pass
    assert (env["FOO"], env["WANDB_TAGS"]) == ("bar", "a,b")


def test_no_wake_queue_url_without_a_wake_queue_or_with_wake_off():
    launch = LaunchSettings(kind="job")
    assert "SWEEPQ_WAKE_QUEUE_URL" not in trial_env(Settings(), _sweep(), SWEEP, launch, 0, 1)
    off = Settings(wake=False, wake_queue_url="https://sqs/w")
    assert "SWEEPQ_WAKE_QUEUE_URL" not in trial_env(off, _sweep(), SWEEP, launch, 0, 1)


@pytest.mark.parametrize("kind", ["pytorchjob", "job", "trainjob"])
def test_every_kinds_manifest_carries_sweepqs_values_not_the_senders(kind):
    settings = Settings.load({}, backend=kind, namespace="sweepq")
    launch = _hostile(kind)
    manifest = make_backend(kind, api_client=None, namespace="sweepq").dryrun(
        launch_request(settings, _sweep(), SWEEP, launch, 0, 1)).request

    def env_lists(node):  # every `env:` list of the manifest (containers, a TrainJob's trainer)
        if isinstance(node, dict):
            if isinstance(node.get("env"), list):
                yield node["env"]
            for value in node.values():
                yield from env_lists(value)
        elif isinstance(node, list):
            for value in node:
                yield from env_lists(value)

    found = list(env_lists(manifest))
    assert found
    for entries in found:
        env = {e["name"]: e.get("value") for e in entries}
        assert env["SWEEP_ID"] == SWEEP and env["WANDB_RUN_ID"] == f"{SWEEP}-0" and env["SWEEPQ_ATTEMPT"] == "1"
        assert "SWEEPQ_TABLE" not in env and "SWEEPQ_QUEUE_URL" not in env and env["FOO"] == "bar"


# -- the sweep in W&B's UI: WANDB_SWEEP_ID with the entity/project W&B filed the sweep under ---------

def _registered(kind: str = "pytorchjob", **extra: str) -> LaunchSettings:
    return LaunchSettings(kind=kind, wandb_sweep_id="f2ffjhx1", wandb_entity="team-a", wandb_project="nlp", **extra)


def test_a_registered_sweeps_trials_attach_to_it_in_the_project_w_and_b_filed_it_under():
    settings = Settings.load({}, backend="pytorchjob", wandb_project="team-default")
    env = trial_env(settings, _sweep(), SWEEP, _registered(), 3, 1)
    # W&B's answer wins over the file's project: the run must live where the sweep does
    assert (env["WANDB_SWEEP_ID"], env["WANDB_ENTITY"], env["WANDB_PROJECT"]) == ("f2ffjhx1", "team-a", "nlp")
    assert env["WANDB_RUN_ID"] == env["TRIAL_ID"] == f"{SWEEP}-3"  # one run per trial, as before
    # without a W&B sweep nothing changes: the file's project, no sweep id, no entity
    plain = trial_env(settings, _sweep(), SWEEP, LaunchSettings(kind="pytorchjob"), 3, 1)
    assert plain["WANDB_PROJECT"] == "proj" and "WANDB_SWEEP_ID" not in plain and "WANDB_ENTITY" not in plain


def test_the_sender_cannot_set_the_w_and_b_sweep_through_env():
    hostile = _registered().model_copy(update={"env": {"WANDB_SWEEP_ID": "zzzzzzzz", "WANDB_PROJECT": "x",
                                                       "WANDB_ENTITY": "y", "FOO": "bar"}})
    env = trial_env(Settings(), _sweep(), SWEEP, hostile, 0, 1)
    assert (env["WANDB_SWEEP_ID"], env["WANDB_ENTITY"], env["WANDB_PROJECT"], env["FOO"]) == \
        ("f2ffjhx1", "team-a", "nlp", "bar")
    with pytest.raises(ValueError, match="env.WANDB_SWEEP_ID"):
        LaunchSettings(kind="job", env={"WANDB_SWEEP_ID": "f2ffjhx1"})


@pytest.mark.parametrize("field, value", [
    ("wandb_project", "$(WANDB_API_KEY)"),  # the kubelet expands $(NAME) from the container's env
    ("wandb_project", "team/nlp"),
    ("wandb_project", "nlp\nEVIL=1"),
    ("wandb_entity", "team a"),
    ("wandb_entity", "x" * 129),
    ("wandb_entity", ".."),
])
def test_the_w_and_b_entity_and_project_are_plain_names(field, value):
    with pytest.raises(ValueError, match=f"{field}: .* is not a plain W&B name"):
        LaunchSettings(kind="job", wandb_sweep_id="f2ffjhx1", **{field: value})


def test_entity_and_project_only_with_a_w_and_b_sweep_id():
    with pytest.raises(ValueError, match="only with wandb_sweep_id"):
        LaunchSettings(kind="job", wandb_project="nlp")
    launch = _registered("job")
    assert LaunchSettings.model_validate(launch.model_dump(mode="json")) == launch  # stored and read back


@pytest.mark.parametrize("kind", ["pytorchjob", "job", "trainjob"])
def test_every_kinds_manifest_carries_the_w_and_b_sweep(kind):
    settings = Settings.load({}, backend=kind, namespace="sweepq")
    manifest = make_backend(kind, api_client=None, namespace="sweepq").dryrun(
        launch_request(settings, _sweep(), SWEEP, _registered(kind), 0, 1)).request
    text = str(manifest)
    for name, value in (("WANDB_SWEEP_ID", "f2ffjhx1"), ("WANDB_ENTITY", "team-a"), ("WANDB_PROJECT", "nlp")):
        assert f"'name': '{name}', 'value': '{value}'" in text
