"""A user's RayCluster: validated against KubeRay v1.7.0's CRD and Kubernetes' schemas."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from redspot.compute.kuberay import (
    RayClusterSpec,
    WorkerGroup,
    ray_cluster,
    ray_cluster_name,
    token_secret,
)
from redspot.spawner.profiles import BUILTIN_CATALOG
from redspot.spawner.storage import KubeStorage

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "kuberay-v1.7.0"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env@sha256:" + "c" * 64


@pytest.fixture(scope="module")
def raycluster_schema():
    path = SCHEMAS / "ray.io_rayclusters.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay's CRDs are not at {SCHEMAS} (../shared/schemas beside the "
                    "checkout)")
    crd = yaml.safe_load(path.read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return v1["schema"]["openAPIV3Schema"]


def spec(**kwargs):
    defaults = dict(
        user="Alice.Smith", namespace="redspot", image=IMAGE,
        head=BUILTIN_CATALOG["m5.xlarge"],
        workers=(WorkerGroup(BUILTIN_CATALOG["m5.4xlarge"], 0, 4),
                 WorkerGroup(BUILTIN_CATALOG["p3.2xlarge"], 0, 2)),
        groups=("gpu-team",),
    )
    return RayClusterSpec(**{**defaults, **kwargs})


def validate_crd(schema, manifest):
    # an OpenAPI v3 schema: jsonschema checks it once Kubernetes' x- extensions are ignored
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest),
                    key=lambda e: list(e.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5]]


def pods_of(manifest):
    templates = [manifest["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in manifest["spec"]["workerGroupSpecs"]]
    for template in templates:
        yield {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "x", **template["metadata"]}, "spec": template["spec"]}


@pytest.mark.parametrize("mode", ["shared-pvc", "access-points"])
def test_the_raycluster_validates_against_the_crd_and_its_pods_against_kubernetes(
        raycluster_schema, mode):
    manifest = ray_cluster(spec(storage=KubeStorage(mode=mode)))
    validate_crd(raycluster_schema, manifest)
    for pod in pods_of(manifest):
        for version in ("1.29.0", "1.33.0"):
            kubernetes_validate.validate(pod, version, strict=True)


def test_a_broken_manifest_is_caught_by_the_crd_check(raycluster_schema):
    manifest = ray_cluster(spec())
    broken = copy.deepcopy(manifest)
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    with pytest.raises(AssertionError, match="maxReplicas"):
        validate_crd(raycluster_schema, broken)


def test_the_cluster_is_the_users_with_token_auth_and_the_notebooks_image():
    manifest = ray_cluster(spec())
    assert manifest["metadata"]["name"] == ray_cluster_name("Alice.Smith")
    assert manifest["metadata"]["name"].startswith("ray-alice-smith-")
    assert manifest["metadata"]["annotations"]["redspot.io/user"] == "Alice.Smith"
    assert manifest["spec"]["rayVersion"] == "2.60.0"
    assert manifest["spec"]["authOptions"] == {
        "mode": "token", "secretName": f"{manifest['metadata']['name']}-token"}
    head = manifest["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["disable-usage-stats"] == "true"
    (container,) = head["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"
    assert head["template"]["spec"]["automountServiceAccountToken"] is False


def test_worker_groups_are_placed_like_notebooks_and_autoscale():
    manifest = ray_cluster(spec(idle_timeout_seconds=300))
    assert manifest["spec"]["enableInTreeAutoscaling"] is True
    assert manifest["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    cpu, gpu = manifest["spec"]["workerGroupSpecs"]
    assert (cpu["groupName"], cpu["minReplicas"], cpu["maxReplicas"]) == ("m5-4xlarge", 0, 4)
    assert gpu["groupName"] == "p3-2xlarge" and gpu["rayStartParams"]["num-gpus"] == "1"
    gpu_pod = gpu["template"]["spec"]
    assert gpu_pod["nodeSelector"]["node.kubernetes.io/instance-type"] == "p3.2xlarge"
    assert gpu_pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                       "effect": "NoSchedule"}]
    resources = gpu_pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"] == {"cpu": "7710m", "memory": "57263Mi", "nvidia.com/gpu": "1"}
    assert "tolerations" not in cpu["template"]["spec"]
    # the same folders as the notebook
    mounts = {m["mountPath"] for m in gpu_pod["containers"][0]["volumeMounts"]}
    assert {"/home/jovyan", "/home/jovyan/shared/public",
            "/home/jovyan/shared/gpu-team"} <= mounts


def test_the_token_secret():
    s = spec()
    secret = token_secret(s, "t0k3n")
    assert secret["metadata"]["name"] == s.token_secret
    assert secret["stringData"] == {"token": "t0k3n"}


def test_a_profile_appears_in_one_worker_group_only():
    twice = (WorkerGroup(BUILTIN_CATALOG["m5.xlarge"], 0, 1),
             WorkerGroup(BUILTIN_CATALOG["m5.xlarge"], 0, 2))
    with pytest.raises(ValueError, match="each profile may appear once"):
        ray_cluster(spec(workers=twice))


def test_worker_group_bounds():
    with pytest.raises(ValueError, match="0 <= min_replicas <= max_replicas"):
        WorkerGroup(BUILTIN_CATALOG["m5.xlarge"], 3, 1)


# --- the spawner's RayCluster, and the module that makes it -------------------------------


def test_the_kube_spawner_makes_a_valid_raycluster_in_the_servers_image(
        raycluster_schema, offline_kubeconfig):
    from tests.helpers import hub_user
    from tests.unit.test_kube_spawner import build

    spawner, _, _ = build(hub_user("alice", groups=["gpu-team"]),
                          {"profile": "m5.xlarge", "image": "gpu"},
                          images={"cpu": "reg/su:1", "gpu": "reg/su-gpu:1"},
                          ray_max_workers=3, ray_idle_timeout=900)
    manifest = ray_cluster(spawner.ray_cluster_spec())
    validate_crd(raycluster_schema, manifest)
    assert manifest["metadata"]["name"] == "ray-alice"
    assert manifest["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"] == "reg/su-gpu:1"
    groups = {g["groupName"]: g for g in manifest["spec"]["workerGroupSpecs"]}
    assert "p3-2xlarge" in groups  # gpu-team may use GPU profiles: so may its Ray workers
    assert {g["maxReplicas"] for g in groups.values()} == {3}
    assert manifest["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] == 900


class ApiError(Exception):
    def __init__(self, status):
        self.status = status


class FakeKube:
    """The two kubernetes_asyncio APIs RayClusters uses, at the edge: objects in dicts."""

    def __init__(self):
        self.secrets, self.clusters, self.policies, self.calls = {}, {}, {}, []

    async def create_namespaced_network_policy(self, namespace, body):
        name = body["metadata"]["name"]
        self.calls.append(("create policy", name))
        if name in self.policies:
            raise ApiError(409)
        self.policies[name] = body

    async def replace_namespaced_network_policy(self, name, namespace, body):
        self.calls.append(("replace policy", name))
        self.policies[name] = body

    async def delete_namespaced_network_policy(self, name, namespace):
        self.calls.append(("delete policy", name))
        if self.policies.pop(name, None) is None:
            raise ApiError(404)

    async def read_namespaced_secret(self, name, namespace):
        self.calls.append(("read secret", name))
        if name not in self.secrets:
            raise ApiError(404)
        import base64
        from types import SimpleNamespace

        token = self.secrets[name]["stringData"]["token"]
        return SimpleNamespace(data={"token": base64.b64encode(token.encode()).decode()})

    async def create_namespaced_secret(self, namespace, body):
        self.calls.append(("create secret", body["metadata"]["name"]))
        self.secrets[body["metadata"]["name"]] = body

    async def delete_namespaced_secret(self, name, namespace):
        self.calls.append(("delete secret", name))
        if self.secrets.pop(name, None) is None:
            raise ApiError(404)

    async def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        name = body["metadata"]["name"]
        self.calls.append(("create cluster", name))
        if name in self.clusters:
            raise ApiError(409)
        self.clusters[name] = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        return self.clusters[name]

    async def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if name not in self.clusters:
            raise ApiError(404)
        return self.clusters[name]

    async def replace_namespaced_custom_object(self, group, version, namespace, plural, name,
                                               body):
        self.calls.append(("replace cluster", body["metadata"].get("resourceVersion")))
        self.clusters[name] = body
        return body

    async def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete cluster", name))
        if self.clusters.pop(name, None) is None:
            raise ApiError(404)


def clusters_on(fake):
    from redspot.kubernetes import RayClusters

    clusters = RayClusters.__new__(RayClusters)
    clusters.custom = clusters.core = clusters.networking = fake
    return clusters


def test_ray_clusters_make_the_token_once_and_bring_a_cluster_to_its_spec():
    import asyncio

    fake = FakeKube()
    clusters = clusters_on(fake)

    async def scenario():
        first = await clusters.token(spec())
        assert await clusters.token(spec()) == first and len(first) == 64
        await clusters.ensure(spec())
        # the policies that keep other users out come before the cluster's pods
        made = [c for c in fake.calls if c[0] in ("create policy", "create cluster")]
        assert made[-1][0] == "create cluster" and len(made) == 3, made
        await clusters.ensure(spec(image="reg/other:2"))  # exists: replaced, same version
        assert fake.calls[-1] == ("replace cluster", "1")
        cluster = await clusters.get(spec().name, "redspot")
        assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
            "image"] == "reg/other:2"
        assert await clusters.delete(spec()) is True
        assert await clusters.delete(spec()) is False  # already gone: fine
        assert fake.secrets == {} and fake.clusters == {} and fake.policies == {}

    asyncio.run(scenario())


def test_waiting_for_a_failed_cluster_says_why():
    import asyncio

    from redspot.kubernetes import RayClusterError

    fake = FakeKube()
    fake.clusters["ray-x"] = {"status": {"state": "failed", "reason": "image pull"}}
    with pytest.raises(RayClusterError, match="RayCluster redspot/ray-x failed: image pull"):
        asyncio.run(clusters_on(fake).wait_ready("ray-x", "redspot", timeout=5, interval=0.1))
