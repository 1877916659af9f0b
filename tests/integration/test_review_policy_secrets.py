"""Adversarial review (rev11p): secrets in refused bodies reach the table and the log through the real
tick (moto SQS + DynamoDB, the Kubernetes API emulator over HTTP).

SECURITY.md: "a secret in env (WANDB_API_KEY, HF_TOKEN, *_PASSWORD…) — REJECTED, value never in the
table or a log", intake's ``_reject``: "A refused secret … is not copied into the table", and
``validate_launch``: "never echoing values". Each body below is refused — and its secret value is
copied anyway. Each test fails on the current code.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher

from dispatcher.adapters.dynamo import des
from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.settings import Settings

SECRET = "planted-" + uuid.uuid4().hex  # a value no table item or log line may ever contain


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend="pytorchjob", kinds="pytorchjob", max_running=8, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    backends = {"pytorchjob": make_backend("pytorchjob", api_client=kube.api_client, namespace="sweepq")}

    class World:
        pass

    w = World()
    w.aws, w.settings, w.store, w.queue = aws, settings, store, queue
    w.dispatcher = make_dispatcher(aws, settings, backends, Clock(), queue)
    return w


def raw_submit(w: Any, name: str, launch: Any) -> str:
    """A body written by hand, bypassing producer (as test_policy_tick.raw_submit)."""
    token = uuid.uuid4().hex
    sweep_id = sweep_id_for(name, token)
    w.queue.send(json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id, "token": token,
                             "spec": grid_spec(name, 1, 1), "launch": launch, "submitter": "someone",
                             "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"}))
    return sweep_id


def table_text(w: Any) -> str:
    items = w.aws.client("dynamodb").scan(TableName=w.settings.table)["Items"]
    return json.dumps([des(i) for i in items], default=str)


@pytest.mark.parametrize("launch", [
    pytest.param({"env": f"WANDB_API_KEY={SECRET}"}, id="env-as-a-KEY=VALUE-string"),
    pytest.param({"env": [f"HF_TOKEN={SECRET}"]}, id="env-as-a-docker-style-list"),
    pytest.param({"env": {"HF-TOKEN": SECRET}}, id="dashed-secret-name"),
    pytest.param({"env": {"OPENAI API KEY": SECRET}}, id="spaced-secret-name"),
])
@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_refused_env_secret_is_copied_into_the_table_or_the_log(world, caplog, launch) -> None:
    """Attack/mistake: a researcher's raw body carries a secret in ``env`` in a shape other than a
    mapping of valid names: a ``KEY=VALUE`` string (``_one_problem`` echoes ``repr(value)`` into the
    reason), a docker-style list, or a secret-looking name Kubernetes would accept (``HF-TOKEN``;
    relaxed env-name validation) or a human would write (``OPENAI API KEY``) that ``SECRET_ENV``
    does not recognise (it needs ``_`` around the word), so ``redact_secret_env`` keeps the value.
    Expected: REJECTED, the value nowhere in DynamoDB (which every researcher reads) nor in the
    dispatcher's log. Actual: the REJECTED item's ``reason`` and/or stored ``launch`` — and the
    ``rejected`` log line — contain it."""
    w = world
    caplog.set_level(logging.INFO)
    sweep_id = raw_submit(w, "leaky", launch)
    report = w.dispatcher.tick()
    assert report.rejected == 1, report.as_dict()
    assert w.store.get_sweep(sweep_id)["state"] == "REJECTED"
    assert SECRET not in table_text(w), "the refused secret value is stored in the sweep table"
    assert SECRET not in caplog.text, "the refused secret value is in the dispatcher's log"


INLINE = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
    "hostPID": True, "containers": [{"name": "x", "image": "alpine", "env": [{"name": "K", "value": SECRET}]}]}}}}


@pytest.mark.parametrize("launch", [
    pytest.param({"kind": "template", "template": [INLINE["spec"]["template"]["spec"]]}, id="pod-spec-in-a-list"),
    pytest.param({"kind": "template", "template": json.dumps(INLINE)}, id="manifest-as-a-json-string"),
])
@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_an_inline_manifest_of_another_shape_is_stored_in_the_table(world, caplog, launch) -> None:
    """Attack: SECURITY.md "an inline manifest … is refused by validation and not even stored in the
    REJECTED record"; the brief's "an inline manifest under any shape". ``redact_secret_env`` drops
    ``template`` only when it is a dict with apiVersion/kind/spec. A pod spec wrapped in a list, or
    a manifest sent as a JSON string, is refused (good) but stored whole in the REJECTED item's ``launch`` (and
    the string form's first 77 characters are echoed into the reason by ``_one_problem``). Expected:
    not stored. Actual: the manifest, with the env value it carries, is in the table."""
    w = world
    caplog.set_level(logging.INFO)
    sweep_id = raw_submit(w, "inline", launch)
    report = w.dispatcher.tick()
    assert report.rejected == 1, report.as_dict()
    assert w.store.get_sweep(sweep_id)["state"] == "REJECTED"
    text = table_text(w)
    assert SECRET not in text and "hostPID" not in text, "the refused inline manifest is stored in the table"
