"""A user's RayCluster on Kubernetes (KubeRay ``ray.io/v1``): a pure builder.

Each user gets one RayCluster, named after them, running the notebook's image (so a
``%%ray_remote`` cell runs in the environment the notebook runs in), with:

- a head on the instance profile the operator chose for heads, and one worker group per
  profile the user may scale out to, placed like notebook pods (instance-type node
  selector, GPU limits and toleration, node headroom), autoscaled by KubeRay's in-tree
  autoscaler between ``min_replicas`` and ``max_replicas``, idle workers removed after
  ``idle_timeout_seconds``;
- Ray's token authentication, with the token in a Secret Redspot creates and gives the
  user's notebook too (no one else's kernel can join or submit);
- the same home and shared folders as the notebook, the same locked-down security
  context, no service-account token, and Ray's usage statistics off.

Nothing here talks to a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..spawner.profiles import (
    GPU_TOLERATION,
    NodeOverhead,
    Profile,
    kube_resources,
    node_selector_for,
)
from ..spawner.storage import KubeStorage, Layout, kube_volumes, safe_name

RAY_VERSION = "2.60.0"
#: Ray's ports: GCS, dashboard, client server.
PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
SECURITY_CONTEXT = {
    "runAsUser": 1000, "runAsGroup": 100, "runAsNonRoot": True,
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def ray_cluster_name(user: str) -> str:
    """``ray-<safe user>``: the name of a user's RayCluster (and its Secret's prefix)."""
    return f"ray-{safe_name(user, max_length=40)}"


@dataclass(frozen=True)
class WorkerGroup:
    profile: Profile
    min_replicas: int = 0
    max_replicas: int = 2

    def __post_init__(self):
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"worker group {self.profile.name}: need 0 <= min_replicas <= max_replicas, "
                f"got {self.min_replicas} and {self.max_replicas}"
            )


@dataclass(frozen=True)
class RayClusterSpec:
    user: str
    namespace: str
    image: str
    head: Profile
    workers: tuple[WorkerGroup, ...] = ()
    groups: tuple[str, ...] = ()
    storage: KubeStorage = field(default_factory=KubeStorage)
    overhead: NodeOverhead = field(default_factory=NodeOverhead)
    node_selector: dict = field(default_factory=dict)
    idle_timeout_seconds: int = 600
    env: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return ray_cluster_name(self.user)

    @property
    def token_secret(self) -> str:
        return f"{self.name}-token"


def group_name(profile: Profile) -> str:
    """A worker group's name: the profile's, in the characters KubeRay allows."""
    return re.sub(r"[^a-z0-9-]", "-", profile.name)


def _labels(spec: RayClusterSpec) -> dict:
    return {
        "app.kubernetes.io/name": "redspot",
        "app.kubernetes.io/component": "ray",
        "redspot.io/user": safe_name(spec.user, max_length=63),
    }


def _pod_template(spec: RayClusterSpec, profile: Profile, container: str,
                  ports: dict[str, int]) -> dict:
    volumes, mounts = kube_volumes(Layout(spec.user, spec.groups), spec.storage)
    env = [
        {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"},
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": spec.token_secret, "key": "token"}}},
        # the node's profile and price: a run prices itself (redspot.cost)
        *({"name": k, "value": v} for k, v in profile.server_env().items()),
        *({"name": k, "value": v} for k, v in sorted(spec.env.items())),
    ]
    pod = {
        "automountServiceAccountToken": False,
        "securityContext": {"fsGroup": 100, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "nodeSelector": node_selector_for(profile, spec.node_selector),
        "containers": [{
            "name": container,
            "image": spec.image,
            "env": env,
            "resources": kube_resources(profile, spec.overhead),
            "securityContext": dict(SECURITY_CONTEXT),
            "volumeMounts": mounts,
            **({"ports": [{"name": n, "containerPort": p} for n, p in ports.items()]}
               if ports else {}),
        }],
        "volumes": volumes,
    }
    if profile.gpus:
        pod["tolerations"] = [dict(GPU_TOLERATION)]
    if profile.priority_class:
        pod["priorityClassName"] = profile.priority_class
    labels = {**_labels(spec), PROFILE_LABEL: profile.name}
    return {"metadata": {"labels": labels}, "spec": pod}


#: The label a Ray node's pod carries with its profile (the usage log reads it).
PROFILE_LABEL = "redspot.io/profile"


def ray_nodes(pods: Iterable[Mapping], catalog: Mapping[str, Profile]
              ) -> dict[str, tuple[str, float | None]]:
    """A user's running Ray nodes from their pods (as the API lists them, plain dicts):
    pod name -> (profile, price an hour), for the usage log. Pods not yet running cost
    nothing yet; a profile gone from the catalog has no price."""
    nodes = {}
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if status.get("phase") != "Running":
            continue
        name = (meta.get("labels") or {}).get(PROFILE_LABEL, "")
        profile = catalog.get(name)
        nodes[meta.get("name", "")] = (name or "unknown",
                                       profile.price if profile else None)
    return nodes


def ray_cluster(spec: RayClusterSpec) -> dict:
    """The RayCluster custom resource for ``spec``."""
    names = [group_name(w.profile) for w in spec.workers]
    if len(set(names)) != len(names):
        raise ValueError("worker groups: each profile may appear once")
    head_params = {
        "dashboard-host": "0.0.0.0",
        "disable-usage-stats": "true",
        "num-gpus": str(spec.head.gpus),
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": _labels(spec),
            "annotations": {"redspot.io/user": spec.user},
        },
        "spec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "upscalingMode": "Default",
                "idleTimeoutSeconds": spec.idle_timeout_seconds,
                "securityContext": dict(SECURITY_CONTEXT),
                "resources": {"requests": {"cpu": "200m", "memory": "256Mi"},
                              "limits": {"cpu": "500m", "memory": "512Mi"}},
            },
            "authOptions": {"mode": "token", "secretName": spec.token_secret},
            "headGroupSpec": {
                "rayStartParams": head_params,
                "template": _pod_template(spec, spec.head, "ray-head", PORTS),
            },
            "workerGroupSpecs": [
                {
                    "groupName": group_name(w.profile),
                    "replicas": w.min_replicas,
                    "minReplicas": w.min_replicas,
                    "maxReplicas": w.max_replicas,
                    "idleTimeoutSeconds": spec.idle_timeout_seconds,
                    "rayStartParams": {"num-gpus": str(w.profile.gpus)},
                    "template": _pod_template(spec, w.profile, "ray-worker", {}),
                }
                for w in spec.workers
            ],
        },
    }


#: The labels KubeSpawner gives a user's server pod (``hub.jupyter.org/username`` is
#: added per user, as KubeSpawner writes it).
SERVER_LABELS = {"component": "singleuser-server"}


def server_selector(user: str) -> dict:
    """A pod selector for ``user``'s server pods, with KubeSpawner's own label value."""
    from kubespawner.slugs import is_valid_label, safe_slug

    return {"matchLabels": {**SERVER_LABELS,
                            "hub.jupyter.org/username": safe_slug(user, is_valid=is_valid_label)}}


def network_policies(spec: RayClusterSpec) -> list[dict]:
    """Who may reach the user's Ray cluster: its own nodes and the user's servers, no one
    else. Two NetworkPolicies, made and deleted with the cluster, on top of the chart's
    (which let Ray pods take nothing and reach only DNS and the internet): the cluster's
    own, by which its nodes take connections from each other and from the user's
    servers and reach each other; and the one that lets the user's servers reach it."""
    cluster = {"matchLabels": {"ray.io/cluster": spec.name}}
    servers = server_selector(spec.user)
    meta = {"namespace": spec.namespace, "labels": _labels(spec)}
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": f"{spec.name}-nodes", **meta},
         "spec": {"podSelector": cluster, "policyTypes": ["Ingress", "Egress"],
                  "ingress": [{"from": [{"podSelector": cluster}, {"podSelector": servers}]}],
                  "egress": [{"to": [{"podSelector": cluster}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": f"{spec.name}-clients", **meta},
         "spec": {"podSelector": servers, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"podSelector": cluster}]}]}},
    ]


def token_secret(spec: RayClusterSpec, token: str) -> dict:
    """The Secret with the cluster's Ray token (also given to the user's notebook)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": spec.token_secret, "namespace": spec.namespace,
                     "labels": _labels(spec)},
        "type": "Opaque",
        "stringData": {"token": token},
    }
