"""A real hub, proxy and single-user servers, driven through the pages and the REST API."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import stat
import subprocess

import pytest
import requests

from tests.conftest import PASSWORDS, needs_root
from tests.helpers import Browser, redspot, wait_for

pytestmark = pytest.mark.integration

GiB = 1024**3


def as_account(account: str) -> dict:
    """subprocess arguments that run a command with exactly an account's credentials."""
    entry = pwd.getpwnam(account)
    return {"user": entry.pw_uid, "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(account, entry.pw_gid)}


def server_info(hub, name, token):
    r = requests.get(
        f"{hub.url}/user/{name}/redspot/api/info",
        headers={"Authorization": f"token {token}"}, timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


# --- signing in -------------------------------------------------------------------------


def test_login_with_the_right_password_lands_on_the_home_page(team_hub):
    browser = Browser(team_hub)
    r = browser.login("alice", PASSWORDS["alice"])
    assert r.status_code == 200
    assert r.url.endswith("/hub/home") and 'id="start"' in r.text
    # where its Start button leads: the spawn form
    assert 'name="profile"' in browser.get("/hub/spawn/alice").text


def test_login_with_a_wrong_password_is_refused(team_hub):
    browser = Browser(team_hub)
    r = browser.login("alice", "not-her-password")
    assert r.status_code == 403
    assert "Invalid username or password" in r.text
    assert browser.get("/hub/spawn", allow_redirects=False).status_code == 302


def test_login_as_an_unknown_user_is_refused(team_hub):
    r = Browser(team_hub).login("mallory", "whatever-password")
    assert r.status_code == 403


def test_the_admin_password_is_generated_private_and_works(team_hub):
    path = team_hub.data_dir / "hub" / "admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()  # the password alone, as a script would read it
    assert " " not in password and len(password) >= 16
    r = Browser(team_hub).login("admin", password)
    assert r.url.endswith("/hub/home")
    assert f"admin / {password}" in team_hub.log(tail=400)


def test_accounts_are_on_the_hub_from_its_start_and_from_redspot_users_add(team_hub):
    # added before the hub started, never signed in: listed (admin page, REST API)
    assert team_hub.api("GET", "/users/carol").status_code == 200
    out = redspot("users", "add", "frank", "--data-dir", str(team_hub.data_dir)).stdout
    password = re.search(r"frank: password (\S+)", out).group(1)
    assert f"Next: frank signs in at {team_hub.url}/ (the running hub lists them now)" in out
    assert f"data folder {team_hub.data_dir}" in out
    assert team_hub.api("GET", "/users/frank").status_code == 200
    assert Browser(team_hub).login("frank", password).url.endswith("/hub/home")


def test_a_user_added_on_the_admin_page_is_told_to_need_a_password(team_hub):
    # what the admin page's "Add users" sends
    assert team_hub.api("POST", "/users", json={"usernames": ["gina"]}).status_code == 201
    listing = redspot("users", "list", "--data-dir", str(team_hub.data_dir)).stdout
    assert "gina\tno password yet (`redspot users passwd gina`)" in listing
    assert "password" in team_hub.log(tail=50) and "gina" in team_hub.log(tail=50)
    assert Browser(team_hub).login("gina", "").status_code == 403
    redspot("users", "passwd", "gina", "--password-stdin", "--data-dir",
            str(team_hub.data_dir), stdin="gina-password-1\n")
    assert Browser(team_hub).login("gina", "gina-password-1").url.endswith("/hub/home")


def test_the_home_page_shows_my_server_and_links_to_everything(team_hub):
    alice = Browser(team_hub)
    alice.login("alice", PASSWORDS["alice"])
    page = alice.get("/hub/home").text
    assert "Welcome, alice" in page and "Not running" in page
    assert 'href="/hub/spawn/alice"' in page
    assert "JupyterLab</span>" in page and "(start your server first)" in page
    assert 'href="/hub/redspot/docs/"' in page
    assert "Accounts that cannot sign in yet" not in page  # not an admin
    assert alice.submit_spawn("m5.xlarge").status_code == 200
    try:
        team_hub.wait_ready("alice")
        page = alice.get("/hub/home").text
        assert "Running on <b>m5.xlarge</b>" in page and "4 vCPU · 16 GiB" in page
        assert 'id="open-lab" class="btn btn-primary" href="/user/alice/lab"' in page
        assert 'href="/user/alice/redspot/ray/dashboard/"' in page
    finally:
        team_hub.stop_server("alice")


def test_an_admin_sets_a_password_for_an_account_added_on_the_admin_page(team_hub):
    assert team_hub.api("POST", "/users", json={"usernames": ["hank"]}).status_code == 201
    admin = Browser(team_hub)
    admin.login("admin", (team_hub.data_dir / "hub" / "admin-password").read_text().strip())
    page = admin.get("/hub/home").text
    assert "Accounts that cannot sign in yet" in page and 'id="set-password-hank"' in page
    r = admin.session.post(f"{team_hub.url}/hub/redspot/accounts/hank/password",
                           data={"_xsrf": admin._xsrf(page)}, timeout=30)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    password = re.search(r'id="new-password"[^>]*>([^<]+)<', r.text).group(1)
    assert Browser(team_hub).login("hank", password).url.endswith("/hub/home")
    assert 'id="set-password-hank"' not in admin.get("/hub/home").text
    # without the page's XSRF token (a cross-site form), or by a user: refused
    r = admin.session.post(f"{team_hub.url}/hub/redspot/accounts/hank/password", timeout=30)
    assert r.status_code == 403
    bob = Browser(team_hub)
    bob.login("bob", PASSWORDS["bob"])
    r = bob.session.post(f"{team_hub.url}/hub/redspot/accounts/hank/password",
                         data={"_xsrf": next(c.value for c in bob.session.cookies
                                             if c.name == "_xsrf")}, timeout=30)
    assert r.status_code == 403
    assert Browser(team_hub).login("hank", password).url.endswith("/hub/home")


def test_the_docs_are_served_to_signed_in_users(team_hub):
    alice = Browser(team_hub)
    alice.login("alice", PASSWORDS["alice"])
    index = alice.get("/hub/redspot/docs/")
    assert index.status_code == 200 and 'href="ray"' in index.text
    ray = alice.get("/hub/redspot/docs/ray")
    assert ray.status_code == 200 and "<h1" in ray.text and "%%ray_remote" in ray.text
    assert alice.get("/hub/redspot/docs/nothing").status_code == 404
    # the docs' screenshots, by name only
    lab = alice.get("/hub/redspot/docs/jupyterlab")
    assert lab.status_code == 200 and 'src="images/panel.png"' in lab.text
    image = alice.get("/hub/redspot/docs/images/panel.png")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert alice.get("/hub/redspot/docs/images/none.png").status_code == 404
    assert alice.get("/hub/redspot/docs/images/..%2Fjupyterlab.md").status_code == 404
    anonymous = requests.get(f"{team_hub.url}/hub/redspot/docs/ray", allow_redirects=False,
                             timeout=30)
    assert anonymous.status_code == 302 and "/hub/login" in anonymous.headers["Location"]


# --- the spawn page shows what the user's groups allow -----------------------------------


def test_spawn_form_offers_the_profiles_of_the_users_groups(team_hub):
    alice, bob = Browser(team_hub), Browser(team_hub)
    alice.login("alice", PASSWORDS["alice"])
    bob.login("bob", PASSWORDS["bob"])
    alice_form, bob_form = alice.spawn_form().text, bob.spawn_form().text
    for name in ("m5.xlarge", "g5.xlarge", "p3.2xlarge"):
        assert f'value="{name}"' in alice_form
    assert 'value="p3.8xlarge"' not in alice_form
    assert 'value="m5.xlarge" checked' in bob_form
    assert 'value="p3.2xlarge"' not in bob_form
    assert "1 × NVIDIA V100" in alice_form


# --- refusing profiles: a 400 with the allowed list, never a 500 --------------------------


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"profile": "p3.2xlarge"}, "instance profile 'p3.2xlarge' is not available to you; "
                                    "choose one of: m5.xlarge"),
        ({"profile": "z9.galactic"}, "'z9.galactic' is not available to you; "
                                     "choose one of: m5.xlarge"),
        ({"profile": 5}, ("user option 'profile' must be a name "
                      "(the name of an instance profile), got 5")),
        ({"profile": "m5.xlarge", "gpus": 8}, "unknown user option(s): gpus; allowed: profile"),
    ],
)
def test_rest_api_refuses_bad_user_options_with_400(team_hub, options, expected):
    token = team_hub.user_token("bob")
    r = team_hub.spawn("bob", token, options)
    assert r.status_code == 400, r.text
    assert expected in r.json()["message"]
    assert team_hub.server_model("bob") is None


