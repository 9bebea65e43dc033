"""The warehouse service: a JupyterHub service at ``/services/warehouse/`` that tells a
user's kernel which connections it may use and hands it short-lived credentials for
them. It runs under its own unprivileged account; the operator's secrets (admin DSNs,
static credentials, AWS keys) reach it from the hub at start, in its environment only.

REST API (JSON), every request authenticated by the hub (a token, e.g. the server's own
``$JUPYTERHUB_API_TOKEN``, or the hub's OAuth cookie) and checked against
``custom:redspot:warehouse:*`` scopes:

    GET  api/connections                     the connections you may use (no secrets)
    POST api/connections/<name>/credentials  a short-lived credential for one of them
    GET  api/grants                          the grant log (admins: ?user=, ?limit=)
    GET  api/openapi.json                    this API, described (OpenAPI 3)
    GET  metrics                             its Prometheus metrics (``read:metrics``)

A connection is usable by the hub groups it names (``*``: everyone) and by admins;
another is 403, an unknown one 404 with the names you may use. Every grant is logged
(who, which connection, which kind, until when), in the service's log and in
``grants.jsonl`` in its data folder. Anything else under the prefix is 403.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import httpclient, web
from traitlets import Unicode, default
from traitlets.config import Application

from .. import __version__
from ..hub import scopes
from ..hub.leftovers import record_service
from ..hub.serviceapi import JsonApiHandler, MetricsHandler, serve_forever
from ..metrics import service_metrics
from .connections import Connection, from_settings
from .pgroles import PostgresRoles, RoleError

#: How long the hub's answer about a token, and about a user's groups, is trusted.
TOKEN_CACHE_SECONDS = 5
GRANT_LOG = "grants.jsonl"


class ApiHandler(JsonApiHandler):
    use_scope = scopes.WAREHOUSE_USE
    admin_scope = scopes.WAREHOUSE_ADMIN

    @property
    def warehouse(self) -> WarehouseState:
        return self.settings["warehouse"]


class ConnectionsHandler(ApiHandler):
    @web.authenticated
    async def get(self):
        who = self.requester()
        user = await self.warehouse.user(who.name)
        admin = who.admin or bool(user.get("admin"))
        usable = [c.public() for c in self.warehouse.connections.values()
                  if c.allows(user["groups"], admin)]
        self.write_json({"connections": usable})


class CredentialsHandler(ApiHandler):
    @web.authenticated
    async def post(self, name):
        who = self.requester()
        connection = self.warehouse.connections.get(name)
        user = await self.warehouse.user(who.name)
        admin = who.admin or bool(user.get("admin"))
        usable = [c.name for c in self.warehouse.connections.values()
                  if c.allows(user["groups"], admin)]
        if connection is None:
            raise web.HTTPError(404, f"no connection named {name!r}; yours: "
                                     f"{', '.join(usable) or 'none'}")
        if not connection.allows(user["groups"], admin):
            raise web.HTTPError(
                403, f"{who.name} may not use connection {name!r} (it is for the groups "
                     f"{', '.join(connection.groups) or 'of no one: admins only'}); yours: "
                     f"{', '.join(usable) or 'none'}")
        credential = await self.warehouse.issue(connection, who.name, user)
        service_metrics("warehouse")["redspot_warehouse_grants_total"].labels(
            connection.name, connection.engine).inc()
        self.write_json(credential)


class GrantsHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.requester(scopes.WAREHOUSE_ADMIN)
        user = self.get_argument("user", None)
        try:
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise web.HTTPError(400, "limit is a number of grants") from None
        self.write_json({"grants": self.warehouse.grants(user, limit)})


class OpenApiHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.requester()
        import yaml

        self.write_json(yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text()))


class UnlistedHandler(ApiHandler):
    def prepare(self):
        raise web.HTTPError(403, f"{self.request.method} {self.request.path} is not a route "
                                 "of the warehouse service (its routes: api/openapi.json)")


class WarehouseState:
    """The connections, the operator's secrets, and what was granted to whom."""

    def __init__(self, connections: dict[str, Connection], secrets: dict, data_dir: Path,
                 hub_api: str, token: str, log):
        self.connections = connections
        self.secrets = secrets
        self.data_dir = data_dir
        self.hub_api = hub_api.rstrip("/")
        self.token = token
        self.log = log
        self._users: dict[str, tuple[float, dict]] = {}
        self._roles: dict[str, PostgresRoles] = {}

    async def user(self, name: str, fresh: bool = False) -> dict:
        """The hub's model of ``name`` (groups, and auth_state where the service may read
        it), asked with the service's own token; trusted for a few seconds."""
        held = self._users.get(name)
        if held and not fresh and time.monotonic() - held[0] < TOKEN_CACHE_SECONDS:
            return held[1]
        client = httpclient.AsyncHTTPClient()
        response = await client.fetch(
            f"{self.hub_api}/users/{quote(name, safe='')}",
            headers={"Authorization": f"token {self.token}"}, raise_error=False)
        if response.code != 200:
            raise web.HTTPError(502, f"the hub did not say who {name} is ({response.code})")
        model = json.loads(response.body)
        model.setdefault("groups", [])
        self._users[name] = (time.monotonic(), model)
        return model

    async def issue(self, connection: Connection, name: str, user: dict) -> dict:
        kind = connection.credentials.kind
        secret = self.secrets.get(connection.name, {})
        ttl = connection.credentials.ttl
        loop = asyncio.get_running_loop()
        if kind == "none":
            credential = {}
        elif kind == "static":
            credential = {k: secret[k] for k in ("user", "password", "token") if secret.get(k)}
            if connection.engine == "hive" and not credential.get("user"):
                credential["user"] = name  # the Thrift server believes the name it is told
        elif kind == "oauth":
            key = connection.credentials.settings.get("auth_state_key", "access_token")
            user = await self.user(name, fresh=True)  # a new sign-in brings a new token
            token = (user.get("auth_state") or {}).get(key)
            if not token:
                raise web.HTTPError(
                    409, f"no {key} in {name}'s sign-in state: sign out of the hub and in "
                         "again (the hub keeps the token from the identity provider)")
            credential = {"user": name, "token": token}
        elif kind == "postgres-role":
            roles = self._roles.get(connection.name)
            if roles is None:
                settings = connection.credentials.settings
                roles = self._roles[connection.name] = PostgresRoles(
                    secret["admin_dsn"], settings.get("grants", {}),
                    settings.get("role_name", "rs_{user}"), ttl)
            try:
                issued = await loop.run_in_executor(None, roles.issue, name, user["groups"])
            except RoleError as e:
                self.log.error("%s", e)
                raise web.HTTPError(502, str(e)) from None
            credential = {"user": issued.user, "password": issued.password,
                          "expires": issued.expires}
        elif kind == "s3-sts":
            from .sts import mint

            try:
                credential = await loop.run_in_executor(
                    None, mint, name, connection.credentials.settings, ttl,
                    secret.get("aws"))
            except Exception as e:  # noqa: BLE001 - STS's refusal, said without secrets
                self.log.error("STS refused %s for %s: %s", connection.name, name, e)
                raise web.HTTPError(502, f"STS refused the credentials: {e}") from None
        else:
            raise web.HTTPError(500, f"unknown credential kind {kind!r}")
        credential.setdefault("expires", 0)
        credential["kind"] = kind
        self._log_grant(name, connection, kind, credential["expires"])
        return credential

    def _log_grant(self, user: str, connection: Connection, kind: str, expires: float):
        entry = {"at": time.time(), "user": user, "connection": connection.name,
                 "engine": connection.engine, "kind": kind, "expires": expires}
        self.log.info("granted %s credentials for %s to %s%s", kind, connection.name, user,
                      time.strftime(" until %H:%M:%S UTC", time.gmtime(expires))
                      if expires else "")
        with open(self.data_dir / GRANT_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def grants(self, user: str | None, limit: int) -> list[dict]:
        try:
            lines = (self.data_dir / GRANT_LOG).read_text().splitlines()
        except FileNotFoundError:
            return []
        found = [json.loads(line) for line in lines if line.strip()]
        if user:
            found = [g for g in found if g["user"] == user]
        return found[-max(0, limit):][::-1]


class WarehouseService(Application):
    name = "redspot-warehouse"
    version = __version__
    description = "Redspot's warehouse service: connections and credentials (a JupyterHub service)."

    data_dir = Unicode(config=True, help="Where the grant log is kept.")
    service_url = Unicode(config=True, help="Where to listen. Default: $JUPYTERHUB_SERVICE_URL.")
    prefix = Unicode(config=True, help="URL prefix. Default: $JUPYTERHUB_SERVICE_PREFIX.")
    aliases = {"data-dir": "WarehouseService.data_dir", "log-level": "Application.log_level"}

    @default("log_level")
    def _log_level_default(self):
        return logging.INFO  # every grant is logged

    @default("service_url")
    def _service_url_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102/")

    @default("prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/warehouse/")

    def make_app(self) -> web.Application:
        service_metrics("warehouse")  # exposed from the start, at 0
        if not self.data_dir:
            raise SystemExit("redspot-warehouse: --data-dir is required")
        HubOAuth.instance(cache_max_age=TOKEN_CACHE_SECONDS)
        settings = json.loads(os.environ.get("REDSPOT_WAREHOUSE_CONNECTIONS") or "{}")
        connections = {name: from_settings(name, spec) for name, spec in settings.items()}
        secrets = json.loads(os.environ.pop("REDSPOT_WAREHOUSE_SECRETS", "") or "{}")
        state = WarehouseState(
            connections, secrets, Path(self.data_dir),
            os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""), self.log)
        api = url_path_join(self.prefix, "api")
        return web.Application(
            [
                (url_path_join(self.prefix, "oauth_callback"), HubOAuthCallbackHandler),
                (url_path_join(api, "connections"), ConnectionsHandler),
                (url_path_join(api, "connections", r"([^/]+)", "credentials"),
                 CredentialsHandler),
                (url_path_join(api, "grants"), GrantsHandler),
                (url_path_join(api, "openapi.json"), OpenApiHandler),
                (url_path_join(self.prefix, "metrics"), MetricsHandler),
                (url_path_join(self.prefix, ".*"), UnlistedHandler),
                (self.prefix.rstrip("/"), UnlistedHandler),
            ],
            warehouse=state, cookie_secret=os.urandom(32))

    def start(self):
        os.umask(0o077)  # the grant log is this account's alone
        url = urlparse(self.service_url)
        app = self.make_app()
        app.listen(url.port, url.hostname)
        record_service(self.data_dir)  # a next hub stops it if this one's hub is killed
        state = app.settings["warehouse"]
        self.log.info("Redspot warehouse service on %s (%d connections: %s)",
                      self.service_url, len(state.connections),
                      ", ".join(state.connections) or "none")
        serve_forever()


main = WarehouseService.launch_instance

if __name__ == "__main__":
    main()
