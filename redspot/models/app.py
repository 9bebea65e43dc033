"""MLflow's server behind the hub: every request authenticated, registry changes checked.

``create_app`` is MLflow's own extension point for a custom server app (the ``mlflow.app``
entry point ``redspot``: ``mlflow server --app-name redspot``). It wraps the whole ASGI
app, MLflow's FastAPI routes (artifacts, traces, server info) as well as its Flask app,
in :class:`HubGuard`:

- the service lives at ``/services/models/`` behind the hub's proxy; the prefix is taken
  off before MLflow sees the path, so its UI, REST API and artifact routes all work as
  they do at ``/``;
- a request must carry a hub token (``Authorization: Bearer|token …``, as MLflow's
  client sends ``MLFLOW_TRACKING_TOKEN``), or a browser session made by signing in
  through the hub (``login.py``), of a user allowed to reach this service, or it gets
  401/403 (a browser page: the hub's sign-in) and MLflow never sees it;
- the identity MLflow records for runs is the hub user's: ``user_id`` and the
  ``mlflow.user`` tag of a new run are set by the service, whatever the client sent;
- registered models have owners (``permissions.py``): creating one records its owner;
  new versions, aliases, tags, renames and deletes need the owner, a granted group or an
  admin; a private model is hidden from everyone else's reads and searches. The owner
  grants groups and sets privacy at ``redspot/api/permissions/<model>`` (GET, PATCH);
  ``redspot/api/permissions`` lists every model the requester may read, with its owner;
- MLflow's GraphQL endpoint (the UI reads runs and versions through it) gets the same
  filtering: every ``modelVersions`` selection is made to carry the model's name, and
  versions of private models the requester may not read are taken out of the answer;
- a new version must point at a finished upload (``unfinished_upload``): a logged model
  still PENDING or FAILED (an upload that failed or was interrupted), or a source
  without an ``MLmodel`` file, is refused, so no version points at missing artifacts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

from ..hub import scopes
from ..metrics import service_metrics
from ..origin import SAFE_METHODS, cross_origin_problem
from . import routes, ui
from .permissions import (
    DEFAULT_EXPERIMENT,
    ModelAcl,
    PermissionStore,
    Requester,
    may_change,
    may_change_object,
    may_read,
)
from .validation import name_problem

log = logging.getLogger("redspot.models")

#: JSON bodies read to check a registry call (artifact uploads are never buffered).
MAX_JSON_BODY = 16 << 20
_API = re.compile(r"^/(?:ajax-)?api/2\.0/mlflow/(?P<call>[a-z-]+/[a-z-]+)$")
#: Redspot's own endpoint: a model's owner, granted groups and privacy.
_PERMISSIONS = re.compile(r"^/redspot/api/permissions(?:/(?P<name>[^/]+))?/?$")
#: Artifact uploads reach MLflow in pieces of this size (see ``_coalesced``).
UPLOAD_PIECE = 1 << 20
#: The field the guard adds to every ``modelVersions`` selection of a GraphQL query.
_GRAPHQL_NAME = "redspotModelName_"

#: Searches whose results leave out private models of others.
SEARCHES = {"registered-models/search": "registered_models",
            "model-versions/search": "model_versions"}


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class HubIdentity:
    """Who is asking, as the hub says: from the request's token (HubAuth, cached)."""

    def __init__(self, hub_auth=None):
        if hub_auth is None:
            from jupyterhub.services.auth import HubOAuth

            # a revoked token (a removed user's) stops working within seconds
            hub_auth = HubOAuth(cache_max_age=5)
        self.hub_auth = hub_auth

    async def requester(self, headers: dict[str, str], token: str | None = None) -> Requester:
        token = _token_from(headers) or token
        if not token:
            raise Refused(401, "UNAUTHENTICATED",
                          "a hub token is needed: set MLFLOW_TRACKING_TOKEN (Redspot servers "
                          "have it) or send 'Authorization: Bearer <token>'")
        model = await self.hub_auth.user_for_token(token, sync=False)
        if not model:
            raise Refused(401, "UNAUTHENTICATED", "the hub does not know this token")
        if model.get("kind", "user") != "user":
            raise Refused(403, "PERMISSION_DENIED", "only hub users may use the registry")
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise Refused(403, "PERMISSION_DENIED",
                          f"{model['name']} may not use this service "
                          f"(needs {', '.join(sorted(self.hub_auth.access_scopes))})")
        return Requester(model["name"], tuple(model.get("groups") or ()),
                         bool(model.get("admin")))


    async def metrics_reader(self, headers: dict[str, str]) -> str:
        """The name of who asks for the metrics, if their token has ``read:metrics``."""
        token = _token_from(headers)
        model = await self.hub_auth.user_for_token(token, sync=False) if token else None
        if not model:
            raise Refused(401, "UNAUTHENTICATED", "a hub token with read:metrics is needed")
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model) \
                or scopes.METRICS not in (model.get("scopes") or ()):
            raise Refused(403, "PERMISSION_DENIED",
                          f"{model['name']} may not read the metrics (needs {scopes.METRICS})")
        return model["name"]


