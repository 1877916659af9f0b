"""The shipped two-team Kueue setup (infra/k8s/components/kueue) is coherent and works with the
dispatcher's labels: GIVEN its objects loaded into the emulator's Kueue, WHEN trials of both
teams launch, THEN each team's LocalQueue admits by its own GPU quota and sweep priorities map to
the shipped WorkloadPriorityClasses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dispatcher.backends import make_backend
from dispatcher.backends.kueue import SHIPPED_PRIORITY_CLASSES
from dispatcher.core.jobs import Admission, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = [o for o in yaml.safe_load_all((ROOT / "infra/k8s/components/kueue/kueue.yaml").read_text()) if o]
# The fields of kueue.x-k8s.io/v1beta2 (Kueue v0.19 apis/kueue/v1beta2) this setup may use: a
# typo or a v1beta1-only name (e.g. ClusterQueue `cohort`, now `cohortName`) is pruned by the server.
KNOWN = {
    "ResourceFlavor": {"spec": {"nodeLabels", "nodeTaints", "tolerations", "topologyName"}},
    "ClusterQueue": {"spec": {"resourceGroups", "cohortName", "queueingStrategy", "namespaceSelector",
                              "flavorFungibility", "preemption", "admissionChecksStrategy", "stopPolicy",
                              "fairSharing", "admissionScope"},
                     "preemption": {"reclaimWithinCohort", "borrowWithinCohort", "withinClusterQueue"},
                     "resource": {"name", "nominalQuota", "borrowingLimit", "lendingLimit"}},
    "LocalQueue": {"spec": {"clusterQueue", "stopPolicy", "fairSharing"}},
    "WorkloadPriorityClass": {"": {"apiVersion", "kind", "metadata", "value", "description"}},
}


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in OBJECTS if o["kind"] == kind}


def test_the_setup_is_coherent_and_uses_only_fields_kueue_knows() -> None:
    assert {o["apiVersion"] for o in OBJECTS} == {"kueue.x-k8s.io/v1beta2"}
    flavors, clusters, locals_ = by_kind("ResourceFlavor"), by_kind("ClusterQueue"), by_kind("LocalQueue")
    assert set(locals_) == {"team-a", "team-b"} and set(clusters) == {"team-a", "team-b"}
    for local in locals_.values():
        assert local["metadata"]["namespace"] == "sweepq" and local["spec"]["clusterQueue"] in clusters
        assert set(local["spec"]) <= KNOWN["LocalQueue"]["spec"]
    for cluster in clusters.values():
        spec = cluster["spec"]
        assert "namespace" not in cluster["metadata"] and set(spec) <= KNOWN["ClusterQueue"]["spec"]
        assert set(spec["preemption"]) <= KNOWN["ClusterQueue"]["preemption"]
        assert spec["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "sweepq"}}
        [group] = spec["resourceGroups"]
        assert set(group["coveredResources"]) >= {"cpu", "memory", "nvidia.com/gpu"}  # what trial pods request
        for flavor in group["flavors"]:
            assert flavor["name"] in flavors
            assert {r["name"] for r in flavor["resources"]} == set(group["coveredResources"])
            for resource in flavor["resources"]:
                assert set(resource) <= KNOWN["ClusterQueue"]["resource"]
    assert len({c["spec"]["cohortName"] for c in clusters.values()}) == 1  # one cohort: idle GPUs are lent
    for flavor in flavors.values():
        assert set(flavor["spec"]) <= KNOWN["ResourceFlavor"]["spec"]
    classes = by_kind("WorkloadPriorityClass")
    for wpc in classes.values():
        assert set(wpc) <= KNOWN["WorkloadPriorityClass"][""]
    # the dispatcher's mapping names exactly the shipped classes, in increasing value
    ordered = [classes[name]["value"] for _, name in sorted(SHIPPED_PRIORITY_CLASSES.items())]
    assert set(SHIPPED_PRIORITY_CLASSES.values()) == set(classes) and ordered == sorted(ordered)


def request(team: str, index: int, priority: int) -> LaunchRequest:
    launch = LaunchSettings(kind="trainjob", image="trainer:1", gpus_per_node=8, kueue_queue=team, priority=priority)
    sweep = f"{team}-sweep-abcdefgh"
    return LaunchRequest(sweep_id=sweep, trial_index=index, trial_id=f"{sweep}-{index}", attempt=1,
                         job_name=f"{sweep}-{index}-a1", namespace="sweepq", params={},
                         command=TrialCommand(argv=("train.py",)), launch=launch, env={})


def test_two_teams_each_get_their_own_quota_and_priority_classes(kube) -> None:
    kube.kueue.install_from(OBJECTS)
    b = make_backend("trainjob", api_client=kube.api_client, namespace="sweepq",
                     runtime="sweepq-torch-distributed", kueue_priority_classes=SHIPPED_PRIORITY_CLASSES)
    a_jobs = [b.submit(b.dryrun(request("team-a", i, priority=0))) for i in range(2)]  # 8 GPUs each, quota 8
    b_jobs = [b.submit(b.dryrun(request("team-b", i, priority=-5))) for i in range(2)]
    observed = b.observe()
    assert [observed[n].admission for n in a_jobs] == [Admission.ADMITTED, Admission.QUEUED]
    assert [observed[n].admission for n in b_jobs] == [Admission.ADMITTED, Admission.QUEUED]
    assert kube.kueue.workload(a_jobs[0])["spec"]["priority"] == 100  # sweepq-normal
    assert kube.kueue.workload(b_jobs[0])["spec"]["priority"] == 10  # sweepq-low
    # a high-priority sweep of team a preempts team a's lower-priority job, not team b's
    urgent = b.submit(b.dryrun(request("team-a", 9, priority=500)))
    observed = b.observe()
    assert observed[urgent].admission is Admission.ADMITTED and observed[a_jobs[0]].admission is Admission.EVICTED
    assert observed[b_jobs[0]].admission is Admission.ADMITTED
