"""The registry's guard and permissions, with MLflow's app and the hub at the edges."""

from __future__ import annotations

import asyncio
import json

import pytest

from redspot.models.app import HubGuard, Refused
from redspot.models.permissions import (
    ModelAcl,
    PermissionStore,
    Requester,
    may_change,
    may_read,
)

ALICE = Requester("alice", ("vision",))
BOB = Requester("bob", ("nlp",))
CAROL = Requester("carol", ("vision",))
ADMIN = Requester("root", (), admin=True)


@pytest.mark.parametrize("who, acl, change, read", [
    (ALICE, ModelAcl("m", "alice"), True, True),
    (BOB, ModelAcl("m", "alice"), False, True),
    (CAROL, ModelAcl("m", "alice", groups=("vision",)), True, True),
    (BOB, ModelAcl("m", "alice", private=True), False, False),
    (ADMIN, ModelAcl("m", "alice", private=True), True, True),
    (BOB, None, False, True),  # a model from before Redspot's records: admins change it
    (ADMIN, None, True, True),
])
def test_who_may_change_and_read(who, acl, change, read):
    assert may_change(who, acl) is change
    assert may_read(who, acl) is read


class Identity:
    """The hub at the edge: tokens are user names."""

    async def requester(self, headers, token=None):
        token = headers.get("authorization", "").partition(" ")[2] or token
        users = {u.name: u for u in (ALICE, BOB, CAROL, ADMIN)}
        if token not in users:
            raise Refused(401, "UNAUTHENTICATED", "a hub token is needed")
        return users[token]


