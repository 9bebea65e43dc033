"""The server's sharing endpoints, for the JupyterLab extension: they ask the sharing
service and the hub with the server's own token, which never reaches the browser.

``GET /redspot/api/shares``
    ``{"mine": [...], "with_me": [...], "invited": [{"kind", "name"}] | null}``
    (``invited``: who may enter this server; null when its owner may not invite), and the
    ``~/shared-with-me`` links made to match;
``POST /redspot/api/shares``
    ``{"path": "notebooks/plan.ipynb", "with": "bob"}`` shares read-only;
    ``{"invite": "bob"}`` invites into this server;
``DELETE /redspot/api/shares/<id>``
    revokes one of my shares; ``DELETE /redspot/api/shares?invite=bob`` an invitation.

The server also keeps the links by itself: at start and every minute (one machine).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.ioloop import PeriodicCallback

from ..sharing.client import HubShares, SharingClient, SharingError, sync_links

LINK_INTERVAL = 60


def _home() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser()


class SharesHandler(APIHandler):
    def client(self) -> SharingClient:
        client = SharingClient.from_environment()
        if client is None:
            raise web.HTTPError(404, "the sharing service is not on in this Redspot")
        return client

    async def call(self, fn, *args):
        try:
            return await asyncio.to_thread(fn, *args)
        except SharingError as e:
            raise web.HTTPError(e.status if 400 <= e.status < 500 else 502, str(e)) from None

    @web.authenticated
    async def get(self, share_id=None):
        if share_id:
            raise web.HTTPError(405, "GET /redspot/api/shares lists them all")
        listed = await self.call(self.client().list)
        await asyncio.to_thread(sync_links, _home(), listed["with_me"])
        hub = HubShares.from_environment()
        invited = None
        if hub is not None:
            try:
                invited = invitations(await asyncio.to_thread(hub.list))
            except SharingError:
                invited = None
        self.finish(json.dumps({**listed, "invited": invited}))

    @web.authenticated
    async def post(self, share_id=None):
        if share_id:
            raise web.HTTPError(405, "POST /redspot/api/shares makes a share")
        body = self.get_json_body() or {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, "expected a JSON object")
        if "invite" in body:
            hub = HubShares.from_environment()
            if hub is None:
                raise web.HTTPError(404, "not a JupyterHub server")
            share = await self.call(hub.invite, str(body["invite"]))
        else:
            share = await self.call(self.client().share, body.get("path"), body.get("with"))
        self.set_status(201)
        self.finish(json.dumps(share))

    @web.authenticated
    async def delete(self, share_id=None):
        invite = self.get_argument("invite", "")
        if invite:
            hub = HubShares.from_environment()
            if hub is None:
                raise web.HTTPError(404, "not a JupyterHub server")
            await self.call(hub.uninvite, invite)
            self.set_status(204)
            self.finish()
            return
        if not share_id:
            raise web.HTTPError(400, "DELETE /redspot/api/shares/<id>, or ?invite=NAME")
        self.finish(json.dumps(await self.call(self.client().revoke, share_id)))


def invitations(items: list[dict]) -> list[dict]:
    """JupyterHub's shares of this server as ``[{"kind": "user"|"group", "name": ...}]``
    (pure): who is invited, without the hub's scopes and server records."""
    found = []
    for item in items:
        for kind in ("user", "group"):
            if item.get(kind):
                found.append({"kind": kind, "name": item[kind]["name"]})
    return found


def keep_links(log) -> PeriodicCallback | None:
    """Keep ``~/shared-with-me`` in step with the shares (one machine; on Kubernetes the
    pod mounts them at start)."""
    client = SharingClient.from_environment()
    if client is None or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None

    async def sync():
        try:
            listed = await asyncio.to_thread(client.list)
            changed = await asyncio.to_thread(sync_links, _home(), listed["with_me"])
        except (SharingError, OSError) as e:
            log.warning("Could not update ~/shared-with-me: %s", e)
            return
        if changed["linked"] or changed["removed"]:
            log.info("~/shared-with-me: linked %s, removed %s", changed["linked"] or "none",
                     changed["removed"] or "none")

    from tornado.ioloop import IOLoop

    IOLoop.current().add_callback(sync)
    callback = PeriodicCallback(sync, LINK_INTERVAL * 1000)
    callback.start()
    return callback
