"""The Redspot JupyterLab extension: its server endpoints and its panel in Chromium.

One hub with every service on (the starter configuration) and the demo warehouse;
alice (group ``vision``) and bob spawn real servers.

- the server endpoints the panel calls (``redspot/serverextension/platform.py``), as
  alice with her server's contents token, against the real services behind;
- in Chromium: alice opens the panel and sees her profile; starts her Ray cluster with
  the button and sees it running, runs a ``%%ray_remote`` cell and sees it in the panel;
  sees an environment she made appear and its build finish; browses the warehouse and
  inserts a ``%%sql`` cell; shares a notebook with bob through Share…; bob opens it from
  his Shares, read-only; alice revokes it and it is gone for bob.

Screenshots of each step are kept in ``$REDSPOT_TEST_ARTIFACTS/labextension``.
"""

from __future__ import annotations

import os
import time

import pytest
import requests
import yaml

from tests.conftest import PASSWORDS
from tests.helpers import artifacts_folder, sign_in_to_lab, wait_for

pytestmark = pytest.mark.integration

USERS = {name: PASSWORDS[name] for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def artifacts():
    return artifacts_folder("labextension")


@pytest.fixture(scope="module")
def lab_hub(test_root, account_prefix):
    from redspot.hub.app import STARTER_CONFIG
    from tests.conftest import HubPool

    settings = yaml.safe_load(STARTER_CONFIG)
    settings["groups"] = {"vision": {"users": ["alice"]}}
    settings["services"]["sharing"]["invite_groups"] = ["vision"]
    pool = HubPool(test_root, account_prefix, "lab")
    try:
        hub = pool(settings, users=USERS)
        hub.tokens = {name: hub.user_token(name) for name in USERS}
        for name in USERS:
            assert hub.spawn(name, hub.tokens[name], {"profile": "m5.xlarge"}
                             ).status_code in (201, 202)
        for name in USERS:
            hub.wait_ready(name)
        # a model each: alice's own, and bob's, which she sees as her team's
        for user, model in (("alice", "alice-churn"), ("bob", "bob-forecast")):
            r = requests.post(
                f"{hub.url}/services/models/api/2.0/mlflow/registered-models/create",
                headers={"Authorization": f"token {hub.tokens[user]}"},
                json={"name": model}, timeout=60)
            assert r.status_code == 200, r.text
        yield hub
        # what the panel started, stopped as a user would (the server stops it too, as it
        # stops, but a server killed for taking too long would leave it behind)
        api(hub, "alice", "ray", "POST", json={"action": "stop"})
        wait_for(lambda: api(hub, "alice", "ray").json()["state"] == "stopped", 60,
                 "alice's cluster to stop")
    finally:
        pool.close()


def api(hub, user, path, method="GET", **kwargs):
    return requests.request(method, f"{hub.url}/user/{user}/redspot/api/{path}",
                            headers={"Authorization": f"token {hub.tokens[user]}"},
                            timeout=120, **kwargs)


# --- the server endpoints ------------------------------------------------------------------


def test_info_says_the_profile_the_machine_and_the_links(lab_hub):
    info = api(lab_hub, "alice", "info").json()
    assert info["user"] == "alice" and info["profile"]["name"] == "m5.xlarge"
    assert info["environment"] is None
    assert info["machine"]["cpus"] == os.cpu_count()
    assert info["links"]["models"].endswith("/services/models/")
    assert info["links"]["environments"].endswith("/services/environments/")


def test_the_ray_endpoint_says_my_cluster_and_refuses_what_it_does_not_know(lab_hub):
    """Started and stopped through it by the panel's buttons in the browser test below."""
    ray = api(lab_hub, "alice", "ray").json()
    assert ray["kind"] == "local" and ray["state"] == "stopped" and ray["can_start"]
    # no dashboard link while no cluster runs (the panel shows none)
    assert ray["dashboard"] is None and ray["nodes"] == 0 and ray["error"] is None
    r = api(lab_hub, "alice", "ray", "POST", json={"action": "fly"})
    assert r.status_code == 400 and "start" in r.text and "stop" in r.text, r.text
    assert api(lab_hub, "alice", "ray", "POST", data="[").status_code == 400


def test_the_environments_models_and_grantees_endpoints(lab_hub):
    envs = api(lab_hub, "alice", "environments")
    assert envs.status_code == 200 and envs.json() == {"environments": []}, envs.text
    models = api(lab_hub, "alice", "models")
    assert models.status_code == 200, models.text
    found = {m["name"]: m for m in models.json()["models"]}
    assert set(found) == {"alice-churn", "bob-forecast"}, found
    assert found["alice-churn"]["mine"] and found["alice-churn"]["owner"] == "alice"
    assert not found["bob-forecast"]["mine"] and found["bob-forecast"]["owner"] == "bob"
    assert found["alice-churn"]["latest_version"] is None
    assert "/services/models/" in found["alice-churn"]["url"]
    assert "alice-churn" in found["alice-churn"]["url"]
    grantees = api(lab_hub, "alice", "grantees").json()
    assert "bob" in grantees.get("users", []) and "alice" not in grantees["users"], grantees
    assert "vision" in grantees["groups"]


def test_the_warehouse_endpoints_browse_the_demo_connection(lab_hub):
    listed = api(lab_hub, "alice", "warehouse").json()
    assert "connections" in listed, listed
    listed = listed["connections"]
    assert [c["name"] for c in listed] == ["demo"] and listed[0]["engine"] == "duckdb"
    schemas = api(lab_hub, "alice", "warehouse/demo/schemas").json()
    assert "schemas" in schemas, schemas
    schemas = schemas["schemas"]
    assert "main" in schemas
    tables = api(lab_hub, "alice", "warehouse/demo/tables?schema=main").json()["tables"]
    assert "listings" in tables
    columns = api(lab_hub, "alice",
                  "warehouse/demo/columns?schema=main&table=listings").json()["columns"]
    assert {"name": "price", "type": "DOUBLE"} in columns or any(
        c["name"] == "price" for c in columns), columns
    missing = api(lab_hub, "alice", "warehouse/nope/schemas")
    assert missing.status_code == 404 and "no connection named 'nope'" in missing.text
    assert api(lab_hub, "alice", "warehouse/demo/columns").status_code == 400


def test_the_endpoints_answer_only_the_servers_owner(lab_hub):
    """bob's token at alice's server: refused by the server before any handler runs."""
    for path in ("info", "ray", "environments", "models", "warehouse", "grantees", "shares"):
        r = requests.get(f"{lab_hub.url}/user/alice/redspot/api/{path}", timeout=60,
                         headers={"Authorization": f"token {lab_hub.tokens['bob']}"},
                         allow_redirects=False)
        assert r.status_code in (403, 404), (path, r.status_code)
        r = requests.get(f"{lab_hub.url}/user/alice/redspot/api/{path}", timeout=60,
                         allow_redirects=False)
        assert r.status_code in (302, 403), (path, r.status_code)
    r = requests.post(f"{lab_hub.url}/user/alice/redspot/api/ray", json={"action": "start"},
                      headers={"Authorization": f"token {lab_hub.tokens['bob']}"}, timeout=60)
    assert r.status_code in (403, 404)


# --- the panel in Chromium -------------------------------------------------------------------

PANEL = "#redspot-panel"
KERNEL = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                         "language": "python"}}