class FakeMlflow:
    """MLflow's app at the edge: records what it was asked, answers canned JSON."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        body = (await receive()).get("body", b"")
        self.calls.append((scope["path"], scope["root_path"], body))
        if scope["path"].endswith("registered-models/search"):
            answer = {"registered_models": [{"name": "open"}, {"name": "secret"}]}
        else:
            answer = {}
        raw = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw})


def call(guard, who, method, path, body=None, query=b""):
    sent = []

    async def receive():
        return {"type": "http.request", "body": json.dumps(body).encode() if body else b"",
                "more_body": False}

    async def send(message):
        sent.append(message)

    headers = [(b"authorization", f"Bearer {who}".encode())] if who else []
    asyncio.run(guard({"type": "http", "method": method, "path": path, "headers": headers,
                       "query_string": query}, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"] or b"{}")


@pytest.fixture
def guarded(tmp_path):
    mlflow = FakeMlflow()
    store = PermissionStore(tmp_path / "p.sqlite")
    return HubGuard(mlflow, Identity(), store, "/services/models/"), mlflow, store


API = "/services/models/api/2.0/mlflow/"


def test_the_prefix_is_taken_off_and_nothing_passes_without_a_token(guarded):
    guard, mlflow, _ = guarded
    assert call(guard, None, "GET", API + "experiments/search")[0] == 401
    assert call(guard, "alice", "GET", "/elsewhere")[0] == 404
    assert call(guard, "alice", "GET", API + "experiments/search")[0] == 200
    assert mlflow.calls[-1][:2] == ("/api/2.0/mlflow/experiments/search", "/services/models")


def test_a_new_run_records_the_hub_user_whatever_the_client_says(guarded):
    guard, mlflow, _ = guarded
    call(guard, "bob", "POST", API + "runs/create",
         {"experiment_id": "0", "user_id": "alice",
          "tags": [{"key": "mlflow.user", "value": "alice"}, {"key": "k", "value": "v"}]})
    sent = json.loads(mlflow.calls[-1][2])
    assert sent["user_id"] == "bob"
    assert {"key": "mlflow.user", "value": "bob"} in sent["tags"]
    assert {"key": "k", "value": "v"} in sent["tags"] and len(sent["tags"]) == 2


def test_wrong_types_are_a_400_naming_the_field_and_nulls_are_not_given(guarded):
    guard, mlflow, _ = guarded
    before = len(mlflow.calls)
    for path, body, field in (
            ("runs/create", {"experiment_id": "0", "start_time": [1]}, "start_time"),
            ("runs/search", {"experiment_ids": ["0"], "max_results": "many"}, "max_results"),
            ("runs/log-batch", {"run_id": "r", "metrics": "loss"}, "metrics"),
            ("registered-models/create", {"name": "m", "tags": {"k": "v"}}, "tags")):
        status, answer = call(guard, "alice", "POST", API + path, body)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
        assert answer["message"].startswith(f"{path}: Failed to parse {field} field"), answer
    assert len(mlflow.calls) == before  # none of them reached MLflow
    call(guard, "bob", "POST", API + "runs/create",
         {"experiment_id": "0", "tags": None, "start_time": None})
    sent = json.loads(mlflow.calls[-1][2])
    assert "start_time" not in sent and sent["tags"] == [{"key": "mlflow.user",
                                                          "value": "bob"}]


def test_owners_are_recorded_and_follow_renames_and_deletes(guarded):
    guard, _, store = guarded
    assert call(guard, "alice", "POST", API + "registered-models/create", {"name": "m"})[0] == 200
    assert store.get("m").owner == "alice"
    status, body = call(guard, "bob", "POST", API + "model-versions/create",
                        {"name": "m", "source": "s"})
    assert status == 403 and "it belongs to alice" in body["message"]
    assert call(guard, "alice", "POST", API + "registered-models/rename",
                {"name": "m", "new_name": "m2"})[0] == 200
    assert store.get("m") is None and store.get("m2").owner == "alice"
    assert call(guard, "alice", "DELETE", API + "registered-models/delete",
                {"name": "m2"})[0] == 200
    assert store.get("m2") is None


def test_private_models_are_hidden_from_others(guarded):
    guard, _, store = guarded
    store.claim("open", "alice")
    store.claim("secret", "alice")
    store.update("secret", private=True)
    _, found = call(guard, "bob", "GET", API + "registered-models/search")
    assert [m["name"] for m in found["registered_models"]] == ["open"]
    _, found = call(guard, "alice", "GET", API + "registered-models/search")
    assert [m["name"] for m in found["registered_models"]] == ["open", "secret"]
    status, _ = call(guard, "bob", "GET", API + "registered-models/get", query=b"name=secret")
    assert status == 404
    status, _ = call(guard, "bob", "POST", API + "model-versions/create",
                     {"name": "secret", "source": "s"})
    assert status == 404  # not even told it exists


def test_the_owner_may_grant_a_group(guarded):
    guard, _, store = guarded
    store.claim("m", "alice")
    store.update("m", groups=["vision"])
    assert call(guard, "carol", "POST", API + "registered-models/alias",
                {"name": "m", "alias": "champion", "version": "1"})[0] == 200
    assert call(guard, "bob", "POST", API + "registered-models/alias",
                {"name": "m", "alias": "champion", "version": "1"})[0] == 403


def test_owners_grant_groups_and_privacy_through_the_permissions_endpoint(guarded):
    guard, _, store = guarded
    store.claim("m", "alice")
    path = "/services/models/redspot/api/permissions/m"
    status, body = call(guard, "alice", "PATCH", path, {"groups": ["vision"], "private": True})
    assert status == 200 and body == {"name": "m", "owner": "alice", "groups": ["vision"],
                                      "private": True}
    assert call(guard, "carol", "PATCH", path, {"private": False})[0] == 403
    assert call(guard, "bob", "GET", path)[0] == 404  # private: not even listed
    status, body = call(guard, "alice", "PATCH", path, {"groups": "vision"})
    assert status == 400 and "expected a list" in body["message"]
    status, body = call(guard, "alice", "PATCH", path, {"owner": "bob"})
    assert status == 400 and "allowed: groups, private" in body["message"]


def test_webhooks_are_for_admins(guarded):
    guard, _, _ = guarded
    status, body = call(guard, "alice", "POST", API + "webhooks",
                        {"name": "spy", "url": "http://example.com"})
    assert status == 403 and "for admins" in body["message"]
    assert call(guard, "alice", "GET", API + "webhooks")[0] == 403
    assert call(guard, "root", "GET", API + "webhooks")[0] == 200


class FakeOAuth:
    """The hub's OAuth at the edge."""

    login_url = "http://hub/hub/api/oauth2/authorize?client_id=service-models"

    def generate_pkce_code_challenge(self):
        return "verifier", "challenge", "S256"

    async def token_for_code(self, code, code_verifier=None, sync=False):
        assert code_verifier == "verifier"
        return {"good-code": "alice", "stale-code": "revoked"}[code]


