"""Every JSON body Redspot's services take, with ``null`` (and a wrong type) where each
value belongs: a 4xx that says what was wrong, never a server error.

Each row is a request a client makes; each of its body's fields is replaced in turn
(``null``, a string where a list or object belongs, a list where a string does), and
the whole body by ``null``, a list and a string.
"""

from __future__ import annotations

import json

import pytest
import requests

pytestmark = pytest.mark.integration

M = "/services/models/api/2.0/mlflow"
ROWS = [
    ("POST", "/services/environments/api/environments",
     {"name": "n", "python": ["six"], "debian": [], "env": {"A": "b"}, "description": "d",
      "base": "default", "team": False}),
    ("POST", "/services/sharing/api/shares",
     {"path": "notes.txt", "with": {"kind": "user", "name": "bob"}}),
    ("POST", "/services/warehouse/api/connections/demo/credentials", {"ttl": 600}),
    ("POST", f"{M}/experiments/create", {"name": "alice/nulls", "tags": []}),
    ("POST", f"{M}/runs/create", {"experiment_id": "0", "tags": [], "start_time": 1}),
    ("POST", f"{M}/runs/log-batch",
     {"run_id": "r", "metrics": [], "params": [], "tags": []}),
    ("POST", f"{M}/runs/search", {"experiment_ids": ["0"], "filter": "", "max_results": 5}),
    ("POST", f"{M}/registered-models/create", {"name": "nulls-m", "tags": []}),
    ("POST", f"{M}/model-versions/create",
     {"name": "nulls-m", "source": "runs:/r/model", "run_id": "r", "tags": []}),
    ("POST", f"{M}/model-versions/search", {"filter": "name='nulls-m'"}),
    ("PATCH", "/services/models/redspot/api/permissions/nulls-m",
     {"groups": ["vision"], "private": False}),
    ("POST", "/services/models/graphql", {"query": "{ __typename }", "variables": {}}),
    ("POST", "/user/alice/redspot/api/ray", {"action": "status"}),
    ("POST", "/user/alice/redspot/api/shares",
     {"path": "notes.txt", "with": {"kind": "user", "name": "bob"}}),
]


@pytest.fixture(scope="module")
def alice_up(realm):
    """alice's server, for the server extension's routes: started here if it is not,
    and then stopped again (the other modules of the suite start it themselves)."""
    r = realm.spawn("alice", realm.tokens["alice"], {"profile": "m5.xlarge"})
    assert r.status_code in (201, 202, 400), r.text  # 400: it runs already
    realm.wait_ready("alice")
    yield realm
    if r.status_code in (201, 202):
        realm.stop_server("alice")


def variants(body: dict):
    """The body with each field made wrong in turn, and wrong as a whole."""
    yield "null body", None
    yield "list body", []
    yield "string body", "x"
    for key, value in body.items():
        wrong = [None]
        wrong.append("x" if isinstance(value, (list, dict)) else [value])
        for bad in wrong:
            yield f"{key}={json.dumps(bad)}", {**body, key: bad}
        if isinstance(value, dict):
            for inner in value:
                yield f"{key}.{inner}=null", {**body, key: {**value, inner: None}}


@pytest.mark.parametrize("method, path, body", ROWS, ids=[f"{m} {p}" for m, p, _ in ROWS])
def test_wrong_values_are_a_clear_4xx_never_a_server_error(alice_up, method, path, body):
    realm = alice_up
    headers = {"Authorization": f"token {realm.tokens['alice']}",
               "Content-Type": "application/json"}
    errors = []
    for what, sent in variants(body):
        r = requests.request(method, realm.url + path, data=json.dumps(sent),
                             headers=headers, timeout=60, allow_redirects=False)
        if r.status_code >= 500:
            errors.append(f"{what}: {r.status_code} {r.text[:300]}")
    assert not errors, "\n".join(errors)
