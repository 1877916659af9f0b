"""Scenario 5 — secrets and least privilege, checked against what the code actually does.

* Fake secrets (a W&B key, an AWS secret key, a Hugging Face token) are planted in the environment
  of the producer and the dispatcher, in-process and as real subprocesses with debug logging;
  everything they wrote — SQS bodies, every DynamoDB item, every log line, every manifest and
  pod in the cluster — is scanned for them. A raw body carrying a secret in ``launch.env`` is
  rejected without the value reaching the table or the logs.
* IAM: the AWS operations of a whole sweep life are recorded with botocore event hooks
  (TransactWriteItems counted per item kind, as IAM authorises it) and compared with the role's
  ``DISPATCHER_IAM_ACTIONS``; the Kubernetes verbs recorded by the emulator for every job kind
  are compared with the dispatcher Role's rules.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from helpers import Clock, bootstrap, grid_spec, submit
from kube_emulator import KINDS
from procs import run_producer, run_tick, server_stack
from sweepworld import KIND, advance_cluster
from typer.testing import CliRunner

from dispatcher.adapters.dynamo import des
from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.message import encode_cancel
from dispatcher.lambda_handler import handle
from dispatcher.settings import Settings
from dispatcher.wake import Waker, watch_jobs, watch_queue
from dispatcher.wiring import build_api_client, build_dispatcher
from producer.cli import app as producer_app

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("infra_expected_rel", REPO / "tests" / "infra" / "infra_expected.py")
infra_expected = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(infra_expected)  # type: ignore[union-attr]


def planted() -> dict[str, str]:
    """Fresh fake secrets, shaped like the real ones, unique per run (no false hit is possible)."""
    return {
        "WANDB_API_KEY": (uuid.uuid4().hex + uuid.uuid4().hex)[:40],
        "AWS_SECRET_ACCESS_KEY": "Fake" + uuid.uuid4().hex + "/" + uuid.uuid4().hex[:3],
        "HF_TOKEN": "hf_" + uuid.uuid4().hex,
    }


def find(secrets: dict[str, str], where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in secrets.items() if value in text]


def table_dump(dynamodb: Any, table: str) -> str:
    """Every item of the table (a Scan: the test may, the dispatcher never does)."""
    items, kwargs = [], {"TableName": table}
    while True:
        out = dynamodb.scan(**kwargs)
        items += [des(i) for i in out.get("Items", [])]
        if "LastEvaluatedKey" not in out:
            return json.dumps(items, default=str, ensure_ascii=False)
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def cluster_dump(kube: Any) -> str:
    return json.dumps([o for kind in KINDS for o in kube.list_objects(kind)], ensure_ascii=False)


def peek_bodies(sqs: Any, url: str) -> list[str]:
    out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
    return [m["Body"] for m in out.get("Messages", [])]


SWEEP_FILE = """\
name: secret-scan
method: grid
program: train.py
metric: {name: eval/accuracy, goal: maximize}
parameters:
  lr: {values: [0.1, 0.01]}
