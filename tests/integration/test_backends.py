"""The Kubernetes backends against the API emulator over real HTTP with the official client.

GIVEN an emulated cluster (``kube`` fixture, see tests/kube_emulator.py), WHEN a backend submits,
observes and cancels, THEN the objects, phases, request counts and typed errors are what a real
API server would produce.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from kube_status import condition

from dispatcher.adapters.kube_client import api_client_from_host
from dispatcher.backends import make_backend
from dispatcher.backends.elasticjob import RETIRED
from dispatcher.core.errors import PermanentError, TransientError
from dispatcher.core.jobs import JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy, TemplateSpec

NAMESPACE = "sweepq"
SWEEP = "lr-sweep-abcdefgh"
JOBSET_TEMPLATE: dict[str, Any] = {
    "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
    "spec": {"replicatedJobs": [{"name": "w", "template": {"spec": {"template": {"spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "t", "image": "{{image}}", "command": ["python", "{{args}}"],
                        "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node}}"}}}]}}}}}]},
}
TEMPLATE_POLICY = Policy(templates={"jobset": TemplateSpec(manifest=JOBSET_TEMPLATE)})  # templates: operator-owned
LAUNCH: dict[str, dict[str, Any]] = {
    "pytorchjob": {"gpus_per_node": 8, "nodes": "1:2"},
    "trainjob": {"gpus_per_node": 8, "nodes": 2},
    "job": {"gpus_per_node": 1},
    "template": {"gpus_per_node": 2, "template": "jobset"},
}
GPUS = {"pytorchjob": 16, "trainjob": 16, "job": 1, "template": 2}
KINDS = list(LAUNCH)  # the kinds that launch; elasticjob is retired (drained only, see below)
EMULATED = {"template": "jobset.x-k8s.io/v1alpha2/jobsets"}  # emulator name of each kind's resource
PLURALS = {"pytorchjob": "pytorchjobs", "trainjob": "trainjobs", "job": "jobs", "template": "jobsets"}


def request(kind: str, index: int = 0, attempt: int = 1) -> LaunchRequest:
    launch = LaunchSettings(kind=kind, image="trainer:1", **LAUNCH[kind])
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=attempt,
        job_name=f"{SWEEP}-{index}-a{attempt}", namespace=NAMESPACE, params={"lr": 0.1},
        command=TrialCommand(argv=("train.py", f"--lr=0.{index}")), launch=launch, env={"SWEEP_ID": SWEEP},
    )


def backend(kube: Any, kind: str, **options: Any) -> Any:
    if kind == "template":
        kube.install(EMULATED["template"])
        options.setdefault("policy", TEMPLATE_POLICY)
    return make_backend(kind, api_client=kube.api_client, namespace=NAMESPACE, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_submit_twice_is_one_object_and_success_both_times(kube, kind) -> None:
    b = backend(kube, kind)
    dryrun = b.dryrun(request(kind))
    assert b.submit(dryrun) == dryrun.job_name
    assert b.submit(b.dryrun(request(kind))) == dryrun.job_name  # 409 AlreadyExists = already launched
    stored = kube.list_objects(EMULATED.get(kind, kind), NAMESPACE)
    assert [obj["metadata"]["name"] for obj in stored] == [dryrun.job_name]
    assert stored[0]["spec"] == dryrun.request["spec"]
    assert kube.count("create", EMULATED.get(kind, kind)) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_observe_reads_every_phase_with_one_list_call_per_kind(kube, kind) -> None:
    b = backend(kube, kind)
    phases = [JobPhase.PENDING, JobPhase.RUNNING, JobPhase.SUCCEEDED, JobPhase.FAILED]
    for index in range(len(phases)):
        b.submit(b.dryrun(request(kind, index)))
    for index, phase in enumerate(phases):
        name = f"{SWEEP}-{index}-a1"
        if kind == "template":  # a JobSet: generic conditions
            kube.patch_status(EMULATED[kind], name, {"conditions": [
                {"type": {JobPhase.SUCCEEDED: "Completed", JobPhase.FAILED: "Failed"}.get(phase, "Running"),
                 "status": "False" if phase is JobPhase.PENDING else "True", "reason": "OOMKilled",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        else:
            kube.set_job_phase(kind, name, phase, reason="OOMKilled")
    kube.put_object(EMULATED.get(kind, kind), {"apiVersion": "x/v1", "kind": "Foreign",
                                               "metadata": {"name": "not-ours", "labels": {"app": "x"}}}, NAMESPACE)
    kube.handler.honor_selectors = False  # ours are filtered client-side too
    kube.reset_counts()

    observed = make_backend(kind, api_client=kube.api_client, namespace=NAMESPACE,  # a fresh process
                            **({"policy": TEMPLATE_POLICY} if kind == "template" else {})).observe()

    assert {name: status.phase for name, status in observed.items()} == \
        {f"{SWEEP}-{index}-a1": phase for index, phase in enumerate(phases)}
    failed = observed[f"{SWEEP}-3-a1"]
    assert "OOMKilled" in failed.reason and failed.finished_at is not None
    for index, status in enumerate(sorted(observed.values(), key=lambda s: s.trial_index)):
        assert (status.kind, status.sweep_id, status.trial_index, status.attempt, status.gpus) == \
            (kind, SWEEP, index, 1, GPUS[kind])
        assert status.created_at is not None and abs(status.created_at - time.time()) < 120
    # one list of the kind, and one pods list for the failed job's cause (none of them per job)
    assert dict(kube.requests) == {("list", PLURALS[kind]): 1, ("list", "pods"): 1}


def legacy_elasticjob(kube, index: int, *, min_replicas: int = 2) -> str:
    """An ElasticJob as sweepq created them before the kind was retired (stored as is)."""
    name = f"{SWEEP}-{index}-a1"
    labels = {"app.kubernetes.io/managed-by": "sweepq", "sweepq.io/kind": "elasticjob", "sweepq.io/sweep-id": SWEEP,
              "sweepq.io/trial-index": str(index), "sweepq.io/attempt": "1"}
    kube.put_object("elasticjob", {
        "apiVersion": "elastic.pytorch.org/v1alpha1", "kind": "ElasticJob",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{index}", "labels": labels,
                     "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": {"sweepq.io/gpus": "8"}},
        "spec": {"rdzvEndpoint": "etcd-service:2379", "minReplicas": min_replicas, "maxReplicas": 2,
                 "replicaSpecs": {"Worker": {"replicas": 2, "template": {
                     "metadata": {"labels": {**labels, "sweepq.io/job-name": name}},
                     "spec": {"containers": [{"name": "elasticjob-worker", "image": "trainer:1"}]}}}}},
        "status": {"conditions": [condition("Created", "ElasticJobCreated")]}}, NAMESPACE)
    return name


def test_a_retired_elasticjob_is_refused_for_new_trials_and_still_observed_and_cancelled(kube) -> None:
    # GIVEN the retired kind and ElasticJobs still running from before
    b = backend(kube, "elasticjob")
    with pytest.raises(PermanentError) as refused:
        b.dryrun(dataclasses.replace(request("job"),
                                     launch=LaunchSettings(kind="elasticjob", image="trainer:1", nodes="2:4")))
    assert str(refused.value) == RETIRED
    running, failed = legacy_elasticjob(kube, 0), legacy_elasticjob(kube, 1)
    kube.set_job_phase("elasticjob", running, JobPhase.RUNNING)
    kube.set_job_phase("elasticjob", failed, JobPhase.FAILED, reason="OOMKilled")
    kube.reset_counts()
    # WHEN the dispatcher observes them
    observed = b.observe()
    # THEN their phase comes from their pods (the job's own status stays stale), in one pods list
    assert kube.get_object("elasticjob", running)["status"]["conditions"][0]["type"] == "Created"
    assert observed[running].phase is JobPhase.RUNNING and observed[running].gpus == 8
    assert observed[failed].phase is JobPhase.FAILED and "OOMKilled" in observed[failed].reason
    assert "pod " + failed + "-worker-0: OOMKilled" in observed[failed].detail
    assert dict(kube.requests) == {("list", "elasticjobs"): 1, ("list", "pods"): 1}
    # AND a cancel deletes the job and, through its owner references, its pods
    b.cancel(running)
    b.cancel(running)
    assert [p["metadata"]["name"] for p in kube.list_objects("pod")] == [f"{failed}-worker-0", f"{failed}-worker-1"]
    assert set(b.observe()) == {failed}


@pytest.mark.parametrize("kind", KINDS)
def test_cancel_twice_is_fine(kube, kind) -> None:
    b = backend(kube, kind)
    name = b.submit(b.dryrun(request(kind)))
    b.cancel(name)
    b.cancel(name)  # 404: already gone
    assert kube.list_objects(EMULATED.get(kind, kind)) == []
    assert b.observe() == {}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(kube, status) -> None:
    b = backend(kube, "pytorchjob")
    kube.fail_next("pytorchjob", status, times=2, retry_after=7)
    with pytest.raises(TransientError, match=f"answered {status}") as create_error:
        b.submit(b.dryrun(request("pytorchjob")))
    with pytest.raises(TransientError):
        b.observe()
    assert create_error.value.delay == 7.0
    assert b.submit(b.dryrun(request("pytorchjob"))) == f"{SWEEP}-0-a1"  # the fault is over


def test_a_hung_api_server_is_a_transient_timeout(kube) -> None:
    b = make_backend("job", api_client=kube.api_client, namespace=NAMESPACE, request_timeout=(1.0, 0.3))
    kube.hang_next("job", 3.0, verb="list")
    started = time.monotonic()
    with pytest.raises(TransientError, match="unreachable"):
        b.observe()
    assert time.monotonic() - started < 2.0  # one read timeout, not retried inside the client
    assert b.observe() == {}


def test_unreachable_api_server_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = make_backend("job", api_client=api_client_from_host(f"http://127.0.0.1:{port}"), namespace=NAMESPACE,
                     request_timeout=(0.5, 0.5))
    with pytest.raises(TransientError, match="unreachable"):
        b.submit(b.dryrun(request("job")))


@pytest.mark.parametrize("kind, fix", [
    ("pytorchjob", "PyTorchJob CRD .* is not installed — install the Kubeflow Training Operator or set "
                   "SWEEPQ_BACKEND=job"),
    ("trainjob", "install Kubeflow Trainer v2.2\\+"),
])
def test_missing_crd_is_permanent_and_says_what_to_do(kube, kind, fix) -> None:
    kube.uninstall(kind)
    b = backend(kube, kind)
    with pytest.raises(PermanentError, match=fix):
        b.submit(b.dryrun(request(kind)))
    with pytest.raises(PermanentError, match=fix):
        b.observe()


@pytest.mark.parametrize("status, message", [(403, "forbidden .* grant the dispatcher's identity 'create'"),
                                             (422, "rejected it"), (401, "401 Unauthorized")])
def test_client_errors_are_typed(kube, status, message) -> None:
    b = backend(kube, "job")
    kube.fail_next("job", status)
    error = TransientError if status == 401 else PermanentError
    with pytest.raises(error, match=message):
        b.submit(b.dryrun(request("job")))


def test_a_templated_batch_job_is_sent_verbatim_and_refused_where_upstream_would_prune_it(kube) -> None:
    template = {"apiVersion": "batch/v1", "kind": "Job", "spec": {
        "backoffLimit": 0,
        "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "t", "image": "{{image}}", "command": ["python", "{{args}}"],
            "resources": {"limits": {"nvidia.com/gpu": "{{gpus_per_node | int}}"}}}]}}}}
    # a field batch/v1 does not know would be dropped by the API server (an operator's typo, say)
    unknown = {**template, "spec": {**template["spec"], "futureField": {"kept": True}}}
    b = make_backend("template", api_client=kube.api_client, namespace=NAMESPACE,
                     policy=Policy(templates={"batch": TemplateSpec(manifest=template),
                                              "pruned": TemplateSpec(manifest=unknown)}))
    launch = LaunchSettings(kind="template", image="trainer:1", gpus_per_node=2, template="batch")
    dryrun = b.dryrun(dataclasses.replace(request("job"), launch=launch))
    b.submit(dryrun)
    stored = kube.get_object("job", dryrun.job_name)
    assert stored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2  # a number
    assert b.observe()[dryrun.job_name].phase is JobPhase.PENDING
    # …so the emulator, like upstream's models, refuses it, naming the field
    pruned = b.dryrun(dataclasses.replace(request("job", 1), launch=launch.model_copy(update={"template": "pruned"})))
    with pytest.raises(PermanentError, match="rejected it: .*Job.spec.futureField: unknown field"):
        b.submit(pruned)
