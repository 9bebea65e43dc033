"""The one module that talks to the Kubernetes API: users' RayClusters (for the
spawner) and environment build Jobs (for the environments service).

``RayClusters`` creates a user's cluster (its token Secret first, then the network
policies that keep other users out, then the RayCluster that ``kuberay.ray_cluster``
builds), reads it, waits for its head, and deletes them all.
The token is made once and kept in the Secret: a cluster made again (a server restarted)
keeps the token its notebook pod reads.

``BuildJobs`` runs an environment's build Job (``environments.jobs.build_manifests``):
it submits the ConfigMap and the Job, follows the build pod's log into the build log,
reads the pushed digest from the pod's termination message, ends a failed or timed-out
build with the reason, and deletes what it made in every case.

Each takes a ``kubernetes_asyncio`` ``ApiClient``; KubeSpawner's is the one the spawner
uses. The hub's service account needs ``create, get, update, delete`` on
``rayclusters.ray.io``, ``secrets`` and ``networkpolicies.networking.k8s.io`` in the
users' namespace (the chart's hub Role).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time

from .compute.kuberay import RayClusterSpec, network_policies, ray_cluster, token_secret

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


class BuildJobFailed(RuntimeError):
    """The build Job did not push its image; the message says why."""


#: Reasons a build pod waits for ever (a Job with no retries does not fail on them).
STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError")


def _get(obj, *path, default=None):
    """``obj.a.b`` of a kubernetes_asyncio model (or dicts), None-safe."""
    for key in path:
        if obj is None:
            return default
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return default if obj is None else obj


class BuildJobs:
    def __init__(self, api_client, interval: float = 2):
        from kubernetes_asyncio import client

        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.interval = interval

    async def run(self, manifests: list[dict], log, timeout: float) -> str:
        """Run the build; return the pushed digest (``sha256:...``). ``log`` gets the
        build's output line by line."""
        configmap, job = manifests
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        await self._remove(namespace, name)  # what an earlier try of the same tag left
        await self.core.create_namespaced_config_map(namespace, configmap)
        try:
            await self.batch.create_namespaced_job(namespace, job)
            log(f"Build Job {namespace}/{name} submitted")
            return await self._follow(namespace, name, log, timeout)
        finally:
            await self._remove(namespace, name)

    async def _follow(self, namespace: str, name: str, log, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        shown = 0
        pod = None
        while True:
            pods = await self.core.list_namespaced_pod(namespace,
                                                       label_selector=f"job-name={name}")
            items = _get(pods, "items", default=[])
            pod = items[0] if items else None
            status = _get(pod, "status", "container_statuses", default=[])
            container = status[0] if status else None
            if pod is not None and _get(pod, "status", "phase") != "Pending":
                text = await self.core.read_namespaced_pod_log(
                    _get(pod, "metadata", "name"), namespace, container="buildah")
                lines = (text or "").splitlines()
                for line in lines[shown:]:
                    log(line)
                shown = len(lines)
            waiting = _get(container, "state", "waiting", "reason")
            if waiting in STUCK:
                message = _get(container, "state", "waiting", "message", default="")
                raise BuildJobFailed(f"the build pod cannot start: {waiting}: {message}")
            conditions = _get(await self.batch.read_namespaced_job_status(name, namespace),
                              "status", "conditions", default=[])
            done = {_get(c, "type"): c for c in conditions if _get(c, "status") == "True"}
            terminated = _get(container, "state", "terminated")
            if "Complete" in done:
                digest = (_get(terminated, "message") or "").strip()
                if not digest.startswith("sha256:"):
                    raise BuildJobFailed(f"the build finished without a digest: {digest!r}")
                return digest
            if "Failed" in done:
                reason = _get(done["Failed"], "reason", default="Failed")
                detail = _get(done["Failed"], "message", default="")
                if terminated is not None:
                    detail += (f" (the build exited with {_get(terminated, 'exit_code')}: "
                               f"{_get(terminated, 'reason', default='')})")
                raise BuildJobFailed(f"the build Job failed: {reason}: {detail}".strip())
            if time.monotonic() > deadline:
                raise BuildJobFailed(f"the build did not finish in {timeout:g} s")
            await asyncio.sleep(self.interval)

    async def _remove(self, namespace: str, name: str) -> None:
        for call in (lambda: self.batch.delete_namespaced_job(
                         name, namespace, propagation_policy="Background"),
                     lambda: self.core.delete_namespaced_config_map(name, namespace)):
            try:
                await call()
            except Exception as e:
                if _status(e) != 404:
                    raise
