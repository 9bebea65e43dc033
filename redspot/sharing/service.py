"""The sharing service: a JupyterHub service at ``/services/sharing/`` that records who
shared which file or folder with whom, and has the storage enforce it. It runs under its
own unprivileged account; the ACLs are set by Redspot's privileged helper, which it asks
(``apply_share``/``revoke_share``), and which checks the path again as it acts.

REST API (JSON), every request authenticated by the hub (a token, e.g. the server's own
``$JUPYTERHUB_API_TOKEN``, or the hub's OAuth cookie) and checked against
``custom:redspot:shares:*`` scopes:

    GET    api/shares            yours (``mine``) and shared with you (``with_me``);
                                 admins: ``?owner=NAME``, ``?all=true``, or
                                 ``?recipient=NAME`` (what a starting server mounts)
    POST   api/shares            share ``{"path": "notebooks/plan.ipynb", "with": "bob"}``
                                 (or ``"group:vision"``) from your home; admins may name
                                 the ``owner``
    GET    api/shares/<id>       one share (its owner, a recipient, or an admin)
    DELETE api/shares/<id>       revoke it (its owner or an admin); on Kubernetes
                                 ``?stop_servers=true`` also stops the recipients' servers
    GET    api/grantees          the hub's users and groups one may share with
    POST   api/check             apply every share again now (admins; it also runs every
                                 ``--check-interval`` seconds)
    GET    api/openapi.json      this API, described (OpenAPI 3)
    GET    metrics               its Prometheus metrics (``read:metrics``)

Anything else under the prefix is 403.
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
from tornado import httpclient, ioloop, web
from traitlets import Bool, Enum, Float, Unicode, default
from traitlets.config import Application

from .. import __version__
from ..hub import scopes
from ..hub.leftovers import record_service
from ..hub.serviceapi import JsonApiHandler, MetricsHandler, Requester, serve_forever
from ..metrics import service_metrics
from ..spawner.storage import Layout
from .shares import Share, ShareError, ShareStore, check_path, parse_grantee

#: How long the hub's answer about a token, and about a user's groups, is trusted.
TOKEN_CACHE_SECONDS = 5


class ApiHandler(JsonApiHandler):
    use_scope = scopes.SHARES_USE
    admin_scope = scopes.SHARES_ADMIN

    @property
    def sharing(self) -> SharingState:
        return self.settings["sharing"]

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        return data

    def share_model(self, share: Share) -> dict:
        return self.sharing.model(share)

    def visible(self, share: Share | None, who: Requester, groups: list[str]) -> Share:
        """The share, if ``who`` may see it (its owner, a recipient, an admin): else 404,
        which does not tell whether it exists."""
        if share is None or not (who.is_admin or share.owner == who.name
                                 or share.reaches(who.name, groups)):
            raise web.HTTPError(404, "no such share of yours or shared with you")
        return share


class SharesHandler(ApiHandler):
    @web.authenticated
    async def get(self):
        who = self.requester()
        store = self.sharing.store
        recipient = self.get_argument("recipient", "")
        if recipient:
            # what a server about to start mounts (Kubernetes: the spawner asks)
            if not who.is_admin:
                raise web.HTTPError(403, f"{who.name} may list only what is shared with "
                                         "themselves")
            groups = await self.sharing.groups_of(recipient)
            self.write_json({"shares": [self.share_model(s) for s in
                                        store.reaching(recipient, groups)]})
            return
        if self.get_argument("all", "") in ("1", "true") or self.get_argument("owner", ""):
            if not who.is_admin:
                raise web.HTTPError(403, f"{who.name} may list only their own shares "
                                         "(others' need the scope "
                                         f"{scopes.SHARES_ADMIN})")
            owner = self.get_argument("owner", "")
            found = store.owned_by(owner, include_revoked=True) if owner else store.query()
            self.write_json({"shares": [self.share_model(s) for s in found]})
            return
        groups = await self.sharing.groups_of(who.name)
        self.write_json({
            "mine": [self.share_model(s) for s in store.owned_by(who.name)],
            "with_me": [self.share_model(s) for s in store.reaching(who.name, groups)],
        })

    @web.authenticated
    async def post(self):
        who = self.requester()
        data = self.body()
        unknown = sorted(set(data) - {"path", "with", "owner"})
        if unknown:
            raise web.HTTPError(400, f"unknown keys {', '.join(unknown)}; a share takes "
                                     "path, with (and owner, for admins)")
        owner = data.get("owner", who.name)
        if owner != who.name and not who.is_admin:
            raise web.HTTPError(403, f"{who.name} may share only files of their own home")
        try:
            path = check_path(data.get("path"))
            grantee = parse_grantee(data.get("with"))
        except ShareError as e:
            raise web.HTTPError(400, str(e)) from None
        if grantee.kind == "user" and grantee.name == owner:
            raise web.HTTPError(400, "with: a share is for someone else; you have your "
                                     "own files already")
        await self.sharing.check_grantee(grantee)
        share = await self.sharing.share(owner, path, grantee, who.name)
        service_metrics("sharing")["redspot_shares_total"].labels("made").inc()
        self.write_json(self.share_model(share), status=201)


class ShareHandler(ApiHandler):
    @web.authenticated
    async def get(self, share_id):
        who = self.requester()
        groups = await self.sharing.groups_of(who.name)
        self.write_json(self.share_model(
            self.visible(self.sharing.store.get(share_id), who, groups)))

    @web.authenticated
    async def delete(self, share_id):
        who = self.requester()
        groups = await self.sharing.groups_of(who.name)
        share = self.visible(self.sharing.store.get(share_id), who, groups)
        if share.owner != who.name and not who.is_admin:
            raise web.HTTPError(403, f"only {share.owner} (or an admin) may revoke this "
                                     "share; ask them")
        stop = self.get_argument("stop_servers", "") in ("1", "true")
        if share.active:
            share = await self.sharing.revoke(share, who.name)
            service_metrics("sharing")["redspot_shares_total"].labels("revoked").inc()
        model = self.share_model(share)
        model["stopped_servers"] = (await self.sharing.stop_recipients(share)
                                    if stop and self.sharing.kubernetes else [])
        # one machine: the ACLs are gone now; Kubernetes: the mounts go with the pods
        model["takes_effect"] = ("now" if not self.sharing.kubernetes or stop else
                                 "at the recipients' next server start (stop_servers=true "
                                 "stops their servers now)")
        self.write_json(model)


class GranteesHandler(ApiHandler):
    @web.authenticated
    async def get(self):
        who = self.requester()
        users, groups = await self.sharing.grantees()
        self.write_json({"users": [u for u in users if u != who.name], "groups": groups})


class CheckHandler(ApiHandler):
    @web.authenticated
    async def post(self):
        self.requester(scopes.SHARES_ADMIN)
        self.write_json(await self.sharing.check())


class OpenApiHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.requester()
        import yaml

        self.write_json(yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text()))


class UnlistedHandler(ApiHandler):
    def prepare(self):
        raise web.HTTPError(403, f"{self.request.method} {self.request.path} is not a route "
                                 "of the sharing service (its routes: api/openapi.json)")


class SharingState:
    """The shares, the hub's users and groups, and the helper that enforces shares."""

    def __init__(self, store: ShareStore, helper, storage_root: Path | None, hub_api: str,
                 token: str, log, kubernetes: bool = False):
        self.store = store
        self.helper = helper
        self.storage_root = storage_root
        self.hub_api = hub_api.rstrip("/")
        self.token = token
        self.log = log
        self.kubernetes = kubernetes
        self._groups: dict[str, tuple[float, list[str]]] = {}
        self._lock = asyncio.Lock()

    # --- the hub --------------------------------------------------------------------

    async def _hub(self, method: str, path: str, body=None):
        client = httpclient.AsyncHTTPClient()
        return await client.fetch(
            f"{self.hub_api}/{path}", method=method, raise_error=False,
            headers={"Authorization": f"token {self.token}"},
            body=json.dumps(body) if body is not None else None,
            allow_nonstandard_methods=True)

    async def groups_of(self, name: str) -> list[str]:
        """``name``'s hub groups, asked with the service's own token; trusted a few
        seconds (so a new member receives a group's shares at once)."""
        held = self._groups.get(name)
        if held and time.monotonic() - held[0] < TOKEN_CACHE_SECONDS:
            return held[1]
        response = await self._hub("GET", f"users/{quote(name, safe='')}")
        if response.code == 404:
            return []
        if response.code != 200:
            raise web.HTTPError(502, f"the hub did not say who {name} is ({response.code})")
        groups = list(json.loads(response.body).get("groups") or [])
        self._groups[name] = (time.monotonic(), groups)
        return groups

    async def grantees(self) -> tuple[list[str], list[str]]:
        users = await self._hub("GET", "users?limit=10000")
        groups = await self._hub("GET", "groups?limit=10000")
        if users.code != 200 or groups.code != 200:
            raise web.HTTPError(502, f"the hub did not list its users and groups "
                                     f"({users.code}, {groups.code})")
        return (sorted(u["name"] for u in json.loads(users.body)),
                sorted(g["name"] for g in json.loads(groups.body)))

    async def check_grantee(self, grantee) -> None:
        kind = "users" if grantee.kind == "user" else "groups"
        response = await self._hub("GET", f"{kind}/{quote(grantee.name, safe='')}")
        if response.code == 404:
            raise web.HTTPError(400, f"with: the hub has no {grantee.kind} "
                                     f"{grantee.name!r} (GET api/grantees lists them)")
        if response.code != 200:
            raise web.HTTPError(502, f"the hub did not say whether {grantee} exists "
                                     f"({response.code})")

    async def stop_recipients(self, share: Share) -> list[str]:
        """Stop the servers of a revoked share's recipients (Kubernetes: their mounts
        go only when their pods go). Returns whose servers were stopped."""
        if share.grantee.kind == "user":
            names = [share.grantee.name]
        else:
            response = await self._hub("GET", f"groups/{quote(share.grantee.name, safe='')}")
            names = json.loads(response.body).get("users", []) if response.code == 200 else []
        stopped = []
        for name in names:
            if name == share.owner:
                continue
            response = await self._hub("DELETE", f"users/{quote(name, safe='')}/server")
            if response.code in (202, 204):
                stopped.append(name)
                self.log.info("Stopped %s's server: %s revoked %s", name, share.owner,
                              share.path)
        return stopped

    # --- shares ---------------------------------------------------------------------

    def model(self, share: Share) -> dict:
        data = share.model()
        if self.storage_root is not None:
            # where a recipient's server links it from (one machine)
            data["source"] = str(self.storage_root / Layout(share.owner).home / share.path)
        return data

    async def _ask(self, op: str, **args) -> dict:
        from ..privileged.ops import HelperError

        try:
            return await asyncio.to_thread(self.helper.call, op, **args)
        except HelperError as e:
            raise web.HTTPError(400, str(e)) from None

    async def share(self, owner: str, path: str, grantee, by: str) -> Share:
        async with self._lock:
            if not self.kubernetes:
                applied = await self._ask("apply_share", owner=owner, path=path,
                                          grantee=grantee.helper_args())
                kind = applied["kind"]
            else:
                kind = "unchecked"  # the recipient's pod mounts it (a missing path: empty)
            share = self.store.add(owner, path, grantee, kind, by)
        self.log.info("%s shared %s of %s with %s (%s)", by, path, owner, grantee, share.id)
        return share

    async def revoke(self, share: Share, by: str) -> Share:
        """Take the access away first, then record it: a revocation the helper could not
        carry out is not recorded (the owner sees why and tries again)."""
        async with self._lock:
            if not self.kubernetes:
                keep = [s.path for s in self.store.owned_by(share.owner)
                        if s.grantee == share.grantee and s.id != share.id]
                await self._ask("revoke_share", owner=share.owner, path=share.path,
                                grantee=share.grantee.helper_args(), keep=keep)
            revoked = self.store.revoke(share, by)
        self.log.info("%s revoked %s of %s for %s (%s)", by, share.path, share.owner,
                      share.grantee, share.id)
        return revoked

    async def check(self) -> dict:
        """Apply every active share again; put back what renames and chmods took away."""
        from ..privileged.ops import HelperError

        if self.kubernetes:
            return {"checked": 0, "repaired": [], "missing": []}
        repaired, missing = [], []
        shares = self.store.active()
        for share in shares:
            async with self._lock:
                if self.store.get(share.id).revoked is not None:
                    continue
                try:
                    result = await asyncio.to_thread(
                        self.helper.call, "apply_share", owner=share.owner, path=share.path,
                        grantee=share.grantee.helper_args())
                except HelperError as e:
                    missing.append({"id": share.id, "reason": str(e)})
                    continue
            if result["changed"]:
                repaired.append(share.id)
                self.log.warning("Put back %d ACL entries of %s's %s for %s (a rename or "
                                 "a chmod had taken them away)", result["changed"],
                                 share.owner, share.path, share.grantee)
        return {"checked": len(shares), "repaired": repaired, "missing": missing}