def _token_from(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


class HubGuard:
    """The ASGI app in front of MLflow's (see the module's docstring)."""

    def __init__(self, app, identity: HubIdentity, store: PermissionStore, prefix: str,
                 login=None, unfinished_upload=None, local_artifact=None,
                 hub_home: str = "/hub/home"):
        self.app = app
        self.hub_home = hub_home  # the UI's link back to the hub
        self.identity = identity
        self.store = store
        self.prefix = "/" + prefix.strip("/")
        self.login = login  # a BrowserLogin: the UI in a browser
        # ``(request data) -> reason | None``, blocking: why a new version's source is
        # not a finished upload (see ``unfinished_upload`` below)
        self.unfinished_upload = unfinished_upload
        # ``(artifact path) -> local file | None``, blocking: a download the guard sends
        # itself, in large reads (see ``local_artifact`` below)
        self.local_artifact = local_artifact

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return  # websockets: not served (closing the connection refuses them)
        path = scope["path"]
        if path == self.prefix or path.startswith(self.prefix + "/"):
            inner = path[len(self.prefix):] or "/"
        else:
            return await _reply(send, 404, "RESOURCE_DOES_NOT_EXIST",
                                f"the model registry is at {self.prefix}/")
        scope = {**scope, "path": inner, "raw_path": inner.encode(),
                 "root_path": scope.get("root_path", "") + self.prefix}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        secure = headers.get("x-forwarded-proto", scope.get("scheme", "http")) == "https"
        if self.login is not None and inner == "/oauth_callback":
            return await self._oauth_callback(scope, headers, secure, send)
        if inner == "/metrics" and scope["method"] == "GET":
            return await self._metrics(headers, send)
        browser = (self.login is not None and not _token_from(headers)
                   and scope["method"] == "GET" and "text/html" in headers.get("accept", ""))

        async def sign_in():  # a browser without a (valid) session: the hub, and back
            query = scope.get("query_string", b"").decode("latin-1")
            location, cookie = self.login.start(path + (f"?{query}" if query else ""), secure)
            return await _redirect(send, location, [cookie])

        try:
            cookie_token = self.login.token(headers) if self.login is not None else None
            if browser and not cookie_token:
                return await sign_in()
            try:
                requester = await self.identity.requester(headers, cookie_token)
            except Refused as e:
                if browser and e.status == 401:  # the session's token expired or was revoked
                    return await sign_in()
                raise
            if cookie_token and not _token_from(headers) \
                    and scope["method"] not in SAFE_METHODS:
                # a browser session's cookie goes with every request the browser makes,
                # whichever page asks: only this registry's own pages may change things
                host = headers.get("host", "")
                problem = cross_origin_problem(headers, "https" if secure else "http", host)
                if problem:
                    raise Refused(403, "PERMISSION_DENIED",
                                  f"refused a change from a browser session: {problem}")
            if scope["method"] not in SAFE_METHODS and "origin" in headers:
                # checked above (a session) or no ambient credential (a token): MLflow's
                # own check would refuse any origin but localhost, the registry's UI too
                scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                              if k.lower() != b"origin"]}
            permissions = _PERMISSIONS.match(inner)
            if permissions and permissions["name"]:
                return await self._permissions(unquote(permissions["name"]), requester,
                                               scope, receive, send)
            if permissions:
                return await self._readable(requester, scope, send)
            found = routes.find(scope["method"], inner)
            if found is None:
                raise Refused(403, "PERMISSION_DENIED",
                              f"{scope['method']} {inner} is not a route the registry serves "
                              "to users (every route it serves is in Redspot's table, "
                              "redspot/models/routes.py)")
            route, params = found
            kind = route.kind
            if kind == "absent":
                return await _reply(send, 404, "ENDPOINT_NOT_FOUND",
                                    f"{inner} is not served by this registry")
            if kind == "fixed":
                return await _respond(send, 200, json.dumps(ui.FIXED[
                    routes.normalize(inner)]).encode(), [(b"content-type", b"application/json")])
            if kind == "ui":
                status, headers, raw = await self._forward(scope, b"")
                if status == 200:
                    raw = ui.with_additions(raw, self.hub_home)
                return await _respond(send, status, raw, headers)
            if kind == "admin" and not requester.admin:
                raise Refused(403, "PERMISSION_DENIED",
                              f"{scope['method']} {inner} is for admins: webhooks see every "
                              "model's events and the AI gateway holds keys and calls out")
            if kind == "graphql":
                return await self._graphql(requester, scope, receive, send)
            if kind.split(":")[0] in ("model", "experiment", "run", "logged") \
                    and scope["method"] not in SAFE_METHODS:
                # MLflow answers some wrongly typed fields with a 500: checked here
                # against the call's own message, nulls taken as "not given"
                body = typed_body(scope["method"], inner, await _read_body(receive))
                scope, receive = _with_body(scope, body)
            if kind.startswith("model:"):
                match = _API.match(routes.normalize(inner))
                call = match["call"] if match else "model-versions/get-artifact"
                return await self._checked(call, kind, requester, scope, receive, send)
            if kind.split(":")[0] in ("experiment", "run", "logged", "artifact"):
                return await self._object(kind, params, requester, scope, receive, send,
                                          headers)
        except Refused as e:
            log.log(logging.DEBUG if e.status == 401 else logging.INFO,
                    "Refused %s %s (%d): %s", scope["method"], inner, e.status, e.message)
            return await _reply(send, e.status, e.code, e.message)
        return await self.app(scope, receive, send)

    async def _metrics(self, headers, send):
        """``GET /metrics``: the registry's metrics, for a hub token with
        ``read:metrics`` (Prometheus' service's), not MLflow's."""
        try:
            await self.identity.metrics_reader(headers)
        except Refused as e:
            return await _reply(send, e.status, e.code, e.message)
        from ..metrics import exposition

        body, content_type = exposition()
        return await _respond(send, 200, body, [(b"content-type", content_type.encode())])

    # --- experiments, runs, logged models and artifacts -----------------------------------

    async def _object(self, kind, params, requester, scope, receive, send, headers):
        """The checks of an ``experiment:``, ``run:``, ``logged:`` or ``artifact:`` route
        (see ``routes.py``), then MLflow; owners recorded for what was made."""
        if kind.startswith("artifact:"):
            return await self._artifact(kind, params, requester, scope, receive, send,
                                        headers)
        if kind in ("logged:read", "logged:change"):
            self._check(requester, "logged", params["id"], kind.endswith("change"))
            return await self.app(scope, receive, send)
        body = await _read_body(receive)
        data = _request_data(scope, body)
        if kind == "experiment:create":
            if data.get("artifact_location") and not requester.admin:
                raise Refused(400, "INVALID_PARAMETER_VALUE",
                              "artifact_location: experiments keep their artifacts in the "
                              "registry; leave it out")
            _check_experiment_name(requester, data.get("name"))
        elif kind == "experiment:change":
            _check_experiment_name(requester, data.get("new_name"))
            experiment = str(data.get("experiment_id") or "")
            if experiment == DEFAULT_EXPERIMENT and not requester.admin:
                raise Refused(403, "PERMISSION_DENIED",
                              "the Default experiment is everyone's: only admins change it")
            self._check(requester, "experiment", experiment, change=True)
        elif kind in ("run:create", "logged:create"):
            self._may_add_to(requester, str(data.get("experiment_id") or DEFAULT_EXPERIMENT))
            if kind == "run:create":  # the hub's identity, not what the client says
                data["user_id"] = requester.name
                tags = [t for t in data.get("tags") or [] if isinstance(t, dict)
                        and t.get("key") != "mlflow.user"]
                data["tags"] = [*tags, {"key": "mlflow.user", "value": requester.name}]
                body = json.dumps(data).encode()
            elif data.get("source_run_id"):
                self._check(requester, "run", str(data["source_run_id"]), change=True)
        elif kind == "run:read":
            for run in _run_ids(scope, data):
                self._check(requester, "run", run, change=False)
        elif kind == "run:change":
            run = _run_id(data)
            if not run:
                raise Refused(400, "INVALID_PARAMETER_VALUE", "the request names no run")
            self._check(requester, "run", run, change=True)
            keys = [data.get("key")] + [t.get("key") for t in data.get("tags") or []
                                        if isinstance(t, dict)]
            if "mlflow.user" in keys:
                raise Refused(400, "INVALID_PARAMETER_VALUE",
                              "mlflow.user is set by the registry (the hub user who made "
                              "the run) and cannot be changed")
        status, out_headers, raw = await self._forward(scope, body)
        if status == 200:
            raw = self._after(kind, requester, raw)
        await _respond(send, status, raw, out_headers)

    def _after(self, kind: str, requester, raw: bytes) -> bytes:
        """Record who made what; take what ``requester`` may not read out of searches."""
        try:
            payload = json.loads(raw)
        except ValueError:
            return raw
        if not isinstance(payload, dict):
            return raw
        if kind == "experiment:create" and payload.get("experiment_id"):
            self.store.own("experiment", payload["experiment_id"], requester.name)
        elif kind == "run:create":
            run = (payload.get("run") or {}).get("info", {}).get("run_id")
            if run:
                self.store.own("run", run, requester.name)
        elif kind == "logged:create":
            model = (payload.get("model") or {}).get("info", {}).get("model_id")
            if model:
                self.store.own("logged", model, requester.name)
        elif kind == "run:search" and isinstance(payload.get("runs"), list):
            payload["runs"] = [r for r in payload["runs"] if not self.store.hidden_from(
                requester, "run", (r.get("info") or {}).get("run_id", ""))]
            return json.dumps(payload).encode()
        elif kind == "logged:search" and isinstance(payload.get("models"), list):
            payload["models"] = [m for m in payload["models"] if not self.store.hidden_from(
                requester, "logged", (m.get("info") or {}).get("model_id", ""))]
            return json.dumps(payload).encode()
        return raw

    def _check(self, requester, kind: str, object_id: str, change: bool) -> None:
        """Refuse ``requester`` a run, logged model or experiment they may not touch."""
        label = {"run": "run", "logged": "logged model", "experiment": "experiment"}[kind]
        if kind != "experiment":
            hidden = self.store.hidden_from(requester, kind, object_id)
            if hidden:
                raise Refused(404, "RESOURCE_DOES_NOT_EXIST",
                              f"no {label} {object_id!r} that you may read")
        if change:
            owner = self.store.owner(kind, object_id)
            if not may_change_object(requester, owner):
                whose = f"it belongs to {owner}" if owner else (
                    "it was made before Redspot kept owners: only admins may change it")
                raise Refused(403, "PERMISSION_DENIED",
                              f"{requester.name} may not change the {label} {object_id}: "
                              f"{whose}")

    def _may_add_to(self, requester, experiment: str) -> None:
        if experiment == DEFAULT_EXPERIMENT or requester.admin:
            return
        owner = self.store.owner("experiment", experiment)
        if owner != requester.name:
            raise Refused(403, "PERMISSION_DENIED",
                          f"{requester.name} may not add to the experiment {experiment}: it "
                          f"belongs to {owner or 'no one Redspot knows (admins only)'}; use "
                          "your own experiment or the Default one")

    async def _artifact(self, kind, params, requester, scope, receive, send, headers):
        """Artifacts by path: each belongs to a run or a logged model (its owner writes,
        whoever may read it reads); other paths are the admins'."""
        if kind == "artifact:list":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            path = (query.get("path") or [""])[0]
        else:
            path = params["path"]
        owner = routes.artifact_owner(path)
        if owner is None:
            if not requester.admin:
                raise Refused(403, "PERMISSION_DENIED",
                              f"the artifact path {path!r} belongs to no run or logged model: "
                              "only admins reach it")
        else:
            self._check(requester, owner[0], owner[1], change=kind == "artifact:write")
        method = scope["method"]
        if method == "PUT":
            receive = _coalesced(receive)
        elif (kind == "artifact:read" and method == "GET" and self.local_artifact is not None
              and "range" not in headers):
            local = await asyncio.to_thread(self.local_artifact, path)
            if local is not None:
                return await _send_file(send, local)
        return await self.app(scope, receive, send)

    async def _oauth_callback(self, scope, headers, secure, send):
        from .login import LoginError

        query = {k: v[0] for k, v in
                 parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        try:
            token, next_url = await self.login.finish(query, headers)
        except LoginError as e:
            return await _reply(send, 400, "BAD_REQUEST", str(e))
        if not next_url.startswith(self.prefix):  # only back into this service
            next_url = self.prefix + "/"
        await _redirect(send, next_url, [self.login.session_cookie(token, secure),
                                         self.login.clear_state_cookie(secure)])

    async def _permissions(self, name, requester, scope, receive, send):
        """``GET``: a model's owner, groups and privacy; ``PATCH {"groups": [...],
        "private": bool}``: the owner or an admin changes them."""
        acl = self.store.get(name)
        if acl is None or not may_read(requester, acl):
            raise Refused(404, "RESOURCE_DOES_NOT_EXIST",
                          f"no registered model {name!r} with an owner in Redspot's records")
        if scope["method"] == "PATCH":
            if not (requester.admin or requester.name == acl.owner):
                raise Refused(403, "PERMISSION_DENIED",
                              f"only {acl.owner} (the owner) or an admin may change who may "
                              f"change {name!r}")
            data = _request_data(scope, await _read_body(receive))
            groups, private = data.get("groups"), data.get("private")
            if groups is not None and not (isinstance(groups, list) and all(
                    isinstance(g, str) and g for g in groups)):
                raise Refused(400, "INVALID_PARAMETER_VALUE",
                              "groups: expected a list of hub group names")
            if private is not None and not isinstance(private, bool):
                raise Refused(400, "INVALID_PARAMETER_VALUE", "private: expected true or false")
            unknown = set(data) - {"groups", "private"}
            if unknown:
                raise Refused(400, "INVALID_PARAMETER_VALUE",
                              f"unknown fields {', '.join(sorted(unknown))}; "
                              "allowed: groups, private")
            acl = self.store.update(name, groups=groups, private=private)
        elif scope["method"] != "GET":
            raise Refused(405, "BAD_REQUEST", "use GET or PATCH")
        await _respond(send, 200, json.dumps(acl.describe()).encode(),
                       [(b"content-type", b"application/json")])

    async def _readable(self, requester, scope, send):
        """``GET``: every model ``requester`` may read, its owner and whether they may
        change it (the model browser's "mine" and "my team's")."""
        if scope["method"] != "GET":
            raise Refused(405, "BAD_REQUEST", "use GET")
        models = [{**acl.describe(), "may_change": may_change(requester, acl)}
                  for acl in sorted(self.store.all().values(), key=lambda a: a.name)
                  if may_read(requester, acl)]
        body = {"user": requester.name, "groups": list(requester.groups),
                "admin": requester.admin, "models": models}
        await _respond(send, 200, json.dumps(body).encode(),
                       [(b"content-type", b"application/json")])

    async def _graphql(self, requester, scope, receive, send):
        """MLflow's GraphQL endpoint, its model versions filtered like the REST searches."""
        from graphql import GraphQLError, parse, print_ast

        body = await _read_body(receive)
        data = _request_data(scope, body, snake=False)
        query = data.get("query")
        if not isinstance(query, str):
            raise Refused(400, "INVALID_PARAMETER_VALUE", "a GraphQL request needs a query")
        try:
            document = parse(query)
        except GraphQLError as e:
            raise Refused(400, "INVALID_PARAMETER_VALUE",
                          f"the GraphQL query: {e.message}") from None
        if data.get("variables") is not None and not isinstance(data["variables"], dict):
            raise Refused(400, "INVALID_PARAMETER_VALUE",
                          "a GraphQL request's variables are an object of name: value")
        runs = _graphql_run_ids(document, data.get("variables"))
        for run in runs:
            self._check(requester, "run", run, change=False)
        _name_model_versions(document)
        data["query"] = print_ast(document)
        if scope["method"] == "GET":
            query_string = urlencode({k: v if isinstance(v, str) else json.dumps(v)
                                      for k, v in data.items()}).encode()
            scope, body = {**scope, "query_string": query_string}, b""
        else:
            body = json.dumps(data).encode()
        status, headers, raw = await self._forward(scope, body)
        if status == 200:
            try:
                payload = json.loads(raw)
            except ValueError:
                pass
            else:
                acls = self.store.all()
                payload = _without_unreadable(
                    payload, lambda name: may_read(requester, acls.get(name)))
                payload = _without_hidden_runs(
                    payload, lambda run: self.store.hidden_from(requester, "run", run))
                raw = json.dumps(payload).encode()
        await _respond(send, status, raw, headers)

    async def _checked(self, call, kind, requester, scope, receive, send):
        """A registered model's route: ``kind`` (the route table's ``model:create``,
        ``model:read``, ``model:change`` or ``model:search``) says which check."""
        method = scope["method"]
        body = await _read_body(receive)
        data = _request_data(scope, body)
        name = data.get("name") if isinstance(data.get("name"), str) else None
        acl = self.store.get(name) if name else None

        if kind == "model:create":
            problem = name_problem(name if name is not None else data.get("name"))
            if problem:
                raise Refused(400, "INVALID_PARAMETER_VALUE", problem)
            if acl is not None and not may_change(requester, acl):
                raise Refused(403, "PERMISSION_DENIED",
                              f"the model {name!r} belongs to {acl.owner}")
        elif kind == "model:change":
            if not name:
                raise Refused(400, "INVALID_PARAMETER_VALUE", "the request names no model")
            if not may_read(requester, acl):
                raise Refused(404, "RESOURCE_DOES_NOT_EXIST",
                              f"Registered Model with name={name} not found")
            if not may_change(requester, acl):
                raise Refused(403, "PERMISSION_DENIED", _change_refusal(requester, name, acl))
            if call == "registered-models/rename":
                problem = name_problem(data.get("new_name"))
                if problem:
                    raise Refused(400, "INVALID_PARAMETER_VALUE", f"new_name: {problem}")
            if call == "model-versions/create":
                for object_kind, object_id in _sources(data):
                    # a version may not publish what its maker may not read
                    self._check(requester, object_kind, object_id, change=False)
                if self.unfinished_upload is not None:
                    reason = await asyncio.to_thread(self.unfinished_upload, data)
                    if reason:
                        raise Refused(400, "INVALID_PARAMETER_VALUE", reason)
        elif kind == "model:read":
            if name and not may_read(requester, acl):
                raise Refused(404, "RESOURCE_DOES_NOT_EXIST",
                              f"Registered Model with name={name} not found")

        # the response waits until the records are updated: the client's next call (a
        # version of the model it just made) must find its owner
        status, headers, raw = await self._forward(scope, body)
        if status == 200:
            if kind == "model:create" and name:
                self.store.claim(name, requester.name)
                log.info("%s registered the model %r (its owner)", requester.name, name)
            elif call == "registered-models/rename" and isinstance(data.get("new_name"), str):
                self.store.rename(name, data["new_name"])
            elif call == "registered-models/delete" and method in ("DELETE", "POST"):
                self.store.forget(name)
            elif call == "model-versions/create":
                for object_kind, object_id in _sources(data):
                    self.store.link(object_kind, object_id, name)
                service_metrics("models")["redspot_model_registrations_total"].inc()
            elif kind == "model:search":
                raw = self._filtered(raw, SEARCHES[call], requester)
        await _respond(send, status, raw, headers)

    async def _forward(self, scope, body: bytes) -> tuple[int, list, bytes]:
        """Run MLflow's app on ``body``; its whole response (JSON, small)."""
        state = {"status": 500, "headers": [], "chunks": []}

        async def keep(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                state["chunks"].append(message.get("body", b""))

        await self.app(*_with_body(scope, body), keep)
        return state["status"], state["headers"], b"".join(state["chunks"])

    def _filtered(self, raw: bytes, key: str, requester: Requester) -> bytes:
        """A search's results without the private models ``requester`` may not read."""
        try:
            payload = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(payload, dict) and isinstance(payload.get(key), list):
            acls = self.store.all()
            payload[key] = [m for m in payload[key]
                            if may_read(requester, acls.get(m.get("name")))]
            raw = json.dumps(payload).encode()
        return raw


def _coalesced(receive, size: int = UPLOAD_PIECE):
    """``receive`` whose body arrives in pieces of ``size`` bytes (the server reads
    64 KiB at a time; MLflow writes each piece to the store in a thread of its own, so
    fewer, larger pieces cost less). Memory stays bounded by ``size``."""
    pending = None  # a message that is not body (a disconnect), to hand on next

    async def coalescing():
        nonlocal pending
        if pending is not None:
            message, pending = pending, None
            return message
        pieces, held = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                if not pieces:
                    return message
                pending = message
                return {"type": "http.request", "body": b"".join(pieces), "more_body": True}
            chunk = message.get("body", b"")
            pieces.append(chunk)
            held += len(chunk)
            more = message.get("more_body", False)
            if held >= size or not more:
                return {"type": "http.request", "body": b"".join(pieces), "more_body": more}

    return coalescing


DOWNLOAD_PIECE = 4 << 20


async def _send_file(send, path: str) -> None:
    """A whole file as the response, read in 4 MiB pieces (MLflow's own route reads
    64 KiB at a time, each in a thread of its own: half the speed on large models)."""
    from mimetypes import guess_type

    name = os.path.basename(path)
    f = await asyncio.to_thread(open, path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", (guess_type(name)[0] or "application/octet-stream").encode()),
            (b"content-length", str(size).encode()),
            (b"content-disposition", b"attachment; filename*=UTF-8''"
             + quote(name).encode()),
            (b"x-content-type-options", b"nosniff")]})
        while True:
            piece = await asyncio.to_thread(f.read, DOWNLOAD_PIECE)
            more = len(piece) == DOWNLOAD_PIECE
            await send({"type": "http.response.body", "body": piece, "more_body": more})
            if not more:
                return
    finally:
        f.close()


