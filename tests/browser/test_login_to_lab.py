"""The first thing a data scientist does, in a real browser: sign in, pick, land in JupyterLab."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PASSWORDS

pytestmark = pytest.mark.integration


def test_sign_in_pick_a_gpu_profile_and_land_in_jupyterlab(team_hub, page, tmp_path):
    page.goto(f"{team_hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", PASSWORDS["alice"])
    page.click("#login_submit")
    # sign-in lands on Redspot's home page, which starts the server from its form
    page.wait_for_url(re.compile(r".*/hub/home$"))
    assert "Not running" in page.locator("#redspot-server").inner_text()
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
    page.click("#start")
    page.wait_for_url(re.compile(r".*/hub/spawn/alice$"))

    cards = page.locator(".redspot-profile")
    assert cards.count() == 3  # m5.xlarge for everyone, two GPU profiles for gpu-team
    assert page.locator('input[value="m5.xlarge"]').is_checked()
    gpu = page.locator('.redspot-profile[data-profile="g5.xlarge"]')
    assert "1 × NVIDIA A10G" in gpu.inner_text()
    page.screenshot(path=str(tmp_path / "spawn.png"), full_page=True)
    gpu.click()
    assert page.locator('input[value="g5.xlarge"]').is_checked()

    try:
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)  # JupyterLab is up
        page.screenshot(path=str(tmp_path / "lab.png"))
        assert "JupyterLab" in page.title()
        # as JupyterLab's ServerConnection does: the _xsrf cookie goes back as a header
        info = page.evaluate(
            """async () => {
                const xsrf = document.cookie.split('; ')
                    .find(c => c.startsWith('_xsrf=')).slice('_xsrf='.length);
                const r = await fetch('/user/alice/redspot/api/info',
                                      {headers: {'X-XSRFToken': xsrf}});
                return {status: r.status, ...(await r.json())};
            }"""
        )
        assert info["status"] == 200, info
        assert info["profile"]["name"] == "g5.xlarge"
        assert info["profile"]["gpus"] == 1
    finally:
        if team_hub.server_model("alice"):
            team_hub.stop_server("alice")


def test_a_wrong_password_shows_the_error_in_the_page(team_hub, page):
    page.goto(f"{team_hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", "wrong-password")
    page.click("#login_submit")
    assert "Invalid username or password" in page.locator(".login_error").inner_text()