sweepq: {max_retries: 1, env: {HF_HOME: /cache/hf}}
"""


def test_planted_secrets_reach_no_body_item_log_or_manifest(atomic_aws, kube, ledger, monkeypatch, caplog,
                                                            tmp_path: Path) -> None:
    # GIVEN fake secrets in the environment of the producer and the dispatcher, everything logged
    secrets = planted()
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NO_COLOR", "1")
    caplog.set_level(logging.DEBUG)
    settings = Settings.load({}, backend=KIND, max_running=3, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings, visibility_timeout=0)
    sqs, dynamodb = atomic_aws.client("sqs"), atomic_aws.client("dynamodb")
    # WHEN a researcher submits with the producer, and pastes a key into a sweep file by mistake
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(SWEEP_FILE)
    leaky_file = tmp_path / "leaky.yaml"
    leaky_file.write_text(SWEEP_FILE.replace("env: {HF_HOME: /cache/hf}", f"env: {{WANDB_API_KEY: {secrets['WANDB_API_KEY']}}}"))
    runner = CliRunner()
    ok = runner.invoke(producer_app, ["submit", str(sweep_file), "--queue-url", queue.url, "-o", "json"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(producer_app, ["submit", str(leaky_file), "--queue-url", queue.url])
    assert refused.exit_code == 1 and "sweepq.env.WANDB_API_KEY: looks like a secret" in refused.stderr
    produced = peek_bodies(sqs, queue.url)
    assert len(produced) == 1
    sweep_id = json.loads(ok.stdout)["sweep_id"]
    ledger.expect(sweep_id, "COMPLETED", total=2)
    # AND someone bypasses the producer with the key in launch.env
    # (other values than the environment's: the wire logs of botocore rightly show this body)
    pasted = {f"pasted {name}": value for name, value in planted().items()}
    token = "raw-secret-token-01"
    raw = {"schema": "sweepq.submit/v1", "sweep_id": sweep_id_for("raw-leak", token), "token": token,
           "spec": {**grid_spec("raw-leak", 1, 1), "sweepq": {"env": {"HF_TOKEN": pasted["pasted HF_TOKEN"]}}},
           "launch": {"env": {"WANDB_API_KEY": pasted["pasted WANDB_API_KEY"]}}, "submitter": "mallory",
           "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"}
    queue.send(json.dumps(raw))
    ledger.expect(raw["sweep_id"], "REJECTED", reason="sweepq.env.HF_TOKEN: looks like a secret")
    # AND the dispatcher runs the sweep to its end
    backend = make_backend(KIND, api_client=kube.api_client, namespace="sweepq")
    dispatcher = build_dispatcher(settings, session=atomic_aws, backends={KIND: backend}, clock=Clock())
    reports = []
    for _ in range(20):
        reports.append(dispatcher.tick().as_dict())
        if not store.active_sweeps():
            break
        advance_cluster(kube, random.Random(5), fail_p=0.0, start_p=1.0, finish_p=1.0)
        dispatcher.clock.advance(30)
    figures = ledger.check_final(store)
    ledger.assert_ok(figures)
    # THEN no secret is in what they wrote: bodies, items, logs, manifests, reports, CLI output —
    # the environment's secrets nowhere, not even in botocore's debug wire logs; the pasted ones
    # nowhere the producer or the dispatcher write (their loggers, the table, the cluster)
    everything = {**secrets, **pasted}
    found = []
    for body in produced:
        found += find(everything, "an SQS body the producer wrote", body)
    found += find(everything, "DynamoDB", table_dump(dynamodb, settings.table))
    for record in caplog.records:
        ours = record.name.split(".")[0] in ("dispatcher", "producer")
        found += find(everything if ours else secrets, f"a log line of {record.name}: {record.getMessage()[:200]}",
                      record.getMessage())
    found += find(everything, "the cluster", cluster_dump(kube))
    found += find(everything, "the tick reports", json.dumps(reports))
    found += find(everything, "the producer's output", ok.output + refused.output)
    assert not found, found
    assert any(r.name.startswith("botocore") for r in caplog.records)  # the wire logs were really on
    # AND the W&B key reaches trials only through a secretKeyRef, and the rejected sweep names the field
    assert '"secretKeyRef"' in cluster_dump(kube)
    assert "<redacted>" in table_dump(dynamodb, settings.table)


@pytest.mark.soak
def test_planted_secrets_in_real_processes_with_debug_logs(serial_moto_server, kube, ledger, tmp_path: Path) -> None:
    # GIVEN a producer and dispatcher processes whose environment holds the secrets, logging at debug
    secrets = planted()
    stack = server_stack(serial_moto_server, kube, tmp_path, cap=2)
    env = stack.env(extra={**secrets, "SWEEPQ_LOG_LEVEL": "DEBUG", "NO_COLOR": "1"})
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(SWEEP_FILE)
    # WHEN the producer submits and dispatcher ticks run the sweep
    produced = run_producer(env, "submit", str(sweep_file), "-o", "json")
    assert produced.returncode == 0, produced.stderr
    bodies = peek_bodies(stack.sqs, stack.queue.url)
    sweep_id = json.loads(produced.stdout)["sweep_id"]
    ledger.expect(sweep_id, "COMPLETED", total=2)
    logs = [produced.stdout + produced.stderr]
    for _ in range(6):
        done = run_tick(env, verbose=True)
        logs.append(done.stdout + done.stderr)
        assert done.returncode in (0, 1), done.stderr[-2000:]
        if stack.store.get_sweep(sweep_id) and stack.store.get_sweep(sweep_id)["state"] == "COMPLETED":
            break
        advance_cluster(kube, random.Random(6), fail_p=0.0, start_p=1.0, finish_p=1.0)
    ledger.assert_ok(ledger.check_final(stack.store))
    assert any("DEBUG" in text for text in logs)  # the debug logs were really on
    # THEN none of the secrets is in a body, an item, a log line (botocore's included) or the cluster
    found = []
    for body in bodies:
        found += find(secrets, "an SQS body", body)
    found += find(secrets, "DynamoDB", table_dump(stack.dynamodb, stack.store.table))
    for text in logs:
        found += find(secrets, "a process's output", text)
    found += find(secrets, "the cluster", cluster_dump(kube))
    assert not found, found


# -- least privilege ---------------------------------------------------------------------------

TRANSACT_ITEMS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem"}


class Recorder:
    """botocore ``before-parameter-build`` hook (it sees the API parameters): the IAM action of
    every call a session's clients make."""

    def __init__(self) -> None:
        self.actions: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event_name: str, params: dict[str, Any], **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            if operation == "TransactWriteItems":  # not an IAM action: each item kind is authorised
                for item in params.get("TransactItems", []):
                    self.actions[f"{service}:{TRANSACT_ITEMS[next(iter(item))]}"] += 1
            else:
                self.actions[f"{service}:{operation}"] += 1