def local_artifact(artifact_path: str) -> str | None:
    """The file behind an ``mlflow-artifacts`` download when the store is a local folder
    (MLflow's own checks: a safe path inside the store), or None: MLflow answers."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    if handlers._get_workspace_scoped_repo_path_if_enabled(artifact_path) != artifact_path:
        return None
    repo = handlers._get_artifact_repo_mlflow_artifacts()
    if not isinstance(repo, LocalArtifactRepository):
        return None
    try:
        path = os.path.abspath(repo.get_local_path(artifact_path))
    except MlflowException:
        return None
    return path if os.path.isfile(path) else None


def _name_model_versions(node) -> None:
    """Make every ``modelVersions { … }`` selection in a parsed GraphQL document also
    select the version's model name, as ``redspotModelName_``."""
    from graphql.language import FieldNode, NameNode, SelectionSetNode

    if isinstance(node, FieldNode) and node.name.value == "modelVersions" \
            and node.selection_set is not None:
        extra = FieldNode(alias=NameNode(value=_GRAPHQL_NAME), name=NameNode(value="name"),
                          arguments=(), directives=())
        node.selection_set = SelectionSetNode(
            selections=(*node.selection_set.selections, extra))
    for key in getattr(node, "keys", ()):
        value = getattr(node, key, None)
        for child in value if isinstance(value, (list, tuple)) else (value,):
            if hasattr(child, "keys") and not isinstance(child, str):
                _name_model_versions(child)


