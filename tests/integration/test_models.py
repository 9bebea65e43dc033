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
    hub = pool({"services": {"models": {"enabled": True}}}, users=USERS)
    hub.tokens = {name: hub.user_token(name) for name in (*USERS, "admin")}
    wait_for(lambda: api(hub, "alice", "GET", "registered-models/search").status_code == 200,
             180, "the model registry")
    yield hub
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


def test_a_users_server_reaches_the_registry_with_mlflow_unchanged(models_hub):
    """In alice's Redspot server, MLflow's client finds the registry and her token in the
    environment the spawner set: no configuration in the notebook."""
    from tests.kernels import run_cell

    token = models_hub.tokens["alice"]
    assert models_hub.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        models_hub.wait_ready("alice")
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
    finally:
        models_hub.stop_server("alice")


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
