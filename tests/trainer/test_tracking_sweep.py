"""The trainer's W&B run attaches to the sweep producer submit registered: the environment the
dispatcher gives a trial (``dispatcher.trials.trial_env``) → the trainer's ``Tracker`` → W&B's real
SDK, online against the loopback stand-in (never the internet). W&B's server files a run under a
sweep by the ``sweep`` of the run's ``UpsertBucket``; the SDK fills it from ``WANDB_SWEEP_ID``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
from wandb_standin import WandbStandIn

from dispatcher.core.launch import LaunchSettings
from dispatcher.core.spec import validate_sweep
from dispatcher.settings import Settings
from dispatcher.trials import trial_env
from trainer.tracking import Tracker

wandb = pytest.importorskip("wandb")
pytest.importorskip("sweeps")

KEY = "local-" + "k3y" * 14
SWEEP = "bert-lr-abcdefgh"


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WandbStandIn]:
    # W&B's SDK keeps one process-wide singleton (settings, service, and WANDB_SERVICE in the
    # environment naming the service's socket): a test that ran W&B offline earlier in this process
    # left it set up, and this run would come up offline too. Tear it down first — before the
    # environment is saved below, or monkeypatch would restore the dead service's WANDB_SERVICE
    # afterwards and the next test's W&B would connect to a socket that is gone.
    wandb.teardown()
    os.environ.pop("WANDB_SERVICE", None)
    for name in [k for k in os.environ if k.startswith(("WANDB_", "SWEEP", "TRIAL_"))] + ["NETRC"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    (tmp_path / "home").mkdir()
    with WandbStandIn(api_key=KEY) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)  # what the pod gets from the wandb Secret
        try:
            yield server
        finally:  # while the stand-in still answers; and no WANDB_SERVICE of ours outlives the test
            wandb.teardown()
            os.environ.pop("WANDB_SERVICE", None)


def test_the_trainers_run_appears_under_the_w_and_b_sweep(standin: WandbStandIn, monkeypatch, tmp_path) -> None:
    # GIVEN trial 2's environment as the dispatcher sets it for a sweep registered with W&B
    sweep = validate_sweep({"name": "bert-lr", "method": "grid", "project": "ignored-for-the-sweeps",
                            "parameters": {"learning_rate": {"values": [1e-3, 1e-4, 1e-5]}}})
    launch = LaunchSettings(kind="local", wandb_sweep_id="sw000000", wandb_entity="team-a", wandb_project="nlp")
    env = trial_env(Settings(), sweep, SWEEP, launch, 2, 1)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # WHEN the trainer starts its run as it always does (project from WANDB_PROJECT, id = the trial id)
    tracker = Tracker.start(is_main=True, run_id=env["TRIAL_ID"], group=SWEEP, project=env["WANDB_PROJECT"],
                            config={"learning_rate": 1e-5}, run_dir=tmp_path / "run")
    try:
        # THEN W&B's server is told the run belongs to the sweep, in the sweep's entity and project
        assert (tracker.run.sweep_id, tracker.run.entity, tracker.run.project) == ("sw000000", "team-a", "nlp")
        assert tracker.run.id == f"{SWEEP}-2"  # still one run per trial (WANDB_RUN_ID): retries resume it
        tracker.log({"eval/loss": 0.5}, global_step=1)
    finally:
        tracker.finish("completed")
    first = standin.runs[0]
    assert (first["name"], first["sweep"], first["entity"], first["project"], first["groupName"]) == \
        (f"{SWEEP}-2", "sw000000", "team-a", "nlp", SWEEP)
    assert all(run["name"] == f"{SWEEP}-2" for run in standin.runs)  # no second, orphan run
    assert all(KEY.encode() not in r.body for r in standin.requests)
