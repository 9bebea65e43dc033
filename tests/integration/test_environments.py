"""The environments service, run by a real hub, building real virtualenvs with uv."""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}
#: small, pure-Python, and on PyPI for years: quick to build
SMALL = ["six==1.16.0"]


@pytest.fixture(scope="module")
def env_hub(test_root, account_prefix):
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "envs")
    try:
        hub = pool({"services": {"environments": {"enabled": True}}}, users=USERS)
        hub.tokens = {name: hub.user_token(name) for name in (*USERS, "admin")}
        wait_for(lambda: envs_api(hub, "alice", "GET", "bases").status_code == 200, 60,
                 "the environments service")
        yield hub
    finally:
        pool.close()


def envs_api(hub, who, method, path, token=None, **kwargs):
    token = token or hub.tokens[who]
    return requests.request(
        method, f"{hub.url}/services/environments/api/{path}",
        headers={"Authorization": f"token {token}"}, timeout=60, **kwargs,
    )


def wait_built(hub, who, env_id, timeout=300):
    def done():
        model = envs_api(hub, who, "GET", f"environments/{env_id}").json()
        return model if model["status"] in ("ready", "failed") else None

    return wait_for(done, timeout, f"{env_id} to build", interval=1)


def test_a_user_creates_an_environment_and_it_builds(env_hub):
    r = envs_api(env_hub, "alice", "POST", "environments", json={
        "name": "tiny", "python": SMALL, "env": {"TINY": "yes"},
        "description": "six, for a test"})
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["id"] == "alice/tiny" and created["status"] == "building"
    assert created["tag"].startswith("env-")

    model = wait_built(env_hub, "alice", "alice/tiny")
    assert model["status"] == "ready", envs_api(env_hub, "alice", "GET",
                                                "environments/alice/tiny/log").text
    python = model["location"]
    assert model["runtime_env"] == {"py_executable": python, "env_vars": {"TINY": "yes"}}
    out = subprocess.run([python, "-c", "import six, redspot, jupyterhub; print(six.__version__)"],
                         capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "1.16.0", out.stderr
    log = envs_api(env_hub, "alice", "GET", "environments/alice/tiny/log").text
    assert f"Building {model['tag']} with the venv builder" in log
    assert "Built " in log

    listing = envs_api(env_hub, "alice", "GET", "environments").json()["environments"]
    assert "alice/tiny" in [e["id"] for e in listing]
    # bob does not see alice's personal environment
    listing = envs_api(env_hub, "bob", "GET", "environments").json()["environments"]
    assert "alice/tiny" not in [e["id"] for e in listing]
    assert envs_api(env_hub, "bob", "GET", "environments/alice/tiny").status_code == 404


def test_the_same_spec_is_built_once_per_owner_also_when_asked_at_once(env_hub):
    """An owner's same spec is built once; another user's is a build of their own (its
    files are readable by its owner's account only, so builds are not shared)."""
    spec = {"python": ["six==1.16.0", "packaging>=20"]}

    def create(who_name):
        who, name = who_name
        return envs_api(env_hub, who, "POST", "environments", json={"name": name, **spec})

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(create, [("alice", "same-a"), ("bob", "same-b"),
                                         ("alice", "same-c")]))
    assert [r.status_code for r in results] == [202, 202, 202], [r.text for r in results]
    alices, bobs, alices_again = (r.json()["tag"] for r in results)
    assert alices == alices_again and bobs != alices
    model = wait_built(env_hub, "alice", "alice/same-a")
    assert model["status"] == "ready"
    log = envs_api(env_hub, "alice", "GET", "environments/alice/same-a/log").text
    assert log.count("Building env-") == 1
    assert wait_built(env_hub, "bob", "bob/same-b")["status"] == "ready"
    # asked again later: ready at once, nothing built
    r = envs_api(env_hub, "alice", "POST", "environments", json={"name": "same-d", **spec})
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert envs_api(env_hub, "alice", "GET",
                    "environments/alice/same-a/log").text.count("Building env-") == 1


