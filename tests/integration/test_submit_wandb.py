"""The sweep in W&B's UI, end to end: ``producer submit`` registers the sweep with W&B (the real
SDK pointed at the loopback stand-in, never the internet), the message carries the W&B sweep id,
the dispatcher's own intake and tick store it and give every trial ``WANDB_SWEEP_ID``,
``WANDB_ENTITY`` and ``WANDB_PROJECT`` — and the W&B key is nowhere but in W&B's API requests."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from producer_world import EXAMPLE, World, make_world, run, submit
from wandb_standin import WandbStandIn

from dispatcher.adapters.dynamo import des
from dispatcher.adapters.queue import Queue
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.message import SubmitMessage
from dispatcher.core.spec import validate_sweep
from producer.sweepfile import build_submit, resolve

wandb = pytest.importorskip("wandb")
pytest.importorskip("sweeps")
pytestmark = pytest.mark.filterwarnings("ignore:Read the `app_url` setting:DeprecationWarning")

KEY = "local-" + "k3y" * 14  # W&B's SDK wants 40+ characters


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[World]:
    """moto + the real dispatcher (producer_world) and a clean W&B environment: no user files."""
    for w in make_world(monkeypatch, tmp_path):
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
        monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
        (tmp_path / "home").mkdir(exist_ok=True)
        yield w
        wandb.teardown()  # the SDK's process-wide settings must not leak into the next test


@pytest.fixture
def standin(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[WandbStandIn]:
    """W&B's API on loopback, and a researcher logged in to it (WANDB_API_KEY)."""
    with WandbStandIn(api_key=KEY) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        yield server


def _peek(world: World) -> list[dict[str, Any]]:
    """The raw SQS messages (body and attributes), left on the queue for the dispatcher."""
    got = world.sqs.receive_message(QueueUrl=world.url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                    AttributeNames=["All"], MessageAttributeNames=["All"])
    return got.get("Messages", [])


def _launched_env(world: World) -> dict[str, dict[str, str]]:
    world.dispatcher.tick()  # intake stores the sweep, launch creates max_concurrent = 2 trials
    return {name: dict(request.env) for name, request in world.backend.requests.items()}


def _all_items(world: World) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for table in world.ddb.list_tables()["TableNames"]:
        for page in world.ddb.get_paginator("scan").paginate(TableName=table):
            items += page["Items"]
    return items


