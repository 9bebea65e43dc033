"""RedspotKubeSpawner's manifests, built offline and validated against Kubernetes' schemas.

Every shipped profile in every storage mode goes through ``load_user_options()`` then
``get_pod_manifest()`` (and ``get_pvc_manifest()`` for per-user homes), exactly as a spawn
on EKS would, and the result is validated in strict mode for Kubernetes 1.29 and 1.33.
"""

from __future__ import annotations

import asyncio
import re

import kubernetes_validate
import pytest
from tornado import web
from traitlets.config import Config

from redspot.spawner.kube import RedspotKubeSpawner
from redspot.spawner.local import RedspotLocalSpawner
from redspot.spawner.profiles import BUILTIN_CATALOG, MiB
from redspot.spawner.storage import STORAGE_MODES
from tests.helpers import ReadyService, hub_user, stand_in_hub

KUBE_VERSIONS = ("1.29.0", "1.33.0")
DATASETS = [{"name": "imagenet", "claim": "datasets", "mount_path": "/data/imagenet",
             "sub_path": "imagenet"}]


def build(user, options, **config):
    """load_user_options() then the pod (and PVC) manifests, as plain dicts."""
    from kubernetes_asyncio.client import ApiClient

    async def run():
        c = Config()
        c.RedspotSpawnerMixin.group_profiles = {"gpu-team": ["g5.xlarge", "p3.2xlarge"]}
        for key, value in config.items():
            setattr(c.RedspotKubeSpawner, key, value)
        spawner = RedspotKubeSpawner(user=user, hub=stand_in_hub(), config=c,
                                     namespace="redspot", api_token="t", oauth_client_id="c")
        spawner.user_options = options
        await spawner.load_user_options()
        api = ApiClient()
        pod = api.sanitize_for_serialization(await spawner.get_pod_manifest())
        pvc = (api.sanitize_for_serialization(spawner.get_pvc_manifest())
               if spawner.storage_pvc_ensure else None)
        await api.close()
        return spawner, pod, pvc

    return asyncio.run(run())


def validate(manifest):
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise AssertionError(f"invalid for Kubernetes {version} at {path}: "
                                 f"{e.message[:300]}") from None


def container(pod):
    (notebook,) = pod["spec"]["containers"]
    return notebook


@pytest.mark.parametrize("mode", STORAGE_MODES)
@pytest.mark.parametrize("profile", list(BUILTIN_CATALOG))
def test_every_profile_in_every_storage_mode_makes_a_valid_pod(offline_kubeconfig, profile,
                                                               mode):
    spec = BUILTIN_CATALOG[profile]
    _, pod, pvc = build(hub_user("alice", groups=["gpu-team"], admin=True),
                        {"profile": profile}, storage_mode=mode, datasets=DATASETS)
    validate(pod)
    notebook = container(pod)
    resources = notebook["resources"]
    assert pod["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] == profile
    assert 0 < resources["requests"]["cpu"] < resources["limits"]["cpu"] < spec.vcpus
    assert 0 < resources["requests"]["memory"] < resources["limits"]["memory"] < spec.memory
    if spec.gpus:
        assert resources["limits"]["nvidia.com/gpu"] == str(spec.gpus)
        assert {"key": "nvidia.com/gpu", "operator": "Exists",
                "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
        assert not pod["spec"].get("tolerations")
    # the multi-node GPU types get their EFA interfaces (AWS's device plugin)
    assert resources["limits"].get("vpc.amazonaws.com/efa") == (
        str(spec.efa) if spec.efa else None)
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in notebook["env"]}
    assert env["REDSPOT_PROFILE"] == profile
    assert env["REDSPOT_GPUS"] == str(spec.gpus)
    assert env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["REDSPOT_RAY_CLUSTER"] == "ray-alice"
    assert env["REDSPOT_IMAGE"] == container(pod)["image"]
    # the kernel joins the user's RayCluster with its token, read from the cluster's Secret
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"] == {"secretKeyRef": {"name": "ray-alice-token",
                                                      "key": "token"}}
    mounts = {m["mountPath"]: m for m in notebook["volumeMounts"]}
    assert mounts["/data/imagenet"]["readOnly"] is True
    assert mounts["/home/jovyan/shared/public"]["subPath"] == "shared/public"
    assert mounts["/home/jovyan/shared/gpu-team"]["subPath"] == "shared/gpu-team"
    if mode == "shared-pvc":
        assert mounts["/home/jovyan"]["subPath"] == "home/alice"
        assert pvc is None
    else:
        assert "subPath" not in mounts["/home/jovyan"]
        validate(pvc)
        assert pvc["metadata"]["name"] == "redspot-home-alice"
        assert pvc["spec"]["storageClassName"] == "efs-ap"
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
        assert "redspot-home-alice" in claims


