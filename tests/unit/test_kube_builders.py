"""Golden data for the pure Kubernetes builders: profiles and volumes.

The files in golden/ were reviewed by hand (the arithmetic is in the comments of
test_kube_spawner.py). A change to a builder that changes them must be reviewed again.
"""

import json
from pathlib import Path

import pytest

from redspot.spawner.profiles import (
    BUILTIN_CATALOG,
    NodeOverhead,
    ProfileError,
    kubespawner_profile,
    make_profile,
    pod_resources,
)
from redspot.spawner.storage import Dataset, KubeStorage, Layout, kube_volumes

GOLDEN = Path(__file__).parent / "golden"


def golden(name):
    return json.loads((GOLDEN / name).read_text())


def test_kubespawner_profile_for_a_gpu_profile():
    p3 = make_profile("p3.2xlarge", {"node_labels": {"karpenter.sh/nodepool": "gpu"},
                                     "priority_class": "gpu-interactive"},
                      base=BUILTIN_CATALOG["p3.2xlarge"])
    built = kubespawner_profile(p3, True, node_selector={"karpenter.sh/capacity-type": "on-demand"})
    assert built == golden("kubespawner_profile_p3.2xlarge.json")


def test_kubespawner_profile_for_a_cpu_profile():
    built = kubespawner_profile(BUILTIN_CATALOG["m5.xlarge"], False)
    assert built == golden("kubespawner_profile_m5.xlarge.json")


@pytest.mark.parametrize("mode", ["shared-pvc", "access-points"])
def test_kube_volumes(mode):
    layout = Layout("Alice.Smith", groups=("gpu-team", "public"))
    storage = KubeStorage(mode=mode, datasets=(
        Dataset("imagenet", "datasets", "/data/imagenet", "imagenet"),))
    volumes, mounts = kube_volumes(layout, storage)
    assert {"volumes": volumes, "volumeMounts": mounts} == golden(f"kube_volumes_{mode}.json")


def test_node_overhead_follows_the_eks_rules():
    overhead = NodeOverhead()
    assert overhead.kube_reserved_cpu(1) == pytest.approx(0.06)
    assert overhead.kube_reserved_cpu(4) == pytest.approx(0.08)
    assert overhead.kube_reserved_cpu(96) == pytest.approx(0.08 + 92 * 0.0025)
    assert overhead.kube_reserved_memory() == (255 + 11 * 110 + 100) * 1024**2


def test_a_profile_too_small_for_a_node_is_refused():
    tiny = make_profile("t3.micro", {"vcpus": 2, "memory": "1GiB"})
    with pytest.raises(ProfileError, match="too small for a pod"):
        pod_resources(tiny)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "nfs"}, "storage mode 'nfs' is not known; allowed: shared-pvc, access-points"),
    ({"claim": "Bad_Name"}, "'Bad_Name' is not a valid PersistentVolumeClaim name"),
    ({"home_mount": "home"}, "mount path 'home' must be absolute"),
    ({"datasets": (Dataset("d", "data", "/data", "/etc"),)}, "must be relative"),
    ({"datasets": (Dataset("d", "data", "/data/../etc"),)}, "must be absolute, without '..'"),
])
def test_bad_storage_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError) as e:
        KubeStorage(**kwargs)
    assert message in str(e.value)