class SharingService(Application):
    name = "redspot-sharing"
    version = __version__
    description = "Redspot's sharing service: read-only shares of files and folders."

    data_dir = Unicode(config=True, help="Where the shares are kept (shares.sqlite).")
    storage_root = Unicode(
        config=True, help="The data folder whose ``home/`` holds the homes (one machine).")
    service_url = Unicode(config=True, help="Where to listen. Default: $JUPYTERHUB_SERVICE_URL.")
    prefix = Unicode(config=True, help="URL prefix. Default: $JUPYTERHUB_SERVICE_PREFIX.")
    check_interval = Float(
        60.0, config=True,
        help="Seconds between checks that put back ACLs a rename or chmod took away (0: "
             "never). Default 60.")
    deployment = Enum(
        ["local", "kubernetes"], "local", config=True,
        help="``local``: ACLs on this machine, set by the privileged helper. "
             "``kubernetes``: shares become read-only mounts at the recipient's next "
             "server start.")
    isolated = Bool(
        True, config=True,
        help="Whether tenants have accounts of their own (else shares are recorded and "
             "linked, and nothing is enforced: there is nobody to keep out).")
    aliases = {"data-dir": "SharingService.data_dir",
               "storage-root": "SharingService.storage_root",
               "check-interval": "SharingService.check_interval",
               "deployment": "SharingService.deployment",
               "log-level": "Application.log_level"}
    flags = {"no-isolation": ({"SharingService": {"isolated": False}},
                              "tenants share one account: nothing to enforce")}

    @default("log_level")
    def _log_level_default(self):
        return logging.INFO  # every share and revocation is logged

    @default("service_url")
    def _service_url_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10103/")

    @default("prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/sharing/")

    def make_helper(self):
        from ..privileged.client import helper_for

        socket = os.environ.get("REDSPOT_HELPER_SOCKET", "")
        return helper_for(socket, self.storage_root, caller="sharing",
                          isolated=False) if socket or not self.isolated else None

    def make_app(self) -> web.Application:
        service_metrics("sharing")  # exposed from the start, at 0
        if not self.data_dir:
            raise SystemExit("redspot-sharing: --data-dir is required")
        kubernetes = self.deployment == "kubernetes"
        if not kubernetes and not self.storage_root:
            raise SystemExit("redspot-sharing: --storage-root is required on one machine")
        helper = None if kubernetes else self.make_helper()
        if not kubernetes and helper is None:
            raise SystemExit("redspot-sharing: tenants are isolated but "
                             "$REDSPOT_HELPER_SOCKET is not set: nothing could enforce "
                             "a share")
        HubOAuth.instance(cache_max_age=TOKEN_CACHE_SECONDS)
        state = SharingState(
            ShareStore(str(Path(self.data_dir) / "shares.sqlite")), helper,
            None if kubernetes else Path(self.storage_root),
            os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
            os.environ.get("JUPYTERHUB_API_TOKEN", ""), self.log, kubernetes=kubernetes)
        api = url_path_join(self.prefix, "api")
        return web.Application(
            [
                (url_path_join(self.prefix, "oauth_callback"), HubOAuthCallbackHandler),
                (url_path_join(api, "shares"), SharesHandler),
                (url_path_join(api, "shares", r"([0-9a-f]{1,32})"), ShareHandler),
                (url_path_join(api, "grantees"), GranteesHandler),
                (url_path_join(api, "check"), CheckHandler),
                (url_path_join(api, "openapi.json"), OpenApiHandler),
                (url_path_join(self.prefix, "metrics"), MetricsHandler),
                (url_path_join(self.prefix, ".*"), UnlistedHandler),
                (self.prefix.rstrip("/"), UnlistedHandler),
            ],
            sharing=state, cookie_secret=os.urandom(32))

    def start(self):
        os.umask(0o077)  # the share records are this account's alone
        url = urlparse(self.service_url)
        app = self.make_app()
        app.listen(url.port, url.hostname)
        record_service(self.data_dir)  # a next hub stops it if this one's hub is killed
        state = app.settings["sharing"]
        self.log.info("Redspot sharing service on %s (%d active shares)", self.service_url,
                      len(state.store.active()))
        loop = ioloop.IOLoop.current()
        if self.check_interval > 0 and not state.kubernetes:
            async def check():
                try:
                    await state.check()
                except Exception:  # noqa: BLE001 - logged; the next check tries again
                    self.log.exception("Checking the shares failed")

            loop.add_callback(check)
            ioloop.PeriodicCallback(check, self.check_interval * 1000).start()

        serve_forever()


main = SharingService.launch_instance

if __name__ == "__main__":
    main()