def _without_unreadable(value, readable):
    """A GraphQL answer without the model versions (marked by ``_name_model_versions``)
    of models ``readable(name)`` refuses, and without the marks."""
    if isinstance(value, list):
        kept = [v for v in value if not (isinstance(v, dict) and _GRAPHQL_NAME in v
                                         and not readable(v[_GRAPHQL_NAME]))]
        return [_without_unreadable(v, readable) for v in kept]
    if isinstance(value, dict):
        return {k: _without_unreadable(v, readable) for k, v in value.items()
                if k != _GRAPHQL_NAME}
    return value


_RUN_KEYS = frozenset({"runId", "runIds", "runUuid", "run_id", "run_ids", "run_uuid"})


def _graphql_run_ids(document, variables) -> set[str]:
    """Every run a GraphQL request names: string values of arguments and input fields
    called ``runId``/``runIds`` (and snake_case), in the query or its variables."""
    from graphql.language import ListValueNode, ObjectValueNode, StringValueNode

    found: set[str] = set()

    def values(node):
        if isinstance(node, StringValueNode):
            yield node.value
        elif isinstance(node, ListValueNode):
            for item in node.values:
                yield from values(item)

    def walk(node):
        fields = getattr(node, "arguments", None) or ()
        if isinstance(node, ObjectValueNode):
            fields = node.fields
        for field in fields:
            if field.name.value in _RUN_KEYS:
                found.update(values(field.value))
            walk(field.value)
        for key in getattr(node, "keys", ()):
            value = getattr(node, key, None)
            for child in value if isinstance(value, (list, tuple)) else (value,):
                if hasattr(child, "keys") and not isinstance(child, str):
                    walk(child)

    walk(document)

    def in_variables(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _RUN_KEYS:
                    found.update(v for v in (item if isinstance(item, list) else [item])
                                 if isinstance(v, str))
                in_variables(item)
        elif isinstance(value, list):
            for item in value:
                in_variables(item)

    in_variables(variables)
    return found


def _without_hidden_runs(value, hidden):
    """A GraphQL answer without the list items (runs, and what holds them) that name a
    run ``hidden(run_id)`` keeps from the requester."""
    if isinstance(value, list):
        return [_without_hidden_runs(v, hidden) for v in value
                if not (isinstance(v, dict) and any(hidden(r) for r in _runs_in(v)))]
    if isinstance(value, dict):
        return {k: _without_hidden_runs(v, hidden) for k, v in value.items()}
    return value


def _runs_in(value) -> set[str]:
    if isinstance(value, dict):
        found = {v for k, v in value.items() if k in _RUN_KEYS and isinstance(v, str)}
        for item in value.values():
            found |= _runs_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(_runs_in(v) for v in value)) if value else set()
    return set()