def _life(session: Any, kube: Any, settings: Settings, queue: Any, store: Any, kinds: tuple[str, ...]) -> None:
    """``session`` builds the dispatchers' clients; ``queue``/``store`` are the test's own."""
    """A whole life on every kind: submits, a failure and its retry, a cancel, a rejection, a
    duplicate, two dispatchers contending for the lease, the Lambda handler's SQS path and the
    run loop's wake sources."""
    clock = Clock()
    backends = {k: make_backend(k, api_client=kube.api_client, namespace="sweepq") for k in kinds}
    first = build_dispatcher(settings, session=session, backends=backends, clock=clock)
    second = build_dispatcher(settings, session=session, backends=backends, clock=clock)
    ids = [submit(queue, grid_spec(f"life-{k}", 1, 2), {"kind": k, "max_retries": 1, "gpus_per_node": 0})
           for k in kinds]
    doomed = [submit(queue, grid_spec(f"doomed-{k}", 2, 2), {"kind": k, "gpus_per_node": 0}) for k in kinds]
    submit(queue, {**grid_spec("bad", 1, 1), "method": "bayes"})
    submit(queue, grid_spec("dup", 1, 1), token="dup-token-0001")
    submit(queue, grid_spec("dup", 1, 1), token="dup-token-0001")
    # the Lambda handler's event-source path: records delivered with the event, then a tick
    event_body = json.dumps({"schema": "sweepq.wake/v1", "event": "trial-finished", "sweep_id": ids[0]})
    handle({"Records": [{"eventSource": "aws:sqs", "messageId": "m-1", "receiptHandle": "r-1", "body": event_body,
                         "attributes": {"ApproximateReceiveCount": "1"}}]}, first)
    failed_once: set[str] = set()
    for step in range(40):
        # two dispatchers at the same moment: one holds the lease, the other marks it dirty
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=lambda d=d, b=barrier: (b.wait(), d.tick())) for d in (first, second)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if step == 1:
            for sweep_id in doomed:
                queue.send(encode_cancel(sweep_id=sweep_id, requested_by="alice"))
        for kind in kinds:
            for job in kube.list_objects(kind):
                name = job["metadata"]["name"]
                if name.startswith("doomed"):
                    continue  # stays running until the cancel deletes it
                if name.endswith("-0-a1") and name not in failed_once:
                    failed_once.add(name)
                    kube.set_job_phase(kind, name, "FAILED", reason="injected")
                elif name not in failed_once:
                    kube.set_job_phase(kind, name, "SUCCEEDED")
        clock.advance(30)
        if not store.active_sweeps():
            break
    assert {store.get_sweep(s)["state"] for s in ids} == {"COMPLETED"}
    assert {store.get_sweep(s)["state"] for s in doomed} == {"CANCELLED"}
    # the run loop's wake sources (queue attributes poll, Kubernetes watches with a 1 s timeout)
    stop, waker = threading.Event(), Waker()
    threads = [watch_queue(first.queue.client, first.queue.url, waker, stop, poll_s=0.2)]
    for backend in first.backends.values():
        threads += watch_jobs(backend, waker, stop, watch_timeout_s=1)
    # Wait until each watch request reached the server. The emulator ignores timeoutSeconds, so
    # the streams end by their client read timeout, in daemon threads, after the stop is set.
    watched = {backend.resources()[0].plural for backend in first.backends.values()}
    for _ in range(50):
        if all(kube.requests[("watch", plural)] for plural in watched):
            break
        stop.wait(0.1)
    stop.set()


