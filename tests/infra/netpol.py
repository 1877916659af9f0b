"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1) for the policies infra/k8s ships, so
tests can ask "may this pod reach that address and port" without a cluster or a CNI.

The rules, as the API documents them: a pod is isolated for a direction once any policy of its
namespace selects it with that policy type; then a connection is allowed only if some rule of
those policies matches it (peer and port). Pod-to-pod needs the source's egress *and* the
destination's ingress. Peers: ``podSelector`` (this namespace), ``namespaceSelector`` (+
``podSelector``: both), ``ipBlock`` (``cidr`` minus ``except``, compared with the address, pod IPs
included). An empty ``to``/``from``/``ports`` matches everything. Unsupported fields raise.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Pod:
    namespace: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)


def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return False
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValueError(f"unsupported selector fields {unknown}")
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unsupported operator {operator}")
    return True


def _in_block(block: Mapping[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(block["cidr"])
    if address.version != network.version or address not in network:
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except", [])
                   if ipaddress.ip_network(e).version == address.version)


def _port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if isinstance(entry.get("port"), str):
            raise ValueError("named ports are not supported here")
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        if entry["port"] <= port <= entry.get("endPort", entry["port"]):
            return True
    return False


class Cluster:
    """The NetworkPolicies of a rendered overlay plus the namespaces' labels."""

    def __init__(self, objects: list[Mapping[str, Any]], *, extra_namespaces: Mapping[str, Mapping[str, str]]) -> None:
        self.policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        self.namespaces: dict[str, dict[str, str]] = {}
        for obj in objects:
            if obj["kind"] == "Namespace":
                name = obj["metadata"]["name"]
                self.namespaces[name] = {**obj["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}
        for name, labels in extra_namespaces.items():
            self.namespaces[name] = {**labels, "kubernetes.io/metadata.name": name}

    def _isolating(self, pod: Pod, direction: str) -> list[Mapping[str, Any]]:
        return [p for p in self.policies if p["metadata"]["namespace"] == pod.namespace
                and direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod.labels)]

    def _peer_matches(self, peer: Mapping[str, Any], policy_namespace: str, other: Pod | str) -> bool:
        if "ipBlock" in peer:
            return _in_block(peer["ipBlock"], other.ip if isinstance(other, Pod) else other)
        if isinstance(other, str):
            return False  # an address outside the cluster is no pod
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], self.namespaces[other.namespace]):
                return False
        elif other.namespace != policy_namespace:
            return False
        return "podSelector" not in peer or _selects(peer["podSelector"], other.labels)

    def _allowed(self, pod: Pod, direction: str, other: Pod | str, port: int, protocol: str) -> bool:
        policies = self._isolating(pod, direction)
        if not policies:
            return True
        key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
        for policy in policies:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if _port_matches(rule.get("ports"), port, protocol) and (
                        not peers or any(self._peer_matches(p, policy["metadata"]["namespace"], other) for p in peers)):
                    return True
        return False

    def can_connect(self, src: Pod, dst: Pod | str, port: int, protocol: str = "TCP") -> bool:
        """May ``src`` open a connection to ``dst`` (a pod, or an address outside the cluster)?"""
        if not self._allowed(src, "Egress", dst, port, protocol):
            return False
        return not isinstance(dst, Pod) or self._allowed(dst, "Ingress", src, port, protocol)