def unfinished_upload(data: dict) -> str | None:
    """Why a version made from ``data`` (a ``model-versions/create`` request) would point
    at artifacts that are not all there, or None. Runs in MLflow's server process, with
    its stores: a logged model must be READY (MLflow marks it so once every file is
    uploaded; a failed upload leaves it FAILED, an interrupted one PENDING), and the
    source must hold an ``MLmodel`` file. Only this registry's own locations are read:
    any other source is refused, never listed."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    source = data.get("source") if isinstance(data.get("source"), str) else ""
    model_id = data.get("model_id") or None
    parsed = urlparse(source)
    if not model_id and parsed.scheme == "models" and parsed.path.lstrip("/").startswith("m-"):
        model_id = parsed.path.lstrip("/").split("/")[0]
    store = handlers._get_tracking_store()
    try:
        if model_id:
            model = store.get_logged_model(model_id)
            if model.status != LoggedModelStatus.READY:
                return (f"the logged model {model_id} is {model.status}: its upload did not "
                        "finish (it failed or was interrupted), so no version may point at "
                        "it; log the model again")
            location = model.artifact_location
        elif parsed.scheme == "runs":
            run_id, path = RunsArtifactRepository.parse_runs_uri(source)
            location = store.get_run(run_id).info.artifact_uri.rstrip("/")
            location += f"/{path}" if path else ""
        elif parsed.scheme == "models" or not source:
            return None  # another version's source, or nothing: MLflow answers it
        elif parsed.scheme == "mlflow-artifacts":
            location = source
        else:
            # never read a location the client names (file://, http://...: the server
            # would list another tenant's files or call out for them)
            return (f"the source {source!r} is not in this registry: register a model "
                    "logged here (a runs:/, models:/ or mlflow-artifacts: URI)")
        names = _listing(location)
    except MlflowException:
        return None  # an unknown run or model: MLflow's own answer says so
    except Exception as e:  # noqa: BLE001 - a store that cannot be read
        return f"the source {source!r} could not be read ({e}); nothing was registered"
    if "MLmodel" not in names:
        return (f"the source {source!r} holds no MLmodel file: its upload did not finish, "
                "or it is not an MLflow model; nothing was registered")
    return None


def _listing(location: str) -> set[str]:
    """The names of the files at the top of an artifact location, as the server sees it."""
    from mlflow.server import handlers
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    parsed = urlparse(location)
    if parsed.scheme == "mlflow-artifacts":  # served by this server, from its destination
        repo, path = handlers._get_artifact_repo_mlflow_artifacts(), parsed.path.strip("/")
    else:
        repo, path = get_artifact_repository(location), None
    return {info.path.rsplit("/", 1)[-1] for info in repo.list_artifacts(path)}


def _change_refusal(requester: Requester, name: str, acl: ModelAcl | None) -> str:
    if acl is None:
        return (f"the model {name!r} has no owner in Redspot's records (it was made before "
                "Redspot kept them): only an admin may change it")
    granted = f" or members of {', '.join(acl.groups)}" if acl.groups else ""
    return (f"{requester.name} may not change the model {name!r}: it belongs to "
            f"{acl.owner}; only {acl.owner}{granted} or an admin may")


@functools.cache
def _request_messages() -> dict[tuple[str, str], type]:
    """(method, path) -> the protobuf message MLflow parses that call's body into."""
    from mlflow.protos.model_registry_pb2 import ModelRegistryService
    from mlflow.protos.service_pb2 import MlflowService
    from mlflow.server.handlers import get_service_endpoints

    found = {}
    for service in (MlflowService, ModelRegistryService):
        for path, message, methods in get_service_endpoints(service, lambda cls: cls):
            for method in methods:
                found[(method, routes.normalize(path))] = message
    return found


