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