def test_pods_run_locked_down(offline_kubeconfig):
    _, pod, _ = build(hub_user("alice"), {})
    validate(pod)
    spec, notebook = pod["spec"], container(pod)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["fsGroup"] == 100
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = notebook["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (1000, 100)
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_resources_leave_the_node_its_share(offline_kubeconfig):
    _, pod, _ = build(hub_user("alice"), {"profile": "m5.xlarge"})
    resources = container(pod)["resources"]
    # 4 vCPU: EKS keeps 60 + 10 + 10 millicores; daemonsets 200 more
    assert resources["limits"]["cpu"] == 3.92
    assert resources["requests"]["cpu"] == 3.72
    # 16 GiB x 0.95, less 255 MiB + 11 MiB x 110 pods + 100 MiB eviction; daemonsets 512 MiB
    assert resources["limits"]["memory"] == 13999 * MiB
    assert resources["requests"]["memory"] == (13999 - 512) * MiB


def test_operators_add_node_labels_priority_and_images(offline_kubeconfig):
    c_images = {"cpu": "registry/singleuser:1", "gpu": "registry/singleuser-gpu:1"}
    spawner, pod, _ = build(
        hub_user("alice", groups=["gpu-team"]), {"profile": "p3.2xlarge", "image": "gpu"},
        images=c_images, extra_node_selector={"karpenter.sh/capacity-type": "on-demand"},
        profile_catalog={"p3.2xlarge": {"node_labels": {"karpenter.sh/nodepool": "gpu"},
                                        "priority_class": "gpu-interactive"}},
    )
    validate(pod)
    assert pod["spec"]["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "p3.2xlarge",
        "karpenter.sh/capacity-type": "on-demand",
        "karpenter.sh/nodepool": "gpu",
    }
    assert pod["spec"]["priorityClassName"] == "gpu-interactive"
    assert container(pod)["image"] == "registry/singleuser-gpu:1"
    assert 'name="image"' in asyncio.run(spawner.render_options_form())


@pytest.mark.parametrize("name", ["Alice.Smith@corp.com", "../../etc", "UPPER_case", "名前"])
def test_odd_usernames_give_safe_pod_names_and_paths(offline_kubeconfig, name):
    _, pod, pvc = build(hub_user(name), {}, storage_mode="access-points")
    validate(pod)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pod["metadata"]["name"])
    assert len(pod["metadata"]["name"]) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pvc["metadata"]["name"])
    for mount in container(pod)["volumeMounts"]:
        assert ".." not in mount.get("subPath", "")
    _, pod, _ = build(hub_user(name), {}, storage_mode="shared-pvc")
    home = next(m for m in container(pod)["volumeMounts"] if m["mountPath"] == "/home/jovyan")
    assert re.fullmatch(r"home/[a-z0-9-]+", home["subPath"])


