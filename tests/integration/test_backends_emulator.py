"""The emulator itself behaves like an API server where kmock 0.8 does not (see tests/kube_emulator.py)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiException, BatchV1Api, CustomObjectsApi

from kube_emulator import selector_matcher

GROUP, VERSION, PLURAL, NS = "kubeflow.org", "v1", "pytorchjobs", "ns"


def job(name: str, **labels: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PyTorchJob", "metadata": {"name": name, "labels": labels},
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
                 lambda: api.list_namespaced_custom_object("example.com", "v1", NS, "widgets")):
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
    assert kube.count("list", "pytorchjob") == 6
    assert selector_matcher("")({"any": "thing"})


def test_builtin_jobs_round_trip_through_typed_models(kube) -> None:
    from kubernetes.client import V1Job

    api = BatchV1Api(kube.api_client)
    body = V1Job.from_dict({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})
    created = api.create_namespaced_job(NS, body)
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    kube.set_job_phase("job", "j", "SUCCEEDED")
    assert api.read_namespaced_job("j", NS).status.conditions[0].type == "Complete"
