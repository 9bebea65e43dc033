"""Idle culling as a user sees it in JupyterLab: a warning a little before an idle server
stops itself, "Keep it running" to keep it, and an open JupyterLab tab (which polls the
server every few seconds) does not keep an idle server up."""

from __future__ import annotations

import re

import pytest
import requests

from tests.helpers import artifacts_folder, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "ivy-password-1"


def test_jupyterlab_warns_before_an_idle_server_stops_and_an_open_tab_does_not_keep_it(
        hub_factory, browser):
    # a 60 s limit: the warning comes in its last 30 s
    hub = hub_factory({"culling": {"server_idle_timeout": 60}}, users={"ivy": PASSWORD},
                      config_d={"50-poll.py": "c.Spawner.poll_interval = 2\n"})
    token = hub.user_token("ivy")
    artifacts = artifacts_folder("idle-warning")

    def idle():
        r = requests.get(f"{hub.url}/user/ivy/redspot/api/idle", timeout=30,
                         headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text
        return r.json()

    assert hub.spawn("ivy", token, {}).status_code in (201, 202)
    hub.wait_ready("ivy")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{hub.url}/hub/login?next=/user/ivy/lab")
        page.fill("#username_input", "ivy")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.wait_for_url(re.compile(r".*/user/ivy/lab.*"), timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)

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
        if hub.server_model("ivy") is not None:
            hub.stop_server("ivy")
