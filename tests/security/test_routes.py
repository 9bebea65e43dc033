"""The attack table: every request another user (or nobody) can make against alice's
objects, and what the real Redspot answers.

alice and bob share the group ``vision``, carol is in ``nlp``, ``outsider`` has no
token; alice has a running server with a kernel and her Ray cluster, a personal
environment, an experiment with runs, a private model and a public one, a logged
model, a file in the ``vision`` shared folder, and a report shared with bob read-only.
Each row is (who, request, the statuses that mean "refused"); a row passes only when the
real service refuses it.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import textwrap

import pytest
import requests

from tests.helpers import run_as
from tests.kernels import run_cell, start_kernel

pytestmark = pytest.mark.integration

M = "/services/models/api/2.0/mlflow"
ART = "/services/models/api/2.0/mlflow-artifacts/artifacts"
E = "/services/environments/api"
W = "/services/warehouse/api"
S = "/services/sharing/api"


def ask(realm, who, method, path, **kwargs):
    headers = kwargs.pop("headers", {})
    if who != "outsider":
        headers["Authorization"] = f"Bearer {realm.tokens[who]}"
    return requests.request(method, realm.url + path, headers=headers, timeout=60,
                            allow_redirects=False, **kwargs)


@pytest.fixture(scope="module")
def targets(realm, alice_env):
    """alice's objects (see the module's docstring), their ids by name."""
    t = {"env": alice_env["id"]}

    def alice(method, path, **kwargs):
        r = ask(realm, "alice", method, path, **kwargs)
        assert r.status_code == 200, (path, r.text)
        return r.json() if r.content else {}

    t["exp"] = alice("POST", f"{M}/experiments/create", json={"name": "alice/attack"})[
        "experiment_id"]
    for kind, exp in (("private", t["exp"]), ("public", "0")):
        run = alice("POST", f"{M}/runs/create", json={"experiment_id": exp})["run"]["info"]
        t[f"{kind}_run"] = run["run_id"]
        t[f"{kind}_art"] = f"{exp}/{run['run_id']}/artifacts/model/MLmodel"
        r = ask(realm, "alice", "PUT", f"{ART}/{t[f'{kind}_art']}",
                data=b"artifact_path: model\n")
        assert r.status_code == 200, r.text
        alice("POST", f"{M}/registered-models/create", json={"name": f"alice-{kind}"})
        alice("POST", f"{M}/model-versions/create", json={
            "name": f"alice-{kind}", "source": f"runs:/{run['run_id']}/model",
            "run_id": run["run_id"]})
    r = ask(realm, "alice", "PATCH", "/services/models/redspot/api/permissions/alice-private",
            json={"private": True})
    assert r.status_code == 200, r.text
    t["logged"] = alice("POST", f"{M}/logged-models", json={
        "experiment_id": t["exp"], "name": "lm"})["model"]["info"]["model_id"]

    # her server, a kernel, and her Ray cluster
    token = realm.tokens["alice"]
    assert realm.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    realm.wait_ready("alice")
    t["kernel"] = start_kernel(realm.url, "alice", token)
    out = run_cell(realm.url, "alice", token, "%ray_connect", kernel=t["kernel"], timeout=180)
    assert "Connected" in out, out
    out = run_cell(realm.url, "alice", token,
                   "print('port', get_ipython().find_magic('ray_connect').__self__"
                   ".session.channel.port)", kernel=t["kernel"])
    t["channel_port"] = int(out.split("port", 1)[1].split()[0])
    home = realm.data_dir / "home" / "alice"
    t["head"] = json.loads((home / ".redspot" / "ray" / "head.json").read_text())

    # a file in the vision group's shared folder, and bob's account
    account = pwd.getpwnam(f"{realm.prefix}alice")
    plan = realm.data_dir / "shared" / "vision" / "plan.txt"
    plan.write_text("vision's plan")
    os.chown(plan, account.pw_uid, -1)
    os.chmod(plan, 0o660)
    t["plan"] = plan
    (home / "diary.txt").write_text("alice's diary")
    os.chown(home / "diary.txt", account.pw_uid, account.pw_gid)
    os.chmod(home / "diary.txt", 0o660)  # as her server makes files (umask 007)
    t["diary"] = home / "diary.txt"
    from redspot.privileged.client import SocketHelper

    helper = SocketHelper(str(realm.data_dir / "run" / "helper.sock"))
    for user, groups in (("bob", ["vision"]), ("carol", ["nlp"])):
        helper.call("ensure_user", user=user, groups=groups)
    # her report, shared with bob alone
    (home / "report.txt").write_text("alice's report")
    os.chown(home / "report.txt", account.pw_uid, account.pw_gid)
    os.chmod(home / "report.txt", 0o600)
    t["report"] = home / "report.txt"
    r = ask(realm, "alice", "POST", f"{S}/shares", json={"path": "report.txt", "with": "bob"})
    assert r.status_code == 201, r.text
    t["share"] = r.json()["id"]
    yield t
    # revoked, her home is 0700 again (the layout test's expectation)
    assert ask(realm, "alice", "DELETE", f"{S}/shares/{t['share']}").status_code == 200
    realm.stop_server("alice")


def _fill(value, targets):
    """``value`` with ``{name}`` in its strings replaced by alice's objects' ids."""
    if isinstance(value, str):
        for name, known in targets.items():
            value = value.replace("{" + name + "}", str(known))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, targets) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, targets) for v in value]
    return value


#: (who, method, path, request keywords, statuses that count as refused)
TABLE = [
    # her server, its kernels and files, its extension, the dashboard proxy
    ("bob", "GET", "/user/alice/api/contents", {}, (403,)),
    ("bob", "GET", "/user/alice/api/contents/diary.txt", {}, (403,)),
    ("bob", "POST", "/user/alice/api/kernels", {"json": {}}, (403,)),
    ("bob", "GET", "/user/alice/api/kernels", {}, (403,)),
    ("bob", "GET", "/user/alice/redspot/api/info", {}, (403,)),
    ("bob", "GET", "/user/alice/redspot/ray/dashboard/api/version", {}, (403,)),
    ("bob", "POST", "/user/alice/redspot/ray/dashboard/api/jobs/",
     {"json": {"entrypoint": "id"}}, (403,)),
    ("carol", "GET", "/user/alice/lab", {}, (403,)),
    ("outsider", "GET", "/user/alice/api/contents", {}, (302, 401, 403)),
    ("outsider", "GET", "/user/alice/redspot/ray/dashboard/api/version", {}, (302, 401, 403)),
    # the hub's API about her
    # (carol: bob's group may invite into servers, which lets him read users' names)
    ("carol", "GET", "/hub/api/users/alice", {}, (403, 404)),
    ("bob", "POST", "/hub/api/users/alice/tokens", {"json": {}}, (403, 404)),
    ("bob", "DELETE", "/hub/api/users/alice/server", {}, (403, 404)),
    ("bob", "POST", "/hub/api/users/alice/server", {"json": {}}, (403, 404)),
    ("bob", "PATCH", "/hub/api/users/bob", {"json": {"admin": True}}, (403, 404)),
    ("outsider", "GET", "/hub/api/users", {}, (401, 403)),
    # Redspot's hub pages: an account's new password is an admin's to set; the home page
    # and the docs are for signed-in users
    ("bob", "POST", "/hub/redspot/accounts/alice/password", {}, (403,)),
    ("outsider", "POST", "/hub/redspot/accounts/alice/password", {}, (302, 401, 403)),
    ("outsider", "GET", "/hub/home", {}, (302,)),
    # everyone's usage and cost is for admins
    ("bob", "GET", "/hub/redspot/usage", {}, (403,)),
    ("bob", "GET", "/hub/redspot/usage?format=json", {}, (403,)),
    ("outsider", "GET", "/hub/redspot/usage", {}, (302, 401, 403)),
    ("outsider", "GET", "/hub/redspot/docs/security", {}, (302,)),
    ("outsider", "GET", "/hub/redspot/docs/images/panel.png", {}, (302,)),
    # her environment
    ("bob", "GET", f"{E}/environments/{{env}}", {}, (404,)),
    ("bob", "GET", f"{E}/environments/{{env}}/log", {}, (404,)),
    ("bob", "DELETE", f"{E}/environments/{{env}}", {}, (404,)),
    ("carol", "GET", f"{E}/environments/{{env}}", {}, (404,)),
    ("bob", "POST", f"{E}/environments", {"json": {"name": "t", "team": True}}, (403,)),
    ("outsider", "GET", f"{E}/environments", {}, (403,)),
    ("outsider", "GET", f"{E}/environments/{{env}}", {}, (403,)),
    ("outsider", "GET", f"{E}/openapi.json", {}, (403,)),
    ("bob", "GET", f"{E}/environments/{{env}}/secrets", {}, (403,)),  # no such route
    # which environments she may start in: the hub's spawner asks, with its own token;
    # no user may (an admin neither)
    ("bob", "GET", f"{E}/ready/alice", {}, (403,)),
    ("admin", "GET", f"{E}/ready/alice", {}, (403,)),
    ("outsider", "GET", f"{E}/ready/alice", {}, (403,)),
    ("outsider", "POST", "/services/environments/", {"json": {}}, (403,)),
    ("outsider", "GET", "/services/environments/", {}, (302,)),  # the page: sign in first
    ("bob", "DELETE", "/services/environments/", {}, (403,)),
    # her private model, its versions, runs and files
    ("bob", "GET", f"{M}/registered-models/get?name=alice-private", {}, (404,)),
    ("bob", "GET", f"{M}/registered-models/get?name=alice-private", {"json": {}}, (404,)),
    ("bob", "GET", f"{M}/model-versions/get?name=alice-private&version=1", {}, (404,)),
    ("bob", "GET", "/services/models/model-versions/get-artifact?name=alice-private"
     "&version=1&path=MLmodel", {}, (404,)),
    ("bob", "GET", f"{M}/runs/get?run_id={{private_run}}", {}, (404,)),
    ("bob", "GET", f"{M}/metrics/get-history?run_id={{private_run}}&metric_key=x", {}, (404,)),
    ("bob", "GET", f"{M}/artifacts/list?run_id={{private_run}}", {}, (404,)),
    ("bob", "GET", "/services/models/get-artifact?run_id={private_run}&path=model/MLmodel",
     {}, (404,)),
    ("bob", "GET", f"{ART}/{{private_art}}", {}, (404,)),
    ("bob", "GET", f"{ART}?path={{exp}}/{{private_run}}/artifacts", {}, (404,)),
    ("bob", "GET", f"{ART}?path={{exp}}", {}, (403,)),
    ("carol", "GET", f"{ART}/{{private_art}}", {}, (404,)),
    ("bob", "POST", "/services/models/graphql", {"json": {
        "query": "query Q($i: MlflowGetRunInput) { mlflowGetRun(input: $i) "
                 "{ run { info { runId } } } }",
        "variables": {"i": {"runId": "{private_run}"}}}}, (404,)),
    # her public model: readable, not changeable
    ("bob", "POST", f"{M}/model-versions/create", {"json": {
        "name": "alice-public", "source": "runs:/{public_run}/model"}}, (403,)),
    ("bob", "POST", f"{M}/registered-models/rename", {"json": {
        "name": "alice-public", "newName": "bobs-now"}}, (403,)),
    ("bob", "DELETE", f"{M}/registered-models/delete", {"json": {"name": "alice-public"}},
     (403,)),
    ("bob", "POST", f"{M}/registered-models/alias", {"json": {
        "name": "alice-public", "alias": "champion", "version": "1"}}, (403,)),
    ("bob", "PATCH", "/services/models/redspot/api/permissions/alice-public",
     {"json": {"private": True}}, (403,)),
    # her runs, experiments and logged models
    ("bob", "PUT", f"{ART}/{{public_art}}", {"data": b"evil pickle"}, (403,)),
    ("bob", "DELETE", f"{ART}/{{public_art}}", {}, (403,)),
    ("bob", "POST", f"{M}/runs/set-tag", {"json": {
        "run_id": "{public_run}", "key": "mlflow.user", "value": "bob"}}, (400, 403)),
    ("alice", "POST", f"{M}/runs/set-tag", {"json": {
        "run_id": "{public_run}", "key": "mlflow.user", "value": "bob"}}, (400,)),
    ("bob", "POST", f"{M}/runs/log-metric", {"json": {
        "run_id": "{public_run}", "key": "loss", "value": 9, "timestamp": 0}}, (403,)),
    ("bob", "POST", f"{M}/runs/delete", {"json": {"run_id": "{public_run}"}}, (403,)),
    ("bob", "POST", f"{M}/runs/create", {"json": {"experiment_id": "{exp}"}}, (403,)),
    ("bob", "POST", f"{M}/experiments/update", {"json": {
        "experiment_id": "{exp}", "new_name": "bob/taken"}}, (403,)),
    ("bob", "POST", f"{M}/experiments/delete", {"json": {"experiment_id": "0"}}, (403,)),
    ("bob", "POST", f"{M}/experiments/create", {"json": {"name": "alice/squat"}}, (403,)),
    ("bob", "PATCH", f"{M}/logged-models/{{logged}}", {"json": {"status": "READY"}}, (403,)),
    ("bob", "DELETE", f"{M}/logged-models/{{logged}}", {}, (403,)),
    # the warehouse: connections of groups one is not in, the grant log, other routes
    ("carol", "POST", f"{W}/connections/visiondb/credentials", {}, (403,)),
    ("outsider", "POST", f"{W}/connections/demo/credentials", {}, (403,)),
    ("outsider", "GET", f"{W}/connections", {}, (403,)),
    ("outsider", "GET", f"{W}/openapi.json", {}, (403,)),
    ("bob", "GET", f"{W}/grants", {}, (403,)),
    ("bob", "GET", f"{W}/grants?user=alice", {}, (403,)),
    ("outsider", "GET", f"{W}/grants", {}, (403,)),
    ("bob", "PUT", f"{W}/connections/visiondb", {"json": {"groups": ["*"]}}, (403,)),
    ("bob", "DELETE", f"{W}/connections", {}, (403, 405)),
    ("bob", "GET", "/services/warehouse/", {}, (403,)),
    # shares: another's share is not theirs to see, revoke or widen; one's own home only
    ("bob", "DELETE", f"{S}/shares/{{share}}", {}, (403,)),
    ("carol", "GET", f"{S}/shares/{{share}}", {}, (404,)),
    ("carol", "DELETE", f"{S}/shares/{{share}}", {}, (404,)),
    ("bob", "PUT", f"{S}/shares/{{share}}", {"json": {"with": "carol"}}, (403, 405)),
    ("bob", "POST", f"{S}/shares", {"json": {"path": "diary.txt", "with": "bob",
                                              "owner": "alice"}}, (403,)),
    ("bob", "POST", f"{S}/shares", {"json": {"path": "../alice/diary.txt", "with": "carol"}},
     (400,)),
    ("bob", "POST", f"{S}/shares", {"json": {"path": "shared-with-me/alice/report.txt",
                                              "with": "carol"}}, (400,)),
    ("bob", "GET", f"{S}/shares?owner=alice", {}, (403,)),
    ("bob", "GET", f"{S}/shares?all=true", {}, (403,)),
    ("bob", "POST", f"{S}/check", {"json": {}}, (403,)),
    ("outsider", "GET", f"{S}/shares", {}, (403,)),
    ("outsider", "POST", f"{S}/shares", {"json": {"path": "x", "with": "bob"}}, (403,)),
    ("outsider", "GET", f"{S}/grantees", {}, (403,)),
    ("outsider", "GET", f"{S}/openapi.json", {}, (403,)),
    ("bob", "GET", "/services/sharing/", {}, (403,)),
    ("bob", "GET", "/user/alice/redspot/api/shares", {}, (403,)),
    ("bob", "POST", "/user/alice/redspot/api/shares", {"json": {"invite": "bob"}}, (403,)),
    ("outsider", "GET", "/user/alice/redspot/api/shares", {}, (302, 401, 403)),
    ("outsider", "POST", "/user/alice/redspot/api/shares", {"json": {"invite": "x"}},
     (302, 401, 403)),
    # the JupyterLab panel's endpoints (redspot/serverextension/platform.py): the server's
    # owner only, before any handler asks a service with the server's token
    *[(who, "GET", f"/user/alice/redspot/api/{path}", {}, codes)
      for path in ("info", "ray", "environments", "models", "warehouse",
                   "warehouse/demo/schemas", "warehouse/demo/tables?schema=main",
                   "warehouse/demo/columns?schema=main&table=listings", "grantees",
                   "idle")
      for who, codes in (("bob", (403,)), ("outsider", (302, 401, 403)))],
    ("bob", "POST", "/user/alice/redspot/api/ray", {"json": {"action": "start"}}, (403,)),
    ("bob", "POST", "/user/alice/redspot/api/ray", {"json": {"action": "stop"}}, (403,)),
    ("bob", "POST", "/user/alice/redspot/api/idle", {}, (403,)),
    ("outsider", "POST", "/user/alice/redspot/api/ray", {"json": {"action": "stop"}},
     (302, 401, 403)),
    # invitations into servers: only into one's own, only for the groups that may invite
    ("bob", "POST", "/hub/api/shares/alice/", {"json": {"user": "bob"}}, (403, 404)),
    ("carol", "POST", "/hub/api/shares/alice/", {"json": {"user": "carol"}}, (403, 404)),
    ("carol", "POST", "/hub/api/shares/carol/", {"json": {"user": "bob"}}, (403,)),
    ("bob", "POST", "/hub/api/share-codes/alice/", {"json": {}}, (403, 404)),
    ("bob", "GET", "/hub/api/shares/alice", {}, (403, 404)),
    ("bob", "DELETE", "/hub/api/shares/alice/", {}, (403, 404)),
    # what no user reaches
    ("bob", "GET", "/services/models/api/3.0/mlflow/gateway/secrets/list", {}, (403,)),
    ("bob", "GET", f"{M}/webhooks", {}, (403,)),
    ("bob", "POST", "/services/models/api/3.0/mlflow/traces/search", {"json": {}}, (403,)),
    ("bob", "POST", "/services/models/api/3.0/mlflow/scorer/invoke", {"json": {}}, (403,)),
    ("outsider", "GET", f"{M}/registered-models/search", {}, (401,)),
    ("outsider", "GET", "/services/models/", {}, (401,)),
    # the UI's questions about the assistant and accounts: fixed answers, signed-in only;
    # nobody configures the assistant
    ("outsider", "GET", "/services/models/ajax-api/3.0/mlflow/assistant/config", {},
     (401,)),
    ("outsider", "GET", f"{M}/users/current", {}, (401,)),
    ("bob", "PUT", "/services/models/ajax-api/3.0/mlflow/assistant/config",
     {"json": {"providers": {}}}, (403,)),
]


@pytest.mark.parametrize("who, method, path, kwargs, refused", TABLE,
                         ids=[f"{r[0]}-{r[1]}-{r[2][:60]}" for r in TABLE])
def test_the_attack_is_refused(realm, targets, who, method, path, kwargs, refused):
    r = ask(realm, who, method, _fill(path, targets), **_fill(kwargs, targets))
    assert r.status_code in refused, (r.status_code, r.text[:500])


def test_what_the_owner_and_her_group_may_do_still_works(realm, targets):
    """The same requests, made by those allowed: the table refuses for the right reason."""
    assert ask(realm, "alice", "GET", f"{ART}/{targets['private_art']}").status_code == 200
    assert ask(realm, "bob", "GET", f"{ART}/{targets['public_art']}").status_code == 200
    r = ask(realm, "alice", "GET", f"{M}/registered-models/get?name=alice-private")
    assert r.status_code == 200
    assert ask(realm, "alice", "GET",
               f"{E}/environments/{targets['env']}").status_code == 200
    assert ask(realm, "admin", "GET", f"{E}/environments/{targets['env']}").status_code == 200
    for path in ("info", "ray", "warehouse", "grantees"):
        assert ask(realm, "alice", "GET", f"/user/alice/redspot/api/{path}").status_code \
            == 200, path
    # bob shares alice's group: the vision connection is his too; the log is an admin's
    assert ask(realm, "bob", "POST", f"{W}/connections/visiondb/credentials").status_code \
        == 200
    assert ask(realm, "outsider", "GET", f"{W}/connections").status_code == 403
    assert ask(realm, "admin", "GET", f"{W}/grants").status_code == 200
    # the report is bob's to see and read, alice's to revoke; bob may invite into his own
    # server (vision may), and list who he invited
    assert ask(realm, "bob", "GET", f"{S}/shares/{targets['share']}").status_code == 200
    assert run_as(f"{realm.prefix}bob", "cat", str(targets["report"])).stdout == \
        "alice's report"
    assert run_as(f"{realm.prefix}carol", "cat", str(targets["report"])).returncode != 0
    assert ask(realm, "bob", "GET", "/hub/api/shares/bob").status_code == 200
    # to invite by name, bob reads users' names: nothing more of alice
    r = ask(realm, "bob", "GET", "/hub/api/users/alice")
    assert r.status_code == 200 and not {"servers", "groups", "roles", "last_activity",
                                         "auth_state"} & set(r.json()), r.text


def test_files_are_reached_by_their_owner_and_group_only(realm, targets):
    p = realm.prefix
    assert run_as(f"{p}alice", "cat", str(targets["diary"])).returncode == 0
    for other in ("bob", "carol"):
        assert run_as(f"{p}{other}", "cat", str(targets["diary"])).returncode != 0
        assert run_as(f"{p}{other}", "ls", str(realm.data_dir / "home")).returncode != 0
    # the vision group's folder: bob (vision) reads it, carol (nlp) does not
    assert run_as(f"{p}bob", "cat", str(targets["plan"])).stdout == "vision's plan"
    assert run_as(f"{p}carol", "cat", str(targets["plan"])).returncode != 0
    # nor the hub's state, the services' stores, other builds, or the retired homes
    for path in ("hub/jupyterhub.sqlite", "hub/users.sqlite", "hub/cli-access.json",
                 "redspot.yaml", "models/mlflow.sqlite", "environments/catalog.sqlite",
                 "models/permissions.sqlite"):
        assert run_as(f"{p}bob", "cat", str(realm.data_dir / path)).returncode != 0, path
    # nor does alice's own build account reach her home (a build's code runs as it)
    assert run_as(f"{p}bld_alice", "cat", str(targets["diary"])).returncode != 0
    assert run_as(f"{p}bld_alice", "cat", str(targets["plan"])).returncode != 0


RAY_DRIVER = textwrap.dedent("""
    import sys, ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    print("joined", ray.get(ray.put(7)))
