"""The emulator itself behaves like an API server where kmock 0.8 does not (see tests/kube_emulator.py),
and refuses what upstream's models and webhooks refuse."""

from __future__ import annotations

import json

import pytest
from kube_emulator import selector_matcher
from kubernetes.client import ApiException, BatchV1Api, CustomObjectsApi

# A CRD without an upstream model: the generic API-server behaviour, no schema.
GROUP, VERSION, PLURAL, NS = "example.com", "v1", "widgets", "ns"


@pytest.fixture(autouse=True)
def widgets(kube):
    kube.install(f"{GROUP}/{VERSION}/{PLURAL}")


def job(name: str, **labels: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name, "labels": labels},
            "spec": {"x": 1}}


def test_create_answers_201_with_server_fields_and_409_on_duplicates(kube) -> None:
    api = CustomObjectsApi(kube.api_client)
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job("a"))
    assert created is not None  # the client maps only 201 to the object
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    with pytest.raises(ApiException) as conflict:
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job("a"))
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "AlreadyExists"


def test_put_replaces_and_rejects_a_stale_resource_version(kube) -> None:
    api = CustomObjectsApi(kube.api_client)
    created = api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job("a"))
    replaced = api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", {**created, "spec": {"y": 2}})
    assert replaced["spec"] == {"y": 2} and replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(replaced["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    with pytest.raises(ApiException) as stale:
        api.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a", created)
    assert stale.value.status == 409


def test_status_patch_get_and_404s(kube) -> None:
    api = CustomObjectsApi(kube.api_client)
    api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job("a"))
    api.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, "a", {"status": {"phase": "x"}})
    assert api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "a")["status"] == {"phase": "x"}
    for call in (lambda: api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "b"),
                 lambda: api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "b"),
                 lambda: api.list_namespaced_custom_object("example.com", "v1", NS, "gadgets")):
        with pytest.raises(ApiException) as missing:
            call()
        assert missing.value.status == 404


def test_list_honours_label_selectors_and_counts_requests(kube) -> None:
    api = CustomObjectsApi(kube.api_client)
    for name, labels in (("a", {"team": "x", "tier": "gpu"}), ("b", {"team": "y"}), ("c", {})):
        api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, job(name, **labels))
    kube.reset_counts()
    listed = {sel: sorted(o["metadata"]["name"] for o in
                          api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, label_selector=sel)["items"])
              for sel in ("team=x", "team!=x", "team", "!team", "team in (x,y),tier", "team notin (x)")}
    assert listed == {"team=x": ["a"], "team!=x": ["b", "c"], "team": ["a", "b"], "!team": ["c"],
                      "team in (x,y),tier": ["a"], "team notin (x)": ["b", "c"]}
    assert kube.count("list", f"{GROUP}/{VERSION}/{PLURAL}") == 6
    assert selector_matcher("")({"any": "thing"})


def test_builtin_jobs_round_trip_through_typed_models(kube) -> None:
    from kubernetes.client import V1Container, V1Job, V1JobSpec, V1ObjectMeta, V1PodSpec, V1PodTemplateSpec

    api = BatchV1Api(kube.api_client)
    body = V1Job(api_version="batch/v1", kind="Job", metadata=V1ObjectMeta(name="j"), spec=V1JobSpec(
        template=V1PodTemplateSpec(spec=V1PodSpec(restart_policy="Never", containers=[V1Container(name="c", image="i")]))))
    created = api.create_namespaced_job(NS, body)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    kube.set_job_phase("job", "j", "SUCCEEDED")
    assert api.read_namespaced_job("j", NS).status.conditions[0].type == "Complete"


def test_what_upstream_prunes_or_refuses_is_answered_422_on_create_and_replace(kube) -> None:
    # GIVEN objects of the validated kinds as a real cluster would see them
    api = CustomObjectsApi(kube.api_client)
    pruned = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "p"},
              "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {
                  "containers": [{"name": "pytorch", "image": "i"}]}}}}, "elasticPolicy": {"nProcPerNode": 8}}}
    # WHEN they are created, THEN the API answers 422 naming what upstream would drop or refuse
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", pruned)
    assert refused.value.status == 422 and "nProcPerNode: deprecated" in json.loads(refused.value.body)["message"]
    trainjob = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "metadata": {"name": "t"},
                "spec": {"runtimeRef": {"name": "no-such-runtime"}}}
    with pytest.raises(ApiException) as no_runtime:
        api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", trainjob)
    # Trainer's webhook (controller-runtime) denies with 403 Forbidden, as the API server passes it on
    assert no_runtime.value.status == 403 and "must be created before the TrainJob" in no_runtime.value.body
    trainjob["spec"]["runtimeRef"]["name"] = "torch-distributed"
    created = api.create_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", trainjob)
    with pytest.raises(ApiException) as replaced:
        api.replace_namespaced_custom_object("trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", "t",
                                             {**created, "spec": {**created["spec"], "podTemplateOverrides": []}})
    assert replaced.value.status == 422 and "podTemplateOverrides: unknown field" in replaced.value.body
    with pytest.raises(ApiException) as batch:
        BatchV1Api(kube.api_client).create_namespaced_job(NS, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    assert batch.value.status == 422 and "Never or OnFailure" in batch.value.body
    # AND a test can switch it off to see sweepq's own handling of a 422
    kube.handler.validate = False
    api.create_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", pruned)