def typed_body(method: str, path: str, body: bytes) -> bytes:
    """``body`` as MLflow will read it, or Refused (400) naming the field whose value
    has the wrong type. Fields given as ``null`` are left out (in MLflow's JSON, as in
    protobuf's, null means "not given"), so no handler meets a None it does not expect."""
    from google.protobuf.json_format import ParseDict, ParseError

    message = _request_messages().get((method, routes.normalize(path)))
    if message is None or not body.strip():
        return body
    data = _json_object(body)
    given = {k: v for k, v in data.items() if v is not None}
    try:
        ParseDict(given, message(), ignore_unknown_fields=True)
    except ParseError as e:
        raise Refused(400, "INVALID_PARAMETER_VALUE",
                      f"{routes.normalize(path).rsplit('/mlflow/', 1)[-1]}: {e}") from None
    return body if given == data else json.dumps(given).encode()


def _json_object(body: bytes) -> dict:
    """A request's JSON object (decoded twice when a client sent it as a JSON string)."""
    try:
        data = json.loads(body)
        if isinstance(data, str):
            data = json.loads(data)
    except ValueError:
        raise Refused(400, "MALFORMED_REQUEST", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "MALFORMED_REQUEST", "the request body is not a JSON object")
    return data


def _with_body(scope, body: bytes):
    """The request with ``body`` as its (whole) body."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    return {**scope, "headers": headers}, receive


async def _read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "BAD_REQUEST", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise Refused(413, "INVALID_PARAMETER_VALUE",
                          f"a registry request may be at most {MAX_JSON_BODY >> 20} MiB")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _request_data(scope, body: bytes, snake: bool = True) -> dict:
    """The request's fields as MLflow reads them (``handlers._get_request_message``): a
    GET with a query string from the query (first values), anything else from the JSON
    body (decoded twice when a client sent it as a JSON string); MLflow's protobuf parser
    also takes each field by its camelCase name, so those are read under the snake_case
    one (both spellings at once: refused, as MLflow refuses them)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    if scope["method"] == "GET" and query:
        data = {k: v[0] for k, v in query.items()}
    elif body.strip():
        data = _json_object(body)
    else:
        data = {}
    if not snake:
        return data
    fields = {}
    for key, value in data.items():
        snake = _snake(key)
        if snake != key and (snake in data or snake in fields):
            raise Refused(400, "INVALID_PARAMETER_VALUE",
                          f"the request names {snake!r} twice ({key!r}); give one of them")
        fields[snake] = value
    return fields


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m[1].lower(), name)


