"""Launch settings as a hand-written SQS body carries them (``launch`` of a ``sweepq.submit/v1``
body bypasses the producer): every field bounded, booleans are not numbers, reserved env names and
inline manifests refused — with errors that name the field and the fix and never echo a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core.errors import SpecError
from dispatcher.core.launch import (
    LIMITS,
    MAX_DURATION_S,
    REDACTED,
    REFUSED_MANIFEST,
    LaunchSettings,
    merge_launch,
    parse_duration,
    redact_secret_env,
)
from dispatcher.core.spec import json_schema, validate_launch

SECRET = "wandb-key-4f1c9e0d2b7a48d6a1c3e5f7b9d0c2e4f6a8b0c1"


def refused(raw: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        validate_launch(raw)
    text = str(info.value)
    assert SECRET not in text
    return text


@pytest.mark.parametrize("raw, fragment", [
    ({"gpus_per_node": True}, "launch.gpus_per_node: True is a boolean, not a number"),
    ({"max_concurrent": False}, "launch.max_concurrent: False is a boolean"),
    ({"priority": True}, "launch.priority: True is a boolean"),
    ({"nodes": True}, "launch.nodes: 'True' is not N or MIN:MAX"),
    ({"max_concurrent": 10**30}, "launch.max_concurrent: 1000000000000000000000000000000 must be ≤ 10000"),
    ({"max_failed_trials": 10**12}, "launch.max_failed_trials"),
    ({"gpus_per_node": 10**6}, "launch.gpus_per_node: 1000000 must be ≤ 64"),
    ({"nodes": "1:99999999999999"}, "launch.nodes"),
    ({"nodes": 5000}, "launch.max_nodes: 5000 must be ≤ 1024"),
    ({"priority": -10**9}, "launch.priority: -1000000000 must be ≥ -1000"),
    ({"max_retries": 10**9}, "launch.max_retries"),
    ({"max_runtime": "9999d"}, "launch.max_runtime: '9999d' is over the maximum of 30d"),
    ({"max_runtime": 10**400}, "launch.max_runtime"),
    ({"max_runtime": float("inf")}, "launch.max_runtime: inf is not a duration"),
    ({"start_timeout": "1e9"}, "launch.start_timeout: '1e9' is not a duration"),
    ({"start_timeout": "9" * 100}, "launch.start_timeout"),
    ({"max_runtime": 0}, "must be positive"),
    ({"image": "ghcr.io/acme/x y"}, "launch.image: 'ghcr.io/acme/x y' is not an image reference"),
    ({"image": "x" * 600}, "launch.image"),
    ({"resources": {"cpu": "lots"}}, "launch.resources.cpu: 'lots' is not a positive Kubernetes quantity"),
    ({"resources": {"memory": "-1Gi"}}, "launch.resources.memory"),
    ({"service_account": "kube-system:admin"}, "launch.service_account: 'kube-system:admin' is not a DNS-1123 label"),
    ({"output_pvc": "../etc"}, "launch.output_pvc: '../etc' is not a DNS-1123 label or subdomain"),
    ({"wandb_sweep_id": "entity/project/abc"}, "launch.wandb_sweep_id: 'entity/project/abc' is not a W&B sweep id"),
    ({"wandb_sweep_id": "ABCDEFGH"}, "launch.wandb_sweep_id"),
    ({"env": {str(i): "x" for i in range(101)}}, "launch.env: 101 variables, the maximum is 100"),
    ({"env": {"BIG": "x" * 40000}}, "launch.env.BIG: the value is 40,000 characters"),
    ({"env": {"CFG": {"nested": SECRET}}}, "launch.env.CFG: the value is a dict, not a string"),
    ({"env": {"1BAD": "x"}}, "launch.env.1BAD: not a valid environment variable name"),
])
def test_hostile_launch_fields_are_refused_with_the_field_and_the_fix(raw: dict[str, Any], fragment: str) -> None:
    assert fragment in refused(raw)


@pytest.mark.parametrize("name, why", [
    ("WANDB_BASE_URL", "reserved (WANDB_*)"),
    ("WANDB_API_KEY", "looks like a secret"),
    ("LD_PRELOAD", "reserved (LD_*): it makes the dynamic loader run other code"),
    ("AWS_ENDPOINT_URL", "reserved (AWS_*)"),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "looks like a secret"),  # both; the secret reason comes first
    ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "looks like a secret"),
    ("AWS_WEB_IDENTITY_ROLE_ARN", "reserved (AWS_*)"),
    ("SWEEP_ID", "reserved (SWEEP_ID): sweepq sets it for every trial"),
    ("TRIAL_ID", "reserved (TRIAL_*)"),
    ("SWEEPQ_OUTPUT_DIR", "reserved (SWEEPQ_*)"),
    ("POD_NAME", "reserved (POD_NAME)"),
    ("PYTHONPATH", "reserved (PYTHON*)"),
    ("KUBERNETES_SERVICE_HOST", "reserved (KUBERNETES_*)"),
    ("NVIDIA_VISIBLE_DEVICES", "past every GPU cap"),
    ("PET_RDZV_ENDPOINT", "reserved (PET_*)"),
    ("HTTPS_PROXY", "reserved (*_PROXY)"),
    ("HF_TOKEN", "looks like a secret"),
])
def test_reserved_env_names_are_refused_and_the_value_never_echoed(name: str, why: str) -> None:
    text = refused({"env": {"HF_HOME": "/tmp", name: SECRET}})
    assert f"launch.env.{name}: " in text and why in text


def test_an_inline_manifest_is_refused_without_echoing_it() -> None:
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"hostPID": True, "containers": [
        {"name": "x", "image": "x", "securityContext": {"privileged": True}, "env": [{"name": "K", "value": SECRET}]}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}}
    text = refused({"kind": "template", "template": manifest})
    assert "launch.template: a manifest inside a message is refused — templates are operator-owned" in text
    assert "hostPath" not in text
    assert "launch.template" in refused({"kind": "template", "template": ["a"]})


def test_a_template_is_a_name_used_only_with_kind_template() -> None:
    assert validate_launch({"kind": "template", "template": "jobset-workers"}).template == "jobset-workers"
    assert "needs the name of one of the operator policy's templates" in refused({"kind": "template"})
    assert "only used with kind 'template'" in refused({"kind": "job", "template": "x"})
    assert "launch.template: 'Not A Name' is not a DNS-1123 label" in refused({"kind": "template", "template": "Not A Name"})


def test_within_bounds_is_accepted_and_numbers_become_env_strings() -> None:
    top = {field: high for field, (_, high) in LIMITS.items() if field not in ("min_nodes", "max_nodes")}
    launch = validate_launch({**top, "nodes": "1:1024", "kind": "pytorchjob", "max_runtime": "30d",
                              "start_timeout": MAX_DURATION_S, "env": {"OMP_NUM_THREADS": 4, "RATIO": 0.5},
                              "resources": {"cpu": 8, "memory": "64Gi"}, "wandb_sweep_id": "f2ffjhx1"})
    assert launch.max_runtime == MAX_DURATION_S and launch.max_nodes == 1024
    assert launch.env == {"OMP_NUM_THREADS": "4", "RATIO": "0.5"} and launch.resources.cpu == "8"
    assert launch.wandb_sweep_id == "f2ffjhx1"
    assert LaunchSettings.model_validate(json.loads(launch.model_dump_json())) == launch  # stored and read back


def test_durations_round_up_and_stay_bounded() -> None:
    assert parse_duration("0.5", field="x") == 1 and parse_duration("90m", field="x") == 5400
    assert parse_duration(MAX_DURATION_S, field="x") == MAX_DURATION_S
    with pytest.raises(ValueError, match="over the maximum of 30d"):
        parse_duration(MAX_DURATION_S + 1, field="x")


def test_the_sweep_file_block_and_the_flags_get_the_same_bounds() -> None:
    with pytest.raises(Exception, match="boolean"):
        merge_launch({"gpus_per_node": 8}, {"gpus_per_node": True})


def test_the_published_schema_describes_durations_as_written() -> None:
    block = json_schema()["properties"]["sweepq"]["properties"]
    assert {"type": "string", "pattern": r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$"} in block["max_runtime"]["anyOf"]
    assert block["template"]["anyOf"][0]["type"] == "string"
    assert block["max_concurrent"]["anyOf"][0]["maximum"] == LIMITS["max_concurrent"][1]
    assert "wandb_sweep_id" in block


def test_what_a_rejected_sweep_stores_of_a_refused_body_holds_no_secret() -> None:
    body = {"env": {"HF_TOKEN": SECRET, "HF_HOME": "/tmp"}, "kind": "template",
            "template": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"env": [{"name": "K", "value": SECRET}]}},
            "sweepq": {"template": {"kind": "Job", "spec": {}}},
            "containers": [{"env": [{"name": "DB_PASSWORD", "value": SECRET}, {"name": "MODE", "value": "fast"}]}]}
    stored = redact_secret_env(body)
    assert SECRET not in json.dumps(stored)
    # every env keeps its names only: a secret's name need not look like one (rev11p: HF-TOKEN)
    assert stored["env"] == {"HF_TOKEN": REDACTED, "HF_HOME": REDACTED}
    assert stored["template"] == stored["sweepq"]["template"] == REFUSED_MANIFEST
    assert stored["containers"][0]["env"] == [{"name": "DB_PASSWORD", "value": REDACTED}, {"name": "MODE", "value": REDACTED}]
    # env of any other shape, and a template of any other shape, are not stored
    odd = redact_secret_env({"env": f"WANDB_API_KEY={SECRET}", "sweepq": {"env": [f"HF_TOKEN={SECRET}"]},
                             "template": json.dumps(body["template"]), "x": {"template": [{"hostPID": True}]}})
    assert odd == {"env": REDACTED, "sweepq": {"env": [REDACTED]}, "template": REFUSED_MANIFEST,
                   "x": {"template": REFUSED_MANIFEST}}
    assert redact_secret_env({"template": "jobset-workers"}) == {"template": "jobset-workers"}
    # a sweep parameter that happens to be called "template" is not a manifest
    spec = {"parameters": {"template": {"values": ["a", "b"]}}}
    assert redact_secret_env(spec) == spec


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.yaml")))
def test_every_shipped_example_validates_against_the_published_schema(example: str) -> None:
    """rev11p #12: the sweepq block's $defs are hoisted to the root (its $ref resolved to nothing)."""
    import jsonschema
    import yaml

    text = (Path(__file__).resolve().parents[2] / "examples" / example).read_text()
    validator = jsonschema.Draft202012Validator(json_schema())
    assert [e.message for e in validator.iter_errors(yaml.safe_load(text))] == []


@pytest.mark.parametrize("nodes, ok", [(2, True), ("2", True), ("1:4", True), (" 1 : 4 ", True), ("x", False),
                                       ("1-4", False), (0, False)])
def test_the_schema_takes_the_nodes_shorthand_the_model_takes(nodes: Any, ok: bool) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    doc = {"method": "grid", "parameters": {"x": {"value": 1}}, "sweepq": {"nodes": nodes}}
    assert (not list(validator.iter_errors(doc))) is ok
    if ok:
        validate_launch({"nodes": nodes})
