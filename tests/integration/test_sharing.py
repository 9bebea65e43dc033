"""Sharing between teammates, on a real hub with real accounts and real files.

alice and bob are in ``vision`` (which may invite others into its servers), carol is in
``nlp``. alice's home holds ``notes.ipynb`` and a folder ``proj``, made by her own
account (umask 007: nobody else may read them). Every check of who may read or write
runs as the user's real account, or through their real server.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import time

import pytest
import requests

from tests.conftest import PASSWORDS, needs_root
from tests.helpers import Browser, run_as, wait_for
from tests.kernels import run_cell, start_kernel

pytestmark = [pytest.mark.integration, needs_root]

SETTINGS = {
    "groups": {"vision": {"users": ["alice", "bob"]}, "nlp": {"users": ["carol"]}},
    "services": {"sharing": {"enabled": True, "invite_groups": ["vision"],
                             "check_interval": 1, "server_token_cache": 2}},
}
S = "/services/sharing/api"
NOTEBOOK = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture(scope="module")
def hub(test_root, account_prefix):
    from redspot.privileged.client import SocketHelper
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "sharing")
    try:
        hub = pool(SETTINGS, users=PASSWORDS)
        hub.prefix = account_prefix
        hub.tokens = {name: hub.user_token(name) for name in (*PASSWORDS, "admin")}
        helper = SocketHelper(str(hub.data_dir / "run" / "helper.sock"))
        for user, groups in (("alice", ["vision"]), ("bob", ["vision"]), ("carol", ["nlp"])):
            helper.call("ensure_user", user=user, groups=groups)
        hub.helper = helper
        as_alice(hub, f"printf %s '{NOTEBOOK}' > notes.ipynb; cp notes.ipynb draft.ipynb; "
                      "mkdir -p proj/sub; "
                      "echo a > proj/a.txt; echo deep > proj/sub/b.txt; echo s > proj/.env; "
                      "echo diary > diary.txt; ln -s /etc link-out; ln -s ../bob link-bob")
        yield hub
    finally:
        pool.close()


def account(hub, user: str) -> str:
    return f"{hub.prefix}{user}"


def home(hub, user: str):
    return hub.data_dir / "home" / user


def as_alice(hub, script: str):
    r = run_as(account(hub, "alice"), "sh", "-c",
               f"umask 007; cd {home(hub, 'alice')} && {script}")
    assert r.returncode == 0, r.stderr
    return r


def try_as(hub, user: str, script: str):
    return run_as(account(hub, user), "sh", "-c", script)


def ask(hub, who: str, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, hub.url + path, timeout=60,
                            headers={"Authorization": f"token {hub.tokens[who]}"}, **kwargs)


def share(hub, who: str, path: str, with_: str, **extra) -> requests.Response:
    return ask(hub, who, "POST", f"{S}/shares", json={"path": path, "with": with_, **extra})


def revoke_all(hub):
    for s in ask(hub, "admin", "GET", f"{S}/shares?all=true").json()["shares"]:
        if s["active"]:
            assert ask(hub, "admin", "DELETE", f"{S}/shares/{s['id']}").status_code == 200


@pytest.fixture
def clean(hub):
    yield hub
    revoke_all(hub)


def test_a_shared_file_is_readable_and_nothing_more(clean):
    hub = clean
    notes = home(hub, "alice") / "notes.ipynb"
    assert try_as(hub, "bob", f"cat {notes}").returncode != 0  # nothing shared yet
    r = share(hub, "alice", "notes.ipynb", "bob")
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["kind"], made["with"], made["shared_as"]) == (
        "file", "bob", "shared-with-me/alice/notes.ipynb")

    read = try_as(hub, "bob", f"cat {notes}")
    assert read.returncode == 0 and read.stdout == NOTEBOOK
    for attempt in (f"echo x > {notes}", f"echo x >> {notes}",
                    f"mv {notes} {notes}.moved", f"rm -f {notes}",
                    f"touch {home(hub, 'alice')}/planted", f"ls {home(hub, 'alice')}",
                    f"cat {home(hub, 'alice')}/diary.txt"):
        r = try_as(hub, "bob", attempt)
        assert r.returncode != 0 and "Permission denied" in r.stderr, attempt
    assert notes.read_text() == NOTEBOOK
    # carol was granted nothing
    r = try_as(hub, "carol", f"cat {notes}")
    assert r.returncode != 0 and "Permission denied" in r.stderr

    # the lists: alice's, bob's, carol's
    assert [s["path"] for s in ask(hub, "alice", "GET", f"{S}/shares").json()["mine"]] == [
        "notes.ipynb"]
    with_bob = ask(hub, "bob", "GET", f"{S}/shares").json()["with_me"]
    assert [(s["owner"], s["source"]) for s in with_bob] == [("alice", str(notes))]
    assert ask(hub, "carol", "GET", f"{S}/shares").json() == {"mine": [], "with_me": []}
    # a recipient sees a share; another user cannot even tell it exists
    assert ask(hub, "bob", "GET", f"{S}/shares/{made['id']}").status_code == 200
    assert ask(hub, "carol", "GET", f"{S}/shares/{made['id']}").status_code == 404

    # revoked: refused at once, and only the owner (or an admin) may revoke
    assert ask(hub, "bob", "DELETE", f"{S}/shares/{made['id']}").status_code == 403
    assert try_as(hub, "bob", f"cat {notes}").returncode == 0
    r = ask(hub, "alice", "DELETE", f"{S}/shares/{made['id']}")
    assert r.status_code == 200 and r.json()["active"] is False
    r = try_as(hub, "bob", f"cat {notes}")
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_a_group_share_reaches_members_and_new_members_at_their_next_start(clean):
    hub = clean
    a_txt = home(hub, "alice") / "proj" / "a.txt"
    deep = home(hub, "alice") / "proj" / "sub" / "b.txt"
    r = share(hub, "alice", "proj", "group:vision")
    assert r.status_code == 201 and r.json()["kind"] == "folder", r.text
    assert try_as(hub, "bob", f"cat {a_txt} {deep}").stdout == "a\ndeep\n"
    assert try_as(hub, "bob", f"ls {a_txt.parent}").stdout.split() == ["a.txt", "sub"]
    # hidden files hold credentials: not shared, even inside a shared folder
    assert try_as(hub, "bob", f"cat {a_txt.parent}/.env").returncode != 0
    # read-only inside too
    assert try_as(hub, "bob", f"touch {a_txt.parent}/new").returncode != 0
    assert try_as(hub, "bob", f"rm -f {a_txt}").returncode != 0
    # what alice adds later is shared too (the folder's default ACL)
    as_alice(hub, "echo later > proj/later.txt")
    assert try_as(hub, "bob", f"cat {a_txt.parent}/later.txt").stdout == "later\n"
    assert try_as(hub, "carol", f"cat {a_txt}").returncode != 0

    # carol joins vision: the service says so at once; the storage at her next start
    r = hub.api("POST", "/groups/vision/users", token=hub.tokens["admin"],
                json={"users": ["carol"]})
    assert r.status_code == 200, r.text
    try:
        def listed():
            return ask(hub, "carol", "GET", f"{S}/shares").json()["with_me"]

        assert wait_for(listed, 15, "carol to receive vision's share")[0]["path"] == "proj"
        assert try_as(hub, "carol", f"cat {a_txt}").returncode != 0
        hub.helper.call("ensure_user", user="carol", groups=["nlp", "vision"])
        assert try_as(hub, "carol", f"cat {a_txt}").stdout == "a\n"
    finally:
        hub.api("DELETE", "/groups/vision/users", token=hub.tokens["admin"],
                json={"users": ["carol"]})
        hub.helper.call("ensure_user", user="carol", groups=["nlp"])
    assert try_as(hub, "carol", f"cat {a_txt}").returncode != 0


def test_saves_renames_and_chmods_by_the_owner(clean):
    hub = clean
    notes = home(hub, "alice") / "draft.ipynb"
    assert share(hub, "alice", "draft.ipynb", "bob").status_code == 201

    # saved again in place (as jupyter-server does): bob reads the new content
    as_alice(hub, "printf %s v2 > draft.ipynb")
    assert try_as(hub, "bob", f"cat {notes}").stdout == "v2"
    # replaced by a rename (as some editors save): the ACL went with the old file...
    as_alice(hub, "printf %s v3 > .notes.tmp && mv .notes.tmp draft.ipynb")
    # ...and the check puts it back (every second here)
    assert wait_for(lambda: try_as(hub, "bob", f"cat {notes}").stdout == "v3", 20,
                    "the check to share the renamed file again")
    # a chmod never widens bob's access
    as_alice(hub, "chmod 666 draft.ipynb")
    r = try_as(hub, "bob", f"echo x >> {notes}")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    as_alice(hub, "chmod 777 .")
    r = try_as(hub, "bob", f"touch {home(hub, 'alice')}/planted")
    as_alice(hub, "chmod 700 .")
    # (alice opened her home to everyone herself; bob's entry stayed traverse-only)
    assert r.returncode != 0
    # a chmod that masks the ACL off is undone by the check
    as_alice(hub, "chmod 600 draft.ipynb")
    assert wait_for(lambda: try_as(hub, "bob", f"cat {notes}").returncode == 0, 20,
                    "the check to undo alice's chmod")
    # a server start of alice's (the helper makes her home 0700 again) keeps the share
    hub.helper.call("ensure_user", user="alice", groups=["vision"])
    assert try_as(hub, "bob", f"cat {notes}").stdout == "v3"
    assert notes.stat().st_mode & 0o007 == 0


@pytest.mark.parametrize(("who", "body", "status", "words"), [
    ("alice", {"path": "link-out", "with": "bob"}, 400, "symbolic link"),
    ("alice", {"path": "link-out/passwd", "with": "bob"}, 400, "symbolic link"),
    ("alice", {"path": "link-bob", "with": "carol"}, 400, "symbolic link"),
    ("alice", {"path": "../bob", "with": "carol"}, 400, "climbs out"),
    ("alice", {"path": "proj/../../bob", "with": "carol"}, 400, "climbs out"),
    ("alice", {"path": "/etc/passwd", "with": "bob"}, 400, "relative"),
    ("alice", {"path": ".redspot/ray/token", "with": "bob"}, 400, "hidden"),
    ("alice", {"path": "missing.ipynb", "with": "bob"}, 400, "no such file"),
    ("alice", {"path": "notes.ipynb", "with": "nobody-here"}, 400, "no user"),
    ("alice", {"path": "notes.ipynb", "with": "group:nope"}, 400, "no group"),
    ("alice", {"path": "notes.ipynb", "with": "alice"}, 400, "someone else"),
    ("alice", {"path": "notes.ipynb", "with": "bob", "mode": "rw"}, 400, "unknown keys"),
    # bob cannot share into alice's home, nor re-share what she shared with him
    ("bob", {"path": "notes.ipynb", "with": "carol", "owner": "alice"}, 403, "their own"),
    ("bob", {"path": "shared-with-me/alice/notes.ipynb", "with": "carol"}, 400,
     "only its owner"),
    ("bob", {"path": "link-to-alice", "with": "carol"}, 400, "symbolic link"),
])
def test_what_cannot_be_shared(clean, who, body, status, words):
    hub = clean
    bob_home = home(hub, "bob")
    if not (bob_home / "link-to-alice").is_symlink():
        os.symlink(home(hub, "alice") / "notes.ipynb", bob_home / "link-to-alice")
        bob = pwd.getpwnam(account(hub, "bob"))
        os.lchown(bob_home / "link-to-alice", bob.pw_uid, bob.pw_gid)
    r = ask(hub, who, "POST", f"{S}/shares", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"], r.text
    assert ask(hub, "admin", "GET", f"{S}/shares?all=true").json()["shares"] == [] or all(
        not s["active"] for s in ask(hub, "admin", "GET", f"{S}/shares?all=true").json()[
            "shares"])


def test_the_recipient_opens_it_in_their_server_and_a_kernel(clean):
    hub = clean
    assert share(hub, "alice", "notes.ipynb", "bob").status_code == 201
    assert share(hub, "alice", "proj", "bob").status_code == 201
    token = hub.tokens["bob"]
    assert hub.spawn("bob", token).status_code in (201, 202)
    try:
        hub.wait_ready("bob")
        contents = f"{hub.url}/user/bob/api/contents"
        headers = {"Authorization": f"token {token}"}

        def linked():
            r = requests.get(f"{contents}/shared-with-me/alice", headers=headers, timeout=30)
            return r.status_code == 200 and sorted(e["name"] for e in r.json()["content"])

        assert wait_for(linked, 30, "bob's server to link alice's shares") == [
            "notes.ipynb", "proj"]
        r = requests.get(f"{contents}/shared-with-me/alice/notes.ipynb", headers=headers,
                         timeout=30)
        assert r.status_code == 200 and r.json()["type"] == "notebook"
        r = requests.put(f"{contents}/shared-with-me/alice/notes.ipynb", headers=headers,
                         json={"type": "file", "format": "text", "content": "mine now"},
                         timeout=30)
        assert r.status_code >= 400, r.text
        assert "mine now" not in (home(hub, "alice") / "notes.ipynb").read_text()

        kernel = start_kernel(hub.url, "bob", token)
        out = run_cell(hub.url, "bob", token, kernel=kernel, code=(
            "print(open('shared-with-me/alice/proj/a.txt').read().strip())\n"
            "try:\n    open('shared-with-me/alice/proj/a.txt', 'a')\n"
            "except PermissionError as e:\n    print('refused', e.errno)\n"
            "%copy_shared shared-with-me/alice/proj/a.txt mine.txt\n"
            "open('mine.txt', 'a').write('edited')\n"
            "print(open('mine.txt').read())"))
        assert "a\n" in out and "refused 13" in out and "a\nedited" in out, out
        out = run_cell(hub.url, "bob", token, kernel=kernel, code="_ = %shares")
        assert "~/shared-with-me/alice/notes.ipynb" in out and "by alice" in out, out
        listed = requests.get(f"{hub.url}/user/bob/redspot/api/shares", headers=headers,
                              timeout=30).json()
        assert sorted(x["path"] for x in listed["with_me"]) == ["notes.ipynb", "proj"]
        # revoked: gone from bob's storage at once, and from his folder with %shares
        mine = ask(hub, "alice", "GET", f"{S}/shares").json()["mine"]
        for s in mine:
            assert ask(hub, "alice", "DELETE", f"{S}/shares/{s['id']}").status_code == 200
        out = run_cell(hub.url, "bob", token, kernel=kernel, code=(
            "try:\n    open('shared-with-me/alice/proj/a.txt').read()\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
            "_ = %shares\nimport os\nprint(os.path.exists('shared-with-me/alice'))"))
        assert "refused 13" in out and "Shared with you: nothing" in out and "False" in out, out
    finally:
        hub.stop_server("bob")


@pytest.fixture(scope="module")
def alice_server(hub):
    """alice's server, for the tests in her notebook (one start for all of them)."""
    assert hub.spawn("alice", hub.tokens["alice"]).status_code in (201, 202)
    try:
        hub.wait_ready("alice")
        yield hub
    finally:
        hub.stop_server("alice")


