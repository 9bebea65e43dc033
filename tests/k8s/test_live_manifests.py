"""The API server of a real cluster accepts what RedspotKubeSpawner builds (dry run)."""

from __future__ import annotations

import asyncio

import pytest
from traitlets.config import Config

from redspot.spawner.kube import RedspotKubeSpawner
from redspot.spawner.storage import STORAGE_MODES
from tests.helpers import hub_user, stand_in_hub

pytestmark = pytest.mark.k8s


@pytest.mark.parametrize("mode", STORAGE_MODES)
@pytest.mark.parametrize("profile", ["m5.xlarge", "p3.2xlarge"])
def test_api_server_accepts_pod_and_pvc(cluster, namespace, profile, mode):
    from kubernetes_asyncio import client

    async def run():
        c = Config()
        c.RedspotKubeSpawner.storage_mode = mode
        spawner = RedspotKubeSpawner(user=hub_user("alice", admin=True), hub=stand_in_hub(),
                                     config=c, namespace=namespace, api_token="t",
                                     oauth_client_id="c")
        spawner.user_options = {"profile": profile}
        await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with client.ApiClient() as api:
            core = client.CoreV1Api(api)
            created = await core.create_namespaced_pod(namespace, pod, dry_run="All")
            assert created.spec.node_selector["node.kubernetes.io/instance-type"] == profile
            if spawner.storage_pvc_ensure:
                await core.create_namespaced_persistent_volume_claim(
                    namespace, spawner.get_pvc_manifest(), dry_run="All")

    asyncio.run(run())
