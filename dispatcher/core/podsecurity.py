"""Pod Security ``restricted`` for manifests sweepq did not build itself (operator templates), and
the GPUs such a manifest asks for. Pure: dicts in, dicts and problem lists out.

:func:`secure_pods` gives every pod template the restricted settings it leaves out (pod:
``runAsNonRoot: true``, ``seccompProfile: RuntimeDefault``, ``automountServiceAccountToken: false``;
every container: ``allowPrivilegeEscalation: false``, ``capabilities.drop: [ALL]``) and
:func:`restricted_problems` lists what still breaks the Kubernetes Pod Security Standard
``restricted`` (v1.30): privileged containers, host namespaces, hostPath and other non-restricted
volume types, host ports, added capabilities other than ``NET_BIND_SERVICE``, privilege escalation,
``runAsUser: 0``, ``runAsNonRoot: false``, unconfined seccomp/AppArmor, custom SELinux users and
roles, ``procMount: Unmasked``, unsafe sysctls, Windows host processes. A template that sets any of
these explicitly is refused — a default is only filled in where the template says nothing.

:func:`manifest_gpus` counts the accelerators of every pod template times its replicas — every
extended resource matching :data:`~dispatcher.core.policy_parts.ACCELERATOR_RESOURCES` (or the
policy's ``accelerator_resources``): ``*/gpu``, ``nvidia.com/gpu.shared``, MIG slices
``nvidia.com/mig-*``, Intel, Gaudi, Neuron, TPU; each unit is one GPU for the caps. Multipliers on
the way down: ``replicas`` and ``parallelism`` (JobSet ``replicatedJobs[].replicas`` × Job
``parallelism``, Kubeflow ``*ReplicaSpecs.<role>.replicas``), a PyTorchJob's
``elasticPolicy.maxReplicas`` for its Worker, a Ray worker group's ``maxReplicas`` (autoscaling) ×
``numOfHosts``; a LeaderWorkerSet group is its leader plus ``size - 1`` workers; TrainJob
``trainer.numNodes × trainer.resourcesPerNode`` (both required: the runtime's defaults are
invisible here). A pod asks for what Kueue's TotalRequests and the scheduler count: the larger of
(sidecars + containers) and, over the ordinary init containers, (that one + the sidecars started
before it), requests or limits, whichever is higher. What cannot be counted is refused
(``ValueError``): DRA ``resourceClaims``, an unreadable count.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Iterable, Iterator, Mapping

from dispatcher.core.policy_parts import ACCELERATOR_RESOURCES
from dispatcher.core.refs import parse_quantity
from dispatcher.core.templating import pod_templates

RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                                "projected", "secret"})
VOLUME_META = frozenset({"name"})
SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                          "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                          "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                          "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (manifests are untrusted shapes)."""
    return value if isinstance(value, Mapping) else {}


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        value = parent[key] = {}
    return value if isinstance(value, dict) else {}


def containers_of(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in CONTAINER_LISTS:
        items = pod_spec.get(field)
        for i, container in enumerate(items if isinstance(items, list) else []):
            if isinstance(container, dict):
                yield f"{field}[{i}]", container


def secure_pods(manifest: Any) -> Any:
    """Fill in the restricted settings each pod template leaves out (in place; returns ``manifest``).
    A TrainJob's pod templates are runtime patches, whose API has no
    ``automountServiceAccountToken`` (the server would prune it; the runtime sets it)."""
    patches = isinstance(manifest, Mapping) and manifest.get("kind") == "TrainJob"
    for pod in pod_templates(manifest):
        spec = pod["spec"]
        if not patches:
            spec.setdefault("automountServiceAccountToken", False)
        context = _dict(spec, "securityContext")
        context.setdefault("runAsNonRoot", True)
        context.setdefault("seccompProfile", {"type": "RuntimeDefault"})
        for _, container in containers_of(spec):
            ccontext = _dict(container, "securityContext")
            ccontext.setdefault("allowPrivilegeEscalation", False)
            capabilities = _dict(ccontext, "capabilities")
            capabilities.setdefault("drop", ["ALL"])
    return manifest


def _context_problems(where: str, context: Mapping[str, Any], *, pod: bool) -> list[str]:
    problems = []
    if context.get("runAsNonRoot") is False:
        problems.append(f"{where}.securityContext.runAsNonRoot: false — trial pods run as non-root; remove it")
    if context.get("runAsUser") == 0:
        problems.append(f"{where}.securityContext.runAsUser: 0 is root — use a non-zero UID (the trainer image uses 1000)")
    seccomp = context.get("seccompProfile")
    if isinstance(seccomp, Mapping) and seccomp.get("type") not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"{where}.securityContext.seccompProfile.type: {seccomp.get('type')!r} — use RuntimeDefault")
    apparmor = context.get("appArmorProfile")
    if isinstance(apparmor, Mapping) and apparmor.get("type") == "Unconfined":
        problems.append(f"{where}.securityContext.appArmorProfile: Unconfined — remove it (RuntimeDefault applies)")
    selinux = context.get("seLinuxOptions")
    if isinstance(selinux, Mapping) and (selinux.get("user") or selinux.get("role")
                                         or str(selinux.get("type") or "") not in SELINUX_TYPES):
        problems.append(f"{where}.securityContext.seLinuxOptions: custom user, role or type — remove it")
    windows = context.get("windowsOptions")
    if isinstance(windows, Mapping) and windows.get("hostProcess") is True:
        problems.append(f"{where}.securityContext.windowsOptions.hostProcess: true — remove it")
    if pod:
        for i, sysctl in enumerate(context.get("sysctls") or []):
            name = sysctl.get("name") if isinstance(sysctl, Mapping) else None
            if name not in SAFE_SYSCTLS:
                problems.append(f"{where}.securityContext.sysctls[{i}]: {name!r} is not a safe sysctl — remove it")
    return problems