def test_browsers_sign_in_through_the_hub_and_come_back(tmp_path):
    from redspot.models.login import BrowserLogin

    login = BrowserLogin(FakeOAuth(), b"k" * 32, "/services/models")
    guard = HubGuard(FakeMlflow(), Identity(), PermissionStore(tmp_path / "p.sqlite"),
                     "/services/models/", login=login)

    def browse(path, cookies="", query=b""):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        headers = [(b"accept", b"text/html"), (b"cookie", cookies.encode())]
        asyncio.run(guard({"type": "http", "method": "GET", "path": path, "headers": headers,
                           "query_string": query}, receive, send))
        out = dict(sent[0])
        out["cookies"] = [v.decode().split(";")[0] for k, v in sent[0]["headers"]
                          if k == b"set-cookie"]
        out["location"] = dict(sent[0]["headers"]).get(b"location", b"").decode()
        return out

    first = browse("/services/models/#/models")
    assert first["status"] == 302 and first["location"].startswith(FakeOAuth.login_url)
    assert "code_challenge=challenge" in first["location"]
    state_cookie = first["cookies"][0]
    state = first["location"].split("state=")[1].split("&")[0]
    # a forged state is refused
    bad = browse("/services/models/oauth_callback", state_cookie,
                 b"code=good-code&state=forged")
    assert bad["status"] == 400
    back = browse("/services/models/oauth_callback", state_cookie,
                  f"code=good-code&state={state}".encode())
    assert back["status"] == 302 and back["location"] == "/services/models/#/models"
    session = back["cookies"][0]
    assert browse("/services/models/", session)["status"] == 200
    # a session whose token the hub no longer knows goes through the sign-in again
    again = browse("/services/models/oauth_callback", state_cookie,
                   f"code=stale-code&state={state}".encode())
    assert browse("/services/models/", again["cookies"][0])["status"] == 302


def test_names_are_checked_before_mlflow_sees_them(guarded):
    guard, mlflow, _ = guarded
    before = len(mlflow.calls)
    for name, reason in [("a/b", "'/'"), ("x" * 257, "at most 256"), ("", "needs a name"),
                         ("tab\there", "control characters")]:
        status, body = call(guard, "alice", "POST", API + "registered-models/create",
                            {"name": name})
        assert status == 400 and reason in body["message"], (name, body)
    assert len(mlflow.calls) == before


def test_a_version_of_an_unfinished_upload_is_refused(tmp_path):
    asked = []

    def unfinished(data):
        asked.append(data)
        return "the logged model m-1 is PENDING: its upload did not finish"

    store = PermissionStore(tmp_path / "p.sqlite")
    store.claim("m", "alice")
    mlflow = FakeMlflow()
    guard = HubGuard(mlflow, Identity(), store, "/services/models/",
                     unfinished_upload=unfinished)
    status, body = call(guard, "alice", "POST", API + "model-versions/create",
                        {"name": "m", "source": "models:/m-1", "model_id": "m-1"})
    assert status == 400 and "PENDING" in body["message"]
    assert asked == [{"name": "m", "source": "models:/m-1", "model_id": "m-1"}]
    assert mlflow.calls == []
    # someone without the right is refused before the store is even asked
    assert call(guard, "bob", "POST", API + "model-versions/create",
                {"name": "m", "source": "models:/m-1"})[0] == 403
    assert len(asked) == 1


