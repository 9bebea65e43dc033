"""Fixtures for tests that need a live Kubernetes cluster.

- ``cluster`` (session): the cluster ``$KUBECONFIG`` points at, checked reachable; every
  test here is skipped, with that reason, when there is none (as on CI machines).
- ``namespace``: the namespace the tests may use (``$REDSPOT_TEST_NAMESPACE``, default
  ``default``); the tests only make server-side dry runs there.
"""

from __future__ import annotations

import asyncio
import os

import pytest


def _reachable(path: str) -> str | None:
    from kubernetes_asyncio import client, config

    async def check():
        await config.load_kube_config(config_file=path)
        async with client.ApiClient() as api:
            version = await asyncio.wait_for(client.VersionApi(api).get_code(), 5)
            return version.git_version

    try:
        return asyncio.run(check())
    except Exception:
        return None


@pytest.fixture(scope="session")
def cluster():
    path = os.environ.get("KUBECONFIG")
    if not path or not os.path.exists(path):
        pytest.skip("needs a Kubernetes cluster: set KUBECONFIG to a reachable one")
    version = _reachable(path)
    if version is None:
        pytest.skip(f"the cluster in KUBECONFIG={path} cannot be reached")
    return path


@pytest.fixture
def namespace():
    return os.environ.get("REDSPOT_TEST_NAMESPACE", "default")
