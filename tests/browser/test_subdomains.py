"""Per-user subdomains (``hub.subdomain_host``) in a real browser, on ``*.hub.localhost``:
alice's server and the model registry each have an origin of their own (on one site, as
``alice.hub.example.com`` and ``models--service.hub.example.com`` are, so the browser
sends the registry's session cookie along), and a page of her server's origin cannot
act with her registry session."""

from __future__ import annotations

import re

import pytest
import requests

from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "alice-password-1"


@pytest.fixture(scope="module")
def subdomain_hub(test_root, account_prefix):
    from tests.conftest import HubPool

    port = free_port()
    pool = HubPool(test_root, account_prefix, "subdomains")
    try:
        hub = pool({"hub": {"subdomain_host": f"http://hub.localhost:{port}"},
                    "services": {"models": {"enabled": True}}},
                   users={"alice": PASSWORD}, port=port)
        hub.alice_token = hub.user_token("alice")

        def registry_up():
            r = requests.get(f"http://127.0.0.1:{port}/services/models/api/2.0/mlflow/"
                             "registered-models/search", timeout=10,
                             headers={"Host": f"models--service.hub.localhost:{port}",
                                      "Authorization": f"Bearer {hub.alice_token}"})
            return r.status_code == 200

        wait_for(registry_up, 180, "the model registry on its own origin")
        yield hub
    finally:
        pool.close()


def _create(page, url: str, name: str) -> int:
    """A POST from ``page``'s origin to the registry, carrying the browser's cookies."""
    return page.evaluate(
        """async ([url, name]) => {
            try {
                const r = await fetch(url, {method: 'POST', credentials: 'include',
                    mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
                    body: JSON.stringify({name})});
                return r.status;  // 0: opaque (another origin)
            } catch (e) { return -1; }
        }""", [url, name])


def test_a_page_of_alices_server_cannot_act_with_her_registry_session(subdomain_hub, browser):
    hub = subdomain_hub
    port = hub.port
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"http://hub.localhost:{port}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.wait_for_url(re.compile(r".*/hub/home$"))
        page.click("#start")
        page.wait_for_url(re.compile(r".*/hub/spawn/alice$"))
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(rf"http://alice\.hub\.localhost:{port}/user/alice/lab.*"),
                          timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)

        registry = context.new_page()
        base = f"http://models--service.hub.localhost:{port}/services/models"
        registry.goto(f"{base}/")
        registry.wait_for_url(re.compile(rf"{re.escape(base)}/.*"), timeout=60_000)
        api = f"{base}/ajax-api/2.0/mlflow/experiments/create"

        # from alice's server's origin: the session cookie goes along, the guard refuses
        _create(page, api, "alice/from-her-server")
        wait_for(lambda: "it came from a page of http://alice.hub.localhost" in hub.log(tail=400),
                 30, "the registry to refuse the request from alice's server's page")
        # from the registry's own pages: the same request is fine (application/json, as
        # the UI sends it)
        status = registry.evaluate(
            """async (url) => (await fetch(url, {method: 'POST',
                headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({name: 'alice/from-the-registry'})})).status""", api)
        assert status == 200
    finally:
        context.close()
        if hub.server_model("alice"):
            hub.stop_server("alice")
    r = requests.get(f"http://127.0.0.1:{port}/services/models/api/2.0/mlflow/experiments/"
                     "search?max_results=100", timeout=30,
                     headers={"Host": f"models--service.hub.localhost:{port}",
                              "Authorization": f"Bearer {hub.alice_token}"})
    names = {e["name"] for e in r.json().get("experiments", [])}
    assert "alice/from-the-registry" in names and "alice/from-her-server" not in names