def test_iam_and_rbac_grant_exactly_what_a_whole_sweep_life_calls(atomic_aws, kube) -> None:
    # GIVEN dispatchers whose every AWS call is recorded (queue found by name, like the CronJob),
    # every Kubernetes kind enabled, the emulator counting verbs
    recorder = Recorder()
    dispatcher_session = boto3.session.Session(region_name="us-east-1")
    dispatcher_session.events.register("before-parameter-build", recorder)
    kinds = ("pytorchjob", "trainjob", "job")  # elasticjob is retired: its new sweeps are REJECTED (drain only)
    settings = Settings.load({}, backend=KIND, kinds=",".join(kinds), max_running=8, namespace="sweepq")
    store, queue = bootstrap(atomic_aws, settings)
    kube.reset_counts()
    # WHEN a whole life runs on every kind, and the Lambda wiring reaches an EKS cluster by name
    _life(dispatcher_session, kube, settings, queue, store, kinds)
    role = atomic_aws.client("iam").create_role(RoleName="eks", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    atomic_aws.client("eks").create_cluster(name="gpu-cluster", roleArn=role,
                                            resourcesVpcConfig={"subnetIds": ["subnet-1"]})
    build_api_client(Settings.load({}, cluster_name="gpu-cluster"), dispatcher_session)
    # THEN IAM: the dispatcher called only what its role grants, and the role grants nothing it never calls
    called = set(recorder.actions) - infra_expected.NO_PERMISSION_ACTIONS  # the presigned EKS token
    granted = set(infra_expected.DISPATCHER_IAM_ACTIONS)
    assert called - granted == set(), f"called but not granted: {sorted(called - granted)}"
    never_called = granted - called
    assert never_called == {"logs:CreateLogStream", "logs:PutLogEvents"}, sorted(never_called)  # the Lambda runtime's
    assert "dynamodb:Scan" not in recorder.actions and "sqs:SendMessage" not in recorder.actions
    # AND RBAC: each (group, resource) got only granted verbs, and every granted verb but `get` was used
    verbs: dict[tuple[str, str], set[str]] = {}
    plural_group = {plural: group for group, _, plural in KINDS.values()}
    for (verb, plural), count in kube.requests.items():
        if count:
            verbs.setdefault((plural_group[plural], plural), set()).add(verb)
    rules = infra_expected.DISPATCHER_RBAC_RULES
    for key, used in verbs.items():
        assert key in rules and used <= rules[key], f"{key}: called {sorted(used)}, granted {sorted(rules.get(key, ()))}"
    # rbac.yaml keeps `get` on purpose ("keep kubectl get/describe --as usable for debugging"); the
    # pods `watch` is granted but nothing watches pods (the ElasticJob wake source watches the
    # jobs): an exact list, so a change either way is reviewed here
    unused = {key: sorted(rules[key] - verbs.get(key, set())) for key in rules}
    expected = {key: ["get"] for key in rules}
    expected[("", "pods")] = ["get", "watch"]
    kueue = ("kueue.x-k8s.io", "workloads")  # listed only for Kueue-labelled jobs; this life runs none
    if kueue in rules:
        expected[kueue] = sorted(rules[kueue] - verbs.get(kueue, set()))
    retired = ("elastic.pytorch.org", "elasticjobs")  # only drained (observe/cancel), not exercised by this life
    if retired in rules:
        expected[retired] = sorted(rules[retired])
    assert unused == expected, unused
    print(f"\nIAM: {sum(recorder.actions.values())} calls, actions {dict(sorted(recorder.actions.items()))}")
    print(f"RBAC: verbs used {dict(sorted((f'{g}/{p}', sorted(v)) for (g, p), v in verbs.items()))}")