""")


def test_her_ray_cluster_refuses_anyone_without_her_token(realm, targets, tmp_path):
    head = targets["head"]
    dashboard = head["dashboard"]
    # the dashboard and the Jobs API, straight on 127.0.0.1
    assert requests.get(f"{dashboard}/api/version", timeout=30).status_code in (401, 403)
    r = requests.post(f"{dashboard}/api/jobs/", json={"entrypoint": "id"}, timeout=30)
    assert r.status_code in (401, 403), r.text
    r = requests.post(f"{dashboard}/api/jobs/", json={"entrypoint": "id"}, timeout=30,
                      headers={"X-Ray-Authorization": "Bearer " + "0" * 64})
    assert r.status_code in (401, 403), r.text
    # the GCS, as a driver with a wrong token
    from redspot.compute.local import auth_env

    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    env = {**os.environ, "HOME": str(tmp_path), **auth_env(wrong)}
    result = subprocess.run([sys.executable, "-c", RAY_DRIVER, head["address"]], env=env,
                            capture_output=True, text=True, timeout=180)
    assert "joined" not in result.stdout and result.returncode != 0
    # the Ray Client server, likewise
    result = subprocess.run([sys.executable, "-c", RAY_DRIVER, head["client"]], env=env,
                            capture_output=True, text=True, timeout=180)
    assert "joined" not in result.stdout and result.returncode != 0


def test_her_kernels_output_channel_takes_nothing_without_its_secret(realm, targets):
    port = targets["channel_port"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b'{"secret": "' + b"0" * 32 + b'", "run": "x"}\n'
                     + b'{"t": "stream", "name": "stdout", "text": "injected"}\n')
        sock.settimeout(10)
        try:
            assert sock.recv(1) == b""  # dropped
        except ConnectionResetError:
            pass
    # connections that never speak hold no thread each, and her next cell still works
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        out = run_cell(realm.url, "alice", realm.tokens["alice"],
                       "%%ray_remote\nprint('still', 6 * 7)", kernel=targets["kernel"],
                       timeout=120)
        assert "still 42" in out, out
    finally:
        for sock in idle:
            sock.close()

