"""The pods a manifest makes, and the Pod Security Standards ``restricted`` profile over them.

* :func:`trial_pods` — the effective pod specs of any sweepq manifest: the pod templates of a
  batch Job / PyTorchJob / ElasticJob as written; for a TrainJob, what Trainer v2.3 creates —
  the ClusterTrainingRuntime's ``node`` pod template, the ``runtimePatches`` merged into it the
  way Trainer does (a strategic merge of the JobSet spec: replicated jobs, containers and volumes
  by name, mounts by path, structs field by field), then ``spec.trainer``'s image, command,
  args, resources and env on the ``node`` container.
* :func:`restricted_violations` — the checks of the Kubernetes Pod Security Standards
  ``restricted`` level (which include ``baseline``), as the PodSecurity admission enforces them
  on a namespace labelled ``pod-security.kubernetes.io/enforce: restricted``.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

MERGE_KEYS = {"replicatedJobs": "name", "containers": "name", "initContainers": "name", "volumes": "name",
              "volumeMounts": "mountPath", "env": "name", "ports": "containerPort"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret", "image"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    """Kubernetes' strategic merge for the fields sweepq patches (lists in :data:`MERGE_KEYS`
    merge by their key; other lists are replaced; mappings merge recursively)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for field, value in patch.items():
            merged[field] = strategic_merge(base.get(field), value, field) if field in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged_list = copy.deepcopy(base)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def _pod_templates(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template" and isinstance(value, dict) and isinstance((value.get("spec") or {}).get("containers"),
                                                                             list):
                yield value
            yield from _pod_templates(value)
    elif isinstance(node, list):
        for item in node:
            yield from _pod_templates(item)


def trainjob_pod(trainjob: Mapping[str, Any], runtime: Mapping[str, Any], job: str = "node",
                 container: str = "node") -> dict[str, Any]:
    """The pod template Trainer v2.3 renders for replicated job ``job`` of ``trainjob``."""
    jobset_spec = copy.deepcopy(runtime["spec"]["template"]["spec"])
    for patch in trainjob["spec"].get("runtimePatches") or []:
        spec_patch = ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec")
        if spec_patch:
            jobset_spec = strategic_merge(jobset_spec, spec_patch)
    [replicated] = [r for r in jobset_spec["replicatedJobs"] if r["name"] == job]
    pod = replicated["template"]["spec"]["template"]
    trainer = trainjob["spec"].get("trainer") or {}
    [main] = [c for c in pod["spec"]["containers"] if c["name"] == container]
    for field in ("image", "command", "args"):
        if field in trainer:
            main[field] = trainer[field]
    if "resourcesPerNode" in trainer:
        main["resources"] = trainer["resourcesPerNode"]
    main["env"] = strategic_merge(main.get("env") or [], trainer.get("env") or [], "env")
    return pod


def trial_pods(manifest: Mapping[str, Any], *, runtime: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every pod template ``manifest`` makes (see the module docstring)."""
    if manifest.get("kind") == "TrainJob":
        if runtime is None:
            raise ValueError("a TrainJob's pods depend on its ClusterTrainingRuntime: pass runtime=")
        return [trainjob_pod(manifest, runtime)]
    return [copy.deepcopy(t) for t in _pod_templates(manifest.get("spec"))]


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """What the PodSecurity admission at level ``restricted`` refuses in a pod (template)."""
    spec = pod.get("spec") or pod
    found: list[str] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(f"host namespaces: {field}=true")
    pod_context = spec.get("securityContext") or {}
    if (pod_context.get("windowsOptions") or {}).get("hostProcess"):
        found.append("hostProcess")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"hostPath volume {volume.get('name')!r}")
        if kinds - RESTRICTED_VOLUMES:
            found.append(f"volume {volume.get('name')!r} of type {sorted(kinds - RESTRICTED_VOLUMES)}")
    for sysctl in pod_context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"unsafe sysctl {sysctl.get('name')}")
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or [])]
    pod_non_root, pod_seccomp = pod_context.get("runAsNonRoot"), (pod_context.get("seccompProfile") or {}).get("type")
    if pod_context.get("runAsUser") == 0:
        found.append("pod runAsUser=0")
    if pod_seccomp == "Unconfined":
        found.append("pod seccompProfile Unconfined")
    for container in containers:
        name = container.get("name")
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation != false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities.drop does not include ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities.add {sorted(capabilities['add'])}")
        non_root = context.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            found.append(f"{name}: runAsNonRoot != true")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser=0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp!r} (RuntimeDefault or Localhost required)")
        if context.get("procMount") not in (None, "Default"):
            found.append(f"{name}: procMount {context['procMount']}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"{name}: hostPort {port['hostPort']}")
    return found
