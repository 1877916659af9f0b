"""Hostile raw SQS bodies through the real tick (moto SQS + DynamoDB, the Kubernetes API emulator over
HTTP), next to a benign sweep in the same batch: the hostile ones are REJECTED with a readable reason
that copies no secret, nothing of theirs reaches the cluster, and the benign one completes.

On the real path intake validates every body (launch-settings bounds, reserved env names, templates
by name), runs ``Policy.admit`` for the message's SenderId (ServiceAccounts, Secrets, PVCs, images,
teams: tests/integration/test_policy_intake.py) and renders trial 0 through the backend (the
template backend's checks).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, pytorchjob_phase, submit

from dispatcher.adapters.dynamo import des
from dispatcher.backends import make_backend
from dispatcher.core.identity import sweep_id_for
from dispatcher.core.jobs import JobPhase
from dispatcher.core.policy import Policy
from dispatcher.settings import Settings

JOBSETS = "jobset.x-k8s.io/v1alpha2/jobsets"
SECRET = "planted-" + uuid.uuid4().hex  # a value no test output may ever contain
WORKERS = {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": {"replicatedJobs": [{
    "name": "workers", "replicas": 1, "template": {"spec": {
        "parallelism": "{{max_nodes | int}}", "completions": "{{max_nodes | int}}", "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "serviceAccountName": "{{service_account}}", "containers": [{
            "name": "trainer", "image": "{{image}}", "command": ["torchrun", "--nnodes={{max_nodes}}", "{{args}}"],
            "env": [{"name": "SWEEP_ID", "value": "spoofed-by-the-template"}],
            "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}}]}}}}}]}}
POLICY = Policy.from_data({"templates": {"workers": {"manifest": WORKERS}}})
TEMPLATE_OK = {"kind": "template", "template": "workers", "gpus_per_node": 2, "nodes": 2,
               "service_account": "sweepq-trainer"}
PRIVILEGED = {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
    "hostPID": True, "hostNetwork": True, "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
    "containers": [{"name": "x", "image": "alpine", "command": ["sh", "-c", "cat /host/etc/shadow"],
                    "securityContext": {"privileged": True}, "env": [{"name": "K", "value": SECRET}]}]}}}}


@pytest.fixture
def world(aws, kube):
    settings = Settings.load({}, backend="pytorchjob", kinds="pytorchjob,template", max_running=8, namespace="sweepq")
    store, queue = bootstrap(aws, settings)
    kube.install(JOBSETS)
    backends = {"pytorchjob": make_backend("pytorchjob", api_client=kube.api_client, namespace="sweepq"),
                "template": make_backend("template", api_client=kube.api_client, namespace="sweepq", policy=POLICY)}

    class World:
        pass

    w = World()
    w.aws, w.kube, w.settings, w.store, w.queue, w.clock = aws, kube, settings, store, queue, Clock()
    w.dispatcher = make_dispatcher(aws, settings, backends, w.clock, queue, policy=POLICY)
    return w


def raw_submit(w: Any, name: str, launch: Any) -> str:
    """A body written by hand (bypassing producer's checks), as a hostile teammate sends it."""
    token = uuid.uuid4().hex
    sweep_id = sweep_id_for(name, token)
    w.queue.send(json.dumps({"schema": "sweepq.submit/v1", "sweep_id": sweep_id, "token": token,
                             "spec": grid_spec(name, 1, 2), "launch": launch, "submitter": "the-operator",
                             "submitted_at": "2026-01-01T00:00:00Z", "source": "raw"}))
    return sweep_id


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "wandb-base-url": ({"env": {"WANDB_BASE_URL": "https://attacker.example"}}, "launch.env.WANDB_BASE_URL: reserved"),
    "ld-preload": ({"env": {"LD_PRELOAD": "/tmp/evil.so"}}, "launch.env.LD_PRELOAD: reserved (LD_*)"),
    "aws-endpoint": ({"env": {"AWS_ENDPOINT_URL": "https://attacker.example"}}, "launch.env.AWS_ENDPOINT_URL: reserved"),
    "other-sweep-id": ({"env": {"SWEEP_ID": "victim-sweep-12345678"}}, "launch.env.SWEEP_ID: reserved"),
    "pasted-key": ({"env": {"WANDB_API_KEY": SECRET}}, "launch.env.WANDB_API_KEY: looks like a secret"),
    "gpu-bool": ({"gpus_per_node": True}, "launch.gpus_per_node: True is a boolean, not a number"),
    "huge-concurrency": ({"max_concurrent": 10**40}, "launch.max_concurrent"),
    "huge-runtime": ({"max_runtime": "100000d"}, "launch.max_runtime: '100000d' is over the maximum of 30d"),
    "inline-manifest": ({"kind": "template", "template": PRIVILEGED},
                        "launch.template: a manifest inside a message is refused — templates are operator-owned"),
    # the template backend refuses it at intake today; the policy check refuses it first once wired — both name it
    "unknown-template": ({**TEMPLATE_OK, "template": "privileged"}, "template: 'privileged' is "),
}


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_hostile_bodies_are_rejected_with_reasons_and_the_benign_sweeps_complete(world) -> None:
    w = world
    benign = submit(w.queue, grid_spec("benign", 1, 2))
    benign_template = raw_submit(w, "benign-template", TEMPLATE_OK)
    hostile = {case: raw_submit(w, case, launch) for case, (launch, _) in HOSTILE.items()}
    report = w.dispatcher.tick()
    assert report.rejected == len(hostile) and report.accepted == 2, report.as_dict()

    for case, sweep_id in hostile.items():
        meta = w.store.get_sweep(sweep_id)
        assert meta["state"] == "REJECTED", case
        assert HOSTILE[case][1] in meta["reason"], (case, meta["reason"])
    assert "workers" in w.store.get_sweep(hostile["unknown-template"])["reason"]  # what the sweep could use
    # nothing hostile reached the cluster; no planted secret anywhere in the table or the cluster
    made = [*w.kube.list_objects("pytorchjob"), *w.kube.list_objects(JOBSETS)]
    assert {j["metadata"]["labels"]["sweepq.io/sweep-id"] for j in made} == {benign, benign_template}
    table = w.aws.client("dynamodb").scan(TableName=w.settings.table)["Items"]
    assert SECRET not in json.dumps([des(i) for i in table], default=str)
    assert SECRET not in json.dumps(made)

    # the template sweep's jobs: the operator's manifest, filled, with sweepq's rules on top
    jobset = w.kube.list_objects(JOBSETS)[0]
    assert jobset["metadata"]["annotations"]["sweepq.io/gpus"] == "4"
    pod = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["SWEEP_ID"] == benign_template  # sweepq's variable wins over the template's
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"] == {"allowPrivilegeEscalation": False,
                                                       "capabilities": {"drop": ["ALL"]}}

    # the benign sweeps run to completion
    for _ in range(6):
        for job in w.kube.list_objects("pytorchjob"):
            if not pytorchjob_phase(job).terminal:
                w.kube.set_job_phase("pytorchjob", job["metadata"]["name"], JobPhase.SUCCEEDED)
        for job in w.kube.list_objects(JOBSETS):
            w.kube.patch_status(JOBSETS, job["metadata"]["name"], {"conditions": [
                {"type": "Completed", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        w.clock.advance(60)
        assert not w.dispatcher.tick().errors
    assert [w.store.get_sweep(s)["state"] for s in (benign, benign_template)] == ["COMPLETED", "COMPLETED"]


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_template_that_hides_gpus_from_the_caps_is_rejected_at_intake(world) -> None:
    w = world
    hidden = {**WORKERS, "spec": {"replicatedJobs": [{**WORKERS["spec"]["replicatedJobs"][0], "replicas": 4}]}}
    policy = Policy.from_data({"templates": {"workers": {"manifest": hidden}}})
    backends = {"template": make_backend("template", api_client=w.kube.api_client, namespace="sweepq", policy=policy)}
    sweep_id = raw_submit(w, "hidden-gpus", TEMPLATE_OK)
    assert make_dispatcher(w.aws, w.settings, backends, w.clock, w.queue, policy=policy).tick().rejected == 1
    reason = w.store.get_sweep(sweep_id)["reason"]
    assert "asks for 16 GPUs but the sweep declares gpus_per_node × max_nodes = 4, which the caps count" in reason
    assert w.kube.list_objects(JOBSETS) == []