def test_the_listing_says_whose_models_and_who_may_change_them(guarded):
    guard, _, store = guarded
    store.claim("a-open", "alice")
    store.claim("a-vision", "alice")
    store.update("a-vision", groups=["vision"])
    store.claim("a-secret", "alice")
    store.update("a-secret", private=True)
    status, carol = call(guard, "carol", "GET", "/services/models/redspot/api/permissions")
    assert status == 200 and carol["user"] == "carol" and carol["groups"] == ["vision"]
    assert [(m["name"], m["may_change"]) for m in carol["models"]] == [
        ("a-open", False), ("a-vision", True)]
    _, alice = call(guard, "alice", "GET", "/services/models/redspot/api/permissions")
    assert [m["name"] for m in alice["models"]] == ["a-open", "a-secret", "a-vision"]


def test_graphql_answers_lose_the_versions_of_unreadable_models():
    from graphql import parse, print_ast

    from redspot.models.app import _name_model_versions, _without_unreadable

    document = parse("""query { mlflowGetRun(input: {runId: "r"}) {
        run { mv: modelVersions { version } } } ...F }
        fragment F on Query { mlflowSearchModelVersions(input: {}) {
        modelVersions { version name } } }""")
    _name_model_versions(document)
    printed = print_ast(document)
    assert printed.count("redspotModelName_: name") == 2  # the aliased one and the fragment
    answer = {"mlflowGetRun": {"run": {"mv": [
        {"version": "1", "redspotModelName_": "open"},
        {"version": "2", "redspotModelName_": "secret"}]}},
        "mlflowSearchModelVersions": {"modelVersions": [
            {"version": "3", "name": "secret", "redspotModelName_": "secret"}]}}
    kept = _without_unreadable(answer, lambda name: name != "secret")
    assert kept == {"mlflowGetRun": {"run": {"mv": [{"version": "1"}]}},
                    "mlflowSearchModelVersions": {"modelVersions": []}}


# --- deny by default: experiments, runs, logged models, artifacts -------------------------

RUN_A = "a" * 32
RUN_B = "b" * 32
RUN_C = "e" * 32
LOGGED_A = "m-" + "c" * 32
ART = "/services/models/api/2.0/mlflow-artifacts/artifacts/"


@pytest.fixture
def owned(guarded):
    """alice owns experiment 1, runs RUN_A and RUN_C in it and logged model LOGGED_A; bob
    owns RUN_B; alice's private model ``secret`` comes from RUN_A."""
    guard, mlflow, store = guarded
    store.own("experiment", "1", "alice")
    store.own("run", RUN_A, "alice")
    store.own("logged", LOGGED_A, "alice")
    store.own("run", RUN_B, "bob")
    store.own("run", RUN_C, "alice")
    store.claim("secret", "alice")
    store.update("secret", private=True)
    store.link("run", RUN_A, "secret")
    return guarded