def test_rest_api_refuses_a_body_that_is_not_an_object(team_hub):
    token = team_hub.user_token("bob")
    r = team_hub.spawn("bob", token, ["m5.xlarge"])
    assert r.status_code == 400, r.text


def test_spawn_form_refuses_a_forbidden_profile_with_400_and_the_allowed_list(team_hub):
    bob = Browser(team_hub)
    bob.login("bob", PASSWORDS["bob"])
    r = bob.submit_spawn("p4d.24xlarge")
    assert r.status_code == 400
    assert "&#39;p4d.24xlarge&#39; is not available to you; choose one of: m5.xlarge" in r.text
    assert 'name="profile"' in r.text  # the form is shown again
    assert team_hub.server_model("bob") is None


# --- spawning with every allowed profile --------------------------------------------------


@pytest.mark.parametrize(
    "profile, cpus, memory_gib, gpus",
    [("m5.xlarge", 4, 16, 0), ("g5.xlarge", 4, 16, 1), ("p3.2xlarge", 8, 61, 1)],
)
def test_alice_spawns_each_allowed_profile_through_the_rest_api(
    team_hub, profile, cpus, memory_gib, gpus
):
    token = team_hub.user_token("alice")
    r = team_hub.spawn("alice", token, {"profile": profile})
    assert r.status_code in (201, 202), r.text
    try:
        team_hub.wait_ready("alice")
        info = server_info(team_hub, "alice", token)
        assert info["user"] == "alice"
        assert info["profile"]["name"] == profile
        assert info["profile"]["cpus"] == cpus
        assert info["profile"]["memory"] == memory_gib * GiB
        assert info["profile"]["gpus"] == gpus
    finally:
        team_hub.stop_server("alice")