def sign_in(context, hub, user):
    return sign_in_to_lab(context, hub.url, user, USERS[user])


def open_panel(page):
    page.click('.jp-SideBar [data-id="redspot-panel"]')
    page.wait_for_selector(f"{PANEL} .rs-profile", timeout=60_000)


def test_the_panel_in_a_browser(lab_hub, browser, artifacts):
    hub = lab_hub
    shot = lambda p, name: p.screenshot(path=str(artifacts / f"{name}.png"))  # noqa: E731
    errors: list[str] = []
    alice_context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = sign_in(alice_context, hub, "alice")
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        # the panel: her profile and what this machine really has
        open_panel(page)
        machine = page.inner_text(f'{PANEL} [data-section="machine"]')
        assert "m5.xlarge: 4 vCPUs, 16 GiB" in machine, machine
        assert "On one machine" in machine
        # her model and her team's, each opening in the registry's UI
        models = f'{PANEL} [data-section="models"]'
        page.wait_for_selector(f'{models} li[data-model="alice-churn"]', timeout=60_000)
        assert page.locator(f'{models} [aria-label="Mine"] li').count() == 1
        team = page.inner_text(f'{models} [aria-label="My team\'s"]')
        assert "bob-forecast" in team and "bob" in team, team
        shot(page, "01-panel")
        with page.expect_popup() as popup:
            page.click(f'{models} a[aria-label="Open alice-churn in the registry"]')
        registry = popup.value
        registry.wait_for_selector("text=alice-churn", timeout=120_000)
        assert "/services/models/" in registry.url and "alice-churn" in registry.url
        shot(registry, "01b-model-in-the-registry")
        registry.close()

        # the Ray cluster: started with the button, then running
        ray = f'{PANEL} [data-section="ray"]'
        page.click(f'{ray} button[aria-label="Start my Ray cluster"]')
        page.wait_for_selector(f'{ray} [data-state="running"]', timeout=180_000)
        assert "CPU" in page.inner_text(ray)
        running = api(hub, "alice", "ray").json()
        assert running["nodes"] == 1 and running["resources"]["CPU"]["total"] >= 1, running
        assert running["error"] is None
        assert api(hub, "bob", "ray").json()["state"] == "stopped"  # bob's server: not his
        with page.expect_popup() as popup:
            page.click(f'{ray} a[aria-label="Open the Ray dashboard"]')
        dashboard = popup.value
        dashboard.wait_for_load_state("load", timeout=60_000)
        assert dashboard.url.endswith("/user/alice/redspot/ray/dashboard/"), dashboard.url
        dashboard.wait_for_selector("text=Cluster", timeout=60_000)  # Ray's app rendered
        dashboard.close()
        status = page.locator(".rs-RayStatus")
        wait_for(lambda: "running" in status.inner_text(), 30, "the status bar")
        shot(page, "02-ray-running")

        # a %%ray_remote cell, seen in the panel while it runs
        requests.put(f"{hub.url}/user/alice/api/contents/remote.ipynb", timeout=60,
                     headers={"Authorization": f"token {hub.tokens['alice']}"},
                     json={"type": "notebook", "format": "json", "content": {
                         "cells": [{"cell_type": "code", "metadata": {}, "outputs": [],
                                    "execution_count": None,
                                    "source": "%%ray_remote\nimport time\ntime.sleep(8)\n"
                                              "print('slept')"}],
                         "metadata": KERNEL, "nbformat": 4, "nbformat_minor": 5}})
        page.goto(f"{hub.url}/user/alice/lab/tree/remote.ipynb?reset")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=120_000)
        open_panel(page)
        page.click(".jp-Notebook .jp-Cell")
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(f'{ray} li[data-kind="remote"]', timeout=60_000)
        run = page.inner_text(f'{ray} li[data-kind="remote"]')
        assert run.startswith("%%ray_remote cell running"), run
        # the kernel's own connection to the cluster is not a run
        assert page.locator(f'{ray} li[data-kind="job"]').count() == 0
        shot(page, "03-ray-remote-running")
        page.wait_for_selector(".jp-OutputArea-output:has-text('slept')", timeout=120_000)

        # an environment she makes appears, building, then ready
        r = requests.post(f"{hub.url}/services/environments/api/environments", timeout=60,
                          headers={"Authorization": f"token {hub.tokens['alice']}"},
                          json={"name": "panel-env", "python": []})
        assert r.status_code in (201, 202), r.text
        envs = f'{PANEL} [data-section="environments"]'
        page.wait_for_selector(f'{envs} li[data-id="alice/panel-env"]', timeout=60_000)
        shot(page, "04-environment-building")
        page.wait_for_selector(f'{envs} li[data-id="alice/panel-env"][data-state="ready"]',
                               timeout=600_000)
        shot(page, "05-environment-ready")

        # the warehouse: demo > main > listings, and a %%sql cell inserted
        data = f'{PANEL} [data-section="data"]'
        page.click(f'{data} button[data-key="demo"]')
        page.click(f'{data} button[data-key="demo/main"]')
        page.click(f'{data} button[aria-label="Insert a %%sql cell for main.listings"]')
        wait_for(lambda: "FROM main.listings" in page.inner_text(".jp-Notebook"), 30,
                 "the %%sql cell")
        shot(page, "06-sql-cell-inserted")

        # Share… on a notebook, with bob, read-only
        requests.put(f"{hub.url}/user/alice/api/contents/plan.ipynb", timeout=60,
                     headers={"Authorization": f"token {hub.tokens['alice']}"},
                     json={"type": "notebook", "format": "json", "content": {
                         "cells": [{"cell_type": "markdown", "metadata": {},
                                    "source": "# The plan"}],
                         "metadata": KERNEL, "nbformat": 4, "nbformat_minor": 5}})
        page.click('.jp-SideBar [data-id="filebrowser"]')
        page.click(".jp-FileBrowser .jp-ToolbarButtonComponent[title^='Refresh']")
        item = page.locator('.jp-DirListing-item[title^="Name: plan.ipynb"]')
        item.click(button="right")
        page.click('.lm-Menu-item:has-text("Share…")')
        # nobody named: the dialog stays, saying what is missing
        page.click('.jp-Dialog button:has-text("Share")')
        page.wait_for_selector('.rs-ShareForm [role=alert]:has-text("Say whom to share with")',
                               timeout=30_000)
        page.fill('.rs-ShareForm input[name="name"]', "bob")
        shot(page, "07-share-dialog")
        page.locator(".jp-Dialog-content").screenshot(path=str(artifacts / "share-dialog.png"))
        page.click('.jp-Dialog button:has-text("Share")')
        open_panel(page)
        shares = f'{PANEL} [data-section="shares"]'
        page.wait_for_selector(f'{shares} li[data-path="plan.ipynb"]', timeout=30_000)
        shot(page, "08-shared")
        page.locator(PANEL).screenshot(path=str(artifacts / "panel.png"))  # the docs' picture

        # every control is a button or a link (reached with Tab) with a name to read out
        unnamed = page.eval_on_selector_all(
            f"{PANEL} button, {PANEL} a, {PANEL} [onclick], {PANEL} [role=button]",
            "els => els.filter(e => !['BUTTON', 'A'].includes(e.tagName)"
            " || !(e.getAttribute('aria-label') || e.textContent.trim()))"
            ".map(e => e.outerHTML.slice(0, 80))")
        assert unnamed == [], unnamed
        # the dark theme: the panel follows it
        page.click('.lm-MenuBar-itemLabel:text-is("Settings")')
        page.hover('.lm-Menu-itemLabel:text-is("Theme")')
        page.click('.lm-Menu-itemLabel:text-is("JupyterLab Dark")')
        # (the body counts as hidden to Playwright while JupyterLab's splash covers it)
        page.wait_for_selector('body[data-jp-theme-light="false"]', state="attached",
                               timeout=30_000)
        page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=30_000)
        luminance = page.eval_on_selector(PANEL, """panel => {
            const rgb = s => s.match(/\\d+/g).slice(0, 3).map(Number);
            const lum = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
            const style = getComputedStyle(panel);
            return [lum(rgb(style.backgroundColor)), lum(rgb(style.color))]; }""")
        assert luminance[0] < 0.3 < 0.6 < luminance[1], luminance  # light text on dark
        page.locator(PANEL).screenshot(path=str(artifacts / "panel-dark.png"))

        # bob opens it from his Shares, read-only
        bob_context = browser.new_context(viewport={"width": 1400, "height": 900})
        bob = sign_in(bob_context, hub, "bob")
        open_panel(bob)
        bob.click(f'{shares} button[aria-label^="Open plan.ipynb from alice"]')
        bob.wait_for_selector(".jp-Notebook .jp-RenderedMarkdown h1:has-text('The plan')",
                              timeout=60_000)
        r = requests.get(f"{hub.url}/user/bob/api/contents/shared-with-me/alice/plan.ipynb",
                         headers={"Authorization": f"token {hub.tokens['bob']}"}, timeout=60)
        assert r.status_code == 200 and r.json()["writable"] is False, r.text
        shot(bob, "09-bob-reads-it")

        # alice revokes it: gone for bob
        page.click(f'{shares} li[data-path="plan.ipynb"] button:has-text("Revoke")')
        page.wait_for_selector(f'{shares} li[data-path="plan.ipynb"]', state="detached",
                               timeout=30_000)
        bob.click('[data-section="shares"] .rs-Section-title')  # focus stays in the panel
        bob.evaluate("() => 0")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = requests.get(
                f"{hub.url}/user/bob/api/contents/shared-with-me/alice/plan.ipynb",
                headers={"Authorization": f"token {hub.tokens['bob']}"}, timeout=60)
            if r.status_code in (403, 404):
                break
            time.sleep(1)
        assert r.status_code in (403, 404), r.text
        bob.wait_for_selector(f'{shares} li[data-path="plan.ipynb"]', state="detached",
                              timeout=60_000)
        shot(bob, "10-bob-after-revoke")

        # Share… can also invite bob into her server (vision may invite), and uninvite him
        page.click('.jp-SideBar [data-id="filebrowser"]')
        page.locator('.jp-DirListing-item[title^="Name: plan.ipynb"]').click(button="right")
        page.click('.lm-Menu-item:has-text("Share…")')
        page.fill('.rs-ShareForm input[name="name"]', "bob")
        page.check('.rs-ShareForm input[name="how"][value="invite"]')
        page.click('.jp-Dialog button:has-text("Share")')
        open_panel(page)
        invited = f'{shares} [aria-label="Invited into my server"]'
        page.wait_for_selector(f'{invited} li:has-text("bob")', timeout=30_000)
        shot(page, "11-bob-invited")
        r = requests.get(f"{hub.url}/hub/api/shares/alice", timeout=30,
                         headers={"Authorization": f"token {hub.tokens['alice']}"})
        assert [s["user"]["name"] for s in r.json()["items"] if s.get("user")] == ["bob"], r.text
        page.click(f'{shares} button[aria-label="Uninvite user bob"]')
        page.wait_for_selector(f'{invited} li:has-text("bob")', state="detached",
                               timeout=30_000)
        r = requests.get(f"{hub.url}/hub/api/shares/alice", timeout=30,
                         headers={"Authorization": f"token {hub.tokens['alice']}"})
        assert r.json()["items"] == [], r.text

        # and her Ray cluster stopped with the button
        page.click(f'{ray} button[aria-label="Stop my Ray cluster"]')
        page.wait_for_selector(f'{ray} [data-state="stopped"]', timeout=90_000)
        assert api(hub, "alice", "ray").json()["state"] == "stopped"
        assert not errors, errors
    finally:
        alice_context.close()
