"""A user's RayCluster made, found ready and deleted on a real cluster with KubeRay.

Needs the KubeRay operator (v1.7) in the cluster and may start pods: set
``REDSPOT_TEST_RAYCLUSTERS=1`` to run it (skipped otherwise, and without a cluster).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from redspot.compute.kuberay import RayClusterSpec
from redspot.kubernetes import RayClusters
from redspot.spawner.profiles import BUILTIN_CATALOG

pytestmark = pytest.mark.k8s


def test_a_users_raycluster_is_made_ready_and_deleted(cluster, namespace):
    if os.environ.get("REDSPOT_TEST_RAYCLUSTERS") != "1":
        pytest.skip("starts Ray pods: set REDSPOT_TEST_RAYCLUSTERS=1 (needs KubeRay)")
    from kubernetes_asyncio import client, config

    spec = RayClusterSpec(user="redspot-test", namespace=namespace,
                          image=os.environ.get("REDSPOT_TEST_RAY_IMAGE", "rayproject/ray:2.60.0"),
                          head=BUILTIN_CATALOG["m5.xlarge"])

    async def run():
        await config.load_kube_config(config_file=cluster)
        async with client.ApiClient() as api:
            clusters = RayClusters(api)
            try:
                await clusters.ensure(spec)
                ready = await clusters.wait_ready(spec.name, namespace, timeout=900)
                assert ready["status"]["state"] == "ready"
            finally:
                assert await clusters.delete(spec) is True

    asyncio.run(run())


def test_an_idle_users_workers_are_removed_after_the_idle_timeout(cluster, namespace):
    """``culling.ray_idle_timeout`` on KubeRay: a worker with nothing to run is removed by
    KubeRay's autoscaler once idle that long (the head goes with the user's server)."""
    if os.environ.get("REDSPOT_TEST_RAYCLUSTERS") != "1":
        pytest.skip("starts Ray pods: set REDSPOT_TEST_RAYCLUSTERS=1 (needs KubeRay)")
    from kubernetes_asyncio import client, config

    from redspot.compute.kuberay import WorkerGroup

    profile = BUILTIN_CATALOG["m5.xlarge"]
    spec = RayClusterSpec(user="redspot-idle", namespace=namespace,
                          image=os.environ.get("REDSPOT_TEST_RAY_IMAGE", "rayproject/ray:2.60.0"),
                          head=profile, workers=(WorkerGroup(profile, 0, 1),),
                          idle_timeout_seconds=60)
    workers = f"ray.io/cluster={spec.name},ray.io/node-type=worker"

    async def run():
        await config.load_kube_config(config_file=cluster)
        async with client.ApiClient() as api:
            clusters, pods = RayClusters(api), client.CoreV1Api(api)

            async def running() -> int:
                found = await pods.list_namespaced_pod(namespace, label_selector=workers)
                return sum(1 for p in found.items if p.status.phase == "Running")

            try:
                await clusters.ensure(spec)
                await clusters.wait_ready(spec.name, namespace, timeout=900)
                # one worker asked for by hand, with nothing to run
                await client.CustomObjectsApi(api).patch_namespaced_custom_object(
                    "ray.io", "v1", namespace, "rayclusters", spec.name,
                    [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas",
                      "value": 1}])
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 900
                while await running() < 1:
                    assert loop.time() < deadline, "the worker never ran"
                    await asyncio.sleep(5)
                # idle for 60 s: removed (the autoscaler looks every few seconds)
                deadline = loop.time() + 60 + 240
                while await running():
                    assert loop.time() < deadline, "the idle worker was not removed"
                    await asyncio.sleep(5)
            finally:
                assert await clusters.delete(spec) is True

    asyncio.run(run())