def _pod_problems(where: str, spec: Mapping[str, Any]) -> list[str]:
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field) is True:
            problems.append(f"{where}.spec.{field}: true — trial pods never share the node's namespaces; remove it")
    context = mapping(spec.get("securityContext"))
    problems += _context_problems(f"{where}.spec", context, pod=True)
    for i, volume in enumerate(spec.get("volumes") or []):
        if not isinstance(volume, Mapping):
            continue
        kinds = set(volume) - VOLUME_META
        bad = sorted(kinds - RESTRICTED_VOLUMES)
        if bad:
            problems.append(f"{where}.spec.volumes[{i}] ({volume.get('name')!r}): {', '.join(bad)} volumes are not "
                            f"allowed — use one of {', '.join(sorted(RESTRICTED_VOLUMES))}")
    pod_non_root = context.get("runAsNonRoot") is True
    pod_seccomp = isinstance(context.get("seccompProfile"), Mapping)
    for path, container in containers_of(spec):
        at = f"{where}.spec.{path} ({container.get('name')!r})"
        ccontext = mapping(container.get("securityContext"))
        if ccontext.get("privileged") is True:
            problems.append(f"{at}.securityContext.privileged: true — remove it")
        if ccontext.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}.securityContext.allowPrivilegeEscalation: must be false")
        capabilities = mapping(ccontext.get("capabilities"))
        added = [c for c in capabilities.get("add") or [] if c != "NET_BIND_SERVICE"]
        if added:
            problems.append(f"{at}.securityContext.capabilities.add: {added} — only NET_BIND_SERVICE may be added")
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{at}.securityContext.capabilities.drop: must include ALL")
        if ccontext.get("procMount") not in (None, "Default"):
            problems.append(f"{at}.securityContext.procMount: {ccontext.get('procMount')!r} — remove it")
        problems += _context_problems(at, ccontext, pod=False)
        if not pod_non_root and ccontext.get("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true on the pod or the container — set it")
        if not pod_seccomp and not isinstance(ccontext.get("seccompProfile"), Mapping):
            problems.append(f"{at}: no seccompProfile on the pod or the container — set type RuntimeDefault")
        for j, port in enumerate(container.get("ports") or []):
            if isinstance(port, Mapping) and port.get("hostPort"):
                problems.append(f"{at}.ports[{j}].hostPort: {port.get('hostPort')} — host ports are not allowed")
    return problems


def restricted_problems(manifest: Any, *, where: str = "template") -> list[str]:
    """What in ``manifest``'s pod templates breaks Pod Security ``restricted``; empty when none."""
    problems: list[str] = []
    pods = list(pod_templates(manifest))
    for i, pod in enumerate(pods):
        name = f"{where}.pod[{i}]" if len(pods) > 1 else f"{where}.pod"
        problems += _pod_problems(name, pod["spec"])
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items() if isinstance(annotations, Mapping) else ():
            if str(key).startswith("container.apparmor.security.beta.kubernetes.io/") and value == "unconfined":
                problems.append(f"{name}.metadata.annotations.{key}: unconfined — remove it")
    return problems


# ------------------------------------------------------------------------ GPUs


def _gpus(resources: Any, accelerators: Iterable[str] = ACCELERATOR_RESOURCES) -> int:
    """GPUs of one container: the larger of requests and limits over the accelerator resources."""
    if not isinstance(resources, Mapping):
        return 0
    if resources.get("claims"):
        raise ValueError("resources.claims: DRA resource claims cannot be counted against the GPU caps — request "
                         "GPUs as extended resources (nvidia.com/gpu)")
    patterns = list(accelerators)
    best = 0
    for section in ("requests", "limits"):
        values = resources.get(section)
        if not isinstance(values, Mapping):
            continue
        count = 0
        for key, value in values.items():
            if any(fnmatch.fnmatchcase(str(key), p) for p in patterns):
                try:
                    count += math.ceil(parse_quantity(value))
                except ValueError as exc:
                    raise ValueError(f"resources.{section}.{key}: {value!r} is not a GPU count") from exc
        best = max(best, count)
    return best


