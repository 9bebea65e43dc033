"""Inviting a teammate into one's server, in two real browsers: bob, invited by alice,
opens her notebook in her server and sees what she types as she types it (real-time
collaboration, jupyter-collaboration), and is refused once she revokes the invitation."""

from __future__ import annotations

import re

import pytest
import requests

from tests.conftest import PASSWORDS, needs_root
from tests.helpers import wait_for

pytestmark = [pytest.mark.integration, needs_root]

SETTINGS = {
    "groups": {"vision": {"users": ["alice", "bob"]}, "nlp": {"users": ["carol"]}},
    "services": {"sharing": {"enabled": True, "invite_groups": ["vision"],
                             "server_token_cache": 2}},
}
NOTEBOOK = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [],
                       "execution_count": None, "id": "c1"}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def hub(test_root, account_prefix):
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "collab")
    try:
        hub = pool(SETTINGS, users=PASSWORDS)
        hub.tokens = {name: hub.user_token(name) for name in PASSWORDS}
        yield hub
    finally:
        pool.close()


def sign_in(page, hub, name):
    page.goto(f"{hub.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", PASSWORDS[name])
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/home$"))


def open_notebook(page, hub, path):
    page.goto(f"{hub.url}/user/alice/lab/tree/{path}")
    # a guest confirms once that alice's server may know who they are
    if "/hub/api/oauth2/authorize" in page.url or page.locator(
            "form[action*='oauth2/authorize'] button").count():
        page.locator("form button[type=submit], input[type=submit]").first.click()
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=120_000)


def test_a_guest_edits_with_the_owner_in_real_time(hub, browser, tmp_path):
    alice_token = hub.tokens["alice"]
    assert hub.spawn("alice", alice_token).status_code in (201, 202)
    try:
        hub.wait_ready("alice")
        r = requests.put(f"{hub.url}/user/alice/api/contents/together.ipynb",
                         headers={"Authorization": f"token {alice_token}"}, timeout=30,
                         json={"type": "notebook", "content": NOTEBOOK})
        assert r.status_code in (200, 201), r.text
        # carol's group may not invite; alice's may
        r = requests.post(f"{hub.url}/hub/api/shares/carol/", json={"user": "bob"},
                          headers={"Authorization": f"token {hub.tokens['carol']}"},
                          timeout=30)
        assert r.status_code == 403, r.text
        r = requests.post(f"{hub.url}/hub/api/shares/alice/", json={"user": "bob"},
                          headers={"Authorization": f"token {alice_token}"}, timeout=30)
        assert r.status_code == 200, r.text

        alice = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        bob = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        sign_in(alice, hub, "alice")
        sign_in(bob, hub, "bob")
        open_notebook(alice, hub, "together.ipynb")
        open_notebook(bob, hub, "together.ipynb")
        # bob is in alice's server (its url), as himself
        assert "/user/alice/lab" in bob.url
        alice.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        alice.keyboard.type("print('typed by alice')")

        def bob_sees():
            return "typed by alice" in bob.locator(
                ".jp-Notebook .jp-Cell .cm-content").first.inner_text()

        try:
            wait_for(bob_sees, 30, "bob to see alice's typing")
        finally:
            alice.screenshot(path=str(tmp_path / "alice.png"))
            bob.screenshot(path=str(tmp_path / "bob.png"))
        bob.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
        bob.keyboard.press("End")
        bob.keyboard.type("  # and bob")
        wait_for(lambda: "and bob" in alice.locator(
            ".jp-Notebook .jp-Cell .cm-content").first.inner_text(), 30,
            "alice to see bob's typing")
        # the document is saved by the server (alice's account), with both edits; while
        # the collaboration's store writes it, a read may answer an error: read again
        answers = []

        def saved():
            r = requests.get(f"{hub.url}/user/alice/api/contents/together.ipynb",
                             headers={"Authorization": f"token {alice_token}"}, timeout=30)
            answers.append(f"{r.status_code} {r.text[:300]}")
            if r.status_code != 200 or "content" not in r.json():
                return False
            source = r.json()["content"]["cells"][0]["source"]
            return "typed by alice" in source and "and bob" in source

        try:
            wait_for(saved, 30, "the shared document to be saved")
        except TimeoutError:
            raise AssertionError(f"not saved; the server's last answers: {answers[-3:]}") \
                from None

        # revoked: bob's next request to alice's server is refused
        r = requests.patch(f"{hub.url}/hub/api/shares/alice/", json={"user": "bob"},
                           headers={"Authorization": f"token {alice_token}"}, timeout=30)
        assert r.status_code == 200, r.text

        def refused():
            status = bob.evaluate("""async () => (await fetch(
                '/user/alice/api/contents?content=0', {redirect: 'manual'})).status""")
            return status in (0, 302, 403)

        wait_for(refused, 60, "bob to be refused after the revocation", interval=1)
    finally:
        hub.stop_server("alice")