def _check_experiment_name(requester, name) -> None:
    """``alice/...`` names alice's experiments (``alice/models`` holds her registrations):
    nobody else takes one."""
    if isinstance(name, str) and "/" in name and not requester.admin:
        owner = name.split("/", 1)[0]
        if owner != requester.name:
            raise Refused(403, "PERMISSION_DENIED",
                          f"experiment names starting with {owner + '/'!r} are {owner}'s; "
                          f"name yours {requester.name}/... or without a '/'")


def _sources(data: dict) -> list[tuple[str, str]]:
    """The runs and logged models a new version comes from (``run_id``, ``model_id``, a
    ``runs:/`` or ``models:/m-…`` source)."""
    found = []
    run = _run_id(data)
    if run:
        found.append(("run", run))
    source = data.get("source") if isinstance(data.get("source"), str) else ""
    parsed = urlparse(source)
    if parsed.scheme == "runs":
        found.append(("run", (parsed.netloc or parsed.path.lstrip("/")).split("/")[0]))
    model = data.get("model_id") if isinstance(data.get("model_id"), str) else ""
    if not model and parsed.scheme == "models" and parsed.path.lstrip("/").startswith("m-"):
        model = parsed.path.lstrip("/").split("/")[0]
    if not model and parsed.scheme == "models" and parsed.netloc.startswith("m-"):
        model = parsed.netloc
    if model:
        found.append(("logged", model))
    if parsed.scheme == "mlflow-artifacts":
        owner = routes.artifact_owner(parsed.path)
        if owner:
            found.append(owner)
    return list(dict.fromkeys(found))


