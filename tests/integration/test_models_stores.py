"""The model registry on the stores it has on Kubernetes: runs and models in a real
PostgreSQL server, files in a real S3 API server (moto), behind the same guard.

The hub runs the registry as `redspot up` does, with ``backend_store_uri`` and
``artifacts_destination`` as the chart gives them; the database's password and the S3
endpoint reach the service's environment through ``jupyterhub_config.d`` (the chart's
``services.models.secretEnv`` and the pod's IAM role on EKS).
"""

from __future__ import annotations

import psycopg
import pytest
import requests

from tests.helpers import wait_for
from tests.servers import postgres, postgres_missing

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(postgres_missing()), reason=postgres_missing() or "")]

USERS = {"alice": "alice-password-1", "bob": "bob-password-22"}
PASSWORD = "mlflow-db-password"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "registry", "AWS_SECRET_ACCESS_KEY": "registry-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    from tests.servers import s3_server

    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def stores_hub(test_root, account_prefix, s3):
    import boto3

    from tests.conftest import HubPool

    boto3.client("s3", endpoint_url=s3, region_name="us-east-1",
                 aws_access_key_id="registry",
                 aws_secret_access_key="registry-secret").create_bucket(Bucket="models")
    with postgres() as pg:
        pg.sql(f"CREATE ROLE mlflow LOGIN PASSWORD '{PASSWORD}'")
        pg.sql("CREATE DATABASE mlflow OWNER mlflow")
        environment = {**S3_KEYS, "PGPASSWORD": PASSWORD, "MLFLOW_S3_ENDPOINT_URL": s3}
        pool = HubPool(test_root, account_prefix, "stores")
        try:
            hub = pool({"services": {"models": {
                "enabled": True,
                "backend_store_uri": f"postgresql://mlflow@127.0.0.1:{pg.port}/mlflow",
                "artifacts_destination": "s3://models/registry"}},
                "groups": {"ml": {"users": ["alice", "bob"]}}}, users=USERS, config_d={
                "60-stores.py": "for service in c.JupyterHub.services:\n"
                                "    if service['name'] == 'models':\n"
                                f"        service['environment'].update({environment!r})\n"})
            hub.tokens = {name: hub.user_token(name) for name in (*USERS, "admin")}
            hub.pg, hub.s3 = pg, s3
            wait_for(lambda: api(hub, "alice", "GET", "registered-models/search")
                     .status_code == 200, 240, "the model registry on PostgreSQL")
            yield hub
        finally:
            pool.close()


def api(hub, who, method, call, **kwargs):
    return requests.request(method, f"{hub.url}/services/models/api/2.0/mlflow/{call}",
                            headers={"Authorization": f"Bearer {hub.tokens[who]}"},
                            timeout=60, **kwargs)


def artifact(hub, who, method, path, **kwargs):
    return requests.request(
        method, f"{hub.url}/services/models/api/2.0/mlflow-artifacts/artifacts/{path}",
        headers={"Authorization": f"Bearer {hub.tokens[who]}"}, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def private_model(stores_hub):
    """alice's private model, version 1 from a run whose files she uploaded."""
    hub = stores_hub
    assert api(hub, "alice", "POST", "registered-models/create",
               json={"name": "vault-m"}).status_code == 200
    r = requests.patch(f"{hub.url}/services/models/redspot/api/permissions/vault-m",
                       json={"private": True}, timeout=30,
                       headers={"Authorization": f"Bearer {hub.tokens['alice']}"})
    assert r.status_code == 200, r.text
    run = api(hub, "alice", "POST", "runs/create", json={"experiment_id": "0"})
    run_id = run.json()["run"]["info"]["run_id"]
    path = f"0/{run_id}/artifacts/model/MLmodel"
    upload = artifact(hub, "alice", "PUT", path, data=b"artifact_path: model\n")
    assert upload.status_code == 200, upload.text
    r = api(hub, "alice", "POST", "model-versions/create",
            json={"name": "vault-m", "source": f"runs:/{run_id}/model", "run_id": run_id})
    assert r.status_code == 200, r.text
    return {"run": run_id, "path": path}


def test_runs_and_models_are_in_postgresql_and_files_in_s3(stores_hub, private_model):
    import boto3

    with psycopg.connect(stores_hub.pg.dsn("mlflow", PASSWORD, "mlflow")) as con:
        models = [row[0] for row in con.execute("SELECT name FROM registered_models")]
        runs = [row[0] for row in con.execute("SELECT run_uuid FROM runs")]
    assert "vault-m" in models and private_model["run"] in runs
    s3 = boto3.client("s3", endpoint_url=stores_hub.s3, region_name="us-east-1",
                      aws_access_key_id="registry", aws_secret_access_key="registry-secret")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="models").get("Contents", [])]
    assert f"registry/{private_model['path']}" in keys, keys
    # and nothing of the registry's own on the service's disk
    assert not (stores_hub.data_dir / "models" / "mlflow.sqlite").exists()


def test_the_guard_holds_with_these_stores(stores_hub, private_model):
    hub = stores_hub
    # alice reads her model and its file back from S3
    assert api(hub, "alice", "GET", "registered-models/get",
               params={"name": "vault-m"}).status_code == 200
    mine = artifact(hub, "alice", "GET", private_model["path"])
    assert mine.status_code == 200 and mine.content == b"artifact_path: model\n"
    # bob, in her group, neither sees it nor its run's files, nor changes them
    assert api(hub, "bob", "GET", "registered-models/get",
               params={"name": "vault-m"}).status_code == 404
    assert artifact(hub, "bob", "GET", private_model["path"]).status_code == 404
    assert artifact(hub, "bob", "PUT", private_model["path"],
                    data=b"bob was here").status_code in (403, 404)
    assert api(hub, "bob", "DELETE", "registered-models/delete",
               json={"name": "vault-m"}).status_code in (403, 404)
    found = api(hub, "bob", "GET", "registered-models/search").json()
    assert "vault-m" not in [m["name"] for m in found.get("registered_models", [])]
    # the file is as alice left it
    assert artifact(hub, "alice", "GET", private_model["path"]).content == \
        b"artifact_path: model\n"
