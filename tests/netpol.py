"""Which pod may talk to which under a set of Kubernetes NetworkPolicies (pure).

Kubernetes' rules: a pod is isolated for ingress (egress) when a policy of its namespace
selects it with ``Ingress`` (``Egress``) in ``policyTypes``; an isolated pod accepts (sends)
only what some rule of those policies allows, and policies add up. A connection needs
both the sender's egress and the receiver's ingress. ``ipBlock`` peers are matched on
the address whatever it is (some network plugins match pod addresses too: for a check
of what is kept out, the wider reading is the safe one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """A pod (``namespace`` and ``labels``) or an address outside the cluster."""

    name: str
    ip: str
    namespace: str | None = None
    labels: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def _selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = expression.get("values") or []
        present = key in labels
        ok = {"In": present and labels[key] in values,
              "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}[op]
        if not ok:
            return False
    return True


def _peer(peer: dict, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", []))
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], other.labels)


def _port(ports: list | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port)
               for p in ports)


def _side(policies: list[dict], pod: Endpoint, other: Endpoint, port: int, protocol: str,
          kind: str) -> bool:
    """Whether ``pod`` may send to (``Egress``) or take from (``Ingress``) ``other``."""
    if not pod.is_pod:
        return True  # outside the cluster: no policy applies
    mine = [p for p in policies
            if p["metadata"].get("namespace", "default") == pod.namespace
            and _selects(p["spec"]["podSelector"], pod.labels)
            and kind in p["spec"].get("policyTypes", ["Ingress"])]
    if not mine:
        return True
    key, peers = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            if not _port(rule.get("ports"), port, protocol):
                continue
            if not rule.get(peers) or any(
                    _peer(peer, policy["metadata"].get("namespace", "default"), other)
                    for peer in rule[peers]):
                return True
    return False


def allowed(policies: list[dict], source: Endpoint, target: Endpoint, port: int,
            protocol: str = "TCP") -> bool:
    return (_side(policies, source, target, port, protocol, "Egress")
            and _side(policies, target, source, port, protocol, "Ingress"))