def _run_id(data: dict) -> str:
    """A request's run, as MLflow's handlers take it (``run_id``, else ``run_uuid``)."""
    value = data.get("run_id") or data.get("run_uuid") or ""
    return value if isinstance(value, str) else ""


def _run_ids(scope, data: dict) -> list[str]:
    """Every run a read names, also repeated query fields (``run_ids``, ``run_id``)."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found = [v for key in ("run_id", "run_uuid", "run_ids", "runId", "runIds")
             for v in query.get(key, [])]
    for key in ("run_id", "run_uuid", "run_ids"):
        value = data.get(key)
        found += value if isinstance(value, list) else [value] if value else []
    return [str(r) for r in found if r]


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    """One whole response, its length set from ``body``."""
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(send, location: str, cookies: list[str]):
    await _respond(send, 302, b"", [(b"location", location.encode("latin-1"))]
                   + [(b"set-cookie", c.encode("latin-1")) for c in cookies])


async def _reply(send, status: int, code: str, message: str):
    await _respond(send, status, json.dumps({"error_code": code, "message": message}).encode(),
                   [(b"content-type", b"application/json")])


def own_host(app):
    """MLflow's app, told it is reached at its own address: behind the hub's sign-in (the
    guard), the Host header is whatever name users reach the hub by, which MLflow's
    DNS-rebinding check would refuse (or accept with ``--allowed-hosts '*'``, warning at
    every start). A rebinding page has no hub credentials: the guard refused it first."""

    async def call(scope, receive, send):
        server = scope.get("server") if scope["type"] == "http" else None
        if server:
            host = (f"{server[0]}:{server[1]}" if server[1] else server[0]).encode()
            scope = {**scope, "headers": [
                *((k, v) for k, v in scope.get("headers", []) if k.lower() != b"host"),
                (b"host", host)]}
        return await app(scope, receive, send)

    return call


def create_app():
    """The ``mlflow.app`` factory: MLflow's FastAPI app (its Flask app inside), guarded."""
    from mlflow.server.fastapi_app import app as mlflow_app

    from .login import BrowserLogin

    if not log.handlers:  # MLflow's server configures uvicorn's loggers, not ours
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(
            "[%(levelname).1s %(asctime)s redspot-models] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    store = PermissionStore(os.environ["REDSPOT_MODELS_PERMISSIONS_DB"])
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/models/")
    identity = HubIdentity()
    service_metrics("models")  # exposed from the start, at 0
    secret = Path(os.environ["REDSPOT_MODELS_COOKIE_SECRET_FILE"]).read_bytes()
    login = BrowserLogin(identity.hub_auth, secret, "/" + prefix.strip("/"))
    hub_home = os.environ.get("REDSPOT_HUB_HOME") or (
        os.environ.get("JUPYTERHUB_BASE_URL", "/").rstrip("/") + "/hub/home")
    return HubGuard(own_host(mlflow_app), identity, store, prefix, login=login,
                    unfinished_upload=unfinished_upload, local_artifact=local_artifact,
                    hub_home=hub_home)