@pytest.mark.parametrize("spec, field, message", [
    ({"name": "x", "python": ["numpy; rm -rf /"]}, "python[0]", "not a valid requirement"),
    ({"name": "x", "python": ["--index-url https://evil.example/simple"]}, "python[0]",
     "is not a package requirement"),
    ({"name": "x", "python": ["$(curl evil.example)"]}, "python[0]",
     "is not a package requirement"),
    ({"name": "x", "python": ["`id`"]}, "python[0]", "is not a package requirement"),
    ({"name": "x", "python": ["six\nrequests"]}, "python[0]", "is not a package requirement"),
    ({"name": "x", "python": ["evil @ https://evil.example/evil.whl"]}, "python[0]",
     "direct URLs are not allowed"),
    ({"name": "x", "python": ["a" * 300]}, "python[0]", "at most 200 characters"),
    ({"name": "x", "debian": ["curl; rm -rf /"]}, "debian[0]", "is not a Debian package"),
    ({"name": "x", "env": {"PATH": "/evil"}}, "env.PATH", "set by Redspot"),
    ({"name": "x", "env": {"X": "$(id)"}}, "env.X", "may not contain"),
    ({"name": "x", "env": {"LD_PRELOAD": "/tmp/x.so"}}, "env.LD_PRELOAD", "set by Redspot"),
    ({"name": "../../etc"}, "name", "is not allowed"),
    ({"name": "x", "base": "ubuntu:latest"}, "base", "is not a base image; allowed: default"),
    ({"name": "x", "pip_args": ["--pre"]}, "pip_args", "unknown field"),
    ({"python": ["six"]}, "name", "required"),
])
def test_injection_attempts_and_bad_specs_are_refused(env_hub, spec, field, message):
    before = envs_api(env_hub, "alice", "GET", "environments").json()["environments"]
    r = envs_api(env_hub, "alice", "POST", "environments", json=spec)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(f"{field}: ")
    assert r.json()["field"] == field  # the page shows the message by this field
    assert message in r.json()["message"]
    after = envs_api(env_hub, "alice", "GET", "environments").json()["environments"]
    assert after == before  # nothing listed, nothing built


def test_the_venv_builder_refuses_debian_packages_clearly(env_hub):
    r = envs_api(env_hub, "alice", "POST", "environments",
                 json={"name": "with-deb", "debian": ["graphviz"]})
    assert r.status_code == 400
    assert "the venv builder cannot install Debian packages" in r.json()["message"]


def test_a_failed_build_is_never_listed_as_ready(env_hub):
    r = envs_api(env_hub, "alice", "POST", "environments", json={
        "name": "broken", "python": ["redspot-no-such-package-anywhere==0.0.1"]})
    assert r.status_code == 202, r.text
    model = wait_built(env_hub, "alice", "alice/broken")
    assert model["status"] == "failed"
    assert "location" not in model and "runtime_env" not in model
    log = envs_api(env_hub, "alice", "GET", "environments/alice/broken/log").text
    assert "Build failed" in log
    venvs = env_hub.data_dir / "environments" / "venvs"
    assert not (venvs / model["tag"]).exists()


def test_owners_delete_their_own_and_nobody_elses(env_hub):
    assert envs_api(env_hub, "bob", "POST", "environments",
                    json={"name": "bobs", "python": SMALL}).status_code in (200, 202)
    # alice cannot see bob's environment, so she cannot delete it either
    assert envs_api(env_hub, "alice", "DELETE", "environments/bob/bobs").status_code == 404
    assert envs_api(env_hub, "bob", "GET", "environments/bob/bobs").status_code == 200
    # team environments: only admins publish and delete them
    r = envs_api(env_hub, "bob", "POST", "environments",
                 json={"name": "shared", "python": SMALL, "team": True})
    assert r.status_code == 403 and "only admins publish team environments" in r.text
    r = envs_api(env_hub, "admin", "POST", "environments",
                 json={"name": "shared", "python": SMALL, "team": True})
    assert r.status_code in (200, 202), r.text
    assert "team/shared" in [e["id"] for e in envs_api(env_hub, "bob", "GET", "environments")
                             .json()["environments"]]
    r = envs_api(env_hub, "bob", "DELETE", "environments/team/shared")
    assert r.status_code == 403 and "not yours to delete" in r.text
    # bob deletes his own; an admin deletes anyone's
    assert envs_api(env_hub, "bob", "DELETE", "environments/bob/bobs").status_code == 204
    assert envs_api(env_hub, "bob", "GET", "environments/bob/bobs").status_code == 404
    assert envs_api(env_hub, "admin", "DELETE", "environments/team/shared").status_code == 204


