"""Operations against real hubs of their own: a killed hub's services are stopped by the
next one, one `redspot up` per data folder (docs/operations.md). Idle culling is
tests/browser/test_culling.py's (its warning is seen in JupyterLab)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def test_after_a_killed_hub_the_next_stops_its_services_and_one_hub_per_data_folder(
        hub_factory):
    """A hub killed with SIGKILL leaves its services running; the next `redspot up` of
    the same data folder stops them before it starts its own (never two copies on the
    same data), and a second `redspot up` beside a running one is refused."""
    from tests.helpers import pid_alive

    hub = hub_factory({"services": {"environments": {"enabled": True},
                                    "sharing": {"enabled": True}}},
                      users={"erin": "erin-password-1"})

    def service_pids():
        found = {}
        for name in ("environments", "sharing"):
            path = hub.data_dir / name / ".service.json"
            wait_for(path.exists, 60, f"the {name} service's record")
            found[name] = json.loads(path.read_text())["pid"]
        return found

    old = service_pids()
    assert all(pid_alive(pid) for pid in old.values())
    # a second redspot up on the same data folder, on other ports: refused at once
    second = subprocess.run(
        [sys.executable, "-m", "redspot", "up", "--data-dir", str(hub.data_dir), "--config",
         str(hub.config_file), "--port", "1", "--api-port", "2", "--proxy-api-port", "3"],
        capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another redspot up (pid {hub.proc.pid}) runs on this data folder" in \
        second.stderr, second.stderr

    os.kill(hub.proc.pid, signal.SIGKILL)  # nothing cleans up
    hub.proc.wait(30)
    assert all(pid_alive(pid) for pid in old.values()), "the services went with the hub"
    hub.start()
    for name, pid in old.items():
        assert not pid_alive(pid), f"the old {name} service still runs"
        assert f"Stopped the {name} service (pid {pid}" in hub.log(tail=400)
    new = service_pids()
    assert set(new.values()).isdisjoint(old.values())
    r = requests.get(f"{hub.url}/services/environments/api/bases", timeout=30,
                     headers={"Authorization": f"token {hub.user_token('erin')}"})
    assert r.status_code == 200, r.text
