"""Idle culling against one real hub, its scenarios on one timeline (docs/operations.md):

- ivy, in JupyterLab, is warned a little before her idle server stops itself, keeps it
  with "Keep it running", and then, her tab still open (it polls the server every few
  seconds, which is not use), sees it stop: her idle kernel first, then the server;
- jon's kernel runs a ``%%ray_remote`` cell past the limit: his server stays up;
- kai submitted a job to his Ray head and closed his kernel: his server and head stay up
  while it runs, and stop once it has ended.

One hub and one timeline for the three, each scenario in a thread of its own but for
the browser's (Playwright's API is the main thread's): the culling limits are short, but
waiting for each scenario in turn cost minutes of the test suite's time."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import artifacts_folder, sign_in_to_lab, wait_for
from tests.kernels import run_cell, start_kernel

pytestmark = pytest.mark.integration

PASSWORDS = {"ivy": "ivy-password-1", "jon": "jon-password-2", "kai": "kai-password-3"}
#: ivy's profile: a 60 s limit, whose last 30 s carry the warning; the others' 20 s
WARNED = "m5.4xlarge"
SETTINGS = {
    "profiles": {"everyone": ["m5.xlarge", WARNED]},
    "culling": {"server_idle_timeout": 20, "ray_idle_timeout": 20,
                "profiles": {WARNED: 60}},
}


def test_idle_servers_stop_with_a_warning_and_busy_ones_do_not(hub_factory, browser):
    hub = hub_factory(SETTINGS, users=PASSWORDS,
                      config_d={"50-poll.py": "c.Spawner.poll_interval = 2\n"})
    tokens = {name: hub.user_token(name) for name in PASSWORDS}
    # kai's server starts once jon's Ray head runs: one head starting at a time (two at
    # once on two loaded cores are slow), and kai's idle time starts with his server
    for name in ("ivy", "jon"):
        options = {"profile": WARNED} if name == "ivy" else {}
        assert hub.spawn(name, tokens[name], options).status_code in (201, 202)
    for name in ("ivy", "jon"):
        hub.wait_ready(name)
    start_kernel(hub.url, "ivy", tokens["ivy"])  # idle: culled before her server stops

    with ThreadPoolExecutor(max_workers=3) as pool:
        jon_kernel = pool.submit(connect, hub, "jon", tokens["jon"])
        jon = pool.submit(lambda: a_running_cell_keeps_the_server_up(
            hub, tokens["jon"], jon_kernel.result()))
        kai = pool.submit(lambda: jon_kernel.result() and a_submitted_job_keeps_the_server_up(
            hub, tokens["kai"]))
        ivy_is_warned_then_her_server_stops(hub, browser, tokens["ivy"])
        jon.result()
        kai.result()

    # counted as culls, by profile: ivy's, and jon's and kai's once their work ended
    metrics = hub.metrics()
    for profile, culled in ((WARNED, 1), ("m5.xlarge", 2)):
        key = ("redspot_servers_culled_total", (("profile", profile),))
        assert metrics.get(key) == culled, (profile, metrics.get(key), hub.log(tail=80))


def connect(hub, name: str, token: str) -> str:
    """A kernel of ``name``'s, connected to their Ray head (started for it); its id."""
    kernel = start_kernel(hub.url, name, token)
    out = run_cell(hub.url, name, token, "%ray_connect", kernel=kernel, timeout=240)
    assert "Connected" in out, out
    return kernel


def ivy_is_warned_then_her_server_stops(hub, browser, token: str) -> None:
    artifacts = artifacts_folder("idle-warning")

    def idle():
        r = requests.get(f"{hub.url}/user/ivy/redspot/api/idle", timeout=30,
                         headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text
        return r.json()

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = sign_in_to_lab(context, hub.url, "ivy", PASSWORDS["ivy"])

        # asking is not use: the idle time grows while the tab polls
        state = idle()
        assert state["timeout"] == 60 and state["warn_before"] == 30, state
        warning = page.get_by_text(re.compile("stops itself in"))
        warning.wait_for(timeout=90_000)
        text = warning.inner_text()
        assert "This server has been idle for" in text and "its idle limit is 1 min" in text
        page.screenshot(path=str(artifacts / "01-warning.png"))
        assert idle()["warn"]

        # keeping it is use: the idle time starts again, and the warning goes
        page.get_by_role("button", name="Keep it running").click()
        wait_for(lambda: idle()["idle"] < 10, 15, "the idle time to start again")
        warning.wait_for(state="hidden", timeout=15_000)
        assert hub.server_model("ivy")["ready"]

        # then, left alone with the tab open, the server stops itself
        wait_for(lambda: hub.server_model("ivy") is None, 200,
                 "ivy's idle server to stop with her tab open")
        page.screenshot(path=str(artifacts / "02-stopped.png"))
    finally:
        context.close()


def a_running_cell_keeps_the_server_up(hub, token: str, kernel: str) -> None:
    """jon's cell runs for 45 s: past his 20 s limit and the server's next look (every
    5 s, a quarter of it) his server is up; once the cell has ended, it stops itself."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as cell:
        running = cell.submit(run_cell, hub.url, "jon", token,
                              "%%ray_remote\nimport time; time.sleep(45)\nprint('slept')",
                              kernel=kernel, timeout=180)
        time.sleep(max(0.0, started + 35 - time.monotonic()))
        assert hub.server_model("jon")["ready"], "jon's server, running a cell, was stopped"
        assert "slept" in running.result()
    wait_for(lambda: hub.server_model("jon") is None, 120, "jon's server to stop once idle")


def a_submitted_job_keeps_the_server_up(hub, token: str) -> None:
    """A job submitted to kai's Ray head (a ``%%ray_train --submit`` run outlives its
    kernel) is use: with no kernel left, his server and head stay up while it runs, and
    both stop once it has ended."""
    from redspot.compute.local import LocalRayHead, group_alive

    assert hub.spawn("kai", token, {}).status_code in (201, 202)
    hub.wait_ready("kai")
    kernel = connect(hub, "kai", token)
    out = run_cell(hub.url, "kai", token, (
        "from redspot.training.jobs import jobs_client\n"
        "session = get_ipython().find_magic('ray_connect').__self__.session\n"
        "jobs = jobs_client(session.dashboard)\n"
        "print('JOB', jobs.submit(\"python -c 'import time; time.sleep(45)'\"))"),
        kernel=kernel, timeout=120)
    assert "JOB " in out, out
    submitted = time.monotonic()
    head = LocalRayHead(state_dir=hub.data_dir / "home" / "kai" / ".redspot" / "ray").info(
        forget=False)
    assert head is not None, "kai's Ray head runs"
    r = requests.delete(f"{hub.url}/user/kai/api/kernels/{kernel}", timeout=30,
                        headers={"Authorization": f"token {token}"})
    assert r.status_code == 204, r.text
    # idle but for the job: past its 20 s limit and the server's next look (every 5 s)
    while time.monotonic() - submitted < 38:
        assert hub.server_model("kai") is not None, "kai's server was stopped mid-job"
        time.sleep(5)
    assert group_alive(head.pgid), "kai's Ray head was stopped mid-job"
    # the job ends at 45 s: then the server is idle, and stops itself, its head with it
    wait_for(lambda: hub.server_model("kai") is None, 120, "kai's server to stop")
    wait_for(lambda: not group_alive(head.pgid), 60, "kai's Ray head to stop")
