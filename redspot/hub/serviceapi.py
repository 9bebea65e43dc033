"""What Redspot's JSON services (warehouse, sharing) share: who asks, in which scope,
and answers and errors as JSON.

A service's handlers subclass :class:`JsonApiHandler` and name their scopes::

    class ApiHandler(JsonApiHandler):
        use_scope = scopes.SHARES_USE
        admin_scope = scopes.SHARES_ADMIN

``self.requester()`` is then the hub's word on who asks, or a 403 saying what is
missing; a hub admin holds the admin scope. ``serve_forever`` runs the service's loop
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import json
import signal

from jupyterhub.services.auth import HubOAuthenticated
from tornado import ioloop, web


class Requester:
    """Who asks (the hub's model of a token's owner) and which scopes they hold."""

    def __init__(self, model: dict, admin_scope: str):
        self.name = model["name"]
        self.kind = model.get("kind", "user")
        self.admin = bool(model.get("admin"))
        self.scopes = frozenset(model.get("scopes", ()))
        self.admin_scope = admin_scope

    def may(self, scope: str) -> bool:
        return scope in self.scopes or (self.admin and scope == self.admin_scope)

    @property
    def is_admin(self) -> bool:
        return self.may(self.admin_scope)


class JsonApiHandler(HubOAuthenticated, web.RequestHandler):
    #: the scope every route needs at least, and the one that allows everything
    use_scope = ""
    admin_scope = ""

    def get_login_url(self):
        raise web.HTTPError(403, "sign in to the hub, or send a hub token")

    def requester(self, scope: str | None = None) -> Requester:
        scope = scope or self.use_scope
        model = self.current_user
        if not model:
            raise web.HTTPError(403, "sign in to the hub, or send a hub token")
        who = Requester(model, self.admin_scope)
        if not (who.may(scope) or who.may(self.admin_scope)):
            raise web.HTTPError(403, f"{who.name} lacks the scope {scope}")
        return who

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))


class MetricsHandler(HubOAuthenticated, web.RequestHandler):
    """``GET <service>/metrics``: the service's Prometheus metrics (``redspot.metrics``),
    for a hub token with ``read:metrics``."""

    def get_login_url(self):
        raise web.HTTPError(403, "send a hub token with read:metrics")

    @web.authenticated
    def get(self):
        from ..metrics import exposition
        from . import scopes

        model = self.current_user
        if scopes.METRICS not in (model.get("scopes") or ()):
            raise web.HTTPError(403, f"{model['name']} lacks the scope {scopes.METRICS}")
        body, content_type = exposition()
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


def serve_forever() -> None:
    """Run the current loop until SIGINT or SIGTERM (also when SIGINT was ignored at
    start, as for a service of a `make up &` in a script)."""
    loop = ioloop.IOLoop.current()

    def stop(signum, frame):
        loop.add_callback_from_signal(loop.stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    loop.start()
