"""Operations against real hubs of their own: idle servers stop by themselves, a killed
hub's services are stopped by the next one, one `redspot up` per data folder
(docs/operations.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from tests.helpers import wait_for
from tests.kernels import start_kernel

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


def test_an_idle_server_stops_itself_and_one_running_a_cell_does_not(hub_factory):
    """culling: a server idle past its profile's limit stops (its idle kernel culled
    first) and the hub sees it gone; one whose kernel runs a ``%%ray_remote`` cell
    stays."""
    import contextlib
    import threading
    import time

    from tests.kernels import run_cell

    hub = hub_factory({"culling": {"server_idle_timeout": 20}},
                      users={"ivy": "ivy-password-1", "jon": "jon-password-2"},
                      config_d={"50-poll.py": "c.Spawner.poll_interval = 2\n"})
    tokens = {name: hub.user_token(name) for name in ("ivy", "jon")}
    for name, token in tokens.items():
        assert hub.spawn(name, token, {}).status_code in (201, 202)
    for name, token in tokens.items():
        hub.wait_ready(name)
        start_kernel(hub.url, name, token)

    out = run_cell(hub.url, "jon", tokens["jon"], "%ray_connect", timeout=180)
    assert "Connected" in out, out

    def busy():
        with contextlib.suppress(ConnectionError):  # its server stops at the end
            run_cell(hub.url, "jon", tokens["jon"],
                     "%%ray_remote\nimport time; time.sleep(60)", timeout=120)

    threading.Thread(target=busy, daemon=True).start()
    busy_since = time.monotonic()
    # ivy's kernel is culled after 20 s idle; her server looks every 5 s (a quarter)
    wait_for(lambda: hub.server_model("ivy") is None, 150, "ivy's idle server to stop")
    # jon's, its cell running past the limit and the server's next look, stays
    time.sleep(max(0.0, busy_since + 35 - time.monotonic()))
    assert hub.server_model("jon")["ready"], "jon's server, running a cell, was stopped"
    # counted as a cull, by its profile (the hub's default, m5.xlarge)
    culled = ("redspot_servers_culled_total", (("profile", "m5.xlarge"),))
    assert hub.metrics().get(culled) == 1, hub.log(tail=80)
    hub.stop_server("jon")


def test_a_submitted_ray_job_keeps_an_idle_server_and_its_head_up(hub_factory):
    """A job submitted to the user's Ray head (a ``%%ray_train --submit`` run outlives
    its kernel) is use: with no kernel left, the server and its head stay up while it
    runs, and the server stops itself once it has ended."""
    import time

    from redspot.compute.local import group_alive
    from tests.kernels import run_cell

    hub = hub_factory({"culling": {"server_idle_timeout": 20, "ray_idle_timeout": 20}},
                      users={"kai": "kai-password-1"},
                      config_d={"50-poll.py": "c.Spawner.poll_interval = 2\n"})
    token = hub.user_token("kai")
    assert hub.spawn("kai", token, {}).status_code in (201, 202)
    hub.wait_ready("kai")
    kernel = start_kernel(hub.url, "kai", token)
    out = run_cell(hub.url, "kai", token, "%ray_connect", kernel=kernel, timeout=180)
    assert "Connected" in out, out
    out = run_cell(hub.url, "kai", token, (
        "from redspot.training.jobs import jobs_client\n"
        "session = get_ipython().find_magic('ray_connect').__self__.session\n"
        "jobs = jobs_client(session.dashboard)\n"
        "print('JOB', jobs.submit(\"python -c 'import time; time.sleep(45)'\"))"),
        kernel=kernel, timeout=120)
    assert "JOB " in out, out
    submitted = time.monotonic()
    head = json.loads((hub.data_dir / "home" / "kai" / ".redspot" / "ray"
                       / "head.json").read_text())
    r = requests.delete(f"{hub.url}/user/kai/api/kernels/{kernel}", timeout=30,
                        headers={"Authorization": f"token {token}"})
    assert r.status_code == 204, r.text
    # idle but for the job: past its 20 s limit and the server's next look (every 5 s)
    while time.monotonic() - submitted < 38:
        assert hub.server_model("kai") is not None, "the server was stopped mid-job"
        time.sleep(5)
    assert group_alive(head["pgid"]), "the Ray head was stopped mid-job"
    # the job ends at 45 s: then the server is idle, and stops itself, its head with it
    wait_for(lambda: hub.server_model("kai") is None, 120, "kai's server to stop")
    wait_for(lambda: not group_alive(head["pgid"]), 60, "kai's Ray head to stop")
