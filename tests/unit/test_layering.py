"""Who imports whom: the hub side never loads Ray, services never load the spawner, and
the pure profile and storage model is the ground floor both sides stand on."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded(*modules: str) -> set[str]:
    code = ("import sys, json\n" + "".join(f"import {m}\n" for m in modules)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out))


def test_the_hub_side_loads_no_ray_and_no_torch():
    loaded = _loaded("redspot.hub.app", "redspot.hub.auth", "redspot.spawner.local",
                     "redspot.spawner.kube", "redspot.config.layers", "redspot.privileged.server",
                     "redspot.cli")
    assert not {m for m in loaded if m.split(".")[0] in ("ray", "torch", "deepspeed")}


def test_services_do_not_load_the_spawner():
    loaded = _loaded("redspot.environments.service", "redspot.models.app")
    spawner = {m for m in loaded if m.startswith("redspot.spawner")}
    assert spawner <= {"redspot.spawner", "redspot.spawner.profiles", "redspot.spawner.storage"}
    assert "redspot.hub.app" not in loaded


def test_the_ground_floor_stands_on_nothing_of_redspots():
    loaded = _loaded("redspot.spawner.profiles", "redspot.spawner.storage", "redspot.origin")
    ours = {m for m in loaded if m.startswith("redspot.")}
    assert ours <= {"redspot.spawner", "redspot.spawner.profiles", "redspot.spawner.storage",
                    "redspot.origin"}