def test_share_magics_in_the_owners_kernel(alice_server, clean):
    hub = clean
    token = hub.tokens["alice"]
    kernel = start_kernel(hub.url, "alice", token)
    out = run_cell(hub.url, "alice", token, kernel=kernel, code=(
        "%share proj/a.txt --with carol --with group:vision"))
    assert "Shared proj/a.txt (file) read-only with carol" in out, out
    assert "with group:vision" in out, out
    a_txt = home(hub, "alice") / "proj" / "a.txt"
    assert try_as(hub, "carol", f"cat {a_txt}").stdout == "a\n"
    out = run_cell(hub.url, "alice", token, kernel=kernel, code="%share .ssh --with bob")
    assert "hidden" in out, out
    out = run_cell(hub.url, "alice", token, kernel=kernel,
                   code="%unshare proj/a.txt --with carol")
    assert "Revoked proj/a.txt for carol" in out, out
    assert try_as(hub, "carol", f"cat {a_txt}").returncode != 0
    out = run_cell(hub.url, "alice", token, kernel=kernel, code="_ = %shares")
    assert "proj/a.txt" in out and "group:vision" in out and "carol" not in out, out
    # alice saves it again from JupyterLab (jupyter-server's atomic save): bob reads
    # the new content
    headers = {"Authorization": f"token {token}"}
    r = requests.put(f"{hub.url}/user/alice/api/contents/proj/a.txt", headers=headers,
                     json={"type": "file", "format": "text", "content": "saved again"},
                     timeout=30)
    assert r.status_code == 200, r.text
    assert try_as(hub, "bob", f"cat {a_txt}").stdout == "saved again"

    # the server's endpoints for the JupyterLab extension: the same, with the
    # server's token kept on the server
    ext = f"{hub.url}/user/alice/redspot/api/shares"
    listed = requests.get(ext, headers=headers, timeout=30).json()
    assert [x["with"] for x in listed["mine"]] == ["group:vision"]
    assert listed["with_me"] == [] and listed["invited"] == []
    r = requests.post(ext, headers=headers, json={"path": "notes.ipynb", "with": "carol"},
                      timeout=30)
    assert r.status_code == 201 and r.json()["shared_as"] == \
        "shared-with-me/alice/notes.ipynb", r.text
    assert try_as(hub, "carol", f"cat {home(hub, 'alice')}/notes.ipynb").returncode == 0
    r = requests.delete(f"{ext}/{r.json()['id']}", headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["active"] is False
    assert try_as(hub, "carol", f"cat {home(hub, 'alice')}/notes.ipynb").returncode != 0
    r = requests.post(ext, headers=headers, json={"path": "../bob", "with": "carol"},
                      timeout=30)
    assert r.status_code == 400 and "climbs out" in r.json()["message"], r.text
    r = requests.post(ext, headers=headers, json={"invite": "bob"}, timeout=30)
    assert r.status_code == 201, r.text
    assert requests.get(ext, headers=headers, timeout=30).json()["invited"] == [
        {"kind": "user", "name": "bob"}]
    r = requests.delete(f"{ext}?invite=bob", headers=headers, timeout=30)
    assert r.status_code == 204, r.text


def test_invitations_into_a_server(alice_server):
    """JupyterHub's own sharing: bob reaches alice's server only while invited; carol's
    group may not invite; share codes expire."""
    hub = alice_server
    contents = f"{hub.url}/user/alice/api/contents"
    bob = {"Authorization": f"token {hub.tokens['bob']}"}
    assert requests.get(contents, headers=bob, timeout=30).status_code == 403
    kernel = start_kernel(hub.url, "alice", hub.tokens["alice"])
    out = run_cell(hub.url, "alice", hub.tokens["alice"], kernel=kernel,
                   code="%share --server --with bob")
    assert "runs code as you" in out and "Invited bob" in out, out
    r = wait_for(lambda: requests.get(contents, headers=bob, timeout=30).status_code
                 == 200, 15, "bob to get into alice's server")
    assert r
    out = run_cell(hub.url, "alice", hub.tokens["alice"], kernel=kernel,
                   code="%unshare --server --with bob")
    assert "may no longer enter" in out, out
    revoked = time.monotonic()
    wait_for(lambda: requests.get(contents, headers=bob, timeout=30).status_code
             == 403, 60, "bob to be refused after the revocation")
    assert time.monotonic() - revoked < 60

    # carol's group may not invite: the hub refuses
    r = ask(hub, "carol", "POST", "/hub/api/shares/carol/", json={"user": "bob"})
    assert r.status_code == 403, r.text

    # a share code: whoever signs in and opens it gets in, until it expires
    out = run_cell(hub.url, "alice", hub.tokens["alice"], kernel=kernel,
                   code="link = %share --server --code --expires 600\n"
                        "print('CODE', link.split('code=')[1])")
    code = out.split("CODE", 1)[1].split()[0]
    browser = Browser(hub)
    assert browser.login("bob", PASSWORDS["bob"]).status_code == 200
    r = browser.get(f"/hub/accept-share?code={code}")
    assert r.status_code == 200 and "alice" in r.text
    db = sqlite3.connect(hub.data_dir / "hub" / "jupyterhub.sqlite")
    with db:
        db.execute("UPDATE share_codes SET expires_at = '2000-01-01 00:00:00.000000'")
    db.close()
    r = browser.get(f"/hub/accept-share?code={code}")
    assert r.status_code == 404 and "expired" in r.text


def test_admins_list_check_and_revoke_from_the_command_line(clean):
    from tests.helpers import redspot

    hub = clean
    made = share(hub, "alice", "notes.ipynb", "group:vision").json()
    # what bob's server would mount on Kubernetes (the spawner asks as an admin)
    r = ask(hub, "admin", "GET", f"{S}/shares?recipient=bob")
    assert [s["id"] for s in r.json()["shares"]] == [made["id"]]
    assert ask(hub, "bob", "GET", f"{S}/shares?recipient=carol").status_code == 403

    data = ["--data-dir", str(hub.data_dir)]
    listed = redspot("shares", "list", "--owner", "alice", *data).stdout
    assert f"{made['id']}\talice\tnotes.ipynb\tgroup:vision\tactive" in listed
    checked = redspot("shares", "check", *data).stdout
    assert checked.startswith("checked 1 shares: put back 0, 0 not found"), checked
    out = redspot("shares", "revoke", made["id"], *data).stdout
    assert f"revoked {made['id']}: alice's notes.ipynb for group:vision" in out
    assert try_as(hub, "bob", f"cat {home(hub, 'alice')}/notes.ipynb").returncode != 0
    listed = redspot("shares", "list", *data).stdout
    assert "revoked by redspot-cli" in listed, listed
    failed = redspot("shares", "revoke", "0123456789ab", *data, check=False)
    assert failed.returncode == 2 and "404" in failed.stderr