@pytest.mark.parametrize("user, options, message", [
    (hub_user("bob"), {"profile": "z9.galactic"},
     "instance profile 'z9.galactic' is not available to you; choose one of: m5.xlarge"),
    (hub_user("bob"), {"profile": "p3.2xlarge"},
     "instance profile 'p3.2xlarge' is not available to you; choose one of: m5.xlarge"),
    (hub_user("alice", groups=["gpu-team"]), {"profile": "p4d.24xlarge"},
     "choose one of: m5.xlarge, g5.xlarge, p3.2xlarge"),
    (hub_user("bob"), {"profile": ["a", "b"]}, "user option 'profile' must be a name"),
    (hub_user("bob"), {"cpu_limit": "64"}, "unknown user option(s): cpu_limit; allowed: "
                                           "profile (the name of an instance profile), image"),
    (hub_user("bob"), {"image": "root-shell"},
     "image 'root-shell' is not available; choose one of: default"),
    (hub_user("bob"), {"profile": 5}, "user option 'profile' must be a name"),
])
def test_bad_user_options_are_refused_clearly(offline_kubeconfig, user, options, message):
    with pytest.raises(web.HTTPError) as e:
        build(user, options)
    assert e.value.status_code == 400
    assert message in e.value.log_message


def test_each_user_sees_only_the_profiles_their_groups_allow(offline_kubeconfig):
    async def profile_list(user):
        spawner = RedspotKubeSpawner(user=user, hub=stand_in_hub(), config=Config(
            RedspotSpawnerMixin={"group_profiles": {"gpu-team": ["p3.2xlarge"]}}))
        return [p["slug"] for p in spawner.profile_list(spawner)]

    assert asyncio.run(profile_list(hub_user("bob"))) == ["m5.xlarge"]
    assert asyncio.run(profile_list(hub_user("alice", groups=["gpu-team"]))) == [
        "m5.xlarge", "p3.2xlarge"]


def test_both_spawners_read_one_profile_module_and_one_storage_module():
    for method in ("allowed_profiles", "_apply_user_options", "render_options_form"):
        assert getattr(RedspotKubeSpawner, method) is getattr(RedspotLocalSpawner, method)
    import redspot.spawner.kube as kube
    import redspot.spawner.local as local

    assert kube.Layout is local.Layout


@pytest.mark.parametrize("mode", STORAGE_MODES)
def test_what_was_shared_with_the_user_is_mounted_read_only(mode, offline_kubeconfig,
                                                            monkeypatch):
    """The sharing service's answer (the one edge mocked here) becomes read-only mounts
    under ~/shared-with-me; the pod stays valid."""
    async def fetch_shares(self):
        return [{"owner": "alice", "path": "notebooks/plan.ipynb"},
                {"owner": "alice", "path": "data"}]

    monkeypatch.setattr(RedspotKubeSpawner, "fetch_shares", fetch_shares)
    spawner, pod, _ = build(hub_user("bob", groups=("vision",)), {"profile": "m5.xlarge"},
                            storage_mode=mode)
    validate(pod)
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    plan = mounts["/home/jovyan/shared-with-me/alice/notebooks/plan.ipynb"]
    assert plan["readOnly"] is True
    assert plan["subPath"] == ("home/alice/notebooks/plan.ipynb" if mode == "shared-pvc"
                               else "notebooks/plan.ipynb")
    assert mounts["/home/jovyan/shared-with-me/alice/data"]["readOnly"] is True


def test_a_pod_in_an_environment_runs_its_image_as_the_service_says(offline_kubeconfig):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env@sha256:" + "c" * 64
    ready = {"alice": [{"id": "team/torch", "description": "", "tag": "env-2",
                        "location": image, "env": {"TORCH_HOME": "/data/torch"}}]}
    with ReadyService(ready, token="spawner-secret") as service:
        config = {"service_urls": {"environments": service.url},
                  "services_token": "spawner-secret"}
        spawner, pod, _ = build(hub_user("alice"), {"environment": "team/torch"}, **config)
        assert service.asked == ["alice"]
        validate(pod)
        assert container(pod)["image"] == image
        env = {e["name"]: e.get("value") for e in container(pod)["env"]}
        assert env["TORCH_HOME"] == "/data/torch"
        with pytest.raises(web.HTTPError) as refused:
            build(hub_user("bob"), {"environment": "team/torch"}, **config)
        assert "none is ready yet" in refused.value.log_message