def test_every_request_needs_a_hub_identity_with_the_scope(env_hub):
    r = requests.get(f"{env_hub.url}/services/environments/api/environments", timeout=30)
    assert r.status_code == 403
    assert envs_api(env_hub, "alice", "GET", "environments",
                    token="not-a-token").status_code == 403
    # a token of alice's without the environments scopes
    r = env_hub.api("POST", "/users/alice/tokens",
                    json={"scopes": ["read:users:name!user=alice"], "note": "narrow"})
    narrow = r.json()["token"]
    assert envs_api(env_hub, "alice", "GET", "environments", token=narrow).status_code == 403


def test_build_logs_can_be_followed_until_the_build_ends(env_hub):
    r = envs_api(env_hub, "alice", "POST", "environments",
                 json={"name": "followed", "python": ["six==1.16.0", "idna==3.10"]})
    assert r.status_code == 202, r.text
    start = time.monotonic()
    with envs_api(env_hub, "alice", "GET", "environments/alice/followed/log?follow=1",
                  stream=True) as r:
        text = "".join(chunk for chunk in r.iter_content(decode_unicode=True))
    assert "Building env-" in text and ("Built env-" in text or "Build failed" in text)
    assert time.monotonic() - start < 300
    assert envs_api(env_hub, "alice", "GET",
                    "environments/alice/followed").json()["status"] == "ready"


def test_the_spawn_page_lists_ready_environments_and_a_server_starts_in_one(env_hub):
    from tests.helpers import Browser
    from tests.kernels import run_cell, start_kernel

    r = envs_api(env_hub, "alice", "POST", "environments", json={
        "name": "sixer", "python": ["six==1.16.0"], "env": {"SIXER": "on"},
        "description": "six pinned"})
    assert r.status_code in (200, 202), r.text
    assert wait_built(env_hub, "alice", "alice/sixer")["status"] == "ready", envs_api(
        env_hub, "alice", "GET", "environments/alice/sixer/log").text

    alice = Browser(env_hub)
    alice.login("alice", USERS["alice"])
    form = alice.spawn_form().text
    assert '<option value="alice/sixer">alice/sixer — six pinned</option>' in form
    bob = Browser(env_hub)
    bob.login("bob", USERS["bob"])
    assert "alice/sixer" not in bob.spawn_form().text

    # bob may not start in alice's environment: a 400 with what he may use
    r = env_hub.spawn("bob", env_hub.tokens["bob"], {"environment": "alice/sixer"})
    assert r.status_code == 400
    assert "'alice/sixer' is not a ready environment of yours or your team's" in (
        r.json()["message"])

    assert alice.submit_spawn("m5.xlarge", environment="alice/sixer").status_code == 200
    try:
        env_hub.wait_ready("alice")
        out = run_cell(env_hub.url, "alice", env_hub.tokens["alice"],
                       "import os, sys, six; print(sys.executable, six.__version__, "
                       "os.environ['SIXER'], os.environ['REDSPOT_ENVIRONMENT'])")
        python, version, sixer, env_id = out.split()
        assert python.startswith(str(env_hub.data_dir / "environments" / "venvs"))
        assert (version, sixer, env_id) == ("1.16.0", "on", "alice/sixer")
        # the server in her environment has Redspot's JupyterLab extension, prebuilt
        out = run_cell(env_hub.url, "alice", env_hub.tokens["alice"],
                       "import os, re, subprocess, sys\n"
                       "jupyter = os.path.join(os.path.dirname(sys.executable), 'jupyter')\n"
                       "p = subprocess.run([jupyter, 'labextension', 'list'], text=True,\n"
                       "                   capture_output=True)\n"
                       "print(re.sub(r'\\x1b\\[[0-9;]*m', '', p.stdout + p.stderr))")
        assert re.search(r"@redspot/labextension v\S+ enabled OK", out), out
        # a cell on alice's Ray cluster in an environment, found with the server's token
        kernel = start_kernel(env_hub.url, "alice", env_hub.tokens["alice"])
        out = run_cell(env_hub.url, "alice", env_hub.tokens["alice"],
                       "%%ray_remote --env alice/sixer\nimport os, six\n"
                       "print('remote', six.__version__, os.environ.get('SIXER'))",
                       kernel=kernel, timeout=240)
        assert "remote 1.16.0 on" in out, out
        out = run_cell(env_hub.url, "alice", env_hub.tokens["alice"],
                       "%%ray_remote --env alice/nothing\nx = 1", kernel=kernel)
        assert "environment alice/nothing does not exist; ready environments: " in out, out
        assert "alice/sixer" in out
    finally:
        env_hub.stop_server("alice")


