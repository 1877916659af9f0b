"""Registering a sweep with W&B (producer/wandb_sweep.py): W&B's real SDK, pointed with
``WANDB_BASE_URL`` at a loopback stand-in for W&B's GraphQL API — never the internet."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from wandb_standin import WandbStandIn

from dispatcher.core.spec import validate_sweep
from producer.sweepfile import build_submit, launch_payload, resolve
from producer.wandb_sweep import (
    WandbRegistrationError,
    credentials_source,
    decide,
    register,
    wandb_config,
)

wandb = pytest.importorskip("wandb")
pytest.importorskip("sweeps")
# wandb.sweep() itself builds its printed URL with a helper it has deprecated
pytestmark = pytest.mark.filterwarnings("ignore:Read the `app_url` setting:DeprecationWarning")

KEY = "local-" + "k3y" * 14  # W&B's SDK wants 40+ characters
ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "name": "bert-lr", "method": "bayes", "run_cap": 12, "program": "train.py",
    "metric": {"name": "eval/loss", "goal": "minimize", "impute": "worst"},
    "early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 2},
    "parameters": {"learning_rate": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
                   "warmup": {"min": 0, "max": 0.3},
                   "optimizer": {"parameters": {"name": {"values": ["adamw", "sgd"]}}}},
    "sweepq": {"kind": "local", "gpus_per_node": 0},
}


@pytest.fixture
def w_and_b_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A clean W&B environment: no user files, no mode override; the SDK torn down after."""
    for name in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    (tmp_path / "home").mkdir()
    yield
    wandb.teardown()  # the SDK's process-wide settings must not leak into the next test


@pytest.fixture
def standin(w_and_b_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbStandIn]:
    with WandbStandIn(api_key=KEY) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        yield server


def test_the_sweep_is_created_in_w_and_b_with_a_local_controller(standin: WandbStandIn, capfd, caplog) -> None:
    # GIVEN a bayes + hyperband sweep file with a sweepq block, and W&B credentials
    sweep = validate_sweep(SPEC)
    before = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    caplog.set_level(logging.DEBUG)
    # WHEN producer submit registers it
    result = register(sweep, sweepq_sweep_id="bert-lr-abcdefgh", project="nlp")
    # THEN W&B's API got one UpsertSweep whose config is the file, locally controlled
    [created] = standin.sweeps
    assert (result.sweep_id, result.entity, result.project) == (created["name"], "team-a", "nlp")
    assert result.url == f"{standin.url}/team-a/nlp/sweeps/{created['name']}"
    config = created["config"]
    assert config["controller"] == {"type": "local"}
    assert "sweepq" not in config and config["name"] == "bert-lr"
    assert config["parameters"]["learning_rate"] == SPEC["parameters"]["learning_rate"]
    assert config["parameters"]["warmup"] == {"min": 0, "max": 0.3, "distribution": "uniform"}
    assert config["early_terminate"] == SPEC["early_terminate"] and config["metric"] == SPEC["metric"]
    assert "sweepq sweep bert-lr-abcdefgh" in config["description"]
    # AND W&B's own schema finds nothing wrong with it (the stand-in answers its violations)
    upsert = [r for r in standin.requests if r.operation == "UpsertSweep"]
    assert len(upsert) == 1 and upsert[0].variables["projectName"] == "nlp"
    # AND the environment is as it was, stdout clean (JSON output stays JSON)
    assert {k: v for k, v in os.environ.items() if k.startswith("WANDB_")} == before
    out, err = capfd.readouterr()
    assert out == ""
    # AND the key went only to W&B's API, in the Authorization header
    expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    graphql = [r for r in standin.requests if r.path == "/graphql"]
    assert graphql and all(r.headers.get("Authorization") == expected for r in graphql)
    for request in standin.requests:
        assert KEY.encode() not in request.body
    for text in (out, err, caplog.text, repr(result), json.dumps(config)):
        assert KEY not in text
    assert "registered sweep bert-lr-abcdefgh in W&B as team-a/nlp/" in caplog.text


def test_the_message_never_holds_the_key(standin: WandbStandIn) -> None:
    sweep = validate_sweep(SPEC)
    result = register(sweep, sweepq_sweep_id="bert-lr-abcdefgh")
    launch = resolve(sweep, defaults={}, overrides={})
    _, body = build_submit(sweep, launch, token="t" * 16, submitter="me", source="f.yaml", submitted_at="now")
    assert KEY not in body and KEY not in json.dumps(launch_payload(launch))
    assert result.project == "uncategorized"  # no project anywhere: W&B's answer is what trials must use


def test_the_files_own_entity_and_project_win(standin: WandbStandIn) -> None:
    sweep = validate_sweep({**SPEC, "entity": "vision", "project": "detr"})
    result = register(sweep, sweepq_sweep_id="bert-lr-abcdefgh", entity="other", project="other")
    assert (result.entity, result.project) == ("vision", "detr")
    assert standin.sweeps[0]["variables"]["entityName"] == "vision"


def test_a_file_without_name_gets_the_sweepq_id_as_its_name() -> None:
    raw = {k: v for k, v in SPEC.items() if k != "name"}
    config = wandb_config(validate_sweep(raw), sweepq_sweep_id="sweep-abcdefgh")
    assert config["name"] == "sweep-abcdefgh" and config["controller"] == {"type": "local"}
    assert raw.get("controller") is None  # the file itself is untouched


def test_refused_credentials_raise_a_typed_error_without_the_key(w_and_b_env, monkeypatch, caplog) -> None:
    # GIVEN W&B's API refusing the key
    with WandbStandIn(api_key=KEY, refuse=True) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        # WHEN / THEN one error naming what to check, the key nowhere
        with pytest.raises(WandbRegistrationError) as info:
            register(validate_sweep(SPEC), sweepq_sweep_id="bert-lr-abcdefgh")
        message = str(info.value)
        assert "W&B: could not register sweep bert-lr-abcdefgh at " + server.url in message
        assert "wandb login" in message and "--no-wandb" in message
        assert KEY not in message and KEY not in caplog.text
        assert not server.sweeps


def test_decide(w_and_b_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env: dict[str, str] = {"HOME": str(tmp_path / "home")}
    # no credentials: nothing changes
    assert decide(None, env).register is False and credentials_source(env) is None
    assert "wandb login" in decide(True, env).reason and decide(True, env).required
    # a key: automatic registration, not required (a W&B outage must not block the cluster)
    env["WANDB_API_KEY"] = KEY
    auto = decide(None, env)
    assert auto.register and not auto.required and KEY not in auto.reason
    assert decide(False, env).register is False
    assert decide(None, {**env, "WANDB_MODE": "disabled"}).register is False
    assert decide(True, {**env, "WANDB_MODE": "offline"}).register is True  # explicit request wins
    # `wandb login` writes a .netrc entry for the API host: that counts, the key is not returned
    del env["WANDB_API_KEY"]
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    assert credentials_source(env) == f"netrc ({netrc})"
    assert credentials_source({**env, "WANDB_BASE_URL": "https://wandb.example.com"}) is None
    assert KEY not in decide(None, env).reason


def test_example_files_register_without_schema_warnings(standin: WandbStandIn) -> None:
    from sweeps.config import schema_violations_from_proposed_config

    for name in ("sweep.yaml", "random.yaml", "bayes.yaml", "hyperband.yaml"):
        path = ROOT / "examples" / name
        if not path.exists():
            continue
        sweep = validate_sweep(yaml.safe_load(path.read_text()))
        config = wandb_config(sweep, sweepq_sweep_id="example-abcdefgh")
        assert schema_violations_from_proposed_config(config) == [], name