def container_gpus(container: Mapping[str, Any], accelerators: Iterable[str] = ACCELERATOR_RESOURCES) -> int:
    """GPUs of one container (see :func:`pod_gpus` for a pod's)."""
    return _gpus(container.get("resources"), accelerators)


def pod_gpus(pod_spec: Mapping[str, Any], accelerators: Iterable[str] = ACCELERATOR_RESOURCES) -> int:
    """The pod's effective request, as the scheduler and Kueue's TotalRequests compute it: sidecars
    (init containers with ``restartPolicy: Always``) run next to everything started after them, so
    max(sidecars + containers, max over ordinary init containers of (it + sidecars before it))."""
    if pod_spec.get("resourceClaims"):
        raise ValueError("spec.resourceClaims: DRA resource claims cannot be counted against the GPU caps — request "
                         "GPUs as extended resources (nvidia.com/gpu)")
    accelerators = list(accelerators)
    main = sum(container_gpus(c, accelerators) for c in pod_spec.get("containers") or [] if isinstance(c, Mapping))
    sidecars = init = 0
    for c in pod_spec.get("initContainers") or []:
        if not isinstance(c, Mapping):
            continue
        if c.get("restartPolicy") == "Always":
            sidecars += container_gpus(c, accelerators)
            init = max(init, sidecars)
        else:
            init = max(init, sidecars + container_gpus(c, accelerators))
    return max(main + sidecars, init)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {value!r} is not a replica count — use a number or '{{{{max_nodes | int}}}}'")
    return value


def _trainjob_gpus(manifest: Mapping[str, Any], accelerators: list[str]) -> int:
    trainer = mapping(mapping(manifest.get("spec")).get("trainer"))
    for field, example in (("numNodes", "'{{max_nodes | int}}'"),
                           ("resourcesPerNode", "{limits: {nvidia.com/gpu: '{{gpus_per_node}}'}}")):
        if trainer.get(field) is None:
            raise ValueError(f"spec.trainer.{field}: missing — the runtime's default is invisible to the GPU caps; "
                             f"write it (e.g. {field}: {example})")
    return _count(trainer["numNodes"], "spec.trainer.numNodes") * _gpus(trainer["resourcesPerNode"], accelerators)


def _leader_worker_gpus(group: Mapping[str, Any], key: str, accelerators: list[str]) -> int:
    """One LeaderWorkerSet group: the leader (its own template, else the worker's) + size-1 workers."""
    size = _count(group.get("size", 1), f"{key}.size")
    worker = mapping(mapping(group.get("workerTemplate")).get("spec"))
    leader = mapping(mapping(group.get("leaderTemplate")).get("spec")) or worker
    return (pod_gpus(leader, accelerators) if size else 0) + max(size - 1, 0) * pod_gpus(worker, accelerators)


def manifest_gpus(manifest: Mapping[str, Any], accelerators: Iterable[str] = ACCELERATOR_RESOURCES) -> int:
    """GPUs the object asks for at its largest size (see the module docstring). ``ValueError`` when
    a count cannot be read."""
    accelerators = list(accelerators)
    if manifest.get("kind") == "TrainJob":
        return _trainjob_gpus(manifest, accelerators)
    total = 0
    # (node, multiplier so far, key of node in its parent, elastic max replicas of an ancestor)
    stack: list[tuple[Any, int, str, int]] = [(manifest, 1, "", 0)]
    while stack:
        node, factor, key, elastic = stack.pop()
        if isinstance(node, list):
            stack.extend((item, factor, key, elastic) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        policy = node.get("elasticPolicy")
        if isinstance(policy, Mapping) and policy.get("maxReplicas") is not None:
            elastic = _count(policy["maxReplicas"], f"{key}.elasticPolicy.maxReplicas")
        if key == "leaderWorkerTemplate":
            total += factor * _leader_worker_gpus(node, key, accelerators)
            continue
        count = 1
        if node.get("replicas") is not None:
            count = _count(node["replicas"], f"{key}.replicas")
            if key == "Worker" and elastic:
                count = max(count, elastic)
        if node.get("maxReplicas") is not None and "template" in node:  # a Ray worker group (autoscaling)
            count = max(count, _count(node["maxReplicas"], f"{key}.maxReplicas"))
        if node.get("numOfHosts") is not None:  # a Ray multi-host worker group
            count *= _count(node["numOfHosts"], f"{key}.numOfHosts")
        if node.get("parallelism") is not None:
            count *= _count(node["parallelism"], f"{key}.parallelism")
        factor *= count
        if isinstance(node.get("containers"), list):
            total += factor * pod_gpus(node, accelerators)
            continue
        stack.extend((value, factor, str(child), elastic) for child, value in node.items())
    return total