def test_the_environments_page_lists_mine_and_its_form_calls_the_api(env_hub):
    """The page (a browser signed in to the hub, through the service's OAuth), and what
    its form sends: the API with the page's XSRF token; without it, refused."""
    from tests.helpers import Browser

    anonymous = requests.get(f"{env_hub.url}/services/environments/", timeout=30,
                             allow_redirects=False)
    assert anonymous.status_code == 302  # to the hub's sign-in, then back
    alice = Browser(env_hub)
    alice.login("alice", USERS["alice"])
    page = alice.get("/services/environments/")
    assert page.status_code == 200 and "Make an environment" in page.text, (
        page.url, page.text[:800])
    assert 'href="/hub/home"' in page.text
    xsrf = re.search(r'var xsrf = "([^"]+)"', page.text).group(1)
    api = f"{env_hub.url}/services/environments/api/environments"
    r = alice.session.post(api, json={"name": "x", "python": ["`id`"]}, timeout=30,
                           headers={"X-XSRFToken": xsrf})
    assert r.status_code == 400 and r.json()["field"] == "python[0]", r.text
    # the same request from another site's page, with alice's cookie but no token
    # (the spec of alice/tiny: built once, ready at once when that test ran first)
    spec = {"name": "page-made", "python": SMALL, "env": {"TINY": "yes"}}
    r = alice.session.post(api, json=spec, timeout=30)
    assert r.status_code == 403, r.text
    r = alice.session.post(api, json=spec, timeout=30, headers={"X-XSRFToken": xsrf})
    assert r.status_code in (200, 202), r.text
    page = alice.get("/services/environments/").text
    assert 'data-id="alice/page-made"' in page
    # bob's page does not list alice's environments
    bob = Browser(env_hub)
    bob.login("bob", USERS["bob"])
    assert "alice/page-made" not in bob.get("/services/environments/").text
    wait_built(env_hub, "alice", "alice/page-made")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: builds as a build account")
def test_a_build_that_fills_its_space_fails_says_why_and_leaves_nothing(
        test_root, account_prefix, monkeypatch):
    """A package that writes past the build's size limit (RLIMIT_FSIZE: as a full disk
    does, the write fails): the build ends failed with the reason, its folder is gone and
    no process of it is left."""
    import pwd
    import tempfile
    import zipfile
    from pathlib import Path

    from redspot.environments import runtime
    from redspot.privileged.ops import Helper, HelperError
    from tests.helpers import processes_of

    wheels = Path(tempfile.mkdtemp(prefix="rs-wheels-", dir="/tmp"))
    wheels.chmod(0o755)
    wheel = wheels / "redspot_bigfile-1.0-py3-none-any.whl"
    info = "redspot_bigfile-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("redspot_bigfile/__init__.py", "")
        z.writestr("redspot_bigfile/blob.bin", os.urandom(4 << 20))  # 4 MiB
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: redspot-bigfile\n"
                                       "Version: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: tests\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    wheel.chmod(0o644)
    monkeypatch.setenv("UV_FIND_LINKS", str(wheels))
    data = Path(tempfile.mkdtemp(prefix="full-", dir=test_root))
    data.chmod(0o711)
    # the servers' Python, as `redspot up` gives the helper: the hub's own when every
    # account can run it, else the prepared runtime (a checkout in a private folder)
    server_python = None
    if runtime.hub_environment_blocker() is not None:
        from tests.conftest import runtime_dir

        server_python = runtime.prepare_runtime(runtime_dir(test_root), log=lambda _: None)
    helper = Helper(data, prefix=account_prefix, isolated=True, build_max_bytes=1 << 20,
                    server_python=server_python)
    helper.prepare_data_dir()
    helper.ensure_service("environments")
    said = []
    started = time.monotonic()
    with pytest.raises(HelperError) as failed:
        helper.build_venv("team", "env-00000000000000ff",
                          [*runtime.base_requirements(), "redspot-bigfile==1.0"],
                          output=said.append)
    log = "\n".join(said)
    # uv is stopped at the write past the limit (SIGXFSZ), or, where it ignores that
    # signal, fails at it (EFBIG) and says so
    assert ("uv was stopped: it wrote a file larger than the build's limit of 1.0 MiB"
            in str(failed.value) or "File too large" in log), (str(failed.value), log)
    assert time.monotonic() - started < 300
    assert not (data / "environments" / "venvs" / "env-00000000000000ff").exists()
    assert not (data / "environments" / "work" / "env-00000000000000ff").exists()
    builder = pwd.getpwnam(f"{account_prefix}bld_team")
    assert processes_of(builder.pw_uid) == []
