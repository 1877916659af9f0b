"""Scenario 4 — the bad-input corpus (tests/data/bad/expected.yaml).

* Submit time: every bad sweep file makes ``producer submit`` exit 1 with a message that names
  the problem (never an "unexpected" error or a traceback); nothing is sent.
* Dispatch time: raw SQS bodies that bypass the producer — and every bad file that is valid YAML,
  sent as a body — end REJECTED with a readable reason or, when they are not sweepq messages at
  all, in the DLQ (SQS's redrive after maxReceiveCount receives, driven for real through moto),
  while the good sweeps sent in the same batch run to completion.
* Hostile-but-valid values (shell, YAML and manifest injection, unicode) are accepted, and every
  kind's manifest has the same key paths as a plain sweep's: values never change the structure.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit
from invariants import Ledger
from sweepworld import KIND, advance_cluster, dlq_url, drain
from typer.testing import CliRunner

from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy
from dispatcher.core.spec import validate_sweep
from dispatcher.core.yamlsafe import load_yaml
from dispatcher.settings import Settings
from dispatcher.trials import launch_request
from producer.cli import app as producer_app
from producer.sweepfile import json_problems

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = DATA / "bad"
REUSED = DATA / "specs" / "bad"
INDEX = yaml.safe_load((BAD / "expected.yaml").read_text(encoding="utf-8"))
TEMPLATE = {  # a JobSet-like manifest for kind `template`
    "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
    "metadata": {"name": "{{job_name}}", "labels": {"team": "{{team}}"}},
    "spec": {"replicatedJobs": [{"name": "w", "replicas": "{{max_nodes | int}}", "template": {"spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "t", "image": "{{image}}", "command": ["torchrun", "{{args}}"],
            "env": [{"name": "TRIAL_ID", "value": "{{trial_id}}"}]}]}}}}}]},
}


# -- the generated cases -----------------------------------------------------------------------

def _nested_groups(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"x": {"value": 1}}
    for _ in range(depth):
        node = {"g": {"parameters": node}}
    return node


def _envelope(spec: Any, launch: Any = None, *, token: str) -> str:
    name = spec.get("name") if isinstance(spec, dict) else None
    return json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id_for(name if isinstance(name, str) else None, token),
                       "token": token, "spec": spec, "launch": {} if launch is None else launch,
                       "submitter": "tester", "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"},
                      ensure_ascii=False)


def generate(recipe: str, tmp: Path) -> str:
    """A file path (producer recipes) or a body (body recipes)."""
    if recipe == "big-file":
        head = "name: big\nmethod: grid\nprogram: train.py\nparameters:\n  seed:\n    values: [0]\n# "
        path = tmp / "big.yaml"
        path.write_text(head + "x" * (300 * 1024 - len(head) - 1) + "\n")
        return str(path)
    if recipe == "deep-groups-file":
        path = tmp / "deep.yaml"
        spec = {"name": "deep", "method": "grid", "program": "train.py", "parameters": _nested_groups(40)}
        path.write_text(json.dumps(spec))  # JSON is YAML
        return str(path)
    if recipe == "big-garbage-body":
        return "x" * (250 * 1024)
    if recipe == "big-spec-body":
        return _envelope({**grid_spec("big", 1, 1), "junk": "y" * (240 * 1024)}, token="big-spec-token-01")
    if recipe == "deep-json-body":
        return "[" * 2000 + "]" * 2000
    if recipe == "deep-groups-body":
        return _envelope({"name": "deep", "method": "grid", "program": "train.py", "parameters": _nested_groups(300)},
                         token="deep-groups-token-01")
    raise ValueError(f"unknown recipe {recipe!r}")


def body_of(file: str) -> str:
    text = (BAD / "bodies" / file).read_text(encoding="utf-8")
    if "@SWEEP_ID@" in text:
        data = json.loads(text.replace("@SWEEP_ID@", "x"))
        name = data["spec"].get("name") if isinstance(data["spec"], dict) else None
        text = text.replace("@SWEEP_ID@", sweep_id_for(name if isinstance(name, str) else None, data["token"]))
    return text


def sweep_id_of(body: str) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data.get("sweep_id") if isinstance(data, dict) and isinstance(data.get("sweep_id"), str) else None


def file_as_body(path: Path, token: str) -> str | None:
    """The raw body of a bad file, when the file is valid YAML whose content JSON can carry."""
    try:
        spec = load_yaml(path.read_bytes(), source=path.name)
    except Exception:  # noqa: BLE001 - any YAML-level refusal: there is no spec to send
        return None
    if not isinstance(spec, dict) or json_problems(spec):
        return None
    return _envelope(spec, token=token)


# -- the index ---------------------------------------------------------------------------------

def test_the_index_covers_every_file_and_holds_at_least_40_cases() -> None:
    files = {e["file"] for e in INDEX["files"]}
    bodies = {e["file"] for e in INDEX["bodies"]}
    reused = {e["file"] for e in INDEX["reuse"]}
    assert files == {p.name for p in (BAD / "files").iterdir()}, "index every file in tests/data/bad/files"
    assert bodies == {p.name for p in (BAD / "bodies").iterdir()}, "index every body in tests/data/bad/bodies"
    assert reused == {p.name for p in REUSED.glob("*.yaml")}, "reuse every file of tests/data/specs/bad"
    cases = len(files) + len(bodies) + len(INDEX["generated"]) + len(reused)
    assert cases >= 40 + len(reused)
    for entry in INDEX["files"] + INDEX["bodies"] + INDEX["generated"]:
        assert entry["at"] in ("producer", "accepted", "dlq", "rejected", "consumed"), entry
        assert entry.get("message") or entry["at"] in ("accepted", "consumed"), entry


# -- submit time -------------------------------------------------------------------------------

@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The producer cannot reach AWS: a refused file must be refused before any call."""
    for name in ("SWEEPQ_QUEUE_URL", "SWEEPQ_DEFAULTS", "SWEEPQ_BACKEND", "SWEEPQ_IMAGE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port
    monkeypatch.setenv("SWEEPQ_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")


PRODUCER_CASES = (
    [pytest.param(str(BAD / "files" / e["file"]), e["message"], id=e["file"]) for e in INDEX["files"] if e["at"] == "producer"]
    + [pytest.param(str(REUSED / e["file"]), e["message"], id=f"reuse-{e['file']}") for e in INDEX["reuse"]]
    + [pytest.param(f"generated:{e['recipe']}", e["message"], id=e["name"]) for e in INDEX["generated"]
       if e["at"] == "producer"]
)


@pytest.mark.parametrize("path,message", PRODUCER_CASES)
def test_producer_submit_refuses_a_bad_file_with_a_clear_message(no_aws, tmp_path: Path, path: str, message: str) -> None:
    if path.startswith("generated:"):
        path = generate(path.split(":", 1)[1], tmp_path)
    result = CliRunner().invoke(producer_app, ["submit", path])
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert message in result.stderr, result.stderr
    # cli_errors prints "error: unexpected <Exception>" for anything our validators did not name
    assert "error: unexpected " not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr


@pytest.mark.parametrize("name", [e["file"] for e in INDEX["files"] if e["at"] == "accepted"])
def test_producer_accepts_hostile_but_valid_files(no_aws, name: str) -> None:
    result = CliRunner().invoke(producer_app, ["submit", "--dry-run", "-o", "json", str(BAD / "files" / name)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["trials"] >= 1 and out["job_name"].startswith(out["sweep_id"])


# -- manifests ---------------------------------------------------------------------------------

def _plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The same sweep with every parameter value replaced by a harmless word."""
    out = copy.deepcopy(spec)

    def walk(params: dict[str, Any]) -> None:
        for cfg in params.values():
            if "parameters" in cfg:
                walk(cfg["parameters"])
            elif "values" in cfg:
                cfg["values"] = [f"plain{i}" for i in range(len(cfg["values"]))]
            elif "value" in cfg:
                cfg["value"] = "plain"
    walk(out["parameters"])
    return out


def _shape(node: Any, path: str = "") -> set[str]:
    """Every key path and list index with the type of what sits there (values ignored)."""
    if dataclasses.is_dataclass(node):
        node = dataclasses.asdict(node)
    if isinstance(node, dict):
        return {f"{path}/{k}:" for k in node} | {p for k, v in node.items() for p in _shape(v, f"{path}/{k}")}
    if isinstance(node, (list, tuple)):
        return {f"{path}[{i}]" for i in range(len(node))} | {p for i, v in enumerate(node) for p in _shape(v, f"{path}[{i}]")}
    return {f"{path}={type(node).__name__}"}


KINDS = {
    "pytorchjob": {"gpus_per_node": 8, "nodes": "1:4"},
    "trainjob": {"gpus_per_node": 8, "nodes": 2},
    "job": {"gpus_per_node": 1},
    "template": {"gpus_per_node": 8, "nodes": 2, "team": "vision", "template": "jobset"},
    "local": {"gpus_per_node": 0},
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kinds_manifest_keeps_its_structure_whatever_the_values(kind: str, tmp_path: Path) -> None:
    settings = Settings.load({}, backend="pytorchjob", namespace="sweepq", state_dir=str(tmp_path))
    (tmp_path / "train.py").write_text("")  # the local kind refuses a program that is not a file in its cwd
    options: dict[str, Any] = {"state_dir": str(tmp_path), "cwd": str(tmp_path)} if kind == "local" else {}
    if kind == "template":  # templates are operator-owned: they come from the policy, sweeps name them
        options["policy"] = Policy.from_data({"templates": {"jobset": {"manifest": TEMPLATE}}})
    backend = make_backend(kind, api_client=None, namespace="sweepq", **options)
    launch = LaunchSettings.model_validate({"kind": kind, **KINDS[kind]})
    compared = 0
    for entry in [e for e in INDEX["files"] if e["at"] == "accepted"]:
        raw = load_yaml((BAD / "files" / entry["file"]).read_bytes(), source=entry["file"])
        hostile, plain = (validate_sweep(s, source=entry["file"]) for s in (raw, _plain(raw)))
        assert hostile.total == plain.total
        for index in range(hostile.total):
            shapes = []
            for sweep in (hostile, plain):
                request = launch_request(settings, sweep, "hostile-abcdefgh", launch, index, 1, "https://sqs/q")
                shapes.append(_shape(backend.dryrun(request).request))
            assert shapes[0] == shapes[1], f"{entry['file']} trial {index}: {sorted(shapes[0] ^ shapes[1])[:6]}"
            compared += 1
    assert compared >= 25


# -- dispatch time -----------------------------------------------------------------------------

def _raw_cases(tmp_path: Path) -> list[tuple[str, str, str, str | None]]:
    """(name, body, at, message) for every body the dispatcher must handle."""
    cases = [(e["file"], body_of(e["file"]), e["at"], e.get("message")) for e in INDEX["bodies"]]
    cases += [(e["name"], generate(e["recipe"], tmp_path), e["at"], e["message"]) for e in INDEX["generated"]
              if e["at"] != "producer"]
    for i, entry in enumerate([e for e in INDEX["files"] if e["at"] == "producer" and e.get("body", True)]
                              + [{**e, "reused": True} for e in INDEX["reuse"]]):
        path = (REUSED if entry.get("reused") else BAD / "files") / entry["file"]
        body = file_as_body(path, token=f"file-as-body-{i:04d}")
        if body is not None:
            cases.append((f"body-of-{entry['file']}", body, "rejected", entry["message"]))
    return cases


@pytest.mark.slow
def test_raw_bodies_end_rejected_or_in_the_dlq_while_the_good_sweeps_in_the_batch_run(
        atomic_aws, kube, monkeypatch, caplog, tmp_path) -> None:
    # GIVEN a queue whose visibility timeout is 0 (a received, undeleted body is visible again at
    # once: each receive counts towards maxReceiveCount without waiting out real seconds)
    settings = Settings.load({}, backend=KIND, max_running=4, namespace="sweepq", lease_seconds=60)
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    sqs = atomic_aws.client("sqs")
    ledger = Ledger(kube, cap=4)
    ledger.install(monkeypatch)
    # AND every bad body, with good sweeps in between them (the same receive batches)
    cases = _raw_cases(tmp_path)
    assert len(cases) >= 60
    rng = random.Random(4)
    rng.shuffle(cases)
    ids: dict[str, tuple[str, str | None]] = {}
    for n, (name, body, at, message) in enumerate(cases):
        if n % 20 == 0:
            good = submit(queue, grid_spec(f"good{n}", 1, 2))
            ledger.expect(good, "COMPLETED", total=2)
        ids[queue.send(body)] = (name, message if at == "dlq" else None)
        sweep_id = sweep_id_of(body)
        if at == "dlq":
            ledger.expect(body, "DLQ", body=body)
        elif at == "rejected":
            ledger.expect(sweep_id, "REJECTED", reason=message)
        elif at == "accepted":
            ledger.expect(sweep_id, "COMPLETED")
    # WHEN a dispatcher ticks until the queue is empty and every sweep ended
    caplog.set_level(logging.WARNING, logger="dispatcher.tick")
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatcher = make_dispatcher(atomic_aws, settings, {KIND: backend}, Clock(), queue)
    for _ in range(60):
        report = dispatcher.tick()
        assert report.lease == "held"
        ledger.observe()
        advance_cluster(kube, rng, fail_p=0.0)
        dispatcher.clock.advance(30)
        attrs = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"]
        left = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        active = store.active_sweeps()
        if not left and not active:
            break
    else:
        pytest.fail(f"{left} bodies still queued, {len(active)} sweeps active")
    # THEN every body ended where it must; the good sweeps completed; caps held throughout
    dead = drain(sqs, dlq_url(sqs, queue.url))
    figures = ledger.check_final(store, dlq_bodies=dead)
    ledger.assert_ok(figures)
    assert sorted(dead) == sorted(body for _, body, at, _ in cases if at == "dlq"), "the DLQ holds exactly those"
    # AND each dead letter was logged with its reason
    reasons = {}
    for record in caplog.records:
        if '"dead-letter"' in record.getMessage():
            event = json.loads(record.getMessage())
            reasons[event["message_id"]] = event["reason"]
    for message_id, (name, fragment) in ids.items():
        if fragment is not None:
            assert fragment in reasons.get(message_id, ""), (name, reasons.get(message_id))
    print(f"\nbad input: {len(cases)} raw bodies — {figures.line()}")
