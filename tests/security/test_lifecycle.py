"""Names and lifecycle: no hub user takes a reserved name; a removed user is gone for
good (server, processes, tokens, sessions), and their name with them."""

from __future__ import annotations

import os
import pwd
import subprocess
import time

import pytest
import requests

from tests.helpers import Browser, redspot, wait_for

pytestmark = pytest.mark.integration


def _signup(hub, name, password="a-good-password-1"):
    browser = Browser(hub)
    form = browser.get("/hub/signup")
    return browser.session.post(f"{hub.url}/hub/signup", timeout=30, data={
        "_xsrf": browser._xsrf(form.text), "username": name, "password": password,
        "password_confirm": password})


@pytest.mark.parametrize("name, why", [
    ("team", "reserved by Redspot"),
    ("root", "reserved by Redspot"),
    ("daemon", "is a system account of this machine"),
])
def test_reserved_names_are_refused_everywhere(realm, name, why):
    r = _signup(realm, name)
    assert r.status_code == 400 and why in r.text, r.text[-500:]
    r = realm.api("POST", f"/users/{name}", token=realm.tokens["admin"])
    assert r.status_code == 400, r.text
    out = redspot("users", "add", name, "--password-stdin", "--data-dir", str(realm.data_dir),
                  stdin="a-good-password-1\n", check=False)
    assert out.returncode == 2 and why in out.stderr


def test_users_are_not_renamed(realm):
    r = realm.api("PATCH", "/users/bob", token=realm.tokens["admin"], json={"name": "robert"})
    assert r.status_code == 400 and "does not rename users" in r.json()["message"]
    assert realm.api("GET", "/users/bob").status_code == 200


def _stray(uid: int) -> subprocess.Popen:
    """A process left running as ``uid`` (a Ray worker, a job started by hand)."""
    return subprocess.Popen(["sleep", "600"], user=uid, group=pwd.getpwuid(uid).pw_gid,
                            start_new_session=True)


def test_a_removed_user_is_gone_and_their_name_retired(realm):
    hub, token = realm, realm.tokens["dave"]
    assert hub.spawn("dave", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    hub.wait_ready("dave")
    account = pwd.getpwnam(f"{hub.prefix}dave")
    home = hub.data_dir / "home" / "dave"
    (home / "notes.txt").write_text("dave's notes")
    os.chown(home / "notes.txt", account.pw_uid, account.pw_gid)
    stray = _stray(account.pw_uid)
    browser = Browser(hub)
    assert browser.login("dave", hub.passwords["dave"]).url.endswith(
        ("/spawn", "/lab", "/spawn-pending/dave", "/hub/home"))
    try:
        r = hub.api("DELETE", "/users/dave", token=hub.tokens["admin"])
        assert r.status_code == 204, r.text
        assert stray.wait(15) is not None  # stopped, by uid
    finally:
        if stray.poll() is None:
            stray.kill()
    # the hub forgot dave: his token and his browser session no longer work
    assert hub.api("GET", "/user", token=token).status_code == 403
    assert browser.get("/hub/api/user").status_code in (401, 403)
    time.sleep(6)  # services trust the hub's answer about a token for 5 s
    r = requests.get(f"{hub.url}/services/models/api/2.0/mlflow/registered-models/search",
                     headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 401
    r = requests.get(f"{hub.url}/services/environments/api/environments",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 403
    # his account is locked and renamed (its uid is taken for good), his home set aside
    with pytest.raises(KeyError):
        pwd.getpwnam(f"{hub.prefix}dave")
    retired = pwd.getpwuid(account.pw_uid)
    assert retired.pw_name == f"{hub.prefix}old_{account.pw_uid}"
    assert retired.pw_shell == "/usr/sbin/nologin"
    assert not home.exists()
    (kept,) = (hub.data_dir / "retired").glob("dave.*")
    assert oct((hub.data_dir / "retired").stat().st_mode & 0o777) == "0o700"
    # nobody takes the name: not by signing up, not by an admin adding it
    r = _signup(hub, "dave")
    assert r.status_code == 400 and "belonged to a user who was removed" in r.text
    assert hub.api("POST", "/users/dave", token=hub.tokens["admin"]).status_code == 400
    assert Browser(hub).login("dave", hub.passwords["dave"]).status_code == 403
    listing = redspot("users", "list", "--data-dir", str(hub.data_dir)).stdout
    assert "dave\tremoved" in listing

    # an admin brings him back: his account, home and password
    out = redspot("users", "restore", "dave", "--data-dir", str(hub.data_dir))
    assert "dave is back" in out.stdout
    assert pwd.getpwnam(f"{hub.prefix}dave").pw_uid == account.pw_uid
    assert (home / "notes.txt").read_text() == "dave's notes" and not kept.exists()
    assert Browser(hub).login("dave", hub.passwords["dave"]).url.endswith("/hub/home")


def test_redspot_users_remove_goes_through_the_running_hub(realm):
    assert _signup(realm, "erin").status_code == 200
    token = realm.user_token("erin")
    assert realm.api("GET", "/user", token=token).status_code == 200
    out = redspot("users", "remove", "erin", "--data-dir", str(realm.data_dir))
    assert "server stopped, tokens revoked" in out.stdout
    assert realm.api("GET", "/users/erin").status_code == 404
    assert realm.api("GET", "/user", token=token).status_code == 403
    wait_for(lambda: _signup(realm, "erin").status_code == 400, 10, "erin's name retired")