@pytest.mark.parametrize("who, method, path, body, query, status", [
    # a route not in the table is refused, whoever asks
    ("alice", "POST", API + "traces/delete-traces", {}, b"", 403),
    ("root", "GET", "/services/models/api/3.0/mlflow/scorers/list", None, b"", 403),
    ("bob", "POST", "/services/models/gateway/openai/v1/chat/completions", {}, b"", 403),
    # admins only
    ("bob", "GET", "/services/models/api/3.0/mlflow/gateway/secrets/list", None, b"", 403),
    ("root", "GET", "/services/models/api/3.0/mlflow/gateway/secrets/list", None, b"", 200),
    # runs: their owner changes them
    ("bob", "POST", API + "runs/log-metric", {"run_id": RUN_C, "key": "k", "value": 1}, b"", 403),
    ("bob", "POST", API + "runs/log-metric", {"runId": RUN_C, "key": "k", "value": 1}, b"", 403),
    ("bob", "POST", API + "runs/delete", {"run_uuid": RUN_C}, b"", 403),
    ("bob", "POST", API + "runs/delete", {"run_id": RUN_A}, b"", 404),  # private: unseen
    ("alice", "POST", API + "runs/log-metric", {"run_id": RUN_A, "key": "k", "value": 1},
     b"", 200),
    ("root", "POST", API + "runs/delete", {"run_id": RUN_A}, b"", 200),
    ("bob", "POST", API + "runs/set-tag", {"run_id": RUN_B, "key": "mlflow.user",
                                           "value": "alice"}, b"", 400),
    ("bob", "POST", API + "runs/log-batch", {"run_id": RUN_B, "tags": [
        {"key": "mlflow.user", "value": "alice"}]}, b"", 400),
    ("bob", "POST", API + "runs/update", {"run_id": "d" * 32}, b"", 403),  # no owner known
    # experiments: runs go to one's own or the Default one
    ("bob", "POST", API + "runs/create", {"experiment_id": "1"}, b"", 403),
    ("bob", "POST", API + "runs/create", {"experimentId": "1"}, b"", 403),
    ("alice", "POST", API + "runs/create", {"experiment_id": "1"}, b"", 200),
    ("bob", "POST", API + "experiments/update", {"experiment_id": "1", "new_name": "x"},
     b"", 403),
    ("alice", "POST", API + "experiments/delete", {"experiment_id": "0"}, b"", 403),
    ("bob", "POST", API + "experiments/create", {"name": "x",
                                                 "artifact_location": "file:///etc"}, b"", 400),
    ("bob", "POST", API + "experiments/create", {"name": "alice/models"}, b"", 403),
    ("bob", "POST", API + "experiments/create", {"name": "bob/models"}, b"", 200),
    # a private model's run is private too
    ("bob", "GET", API + "runs/get", None, f"run_id={RUN_A}".encode(), 404),
    ("carol", "GET", API + "metrics/get-history-bulk-interval", None,
     f"run_ids={RUN_B}&run_ids={RUN_A}&metric_key=loss".encode(), 404),
    ("alice", "GET", API + "runs/get", None, f"run_id={RUN_A}".encode(), 200),
    ("bob", "GET", API + "runs/get", None, f"run_id={RUN_B}".encode(), 200),
    # logged models
    ("bob", "PATCH", API + f"logged-models/{LOGGED_A}", {"status": "READY"}, b"", 403),
    ("bob", "POST", API + "logged-models", {"experiment_id": "0", "source_run_id": RUN_C},
     b"", 403),
    ("alice", "PATCH", API + f"logged-models/{LOGGED_A}", {"status": "READY"}, b"", 200),
    # artifacts: by the run or logged model their path belongs to
    ("bob", "PUT", ART + f"1/{RUN_C}/artifacts/model/model.pkl", {}, b"", 403),
    ("bob", "DELETE", ART + f"1/{RUN_C}/artifacts/model/model.pkl", None, b"", 403),
    ("bob", "PUT", ART + f"1/{RUN_A}/artifacts/model/model.pkl", {}, b"", 404),
    ("bob", "PUT", ART + f"1/models/{LOGGED_A}/artifacts/MLmodel", {}, b"", 403),
    ("bob", "GET", ART + f"1/{RUN_A}/artifacts/model/model.pkl", None, b"", 404),
    ("bob", "GET", ART[:-1], None, f"path=1/{RUN_A}/artifacts".encode(), 404),
    ("bob", "GET", ART[:-1], None, b"path=1", 403),
    ("bob", "GET", ART + "1/../2/x", None, b"", 403),
    ("alice", "PUT", ART + f"1/{RUN_A}/artifacts/model/model.pkl", {}, b"", 200),
    ("bob", "PUT", ART + f"0/{RUN_B}/artifacts/x.txt", {}, b"", 200),
    # a model read names the model in the query, whatever the body says
    ("bob", "GET", API + "registered-models/get", {}, b"name=secret", 404),
    ("bob", "GET", "/services/models/model-versions/get-artifact", None,
     b"name=secret&version=1&path=MLmodel", 404),
])
def test_each_route_checks_its_object(owned, who, method, path, body, query, status):
    guard, _, _ = owned
    got, answer = call(guard, who, method, path, body, query=query)
    assert got == status, answer


def test_a_version_may_not_publish_what_its_maker_may_not_read(owned):
    guard, _, store = owned
    store.claim("bobs", "bob")
    status, answer = call(guard, "bob", "POST", API + "model-versions/create",
                          {"name": "bobs", "source": f"runs:/{RUN_A}/model"})
    assert status == 404, answer
    status, _ = call(guard, "bob", "POST", API + "model-versions/create",
                     {"name": "bobs", "source": f"runs:/{RUN_B}/model", "run_id": RUN_B})
    assert status == 200
    assert store.linked_models("run", RUN_B) == ["bobs"]


