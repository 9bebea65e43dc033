"""The model registry: a real MLflow server run by a real hub, used with MLflow's client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import requests

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@pytest.fixture(scope="module")
def models_hub(test_root, account_prefix):
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "models")
    try:
        hub = pool({"services": {"models": {"enabled": True}},
                    "groups": {"ml": {"users": ["alice", "bob"]}}}, users=USERS)
        hub.tokens = {name: hub.user_token(name) for name in (*USERS, "admin")}
        wait_for(lambda: api(hub, "alice", "GET", "registered-models/search").status_code == 200,
                 180, "the model registry")
        yield hub
    finally:
        pool.close()


def api(hub, who, method, call, token=None, **kwargs):
    token = hub.tokens[who] if token is None else token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{hub.url}/services/models/api/2.0/mlflow/{call}",
                            headers=headers, timeout=60, **kwargs)


CLIENT = textwrap.dedent("""
    import json, sys
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.create_experiment(sys.argv[1])
    run = client.create_run(experiment, tags={"mlflow.user": "mallory"})
    client.log_metric(run.info.run_id, "loss", 0.25)
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    client.log_text(run.info.run_id, "artifact_path: model", "model/MLmodel")
    client.set_terminated(run.info.run_id)
    model = client.create_registered_model(sys.argv[2], description="tests")
    version = client.create_model_version(sys.argv[2], f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias(sys.argv[2], "champion", version.version)
    back = client.get_model_version_by_alias(sys.argv[2], "champion")
    text = client.download_artifacts(run.info.run_id, "model/weights.txt", sys.argv[3])
    print(json.dumps({"run": run.info.run_id, "user": client.get_run(run.info.run_id).info.user_id,
                      "tag": client.get_run(run.info.run_id).data.tags.get("mlflow.user"),
                      "version": back.version, "weights": open(text).read()}))
""")


def mlflow_client(hub, who, *args, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"{hub.url}/services/models",
           "MLFLOW_TRACKING_TOKEN": hub.tokens[who], "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", CLIENT, *args, str(tmp_path)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stderr[-2000:]
                                    + hub.log_path.read_text(errors="replace")[-4000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mlflows_own_client_tracks_registers_and_loads_with_a_hub_token(models_hub, tmp_path):
    out = mlflow_client(models_hub, "alice", "alice-exp", "alice-model", tmp_path=tmp_path)
    # the identity is the hub's, not the one the client claimed
    assert out["user"] == "alice" and out["tag"] == "alice"
    assert out["version"] == "1" and out["weights"] == "weights"


def test_nothing_answers_without_a_valid_hub_identity(models_hub):
    for token in ("", "not-a-token"):
        r = api(models_hub, None, "GET", "registered-models/search", token=token)
        assert r.status_code == 401, r.text
        assert r.json()["error_code"] == "UNAUTHENTICATED"
    for path in ("api/2.0/mlflow-artifacts/artifacts", "health", "", "graphql"):
        r = requests.get(f"{models_hub.url}/services/models/{path}", timeout=30,
                         allow_redirects=False)
        assert r.status_code in (302, 401), (path, r.status_code)


def test_only_the_owner_changes_a_model_and_everyone_reads_it(models_hub):
    r = api(models_hub, "alice", "POST", "registered-models/create", json={"name": "shared-m"})
    assert r.status_code == 200, r.text
    for method, call, body in [
        ("POST", "model-versions/create", {"name": "shared-m", "source": "s3://x/y"}),
        ("POST", "registered-models/alias", {"name": "shared-m", "alias": "champion",
                                              "version": "1"}),
        ("PATCH", "registered-models/update", {"name": "shared-m", "description": "mine"}),
        ("POST", "registered-models/rename", {"name": "shared-m", "new_name": "bobs"}),
        ("DELETE", "registered-models/delete", {"name": "shared-m"}),
        ("POST", "registered-models/create", {"name": "shared-m"}),
    ]:
        r = api(models_hub, "bob", method, call, json=body)
        assert r.status_code == 403, (call, r.status_code, r.text)
        assert "alice" in r.json()["message"]
    # bob reads it, and finds it
    assert api(models_hub, "bob", "GET", "registered-models/get",
               params={"name": "shared-m"}).status_code == 200
    found = api(models_hub, "bob", "GET", "registered-models/search").json()
    assert "shared-m" in [m["name"] for m in found["registered_models"]]
    # the owner and an admin may
    assert api(models_hub, "alice", "PATCH", "registered-models/update",
               json={"name": "shared-m", "description": "mine"}).status_code == 200
    assert api(models_hub, "admin", "PATCH", "registered-models/update",
               json={"name": "shared-m", "description": "checked"}).status_code == 200


def test_bad_requests_are_refused_with_a_clear_message(models_hub):
    r = api(models_hub, "alice", "POST", "model-versions/create", data=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    r = api(models_hub, "alice", "POST", "model-versions/create", json={"source": "x"})
    assert r.status_code == 400 and "names no model" in r.json()["message"]
    r = api(models_hub, "alice", "POST", "registered-models/create", json={"name": ""})
    assert r.status_code == 400, r.text


@pytest.fixture(scope="module")
def alice_server(models_hub):
    token = models_hub.tokens["alice"]
    assert models_hub.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        models_hub.wait_ready("alice")
        yield token
    finally:
        models_hub.stop_server("alice")


def test_a_users_server_reaches_the_registry_with_mlflow_unchanged(models_hub, alice_server):
    """In alice's Redspot server, MLflow's client finds the registry and her token in the
    environment the spawner set: no configuration in the notebook."""
    from tests.kernels import run_cell

    token = alice_server
    out = run_cell(models_hub.url, "alice", token,
                   "from mlflow import MlflowClient\n"
                   "client = MlflowClient()\n"
                   "client.create_registered_model('from-the-notebook')\n"
                   "print('owner:', [m.name for m in client.search_registered_models()])",
                   timeout=120)
    assert "from-the-notebook" in out, out
    r = requests.get(f"{models_hub.url}/services/models/redspot/api/permissions/"
                     "from-the-notebook",
                     headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.json()["owner"] == "alice", r.text


WIDGET_CELL = textwrap.dedent("""
    import json, numpy as np, torch
    from redspot.widgets import register_model, browse_models
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    X_val = np.random.rand(8, 4).astype("float32")
    val_loss, epochs = np.float64(0.25), 3
    form = register_model(net)
    offered = {"name": form.name.value, "metrics": [v for _, v in form.metric_variables.options],
               "samples": [v for _, v in form.sample.options], "flavor": form.flavor}
    form.name.value = "churn-net"
    form.description.value = "a small net"
    form.tags.value = "team=growth"
    form.metric_variables.value = ("val_loss",)
    form.typed_metrics.value = "auc=0.91"
    form.sample.value = "X_val"
    form.register_button.click()
    first = form.registered
    val_loss = np.float64(0.125)
    again = register_model(net)
    again.name.value = "churn-net"
    again.metric_variables.value = ("val_loss",)
    again.register_button.click()
    secret = register_model(net)
    secret.name.value = "secret-net"
    secret.private.value = True
    secret.register_button.click()
    browser = browse_models()
    mine = list(browser.models.options)
    browser.select("churn-net")
    picked = {"version": browser.version.value, "variable": browser.variable.value,
              "link": browser.open_link.value, "private": browser.private.value}
    browser.set_alias("2", "champion")
    loaded = browser.load("1", "net_back")
    same = bool(torch.allclose(net_back(torch.from_numpy(X_val)), net(torch.from_numpy(X_val))))
    print("RESULT " + json.dumps({
        "offered": offered, "version": first.version, "url": first.url, "tags": first.tags,
        "result": form.result.value, "progress": [form.progress.value, form.progress.max],
        "second": again.registered.version, "mine": mine, "table": browser.table.value,
        "aliases": [v.aliases for v in browser.infos], "plot": browser.plot.value[:4].hex(),
        "metrics": [v.metrics for v in browser.infos], "same": same, "picked": picked,
        "secret": secret.result.value}))
""")


def test_the_widget_registers_a_model_with_its_lineage_and_the_browser_shows_it(
        models_hub, alice_server):
    """Done-when: from alice's server an in-memory model is registered through the
    widget (driven by setting its fields and pressing its button), with lineage; the
    browser widget shows it, sets an alias and loads it back; bob cannot change it."""
    from tests.kernels import run_cell

    out = run_cell(models_hub.url, "alice", alice_server, WIDGET_CELL, timeout=300)
    assert "RESULT " in out, out
    got = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    assert got["offered"]["flavor"] == "pytorch"
    # a generic class name becomes "model"; alice-model exists (the first test made it)
    assert got["offered"]["name"] == "alice-model-2"
    assert got["offered"]["metrics"] == ["epochs", "val_loss"]
    assert got["offered"]["samples"] == ["", "X_val"]
    assert got["version"] == "1" and got["second"] == "2"
    assert got["url"] == "/services/models/#/models/churn-net/versions/1"
    assert "version <b>1</b>" in got["result"] and got["url"] in got["result"]
    assert got["progress"][0] == got["progress"][1] > 0
    tags = got["tags"]
    assert tags["redspot.user"] == "alice" and tags["team"] == "growth"
    assert tags["redspot.flavor"] == "pytorch" and tags["redspot.profile"] == "m5.xlarge"
    assert "churn-net" in got["mine"]
    assert got["aliases"] == [[], ["champion"]]
    assert got["metrics"] == [{"val_loss": 0.25, "auc": 0.91}, {"val_loss": 0.125}]
    assert "val_loss" in got["table"] and "user=alice" in got["table"]
    assert got["plot"] == "89504e47" and got["same"] is True  # a PNG
    # the browser picks the newest version, and loads it under a name of its own
    assert got["picked"]["version"] == "2" and got["picked"]["variable"] == "churn_net_v2"
    assert "/services/models/#/models/churn-net" in got["picked"]["link"]
    assert got["picked"]["private"] is False
    # a model made private in the form: bob does not see it at all
    assert "(private)" in got["secret"], got["secret"]
    r = api(models_hub, "bob", "GET", "registered-models/get", params={"name": "secret-net"})
    assert r.status_code == 404, r.text

    # the registry has the version, its signature and its lineage
    version = api(models_hub, "bob", "GET", "model-versions/get",
                  params={"name": "churn-net", "version": "1"}).json()["model_version"]
    version_tags = {t["key"]: t["value"] for t in version["tags"]}
    assert version_tags["redspot.user"] == "alice"
    assert version["description"] == "a small net"
    # bob reads it but cannot change it
    for method, call, body in [
        ("POST", "model-versions/create", {"name": "churn-net", "source": version["source"],
                                           "model_id": version.get("model_id", "")}),
        ("POST", "registered-models/alias", {"name": "churn-net", "alias": "champion",
                                              "version": "1"}),
        ("DELETE", "model-versions/delete", {"name": "churn-net", "version": "1"}),
    ]:
        r = api(models_hub, "bob", method, call, json=body)
        assert r.status_code == 403, (call, r.text)


def test_the_magic_shows_the_form_and_refuses_unknown_variables(models_hub, alice_server):
    from tests.kernels import run_cell

    out = run_cell(models_hub.url, "alice", alice_server,
                   "from sklearn.linear_model import LinearRegression\n"
                   "import numpy as np\n"
                   "X = np.arange(10.0).reshape(5, 2); lin = LinearRegression().fit(X, X[:, 0])\n"
                   "%register_model lin --sample X", timeout=120)
    assert "RegisterModel(" in out, out
    out = run_cell(models_hub.url, "alice", alice_server, "%register_model nothing_here",
                   timeout=60)
    assert "no variable 'nothing_here'" in out, out


def test_the_mlflow_ui_opens_in_a_browser_signed_in_to_the_hub(models_hub):
    from tests.helpers import Browser

    browser = Browser(models_hub)
    browser.login("alice", USERS["alice"])
    # no session with the service yet: the hub's OAuth, then back to the UI
    page = browser.session.get(f"{models_hub.url}/services/models/", timeout=60,
                               headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text[:500]
    assert page.url.rstrip("/").endswith("/services/models")
    assert "<html" in page.text.lower() and "mlflow" in page.text.lower()
    # the UI's own API calls ride on the session cookie
    r = browser.session.get(f"{models_hub.url}/services/models/ajax-api/2.0/mlflow/"
                            "registered-models/search", timeout=60)
    assert r.status_code == 200, r.text
    # a browser not signed in to the hub is sent to its login page
    stranger = requests.get(f"{models_hub.url}/services/models/", timeout=60,
                            headers={"Accept": "text/html"})
    assert "/hub/login" in stranger.url


def registry_env(hub, who, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{hub.url}/services/models")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", hub.tokens[who])


def test_an_interrupted_upload_leaves_no_version_and_nothing_uploaded(models_hub, monkeypatch):
    torch = pytest.importorskip("torch")
    from mlflow import MlflowClient

    from redspot.models import client as registry

    registry_env(models_hub, "alice", monkeypatch)
    model = torch.nn.Linear(1024, 1024)  # 4 MiB of weights: several chunks

    def interrupt(done, total, what):
        if what == "uploading" and done > 1 << 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        registry.register(model, "interrupted-m", progress=interrupt, lineage={})
    assert api(models_hub, "alice", "GET", "registered-models/get",
               params={"name": "interrupted-m"}).status_code == 404
    client = MlflowClient()
    failed = client.search_logged_models(
        experiment_ids=[client.get_experiment_by_name("alice/models").experiment_id],
        filter_string="name = 'interrupted-m'")
    assert [m.status.to_string() if hasattr(m.status, "to_string") else str(m.status)
            for m in failed] == ["FAILED"]
    assert client.list_logged_model_artifacts(failed[0].model_id) == []

    # a version of that logged model, or of one still uploading, is refused by the service
    r = api(models_hub, "alice", "POST", "registered-models/create", json={"name": "half-m"})
    assert r.status_code == 200, r.text
    r = api(models_hub, "alice", "POST", "model-versions/create",
            json={"name": "half-m", "source": f"models:/{failed[0].model_id}",
                  "model_id": failed[0].model_id})
    assert r.status_code == 400 and "did not finish" in r.json()["message"], r.text
    pending = client.create_logged_model(failed[0].experiment_id, name="pending-m")
    r = api(models_hub, "alice", "POST", "model-versions/create",
            json={"name": "half-m", "source": f"models:/{pending.model_id}",
                  "model_id": pending.model_id})
    assert r.status_code == 400 and "PENDING" in r.json()["message"], r.text
    # a run's folder without an MLmodel file (an upload cut short) is refused too
    run = client.create_run(failed[0].experiment_id)
    client.log_text(run.info.run_id, "half", "model/data.bin")
    r = api(models_hub, "alice", "POST", "model-versions/create",
            json={"name": "half-m", "source": f"runs:/{run.info.run_id}/model",
                  "run_id": run.info.run_id})
    assert r.status_code == 400 and "no MLmodel" in r.json()["message"], r.text
    assert client.search_model_versions("name = 'half-m'") == []


def test_invalid_names_and_oversized_tags_are_refused_with_the_reason(models_hub, monkeypatch):
    from redspot.models import client as registry
    from redspot.models.validation import InvalidInput

    for name, reason in [("a/b", "may not contain '/'"), ("x" * 300, "at most 256"),
                         (" padded", "white space")]:
        r = api(models_hub, "alice", "POST", "registered-models/create", json={"name": name})
        assert r.status_code == 400 and reason in r.json()["message"], (name, r.text)
    assert api(models_hub, "alice", "POST", "registered-models/create",
               json={"name": "tagged-m"}).status_code == 200
    r = api(models_hub, "alice", "POST", "registered-models/set-tag",
            json={"name": "tagged-m", "key": "notes", "value": "x" * 100_001})
    assert r.status_code == 400 and "100000" in r.json()["message"], r.text
    r = api(models_hub, "alice", "POST", "registered-models/rename",
            json={"name": "tagged-m", "new_name": "with:colon"})
    assert r.status_code == 400 and "new_name" in r.json()["message"], r.text
    # the notebook's client says so before uploading anything
    registry_env(models_hub, "alice", monkeypatch)
    with pytest.raises(InvalidInput, match="100000"):
        registry.register(lambda x: x, "tagged-m", tags={"notes": "x" * 100_001}, lineage={})
    with pytest.raises(InvalidInput, match="finite number"):
        registry.register(lambda x: x, "tagged-m", metrics={"auc": "high"}, lineage={})
    with pytest.raises(InvalidInput, match="cannot register"):
        registry.register(object(), "tagged-m", lineage={})
    # someone else's model: refused before the upload, with whose it is
    registry_env(models_hub, "bob", monkeypatch)
    with pytest.raises(InvalidInput, match="belongs to alice"):
        registry.register(lambda x: x, "tagged-m", lineage={})


GRAPHQL = """query Q($input: MlflowSearchModelVersionsInput) {
  mlflowSearchModelVersions(input: $input) { modelVersions { version } } }"""


def test_private_models_stay_hidden_in_graphql_and_the_listing(models_hub):
    """The UI reads versions through MLflow's GraphQL endpoint: private ones are filtered
    there as in the REST searches; the permissions listing shows owners and rights."""
    for name in ("secret-m", "team-m"):
        assert api(models_hub, "alice", "POST", "registered-models/create",
                   json={"name": name}).status_code == 200
    url = f"{models_hub.url}/services/models/redspot/api/permissions"

    def patch(name, body):
        r = requests.patch(f"{url}/{name}", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {models_hub.tokens['alice']}"})
        assert r.status_code == 200, r.text

    patch("secret-m", {"private": True})
    patch("team-m", {"groups": ["ml"]})

    def listing(who):
        r = requests.get(url, headers={"Authorization": f"Bearer {models_hub.tokens[who]}"},
                         timeout=30)
        assert r.status_code == 200, r.text
        return {m["name"]: m for m in r.json()["models"]}, r.json()

    alices, _ = listing("alice")
    bobs, bob = listing("bob")
    assert "secret-m" in alices and "secret-m" not in bobs
    assert bob["user"] == "bob" and "ml" in bob["groups"]
    assert bobs["team-m"]["may_change"] is True and bobs["team-m"]["owner"] == "alice"

    # a version of each, from one run (uploaded through the service, as clients do)
    run = api(models_hub, "alice", "POST", "runs/create", json={"experiment_id": "0"})
    run_id = run.json()["run"]["info"]["run_id"]
    for name in ("secret-m", "team-m"):
        upload = requests.put(
            f"{models_hub.url}/services/models/api/2.0/mlflow-artifacts/artifacts/"
            f"0/{run_id}/artifacts/{name}/MLmodel", data=b"artifact_path: x\n", timeout=30,
            headers={"Authorization": f"Bearer {models_hub.tokens['alice']}"})
        assert upload.status_code == 200, upload.text
        r = api(models_hub, "alice", "POST", "model-versions/create",
                json={"name": name, "source": f"runs:/{run_id}/{name}", "run_id": run_id})
        assert r.status_code == 200, r.text

    def graphql(who, query, variables):
        r = requests.post(f"{models_hub.url}/services/models/graphql", timeout=30,
                          json={"query": query, "variables": variables},
                          headers={"Authorization": f"Bearer {models_hub.tokens[who]}"})
        assert r.status_code == 200, r.text
        assert not r.json().get("errors"), r.text
        return r.json()["data"]

    search = {"input": {"filter": f"run_id = '{run_id}'"}}
    for who, expected in (("alice", 2), ("bob", 1)):
        found = graphql(who, GRAPHQL, search)["mlflowSearchModelVersions"]["modelVersions"]
        assert len(found) == expected, (who, found)
        assert all(set(v) == {"version"} for v in found)  # the guard's field is taken out
    by_run = """query R($input: MlflowGetRunInput) { mlflowGetRun(input: $input) {
      run { mv: modelVersions { name version } } } }"""
    run_data = graphql("alice", by_run, {"input": {"runId": run_id}})
    assert {v["name"] for v in run_data["mlflowGetRun"]["run"]["mv"]} == {"secret-m", "team-m"}
    # the run holds the private model's files: it is as private as the model, to bob
    r = requests.post(f"{models_hub.url}/services/models/graphql", timeout=30,
                      json={"query": by_run, "variables": {"input": {"runId": run_id}}},
                      headers={"Authorization": f"Bearer {models_hub.tokens['bob']}"})
    assert r.status_code == 404, r.text
    for path in (f"0/{run_id}/artifacts/secret-m/MLmodel", f"0/{run_id}/artifacts/team-m/MLmodel"):
        r = requests.get(f"{models_hub.url}/services/models/api/2.0/mlflow-artifacts/"
                         f"artifacts/{path}", timeout=30,
                         headers={"Authorization": f"Bearer {models_hub.tokens['bob']}"})
        assert r.status_code == 404, r.text
    r = requests.post(f"{models_hub.url}/services/models/graphql", json={"query": "{ nope"},
                      headers={"Authorization": f"Bearer {models_hub.tokens['bob']}"},
                      timeout=30)
    assert r.status_code == 400 and "GraphQL" in r.json()["message"]


UPLOAD = textwrap.dedent("""
    import sys, torch
    from redspot.models import client as registry

    said = []

    def progress(done, total, what):
        if what == "uploading" and done > (8 << 20) and not said:
            said.append(1)
            print("UPLOADING", flush=True)

    # 256 MiB of weights: the upload takes a while
    registry.register(torch.nn.Linear(8192, 8192), sys.argv[1], progress=progress,
                      lineage={})
    print("REGISTERED", flush=True)
""")


def test_a_registry_killed_mid_upload_leaves_no_version_and_comes_back(models_hub, tmp_path):
    """The registry's process killed (SIGKILL) while a model's files upload, and the
    client too: JupyterHub starts the service again, what was registered before is
    there, no version of the half upload exists, and none may be made of it."""
    import signal
    import time

    pytest.importorskip("torch")
    hub = models_hub
    assert api(hub, "alice", "POST", "registered-models/create",
               json={"name": "kept-m"}).status_code == 200
    record = hub.data_dir / "models" / ".service.json"
    old = json.loads(record.read_text())["pid"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"{hub.url}/services/models",
           "MLFLOW_TRACKING_TOKEN": hub.tokens["alice"], "HOME": str(tmp_path)}
    client = subprocess.Popen([sys.executable, "-c", UPLOAD, "killed-m"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in client.stdout:
            lines.append(line)
            if line.startswith("UPLOADING"):
                break
        assert lines and lines[-1].startswith("UPLOADING"), "".join(lines)[-3000:]
        # the registry killed mid-upload, and its client with it: Redspot's client would
        # otherwise wait for the registry to come back and finish the upload
        os.kill(old, signal.SIGKILL)
        client.kill()
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()

    # JupyterHub starts it again, on the same port: what the killed one left is stopped
    def back():
        try:
            new = json.loads(record.read_text())["pid"]
        except (OSError, ValueError):
            return False
        return new != old and api(hub, "alice", "GET",
                                  "registered-models/search").status_code == 200
    started = time.monotonic()
    wait_for(back, 240, "the registry to come back")
    assert time.monotonic() - started < 240
    assert "Service models exited with status -9" in hub.log(tail=2000)

    assert api(hub, "alice", "GET", "registered-models/get",
               params={"name": "kept-m"}).status_code == 200
    assert api(hub, "alice", "GET", "registered-models/get",
               params={"name": "killed-m"}).status_code == 404
    versions = api(hub, "alice", "GET", "model-versions/search",
                   params={"filter": "name='killed-m'"}).json()
    assert versions.get("model_versions", []) == []
    # the logged model of the half upload: left unfinished, and no version may point at it
    found = api(hub, "alice", "POST", "logged-models/search", json={
        "experiment_ids": [api(hub, "alice", "GET", "experiments/get-by-name", params={
            "experiment_name": "alice/models"}).json()["experiment"]["experiment_id"]],
        "filter": "name = 'killed-m'"}).json()["models"]
    assert [m["info"]["status"] for m in found] == ["LOGGED_MODEL_PENDING"], found
    model_id = found[0]["info"]["model_id"]
    assert api(hub, "alice", "POST", "registered-models/create",
               json={"name": "killed-m"}).status_code == 200
    r = api(hub, "alice", "POST", "model-versions/create", json={
        "name": "killed-m", "source": f"models:/{model_id}", "model_id": model_id})
    assert r.status_code == 400 and "did not finish" in r.json()["message"], r.text