def test_a_user_spawns_through_the_form_and_lands_in_jupyterlab(team_hub):
    bob = Browser(team_hub)
    bob.login("bob", PASSWORDS["bob"])
    r = bob.submit_spawn("m5.xlarge")
    assert r.status_code == 200
    try:
        team_hub.wait_ready("bob")
        lab = bob.get("/user/bob/lab")
        assert lab.status_code == 200
        assert lab.url.endswith("/user/bob/lab")
        assert "JupyterLab" in lab.text
        info = bob.get("/user/bob/redspot/api/info").json()
        assert info["profile"]["name"] == "m5.xlarge"
    finally:
        team_hub.stop_server("bob")


def test_kernels_load_redspot_and_ray_remote_runs_on_the_users_own_ray_head(team_hub,
                                                                            account_prefix):
    from tests.kernels import run_cell

    token = team_hub.user_token("bob")
    assert team_hub.spawn("bob", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        team_hub.wait_ready("bob")
        kernel = _start_kernel(team_hub, "bob", token)
        # the IPython extension is loaded in every kernel, without a line of the user's
        out = run_cell(team_hub.url, "bob", token, "%redspot", kernel=kernel)
        assert "m5.xlarge: 4 vCPU, 16 GiB" in out, out
        out = run_cell(team_hub.url, "bob", token, "%ray_connect", kernel=kernel, timeout=180)
        assert "Connected to your Ray cluster at 127.0.0.1:" in out, out
        # the wait was announced, with its length, before it began
        assert out.index("Starting your Ray cluster (about 15 s)...") < out.index(
            "Connected to"), out
        if os.geteuid() == 0:
            uid = pwd.getpwnam(f"{account_prefix}bob").pw_uid
            head = json.loads((team_hub.data_dir / "home" / "bob" / ".redspot" / "ray"
                               / "head.json").read_text())
            private = os.path.dirname(head["temp_dir"])
            # a fresh folder of an unpredictable name, only bob's account may enter
            assert os.path.basename(private).startswith(f"rs{uid}-")
            assert private != f"/tmp/rs{uid}-" and len(os.path.basename(private)) > 10
            assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
            assert os.stat(private).st_uid == uid
        run_cell(team_hub.url, "bob", token, "base = 6", kernel=kernel)
        out = run_cell(team_hub.url, "bob", token,
                       "%%ray_remote --cpus 1\nimport getpass\nanswer = base * 7\n"
                       "print('worker of', getpass.getuser())", kernel=kernel, timeout=120)
        assert "worker of" in out, out
        assert "42" in run_cell(team_hub.url, "bob", token, "print(answer)", kernel=kernel)

        # the dashboard, through bob's server: behind the hub's login, token added there
        out = run_cell(team_hub.url, "bob", token, "%ray_status", kernel=kernel)
        assert "Dashboard: /user/bob/redspot/ray/dashboard/" in out, out
        dashboard = f"{team_hub.url}/user/bob/redspot/ray/dashboard/"
        page = requests.get(dashboard, headers={"Authorization": f"token {token}"}, timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
        # its scripts and styles keep their own type, once: browsers refuse a script
        # served as text/html
        assets = re.findall(r'(?:src|href)="\.?/?([^"]+\.(js|css))"', page.text)
        assert {kind for _, kind in assets} == {"js", "css"}, page.text[:1000]
        for asset, kind in assets:
            r = requests.get(dashboard + asset, headers={"Authorization": f"token {token}"},
                             timeout=30)
            types = r.raw.headers.getlist("Content-Type")
            expected = "text/javascript" if kind == "js" else "text/css"
            assert r.status_code == 200 and len(types) == 1, (asset, r.status_code, types)
            assert types[0].split(";")[0] in (expected, "application/javascript"), types
        api = requests.get(dashboard + "api/version",
                           headers={"Authorization": f"token {token}"}, timeout=30)
        assert api.status_code == 200 and api.json()["ray_version"] == "2.60.0", api.text
        anonymous = requests.get(dashboard + "api/version", allow_redirects=False, timeout=30)
        assert anonymous.status_code in (302, 401, 403)
        alice = requests.get(dashboard + "api/version", allow_redirects=False, timeout=30,
                             headers={"Authorization": f"token {team_hub.user_token('alice')}"})
        assert alice.status_code in (302, 403, 404)

        # stopped, then used again: says it connects and starts it, then that it is
        # connected, before the cell's own output
        out = run_cell(team_hub.url, "bob", token, "%ray_disconnect --stop", kernel=kernel)
        assert out == ("Disconnecting and stopping your Ray cluster...\n"
                       "Disconnected; your Ray cluster is stopped.\n"), out
        out = run_cell(team_hub.url, "bob", token, "%%ray_remote\nprint('again')",
                       kernel=kernel, timeout=180)
        said = [out.index(text) for text in (
            "Connecting to your Ray cluster...", "Starting your Ray cluster (about ",
            "Connected to your Ray cluster at", "again")]
        assert said == sorted(said), out
    finally:
        team_hub.stop_server("bob")
    # the server took the user's Ray head with it, and Ray's folder (opened to everyone by
    # Ray) sat in one only bob's account may enter
    state = team_hub.data_dir / "home" / "bob" / ".redspot" / "ray" / "head.json"
    assert not state.exists()


# --- cost and caps -------------------------------------------------------------------------


def test_a_spawn_past_the_groups_cap_is_refused_naming_the_cap_and_the_holder(team_hub):
    """gpu-team may run one p3.2xlarge at once: carol's is refused while alice's runs,
    naming the cap and alice, and carol may start another profile."""
    tokens = {name: team_hub.user_token(name) for name in ("alice", "carol")}
    assert team_hub.spawn("alice", tokens["alice"],
                          {"profile": "p3.2xlarge"}).status_code in (201, 202)
    try:
        team_hub.wait_ready("alice")
        refusals = ("redspot_spawn_refusals_total", (("cap", "servers"), ("group", "gpu-team")))
        before = team_hub.metrics().get(refusals) or 0
        r = team_hub.spawn("carol", tokens["carol"], {"profile": "p3.2xlarge"})
        assert r.status_code == 429, r.text
        assert team_hub.metrics()[refusals] == before + 1
        assert r.json()["message"] == (
            "your group 'gpu-team' may run at most 1 server of profile p3.2xlarge at once, "
            "and all are taken: alice. Try again when one stops, or choose another profile.")
        assert team_hub.server_model("carol") is None
        r = team_hub.spawn("carol", tokens["carol"], {"profile": "g5.xlarge"})
        assert r.status_code in (201, 202), r.text
        team_hub.wait_ready("carol")
    finally:
        for name in ("alice", "carol"):
            if team_hub.server_model(name) is not None:
                team_hub.stop_server(name)
    # the seat is free again
    r = team_hub.spawn("carol", tokens["carol"], {"profile": "p3.2xlarge"})
    assert r.status_code in (201, 202), r.text
    team_hub.wait_ready("carol")
    team_hub.stop_server("carol")


def test_a_gpu_cell_says_what_it_cost_and_a_killed_server_leaves_nothing_running(team_hub):
    """On a g5.xlarge (1 GPU advertised to Ray here), a ``%%ray_remote --gpus 1`` cell
    ends saying what it cost; the usage log has alice's server and Ray head, and the
    admin page and ``redspot usage`` report them at the profile's price. Then her server
    is killed (SIGKILL, out of memory): it cannot stop her Ray head as it does when it
    stops, so the hub, finding it gone, stops what it left running and closes its usage
    records."""
    from redspot.compute.local import group_alive
    from tests.kernels import run_cell

    token = team_hub.user_token("alice")
    assert team_hub.spawn("alice", token, {"profile": "g5.xlarge"}).status_code in (201, 202)
    try:
        pid = team_hub.wait_ready("alice")["state"]["pid"]
        kernel = _start_kernel(team_hub, "alice", token)
        out = run_cell(team_hub.url, "alice", token, "%ray_connect", kernel=kernel,
                       timeout=180)
        assert "Connected" in out, out
        out = run_cell(team_hub.url, "alice", token,
                       "%%ray_remote --gpus 1\nimport time; time.sleep(1); x = 1",
                       kernel=kernel, timeout=120)
        match = re.search(r"Cost: about \$([0-9.]+) for ([0-9.]+) s of 1 GPU \(of 1\) on "
                          r"g5\.xlarge at \$1\.01 an hour \(AWS EC2 on-demand list price", out)
        assert match, out
        assert float(match.group(1)) == pytest.approx(1.006 * float(match.group(2)) / 3600,
                                                      rel=0.02)
        assert float(match.group(2)) >= 1
        # a CPU cell says nothing of cost
        out = run_cell(team_hub.url, "alice", token, "%%ray_remote\ny = 2", kernel=kernel,
                       timeout=120)
        assert "Cost" not in out, out
        # the hub polls every 2 s here: it has seen her Ray head
        from redspot.usage import UsageLog

        log = UsageLog(f"sqlite:///{team_hub.data_dir}/hub/usage.sqlite")
        wait_for(lambda: log.is_open("ray", "alice", "head"), 30, "the head in the log")
        # and in the metrics: her cluster, its node and what its profile has
        metrics = team_hub.metrics()
        assert metrics[("redspot_ray_nodes", (("profile", "g5.xlarge"),))] == 1
        assert metrics[("redspot_ray_clusters", ())] >= 1
        assert metrics[("redspot_ray_gpus", ())] >= 1 and metrics[("redspot_server_gpus", ())] >= 1

        head = json.loads((team_hub.data_dir / "home" / "alice" / ".redspot" / "ray"
                           / "head.json").read_text())
        assert group_alive(head["pgid"])
        os.kill(pid, signal.SIGKILL)
        # the hub polls its servers every 2 s here (30 s by default)
        wait_for(lambda: team_hub.server_model("alice") is None, 60, "the hub to notice")
        wait_for(lambda: not group_alive(head["pgid"]), 30, "the Ray head to stop")
        assert "its Ray head" in team_hub.log(tail=200), team_hub.log(tail=200)
    finally:
        if team_hub.server_model("alice") is not None:
            team_hub.stop_server("alice")
    assert ("redspot_ray_nodes", (("profile", "g5.xlarge"),)) not in team_hub.metrics()
    records = [r for r in log.records() if r.user == "alice"]
    server = [r for r in records if r.kind == "server" and r.profile == "g5.xlarge"][-1]
    assert server.price == 1.006 and server.stopped and server.groups == ("gpu-team",)
    head = [r for r in records if r.kind == "ray"][-1]
    assert head.server == "head" and head.stopped and head.price == 0.0
    assert not any(r.stopped is None for r in records)  # all closed when the hub saw it gone

    # the admin page: hours and cost per user; anyone else is refused
    admin = Browser(team_hub)
    admin.login("admin", (team_hub.data_dir / "hub" / "admin-password").read_text().strip())
    assert 'href="/hub/redspot/usage"' in admin.get("/hub/home").text
    page = admin.get("/hub/redspot/usage?since=1h&format=json")
    assert page.status_code == 200, re.findall(r"<p>[^<]*</p>", page.text)
    line = next(x for x in page.json()["lines"] if x["key"] == "alice")
    assert line["server_hours"] > 0 and line["ray_hours"] > 0 and line["cost"] > 0
    html_page = admin.get("/hub/redspot/usage?by=profile")
    assert html_page.status_code == 200 and "g5.xlarge" in html_page.text
    assert admin.get("/hub/redspot/usage?since=yesterday").status_code == 400
    bob = Browser(team_hub)
    bob.login("bob", PASSWORDS["bob"])
    assert bob.get("/hub/redspot/usage").status_code == 403
    assert 'redspot/usage"' not in bob.get("/hub/home").text
    # the command line reads the same log
    report = json.loads(redspot("usage", "--data-dir", str(team_hub.data_dir), "--since",
                                "1h", "--by", "group", "--json").stdout)
    assert any(x["key"] == "gpu-team" and x["cost"] > 0 for x in report["lines"]), report
    text = redspot("usage", "--data-dir", str(team_hub.data_dir)).stdout
    assert "alice" in text and "Usage from" in text, text


# --- isolation ---------------------------------------------------------------------------


@needs_root
def test_tenants_are_isolated_by_the_operating_system(team_hub, account_prefix):
    tokens = {name: team_hub.user_token(name) for name in ("alice", "bob")}
    for name in ("alice", "bob"):
        assert team_hub.spawn(name, tokens[name], {"profile": "m5.xlarge"}).status_code in (
            201, 202)
    try:
        for name in ("alice", "bob"):
            team_hub.wait_ready(name)
        homes = team_hub.data_dir / "home"
        accounts = {name: pwd.getpwnam(f"{account_prefix}{name}") for name in tokens}
        for name, account in accounts.items():
            st = (homes / name).stat()
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (account.pw_uid, 0o700)
        # each server runs as its own account
        for name, account in accounts.items():
            pid = team_hub.server_model(name)["state"]["pid"]
            assert os.stat(f"/proc/{pid}").st_uid == account.pw_uid
        # alice's account cannot read bob's home
        (homes / "bob" / "secret.txt").write_text("bob's")
        alice = as_account(accounts["alice"].pw_name)
        result = subprocess.run(
            ["cat", str(homes / "bob" / "secret.txt")], capture_output=True, text=True, **alice
        )
        assert result.returncode != 0 and "Permission denied" in result.stderr
        assert subprocess.run(["ls", str(homes)], capture_output=True, **alice).returncode != 0
    finally:
        for name in ("alice", "bob"):
            team_hub.stop_server(name)


def _contents(hub, name, token, path, method="GET", **kwargs):
    return requests.request(method, f"{hub.url}/user/{name}/api/contents/{path}",
                            headers={"Authorization": f"token {token}"}, timeout=30, **kwargs)


def test_shared_folders_follow_hub_groups(team_hub, account_prefix):
    tokens = {name: team_hub.user_token(name) for name in ("alice", "carol", "bob")}
    # the default profile, named: a user's last options are used when none are given,
    # and another test may have left carol's on a gpu-team profile
    for name, token in tokens.items():
        assert team_hub.spawn(name, token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        for name in tokens:
            team_hub.wait_ready(name)
        note = {"type": "file", "format": "text", "content": "GPU budget: 8 x A100"}
        r = _contents(team_hub, "alice", tokens["alice"], "shared/gpu-team/plan.txt", "PUT",
                      json=note)
        assert r.status_code == 201, r.text
        hello = {"type": "file", "format": "text", "content": "hello, everyone"}
        r = _contents(team_hub, "alice", tokens["alice"], "shared/public/hello.txt", "PUT",
                      json=hello)
        assert r.status_code == 201, r.text

        # carol, in gpu-team too, reads alice's file in her own server
        r = _contents(team_hub, "carol", tokens["carol"], "shared/gpu-team/plan.txt")
        assert r.status_code == 200 and r.json()["content"] == "GPU budget: 8 x A100"
        # bob is not in gpu-team: no folder in his server...
        listing = _contents(team_hub, "bob", tokens["bob"], "shared").json()["content"]
        assert sorted(item["name"] for item in listing) == ["public"]
        assert _contents(team_hub, "bob", tokens["bob"],
                         "shared/gpu-team/plan.txt").status_code == 404
        # ...but everyone reads the public folder
        r = _contents(team_hub, "bob", tokens["bob"], "shared/public/hello.txt")
        assert r.status_code == 200 and r.json()["content"] == "hello, everyone"

        if os.geteuid() == 0:
            team_dir = team_hub.data_dir / "shared" / "gpu-team"
            bob = as_account(f"{account_prefix}bob")
            denied = subprocess.run(["ls", str(team_dir)], capture_output=True, text=True, **bob)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
            # nobody deletes another's file in the public folder
            hello_path = team_hub.data_dir / "shared" / "public" / "hello.txt"
            gone = subprocess.run(["rm", "-f", str(hello_path)], capture_output=True, **bob)
            assert gone.returncode != 0 and hello_path.exists()

        # carol leaves gpu-team: at her next start the folder is gone for her
        team_hub.stop_server("carol")
        r = team_hub.api("DELETE", "/groups/gpu-team/users", json={"users": ["carol"]})
        assert r.status_code == 200, r.text
        assert team_hub.spawn("carol", tokens["carol"],
                              {"profile": "m5.xlarge"}).status_code in (201, 202)
        team_hub.wait_ready("carol")
        listing = _contents(team_hub, "carol", tokens["carol"], "shared").json()["content"]
        assert [item["name"] for item in listing] == ["public"]
        if os.geteuid() == 0:
            denied = subprocess.run(["cat", str(team_dir / "plan.txt")], capture_output=True,
                                    text=True, **as_account(f"{account_prefix}carol"))
            assert denied.returncode != 0 and "Permission denied" in denied.stderr
    finally:
        team_hub.api("POST", "/groups/gpu-team/users", json={"users": ["carol"]})
        for name in tokens:
            if team_hub.server_model(name):
                team_hub.stop_server(name)


def test_alice_cannot_reach_bobs_server_with_her_cookie_or_token(team_hub):
    bob_token = team_hub.user_token("bob")
    assert team_hub.spawn("bob", bob_token, {}).status_code in (201, 202)
    try:
        team_hub.wait_ready("bob")
        assert server_info(team_hub, "bob", bob_token)["user"] == "bob"
        alice_token = team_hub.user_token("alice")
        r = requests.get(f"{team_hub.url}/user/bob/api/contents",
                         headers={"Authorization": f"token {alice_token}"}, timeout=30)
        assert r.status_code == 403
        r = team_hub.api("GET", "/users/bob", token=alice_token)
        assert r.status_code == 404  # alice may not even see bob
        r = team_hub.api("DELETE", "/users/bob/server", token=alice_token)
        assert r.status_code in (403, 404)
        alice = Browser(team_hub)
        alice.login("alice", PASSWORDS["alice"])
        r = alice.get("/user/bob/lab")
        assert r.status_code == 403
        assert "JupyterLab" not in r.text
        assert team_hub.server_model("bob")["ready"]
    finally:
        team_hub.stop_server("bob")


# --- servers that die, hubs that restart -------------------------------------------------


def test_a_crashed_server_shows_as_stopped_and_starts_again(team_hub):
    token = team_hub.user_token("alice")
    assert team_hub.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    model = team_hub.wait_ready("alice")
    os.kill(model["state"]["pid"], 9)
    wait_for(lambda: team_hub.server_model("alice") is None, 30, "the hub to notice")
    assert team_hub.spawn("alice", token, {"profile": "g5.xlarge"}).status_code in (201, 202)
    try:
        team_hub.wait_ready("alice")
        assert server_info(team_hub, "alice", token)["profile"]["name"] == "g5.xlarge"
    finally:
        team_hub.stop_server("alice")


def _start_kernel(hub, name, token) -> str:
    from tests.kernels import start_kernel

    return start_kernel(hub.url, name, token)


def _kernels(hub, name, token) -> list[str]:
    r = requests.get(f"{hub.url}/user/{name}/api/kernels",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return [k["id"] for k in r.json()]


def test_servers_and_kernels_survive_hub_restarts_and_crashes_and_ctrl_c_stops_all(
        hub_factory):
    from tests.helpers import pid_alive
    from tests.kernels import run_cell

    hub = hub_factory({}, users={"carol": "carol-password"}, keep_servers=True)
    token = hub.user_token("carol")
    assert hub.spawn("carol", token, {}).status_code in (201, 202)
    pid = hub.wait_ready("carol")["state"]["pid"]
    kernel = _start_kernel(hub, "carol", token)
    run_cell(hub.url, "carol", token, "x = 41", kernel=kernel)

    # a graceful restart (to apply a config change): the hub alone goes
    assert hub.stop() == 0
    assert os.path.exists(f"/proc/{pid}")
    hub.start()
    assert hub.server_model("carol")["ready"]
    assert kernel in _kernels(hub, "carol", token)

    # a crash: the hub is killed and nothing cleans up
    hub.stop(sig=9)
    assert os.path.exists(f"/proc/{pid}")
    hub.start()
    assert hub.server_model("carol")["ready"]
    assert hub.server_model("carol")["state"]["pid"] == pid
    assert "42" in run_cell(hub.url, "carol", token, "print(x + 1)", kernel=kernel)

    # Ctrl-C on a hub that does not keep its servers: the hub, the proxy and every server
    assert hub.stop() == 0
    hub.keep_servers = False
    hub.start()
    assert hub.server_model("carol")["state"]["pid"] == pid
    proxy_pid = hub.proxy_pid()
    assert pid_alive(pid) and pid_alive(proxy_pid)
    assert hub.stop() == 0
    wait_for(lambda: not pid_alive(pid), 10, "the server to stop")
    wait_for(lambda: not pid_alive(proxy_pid), 10, "the proxy to stop")
    assert "Traceback" not in hub.log(tail=400)


def test_ctrl_c_while_the_services_start_stops_what_has_started(hub_factory):
    """JupyterHub handles signals only once it has started: Ctrl-C while the services
    started used to leave the proxy and the services started so far running."""
    from tests.helpers import descendants, pid_alive

    hub = hub_factory({"services": {"environments": {"enabled": True},
                                    "models": {"enabled": True}}}, start=False)
    hub.start(wait=False)
    wait_for(lambda: "Starting the models service" in hub.log(tail=400), 120,
             "the models service to start")
    started = descendants(hub.proc.pid)
    # the proxy and the environments service are up, the registry is starting
    assert len(started) >= 3, started
    os.kill(hub.proc.pid, signal.SIGINT)
    assert hub.proc.wait(30) == 130
    wait_for(lambda: not any(pid_alive(pid) for pid, _ in started), 5,
             f"every process the hub started to stop: {started}")
    log = hub.log(tail=400)
    assert "Received SIGINT while starting: stopping what has started" in log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log


# --- signing up ------------------------------------------------------------------------


def test_signup_with_approval(hub_factory):

    hub = hub_factory({"auth": {"signup": "approval"}})
    browser = Browser(hub)
    page = browser.get("/hub/login")
    assert "Sign up" in page.text
    form = browser.get("/hub/signup")
    xsrf = browser._xsrf(form.text)
    post = lambda **data: browser.session.post(  # noqa: E731
        f"{hub.url}/hub/signup", data={"_xsrf": xsrf, **data}, timeout=30)
    r = post(username="erin", password="short", password_confirm="short")
    assert r.status_code == 400 and "8 to 1024 characters" in r.text
    r = post(username="../erin", password="erin-password", password_confirm="erin-password")
    assert r.status_code == 400 and "is not allowed" in r.text
    r = post(username="erin", password="erin-password", password_confirm="erin-password")
    assert r.status_code == 200 and "once an administrator approves it" in r.text
    r = post(username="erin", password="other-password", password_confirm="other-password")
    assert r.status_code == 400 and "exists already" in r.text

    r = Browser(hub).login("erin", "erin-password")
    assert r.status_code == 403 and "waiting for an administrator" in r.text
    redspot("users", "approve", "erin", "--data-dir", str(hub.data_dir))
    r = Browser(hub).login("erin", "erin-password")
    assert r.url.endswith("/hub/home")


@needs_root
def test_pam_signs_in_machine_accounts_and_runs_their_servers_as_them(hub_factory,
                                                                     account_prefix):
    account = f"{account_prefix}pam"
    subprocess.run(["useradd", "--no-create-home", account], check=True)
    subprocess.run(["chpasswd"], input=f"{account}:pam-password-1\n", text=True, check=True)
    hub = hub_factory({"auth": {"type": "pam"}, "spawner": {"account_prefix": ""}})
    assert Browser(hub).login(account, "wrong-password").status_code == 403
    browser = Browser(hub)
    assert browser.login(account, "pam-password-1").url.endswith("/hub/home")
    assert browser.submit_spawn("m5.xlarge").status_code == 200
    try:
        pid = hub.wait_ready(account)["state"]["pid"]
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(account).pw_uid
    finally:
        hub.stop_server(account)


def test_login_without_the_xsrf_token_is_refused(team_hub):
    r = requests.post(f"{team_hub.url}/hub/login", timeout=10,
                      data={"username": "alice", "password": PASSWORDS["alice"]})
    assert r.status_code == 403
    assert "XSRF" in r.text or "xsrf" in r.text


def test_signup_is_off_by_default(team_hub):
    assert requests.get(f"{team_hub.url}/hub/signup", timeout=10).status_code == 404
    assert "Sign up" not in requests.get(f"{team_hub.url}/hub/login", timeout=10).text


# --- configuration errors ----------------------------------------------------------------


def test_a_bad_redspot_yaml_stops_redspot_up_with_a_clear_error(tmp_path):

    config = tmp_path / "redspot.yaml"
    config.write_text(json.dumps({
        "hub": {"port": "eighty", "colour": "red"},
        "groups": {"gpu": {"profiles": ["p3.2xlarge", "p9.huge"]}},
    }))
    result = redspot("up", "--config", str(config), "--data-dir", str(tmp_path / "d"),
                     check=False)
    assert result.returncode == 2
    assert f"{config} is not valid" in result.stderr
    assert "hub: unknown key 'colour'; allowed keys: api_port, base_url, data_dir" in (
        result.stderr)
    assert "hub.port: expected an integer, got 'eighty'" in result.stderr
    assert not (tmp_path / "d").exists()  # nothing was written

    config.write_text(json.dumps({"groups": {"gpu": {"profiles": ["p9.huge"]}}}))
    result = redspot("config", "check", "--config", str(config), check=False)
    assert result.returncode == 2
    assert "groups.gpu.profiles: unknown profile 'p9.huge'; known profiles: m5.xlarge" in (
        result.stderr)


def test_without_isolation_servers_run_as_the_hubs_account_and_the_hub_says_so(hub_factory):
    hub = hub_factory({"spawner": {"isolation": "none"}}, users={"fred": "fred-password"})
    assert "tenants are NOT isolated from each other" in hub.log(tail=400)
    token = hub.user_token("fred")
    assert hub.spawn("fred", token, {}).status_code in (201, 202)
    pid = hub.wait_ready("fred")["state"]["pid"]
    assert os.stat(f"/proc/{pid}").st_uid == os.geteuid()
    assert server_info(hub, "fred", token)["profile"]["name"] == "m5.xlarge"
    home = hub.data_dir / "home" / "fred"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    hub.stop_server("fred")


def test_redspot_smoke_spawns_a_server_runs_a_ray_task_and_leaves_nothing(team_hub):
    """The operator's smoke test, against a real `redspot up`: every step said with its
    time, and its server and Ray head gone afterwards."""
    result = subprocess.run(
        [*redspot_command(), "smoke", f"--data-dir={team_hub.data_dir}",
         f"--config={team_hub.config_file}", "--timeout=300"],
        capture_output=True, text=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    said = [out.index(text) for text in (
        "hub: JupyterHub", "user: redspot-smoke ", "server: ready at /user/redspot-smoke/",
        "kernel: ", "ray: Connected to your Ray cluster", "ray: a Ray task ran on",
        "ray: Disconnected; your Ray cluster is stopped.", "cleanup: server stopped",
        "Smoke test passed in")]
    assert said == sorted(said), out
    assert re.search(r"^\[ *\d+\.\ds\] server: ready", out, re.M), out
    admin = {"Authorization": f"token {team_hub.user_token('admin')}"}
    user = requests.get(f"{team_hub.url}/hub/api/users/redspot-smoke", headers=admin,
                        timeout=30).json()
    assert user["servers"] == {}
    assert not (team_hub.data_dir / "home" / "redspot-smoke" / ".redspot" / "ray"
                / "head.json").exists()


def test_redspot_smoke_names_the_step_that_failed(team_hub):
    result = subprocess.run(
        [*redspot_command(), "smoke", f"--data-dir={team_hub.data_dir}",
         f"--config={team_hub.config_file}", "--profile=p4d.24xlarge"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Smoke test FAILED: POST users/redspot-smoke/server: 400" in result.stdout
    assert "p4d.24xlarge" in result.stdout
    assert "cleanup: server stopped" in result.stdout


def redspot_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "redspot"]
