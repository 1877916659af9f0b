"""The NetworkPolicies of every overlay, evaluated with NetworkPolicy's semantics (netpol.py)
for the pods that really run: trial pods with the labels the backends render, etcd's pod, the
dispatcher's CronJob pod. Trials reach DNS, their peers, the Pod Identity agent, public HTTPS,
and etcd only from ElasticJob pods; nothing reaches the metadata endpoint, the dispatcher, or etcd
from elsewhere."""

from __future__ import annotations

import pytest
from infra_expected import DISPATCHER_NAMESPACE, OVERLAYS, TRIALS_NAMESPACE
from netpol import Cluster, Pod
from trial_manifests import manifest_of, pods

IMDS = ("169.254.169.254", "fd00:ec2::254")
AGENT = ("169.254.170.23", "fd00:ec2::23")
PUBLIC_AWS = "52.94.0.10"  # a public DynamoDB/SQS address
VPC_INTERNAL = "10.0.5.5"  # a database, the Kubernetes API's private endpoint, a node
KUBE_DNS = Pod("kube-system", "10.100.0.10", {"k8s-app": "kube-dns"})


def _pod(manifest_kind: str, index: int = 0, *, job_index: int = 3) -> Pod:
    manifest = manifest_of(manifest_kind, index=job_index)
    pod = pods(manifest)[index]
    return Pod(TRIALS_NAMESPACE, f"10.1.{job_index}.{index + 10}", pod["metadata"]["labels"])


@pytest.fixture(params=OVERLAYS)
def cluster(request, rendered) -> Cluster:
    return Cluster(rendered[request.param], extra_namespaces={"kube-system": {}, "team-b": {}})


@pytest.fixture
def etcd(rendered) -> Pod:
    [deployment] = [o for o in rendered["elasticjob"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "etcd"]
    return Pod(TRIALS_NAMESPACE, "10.1.0.5", deployment["spec"]["template"]["metadata"]["labels"])


@pytest.fixture
def dispatcher(rendered) -> Pod:
    [cronjob] = [o for o in rendered["pytorchjob"] if o["kind"] == "CronJob"]
    return Pod(DISPATCHER_NAMESPACE, "10.1.9.9", cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("kind", ["pytorchjob", "elasticjob", "job"])
def test_trials_reach_dns_peers_the_pod_identity_agent_and_public_https(cluster, kind):
    trial = _pod(kind)
    assert cluster.can_connect(trial, KUBE_DNS, 53, "UDP") and cluster.can_connect(trial, KUBE_DNS, 53, "TCP")
    assert all(cluster.can_connect(trial, agent, 80) for agent in AGENT)
    assert cluster.can_connect(trial, PUBLIC_AWS, 443)
    if kind != "job":  # multi-node kinds: rendezvous and collectives on any port between the job's pods
        peer = _pod(kind, 1)
        assert cluster.can_connect(trial, peer, 29400) and cluster.can_connect(peer, trial, 41234)


@pytest.mark.parametrize("kind", ["pytorchjob", "elasticjob", "job"])
def test_trials_reach_nothing_else(cluster, kind, dispatcher):
    trial = _pod(kind)
    for address in IMDS:
        for port in (80, 443):
            assert not cluster.can_connect(trial, address, port), (address, port)
    assert not cluster.can_connect(trial, AGENT[0], 443)
    assert not cluster.can_connect(trial, PUBLIC_AWS, 80)  # HTTPS only
    assert not cluster.can_connect(trial, "8.8.8.8", 53, "UDP")  # no resolver but the cluster's
    assert not cluster.can_connect(trial, VPC_INTERNAL, 443)  # nothing private
    assert not cluster.can_connect(trial, dispatcher, 8080)
    assert not cluster.can_connect(trial, Pod("team-b", "10.2.0.1", {"app": "web"}), 443)


def test_nothing_outside_the_trials_namespace_reaches_a_trial(cluster, dispatcher):
    trial = _pod("pytorchjob")
    assert not cluster.can_connect(Pod("team-b", "10.2.0.1", {}), trial, 29400)
    assert not cluster.can_connect(dispatcher, trial, 29400)


def test_trials_of_different_jobs_can_reach_each_other_a_documented_limit(cluster):
    # A static NetworkPolicy cannot say "the same job": it would take one policy per job
    # (docs/SECURITY-infra.md, "What is out of scope").
    assert cluster.can_connect(_pod("pytorchjob", job_index=3), _pod("pytorchjob", job_index=4), 29400)


def test_etcd_only_from_elasticjob_pods(rendered, etcd, dispatcher):
    cluster = Cluster(rendered["elasticjob"], extra_namespaces={"kube-system": {}, "team-b": {}})
    assert cluster.can_connect(_pod("elasticjob"), etcd, 2379)
    assert not cluster.can_connect(_pod("elasticjob"), etcd, 2380)
    for other in (_pod("pytorchjob"), _pod("job"), dispatcher, Pod("team-b", "10.2.0.1", {"sweepq.io/kind": "elasticjob"}),
                  Pod(TRIALS_NAMESPACE, "10.1.0.77", {"sweepq.io/kind": "elasticjob"})):  # labels half-forged
        assert not cluster.can_connect(other, etcd, 2379), other
    # etcd itself reaches nothing
    assert not cluster.can_connect(etcd, PUBLIC_AWS, 443) and not cluster.can_connect(etcd, KUBE_DNS, 53, "UDP")


def test_a_pod_claiming_to_be_etcd_only_loses_rights(cluster):
    impostor = Pod(TRIALS_NAMESPACE, "10.1.0.66", {"app.kubernetes.io/name": "etcd"})
    assert not cluster.can_connect(impostor, PUBLIC_AWS, 443)
    assert not cluster.can_connect(impostor, _pod("pytorchjob"), 29400)


def test_the_dispatcher_reaches_dns_aws_and_the_kubernetes_api_and_nothing_reaches_it(cluster, dispatcher):
    assert cluster.can_connect(dispatcher, KUBE_DNS, 53, "UDP")
    assert cluster.can_connect(dispatcher, PUBLIC_AWS, 443) and cluster.can_connect(dispatcher, VPC_INTERNAL, 443)
    assert cluster.can_connect(dispatcher, AGENT[0], 80)
    assert not any(cluster.can_connect(dispatcher, address, 80) for address in IMDS)
    assert not cluster.can_connect(dispatcher, PUBLIC_AWS, 80)
    assert not cluster.can_connect(_pod("pytorchjob"), dispatcher, 443)
    assert not cluster.can_connect(Pod(DISPATCHER_NAMESPACE, "10.1.9.8", {}), dispatcher, 443)


def test_the_policies_select_the_labels_the_backends_render():
    # The etcd rules key on these labels: a renamed label would silently open or close them.
    labels = pods(manifest_of("elasticjob"))[0]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "sweepq" and labels["sweepq.io/kind"] == "elasticjob"
    assert "app.kubernetes.io/name" not in labels  # trials never carry etcd's label