def test_renames_by_another_spelling_still_follow(owned):
    guard, _, store = owned
    store.claim("m", "alice")
    assert call(guard, "alice", "POST", API + "registered-models/rename",
                {"name": "m", "newName": "m2"})[0] == 200
    assert store.get("m") is None and store.get("m2").owner == "alice"
    status, answer = call(guard, "alice", "POST", API + "registered-models/rename",
                          {"name": "m2", "newName": "x", "new_name": "y"})
    assert status == 400 and "twice" in answer["message"]


def test_searches_leave_out_a_private_models_runs(owned):
    guard, mlflow, _ = owned
    original = mlflow.__call__

    async def answer(scope, receive, send):
        if scope["path"].endswith("runs/search"):
            await receive()
            raw = json.dumps({"runs": [{"info": {"run_id": RUN_A}},
                                       {"info": {"run_id": RUN_B}}]}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": raw})
            return None
        return await original(scope, receive, send)

    guard.app = answer
    _, found = call(guard, "bob", "POST", API + "runs/search", {"experiment_ids": ["0"]})
    assert [r["info"]["run_id"] for r in found["runs"]] == [RUN_B]
    _, found = call(guard, "alice", "POST", API + "runs/search", {"experiment_ids": ["0"]})
    assert len(found["runs"]) == 2


def test_a_browser_session_changes_nothing_from_another_sites_page(tmp_path):
    from redspot.models.login import BrowserLogin

    class Hub:
        login_url = "http://hub/hub/api/oauth2/authorize?client_id=x"

    mlflow = FakeMlflow()
    login = BrowserLogin(Hub(), b"s" * 32, "/services/models")
    guard = HubGuard(mlflow, Identity(), PermissionStore(tmp_path / "p.sqlite"),
                     "/services/models/", login=login)
    session = login.session_cookie("alice", secure=False).split(";")[0]

    def post(origin):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b'{"name": "x"}', "more_body": False}

        async def send(message):
            sent.append(message)

        headers = [(b"cookie", session.encode()), (b"host", b"hub.example")]
        if origin:
            headers.append((b"origin", origin.encode()))
        asyncio.run(guard({"type": "http", "method": "POST", "headers": headers,
                           "path": API + "experiments/create", "query_string": b""},
                          receive, send))
        return sent[0]["status"]

    assert post("http://evil.example") == 403
    assert post(None) == 403
    assert post("http://hub.example") == 200


def _mlflow_routes() -> set[tuple[str, str]]:
    """(method, path) of every route MLflow's server has, its parameters filled in."""
    import re

    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import artifact_router, server_info_router

    routes = set()
    for rule in flask_app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "x", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((method, path))
    for router in (artifact_router, server_info_router):
        for route in router.routes:
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            routes.update((m, path) for m in route.methods)
    return routes


def test_every_row_of_the_route_table_is_a_route_mlflow_has():
    """A row no MLflow route matches (a typo, a route MLflow renamed) would refuse what
    users need; the table must name MLflow's routes as they are."""
    from redspot.models import routes

    mlflow_routes = _mlflow_routes()
    for row in routes.ROUTES:
        if row.kind in ("absent", "fixed"):  # answered by the guard itself
            continue
        for method in row.methods:
            assert any(m == method and row.pattern.match(routes.normalize(p))
                       for m, p in mlflow_routes), (method, row.pattern.pattern)


def test_mlflows_routes_that_reach_keys_traces_or_other_servers_are_not_served():
    from redspot.models import routes

    served = {(m, p) for m, p in _mlflow_routes()
              if (found := routes.find(m, p)) and found[0].kind != "admin"}
    for method, path in served:
        assert not any(word in path for word in (
            "gateway", "webhooks", "traces", "scorer", "jobs", "workspaces", "secrets",
            "presigned", "assistant", "demo", "prompt-optimization", "genai")), (method, path)
        assert method == "GET" or "ui-telemetry" not in path  # read "telemetry is off" only


