"""Users' RayClusters through the Kubernetes API: the only module that talks to it for Ray.

``RayClusters`` creates a user's cluster (its token Secret first, then the network
policies that keep other users out, then the RayCluster that ``kuberay.ray_cluster``
builds), reads it, waits for its head, and deletes them all.
The token is made once and kept in the Secret: a cluster made again (a server restarted)
keeps the token its notebook pod reads.

It takes a ``kubernetes_asyncio`` ``ApiClient``; KubeSpawner's is the one the spawner
uses. The hub's service account needs ``create, get, update, delete`` on
``rayclusters.ray.io``, ``secrets`` and ``networkpolicies.networking.k8s.io`` in the
users' namespace (the chart's hub Role).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time

from .kuberay import RayClusterSpec, network_policies, ray_cluster, token_secret

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"


class RayClusterError(RuntimeError):
    """The cluster could not be made or did not become ready; the message says why."""


def _status(e) -> int | None:
    return getattr(e, "status", None)


class RayClusters:
    def __init__(self, api_client):
        from kubernetes_asyncio import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.networking = client.NetworkingV1Api(api_client)

    async def token(self, spec: RayClusterSpec) -> str:
        """The cluster's token: from its Secret, made (and stored) on first use."""
        try:
            secret = await self.core.read_namespaced_secret(spec.token_secret, spec.namespace)
            return base64.b64decode(secret.data["token"]).decode()
        except Exception as e:
            if _status(e) != 404:
                raise
        token = secrets.token_hex(32)
        try:
            await self.core.create_namespaced_secret(spec.namespace, token_secret(spec, token))
        except Exception as e:
            if _status(e) != 409:  # made meanwhile by another start: use that one
                raise
            return await self.token(spec)
        return token

    async def ensure(self, spec: RayClusterSpec) -> dict:
        """Create the user's RayCluster, or bring an existing one to ``spec``."""
        await self.token(spec)
        # before the cluster: no moment in which its pods take anyone's connections
        for policy in network_policies(spec):
            await self._apply_policy(spec.namespace, policy)
        body = ray_cluster(spec)
        try:
            return await self.custom.create_namespaced_custom_object(
                GROUP, VERSION, spec.namespace, PLURAL, body)
        except Exception as e:
            if _status(e) != 409:
                raise
        current = await self.get(spec.name, spec.namespace)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return await self.custom.replace_namespaced_custom_object(
            GROUP, VERSION, spec.namespace, PLURAL, spec.name, body)

    async def _apply_policy(self, namespace: str, policy: dict) -> None:
        name = policy["metadata"]["name"]
        try:
            await self.networking.create_namespaced_network_policy(namespace, policy)
        except Exception as e:
            if _status(e) != 409:
                raise
            await self.networking.replace_namespaced_network_policy(name, namespace, policy)

    async def get(self, name: str, namespace: str) -> dict | None:
        try:
            return await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name)
        except Exception as e:
            if _status(e) == 404:
                return None
            raise

    async def wait_ready(self, name: str, namespace: str, timeout: float = 600,
                         interval: float = 2) -> dict:
        """The cluster once KubeRay reports it ``ready`` (its head serves)."""
        deadline = time.monotonic() + timeout
        state = "absent"
        while time.monotonic() < deadline:
            cluster = await self.get(name, namespace)
            if cluster is not None:
                state = cluster.get("status", {}).get("state", "pending")
                if state == "ready":
                    return cluster
                if state == "failed":
                    reason = cluster.get("status", {}).get("reason", "no reason given")
                    raise RayClusterError(f"RayCluster {namespace}/{name} failed: {reason}")
            await asyncio.sleep(interval)
        raise RayClusterError(f"RayCluster {namespace}/{name} was not ready after "
                              f"{timeout:g} s (state: {state})")

    async def delete(self, spec: RayClusterSpec) -> bool:
        """Delete the cluster and its token; True if there was a cluster."""
        existed = True
        try:
            await self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, spec.namespace, PLURAL, spec.name)
        except Exception as e:
            if _status(e) != 404:
                raise
            existed = False
        try:
            await self.core.delete_namespaced_secret(spec.token_secret, spec.namespace)
        except Exception as e:
            if _status(e) != 404:
                raise
        for policy in network_policies(spec):
            try:
                await self.networking.delete_namespaced_network_policy(
                    policy["metadata"]["name"], spec.namespace)
            except Exception as e:
                if _status(e) != 404:
                    raise
        return existed
