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
         {"experiment_id": "1", "user_id": "alice",
          "tags": [{"key": "mlflow.user", "value": "alice"}, {"key": "k", "value": "v"}]})
    sent = json.loads(mlflow.calls[-1][2])
    assert sent["user_id"] == "bob"
    assert {"key": "mlflow.user", "value": "bob"} in sent["tags"]
    assert {"key": "k", "value": "v"} in sent["tags"] and len(sent["tags"]) == 2


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