def test_graphql_reads_of_a_private_models_runs_are_refused_or_filtered(owned):
    from graphql import parse

    from redspot.models.app import _graphql_run_ids, _without_hidden_runs

    guard, _, store = owned
    query = 'query Q($i: MlflowGetRunInput) { mlflowGetRun(input: $i) { run { info { runId } } } }'
    status, _ = call(guard, "bob", "POST", "/services/models/graphql",
                     {"query": query, "variables": {"i": {"runId": RUN_A}}})
    assert status == 404
    status, _ = call(guard, "bob", "POST", "/services/models/graphql",
                     {"query": f'{{ mlflowGetRun(input: {{runId: "{RUN_A}"}}) '
                               '{ run { info { runId } } } }'})
    assert status == 404
    assert call(guard, "alice", "POST", "/services/models/graphql",
                {"query": query, "variables": {"i": {"runId": RUN_A}}})[0] == 200
    document = parse('{ a: mlflowSearchRuns(input: {runIds: ["x", "y"]}) { runs { info '
                     '{ runId } } } }')
    assert _graphql_run_ids(document, {"v": [{"run_id": "z"}]}) == {"x", "y", "z"}
    answer = {"a": {"runs": [{"info": {"runId": RUN_A}}, {"info": {"runId": RUN_B}}]}}
    kept = _without_hidden_runs(answer, lambda run: store.hidden_from(BOB, "run", run))
    assert kept == {"a": {"runs": [{"info": {"runId": RUN_B}}]}}


def test_a_browser_session_changes_no_permissions_from_another_sites_page(tmp_path):
    from redspot.models.login import BrowserLogin

    class Hub:
        login_url = "http://hub/hub/api/oauth2/authorize?client_id=x"

    store = PermissionStore(tmp_path / "p.sqlite")
    store.claim("m", "alice")
    login = BrowserLogin(Hub(), b"s" * 32, "/services/models")
    guard = HubGuard(FakeMlflow(), Identity(), store, "/services/models/", login=login)
    session = login.session_cookie("alice", secure=False).split(";")[0]
    sent = []

    async def receive():
        return {"type": "http.request", "body": b'{"private": true}', "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(guard({"type": "http", "method": "PATCH", "query_string": b"",
                       "path": "/services/models/redspot/api/permissions/m",
                       "headers": [(b"cookie", session.encode()), (b"host", b"hub.example"),
                                   (b"origin", b"http://evil.example")]}, receive, send))
    assert sent[0]["status"] == 403
    assert store.get("m").private is False


def test_the_ui_page_gets_first_visit_settings_and_a_way_back_to_the_hub():
    from redspot.models import ui

    index = (b'<!doctype html><html><head><meta charset="utf-8"/><title>MLflow</title>'
             b'<script src="static-files/main.js"></script></head><body><div id="root">'
             b"</div></body></html>")
    page = ui.with_additions(index, "/hub/home").decode()
    # before MLflow's own scripts: its preferences are read when they start
    assert page.index("mlflow.assistant.panelOpen_v1") < page.index("static-files/main.js")
    assert "localStorage.getItem(k)===null" in page  # a user's own choice is kept
    assert '<a id="redspot-home" href="/hub/home"' in page
    assert ui.with_additions(b"<html>other</html>", "/hub/home") == b"<html>other</html>"
    assert '"><script>' not in ui.with_additions(index, '"><script>').decode()


def test_mlflow_is_told_its_own_address_as_host():
    import asyncio

    from redspot.models.app import own_host

    seen = {}

    async def mlflow(scope, receive, send):
        seen.update(scope)

    scope = {"type": "http", "server": ("127.0.0.1", 9200), "path": "/",
             "headers": [(b"host", b"hub.example.com"), (b"accept", b"*/*")]}
    asyncio.run(own_host(mlflow)(scope, None, None))
    assert dict(seen["headers"])[b"host"] == b"127.0.0.1:9200"
    assert (b"accept", b"*/*") in seen["headers"]
    assert dict(scope["headers"])[b"host"] == b"hub.example.com"  # the guard's own view
