"""Metrics: the hub's and each service's ``/metrics`` expose every metric of
``redspot.metrics`` to Prometheus' token alone, and each changes when its event happens
(against the attack suite's Redspot, with every service on)."""

from __future__ import annotations

import os
import pwd

import pytest
import requests

from redspot.metrics import CATALOG
from tests.helpers import wait_for
from tests.security.test_routes import ART, M, S, W, ask

ENDPOINTS = {"hub": "/hub/metrics", **{name: f"/services/{name}/metrics"
                                       for name in ("environments", "models", "sharing",
                                                    "warehouse")}}


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0) or 0.0


def test_every_metric_is_exposed_where_the_catalog_says(realm):
    for where, path in ENDPOINTS.items():
        found = realm.metrics(path)
        expected = {name for name, (_, _, _, w) in CATALOG.items() if w == where}
        assert expected <= set(found), (where, sorted(expected - set(found)))
        if where == "hub":  # JupyterHub's own are there too
            assert "jupyterhub_running_servers" in found


@pytest.mark.parametrize("path", ENDPOINTS.values())
def test_only_tokens_with_read_metrics_read_them(realm, path):
    """Prometheus' token and admins (JupyterHub's admin role has read:metrics); bob and
    no one else."""
    assert ask(realm, "admin", "GET", path).status_code == 200
    r = ask(realm, "bob", "GET", path)
    assert r.status_code == 403, (path, r.status_code, r.text[:200])
    r = requests.get(f"{realm.url}{path}", timeout=30, allow_redirects=False)
    assert r.status_code in (302, 401, 403), (path, r.status_code)


def test_the_services_metrics_change_when_their_events_happen(realm, alice_env):
    before = {where: realm.metrics(path) for where, path in ENDPOINTS.items()}

    # a warehouse credential
    assert ask(realm, "bob", "POST", f"{W}/connections/visiondb/credentials").status_code == 200
    # a share made and revoked
    from redspot.privileged.client import SocketHelper

    SocketHelper(str(realm.data_dir / "run" / "helper.sock")).call(
        "ensure_user", user="alice", groups=["vision"])  # her home, before any server
    home = realm.data_dir / "home" / "alice"
    account = pwd.getpwnam(f"{realm.prefix}alice")
    (home / "metrics.txt").write_text("counted")
    os.chown(home / "metrics.txt", account.pw_uid, account.pw_gid)
    r = ask(realm, "alice", "POST", f"{S}/shares", json={"path": "metrics.txt", "with": "bob"})
    assert r.status_code == 201, r.text
    assert ask(realm, "alice", "DELETE", f"{S}/shares/{r.json()['id']}").status_code == 200
    # a model version registered
    run = ask(realm, "alice", "POST", f"{M}/runs/create",
              json={"experiment_id": "0"}).json()["run"]["info"]
    art = f"0/{run['run_id']}/artifacts/model/MLmodel"
    assert ask(realm, "alice", "PUT", f"{ART}/{art}",
               data=b"artifact_path: model\n").status_code == 200
    assert ask(realm, "alice", "POST", f"{M}/registered-models/create",
               json={"name": "metrics-net"}).status_code == 200
    r = ask(realm, "alice", "POST", f"{M}/model-versions/create", json={
        "name": "metrics-net", "source": f"runs:/{run['run_id']}/model",
        "run_id": run["run_id"]})
    assert r.status_code == 200, r.text
    # a build that works and one that fails
    for name, package in (("metrics-ok", "six==1.16.0"),
                          ("metrics-bad", "redspot-no-such-package-zz==1.0")):
        r = ask(realm, "alice", "POST", "/services/environments/api/environments",
                json={"name": name, "python": [package], "env": {"METRICS": name}})
        assert r.status_code in (200, 202), r.text

        def ended(name=name):
            state = ask(realm, "alice", "GET",
                        f"/services/environments/api/environments/alice/{name}").json()
            return state["status"] in ("ready", "failed") and state["status"]

        wait_for(ended, 300, f"the build of {name}")

    after = {where: realm.metrics(path) for where, path in ENDPOINTS.items()}

    def grew(where, name, **labels):
        return value(after[where], name, **labels) - value(before[where], name, **labels)

    assert grew("warehouse", "redspot_warehouse_grants_total",
                connection="visiondb", engine="duckdb") == 1
    assert grew("sharing", "redspot_shares_total", action="made") == 1
    assert grew("sharing", "redspot_shares_total", action="revoked") == 1
    assert grew("models", "redspot_model_registrations_total") == 1
    assert grew("environments", "redspot_builds_total", builder="venv", outcome="ready") == 1, \
        {k: v for k, v in after["environments"].items() if "build" in str(k)}
    assert grew("environments", "redspot_builds_total", builder="venv", outcome="failed") == 1
    assert grew("environments", "redspot_build_duration_seconds_count",
                builder="venv", outcome="ready") == 1
    assert value(after["environments"], "redspot_builds_running") == 0


def test_the_hubs_metrics_count_spawns_and_servers(realm):
    """bob's server starts: counted by profile, with how long it took, and shown
    running with its idle time. (Ray nodes, caps and culls: tests/integration.)"""
    before = realm.metrics()
    token = realm.tokens["bob"]
    assert realm.spawn("bob", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        realm.wait_ready("bob")

        def counted():
            found = realm.metrics()
            return value(found, "redspot_spawns_total", profile="m5.xlarge",
                         outcome="ready") > value(before, "redspot_spawns_total",
                                                  profile="m5.xlarge", outcome="ready") \
                and found
        after = wait_for(counted, 30, "bob's spawn in the metrics")
        assert value(after, "redspot_spawn_duration_seconds_count", profile="m5.xlarge") \
            == value(before, "redspot_spawn_duration_seconds_count", profile="m5.xlarge") + 1
        assert value(after, "redspot_servers_running", profile="m5.xlarge") >= 1
        idle = [k for k in after if isinstance(k, tuple)
                and k[0] == "redspot_server_idle_seconds" and ("user", "bob") in k[1]]
        assert idle and dict(idle[0][1])["gpus"] == "0", idle
    finally:
        realm.stop_server("bob")
    gone = realm.metrics()
    assert not [k for k in gone if isinstance(k, tuple)
                and k[0] == "redspot_server_idle_seconds" and ("user", "bob") in k[1]]