def test_submit_registers_the_sweep_and_every_trial_attaches_to_it(world: World, standin: WandbStandIn,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a researcher with W&B credentials and a team W&B project
    monkeypatch.setenv("SWEEPQ_WANDB_PROJECT", "nlp")
    # WHEN they submit the demo sweep, nothing said about W&B
    result = run("submit", str(EXAMPLE), "-o", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # THEN W&B got one locally controlled sweep, filed under the team's project
    [created] = standin.sweeps
    assert created["config"]["controller"] == {"type": "local"} and created["config"]["name"] == "demo-lr-bs"
    assert out["wandb_sweep"] == {"id": created["name"], "entity": "team-a", "project": "nlp", "registered": True,
                                  "url": f"{standin.url}/team-a/nlp/sweeps/{created['name']}"}
    # AND the message's launch settings carry where W&B filed it
    [raw] = _peek(world)
    launch = LaunchSettings.model_validate(json.loads(raw["Body"])["launch"])
    assert (launch.wandb_sweep_id, launch.wandb_entity, launch.wandb_project) == (created["name"], "team-a", "nlp")
    # AND the dispatcher stores it and every trial's run attaches to that sweep
    envs = _launched_env(world)
    assert len(envs) == 2
    for env in envs.values():
        assert (env["WANDB_SWEEP_ID"], env["WANDB_ENTITY"], env["WANDB_PROJECT"]) == (created["name"], "team-a", "nlp")
        assert env["WANDB_RUN_GROUP"] == out["sweep_id"] and env["WANDB_RUN_ID"] == env["TRIAL_ID"]
    stored = LaunchSettings.model_validate(json.loads(world.store.get_sweep(out["sweep_id"])["launch"]))
    assert stored.wandb_sweep_id == created["name"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_the_w_and_b_key_never_enters_a_message_an_item_or_a_log(world: World, standin: WandbStandIn, caplog,
                                                                   capfd, tmp_path: Path) -> None:
    # GIVEN a planted key, every log at DEBUG (ours, W&B's SDK's, boto's)
    caplog.set_level(logging.DEBUG)
    # WHEN the sweep is submitted (verbose), registered, taken in and its trials launched
    result = run("submit", str(EXAMPLE), "-v", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["wandb_sweep"]["registered"] is True
    messages = _peek(world)
    envs = _launched_env(world)
    assert envs and all("WANDB_SWEEP_ID" in env for env in envs.values())
    out, err = capfd.readouterr()
    # THEN the key is in none of: the SQS message (body and attributes), any DynamoDB item, any log,
    # the CLI's output, the trials' environment, the producer's record of queued sweeps
    assert messages
    texts = {
        "message": json.dumps(messages),
        "items": json.dumps([des(item) for item in _all_items(world)], default=str),
        "logs": caplog.text,
        "output": result.stdout + result.stderr + out + err,
        "trial env": json.dumps(envs),
        "producer home": "".join(p.read_text(errors="replace") for p in (tmp_path / "home").rglob("*") if p.is_file()),
    }
    wandb_id = standin.sweeps[0]["name"]
    # (each place was read: the W&B sweep id is in the message, the sweep item and the logs)
    assert wandb_id in texts["message"] and wandb_id in texts["items"] and "registered sweep" in texts["logs"]
    for where, text in texts.items():
        assert KEY not in text, f"the W&B key is in the {where}"
    # AND it did reach W&B's API — in the Authorization header only, never in a request body
    assert standin.sweeps and all(KEY.encode() not in r.body for r in standin.requests)


def test_without_credentials_nothing_changes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with WandbStandIn(api_key=KEY) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)  # W&B reachable, but no key, no .netrc
        result = run("submit", str(EXAMPLE), "-o", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["wandb_sweep"] is None and not server.requests
    envs = _launched_env(world)
    assert envs and not any("WANDB_SWEEP_ID" in env or "WANDB_ENTITY" in env for env in envs.values())


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_no_wandb_sweep_the_team_default_and_dry_run_never_register(world: World, standin: WandbStandIn,
                                                                     tmp_path: Path, monkeypatch) -> None:
    # --no-wandb-sweep: credentials, but nothing registered
    assert json.loads(run("submit", str(EXAMPLE), "-o", "json", "--no-wandb-sweep").stdout)["wandb_sweep"] is None
    # the team defaults say never
    defaults = tmp_path / "team.yaml"
    defaults.write_text("wandb_sweep: false\nmax_concurrent: 1\n")
    assert json.loads(run("submit", str(EXAMPLE), "-o", "json", "--defaults", str(defaults)).stdout)["wandb_sweep"] is None
    # --dry-run says it would register, and registers nothing
    result = run("submit", str(EXAMPLE), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "# W&B: submit would register this sweep with W&B (credentials from WANDB_API_KEY)" in result.stdout
    dry = json.loads(run("submit", str(EXAMPLE), "--dry-run", "-o", "json", "--no-wandb-sweep").stdout)
    assert dry["wandb"]["register"] is False and "--no-wandb-sweep" in dry["wandb"]["reason"]
    assert not standin.sweeps and not [r for r in standin.requests if r.operation == "UpsertSweep"]
    # the flag wins over the team default
    result = run("submit", str(EXAMPLE), "-o", "json", "--defaults", str(defaults), "--wandb-sweep")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["wandb_sweep"]["registered"] is True and len(standin.sweeps) == 1


def test_an_explicit_request_that_w_and_b_refuses_is_exit_3_and_sends_nothing(world: World, monkeypatch,
                                                                              caplog) -> None:
    with WandbStandIn(api_key=KEY, refuse=True) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        result = run("submit", str(EXAMPLE), "--wandb-sweep")
    assert result.exit_code == 3
    assert "W&B: could not register sweep demo-lr-bs-" in result.stderr and f"at {server.url}" in result.stderr
    assert "--no-wandb-sweep" in result.stderr
    assert KEY not in result.stderr + result.stdout + caplog.text
    assert world.queued() == 0


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_an_automatic_registration_that_fails_warns_and_sends_without(world: World, monkeypatch, caplog) -> None:
    with WandbStandIn(api_key=KEY, refuse=True) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        monkeypatch.setenv("WANDB_API_KEY", KEY)
        result = run("submit", str(EXAMPLE), "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["wandb_sweep"] is None
    assert "without a W&B sweep" in caplog.text and KEY not in caplog.text + result.stderr
    [msg] = world.receive()
    assert isinstance(msg, SubmitMessage) and "wandb_sweep_id" not in msg.launch


def test_an_explicit_request_without_credentials_is_exit_3_before_any_w_and_b_call(world: World, monkeypatch,
                                                                                     tmp_path: Path) -> None:
    with WandbStandIn(api_key=KEY) as server:
        monkeypatch.setenv("WANDB_BASE_URL", server.url)
        defaults = tmp_path / "team.yaml"
        defaults.write_text("wandb_sweep: true\n")  # the team asks for it: as explicit as the flag
        result = run("submit", str(EXAMPLE), "--defaults", str(defaults))
        assert result.exit_code == 3
        assert "requested, but no W&B credentials: run `wandb login` or set WANDB_API_KEY" in result.stderr
        assert not server.requests and world.queued() == 0  # the SDK never got to ask for a key on the terminal


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_given_w_and_b_sweep_is_attached_to_as_given(world: World, standin: WandbStandIn) -> None:
    sweep_id = submit("--wandb-sweep-id", "f2ffjhx1", "--wandb-entity", "vision", "--wandb-project", "detr")
    assert not standin.sweeps  # nothing registered: the researcher named W&B's sweep
    envs = _launched_env(world)
    assert {(e["WANDB_SWEEP_ID"], e["WANDB_ENTITY"], e["WANDB_PROJECT"]) for e in envs.values()} == \
        {("f2ffjhx1", "vision", "detr")}
    assert all(e["SWEEP_ID"] == sweep_id for e in envs.values())


def test_the_team_defaults_flag_is_validated(world: World, tmp_path: Path, monkeypatch) -> None:
    defaults = tmp_path / "team.yaml"
    defaults.write_text("wandb_sweep: sometimes\n")
    result = run("submit", str(EXAMPLE), "--defaults", str(defaults))
    assert result.exit_code == 3
    assert "wandb_sweep: 'sometimes' is not true or false — write wandb_sweep: true" in result.stderr
    monkeypatch.setenv("SWEEPQ_WANDB_SWEEP", "maybe")
    result = run("submit", str(EXAMPLE))
    assert result.exit_code == 3 and "SWEEPQ_WANDB_SWEEP: 'maybe' is not true or false" in result.stderr


@pytest.mark.slow
def test_unreachable_w_and_b(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at WANDB_BASE_URL. W&B's SDK waits ``WANDB_HTTP_TIMEOUT`` seconds (default
    19) for its service process to answer each request, so each submit here would take ~20 s; the
    test sets it to 2 s. ``wandb.Api`` reads that variable once, when wandb is imported (at this
    module's collection), hence the class attribute too — an AttributeError here means the SDK
    renamed it, not that sweepq broke. What is proved (an unreachable W&B, however it times out)
    does not depend on how long the SDK waits."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("WANDB_HTTP_TIMEOUT", "2")  # wandb-core's per-request timeout, read at wandb's setup
    monkeypatch.setattr(wandb.Api, "_HTTP_TIMEOUT", 2)  # the SDK's wait for wandb-core, read at import
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    # explicit: exit 3, a message naming W&B's address and what to do, nothing sent
    explicit = run("submit", str(EXAMPLE), "--wandb-sweep")
    assert explicit.exit_code == 3 and world.queued() == 0
    assert "could not register sweep demo-lr-bs-" in explicit.stderr and f"127.0.0.1:{port}" in explicit.stderr
    # automatic: the sweep is sent without a W&B sweep
    automatic = run("submit", str(EXAMPLE), "-o", "json")
    assert automatic.exit_code == 0 and json.loads(automatic.stdout)["wandb_sweep"] is None
    assert world.queued() == 1
    assert KEY not in explicit.stderr + automatic.stderr


def test_a_hand_written_body_cannot_point_trials_elsewhere(world: World) -> None:
    """The message is anyone's to write (sqs:SendMessage): intake validates the W&B fields as plain
    values, whatever the producer did — a project of ``$(WANDB_API_KEY)`` would make the kubelet
    put the key into the run's project name."""
    sweep = validate_sweep(yaml.safe_load(EXAMPLE.read_text()))
    launch = resolve(sweep, defaults={}, overrides={"wandb_sweep_id": "f2ffjhx1"})
    msg, body = build_submit(sweep, launch, token="t" * 16, submitter="me", source="f.yaml", submitted_at="now")
    doc = json.loads(body)
    doc["launch"]["wandb_project"] = "$(WANDB_API_KEY)"
    Queue(world.sqs, world.url).send(json.dumps(doc))
    world.dispatcher.tick()
    item = world.store.get_sweep(msg.sweep_id)
    assert item["state"] == "REJECTED" and "wandb_project: '$(WANDB_API_KEY)' is not a plain W&B name" in item["reason"]
    assert not world.backend.requests
