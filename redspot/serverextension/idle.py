"""How long this server has been idle, and when it stops itself: what JupyterLab asks
to warn its user a few minutes before (``GET /redspot/api/idle``), and how the user
keeps it (``POST``: that is use).

The server stops itself (``ServerApp.shutdown_no_activity_timeout``, set by the
spawner from ``culling:``) once nothing has used it for that long: its idle kernels are
culled at the same limit, and it looks every quarter of that limit, at most once a
minute (``check_idle_on_time``). Reads do not count as use
(``reads_are_not_use``): asking, and every poll of an open JupyterLab tab.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jupyter_server.base.handlers import APIHandler
from tornado import web

#: Warn this long before the stop (or in the last half of a shorter limit).
WARN_BEFORE = 300


def reads_are_not_use() -> None:
    """Only requests that change something (and kernels, terminals) count as the
    server's use: not GETs. JupyterLab polls the server every few seconds while its tab
    is open (kernels, sessions, the Redspot panel), and saves its layout (the
    workspace) every ten seconds: either would keep an idle server, and its GPUs, up for
    as long as a tab stays open somewhere. Running a cell, saving a file, a terminal, a
    submitted Ray job still count."""
    if getattr(APIHandler.update_api_activity, "_redspot", False):
        return
    tracked = APIHandler.update_api_activity

    def update_api_activity(self) -> None:
        if self.request.method not in ("GET", "HEAD", "OPTIONS") \
                and "/lab/api/workspaces" not in self.request.path:
            tracked(self)

    update_api_activity._redspot = True
    APIHandler.update_api_activity = update_api_activity


def check_idle_on_time(serverapp) -> None:
    """Make the server look at its idle time every ``idle_check_interval`` seconds: a
    server with a 1-minute limit ran up to 2 (call it from the extension's load, before
    the server sets up its own look)."""
    from tornado.ioloop import PeriodicCallback

    from ..spawner.base import idle_check_interval as check_interval

    def init_shutdown_no_activity() -> None:
        timeout = serverapp.shutdown_no_activity_timeout
        if timeout > 0:
            serverapp.log.info("Will shut down after %d seconds with no kernels (looking "
                               "every %d s).", timeout, check_interval(timeout))
            PeriodicCallback(serverapp.shutdown_no_activity,
                             check_interval(timeout) * 1000).start()

    serverapp.init_shutdown_no_activity = init_shutdown_no_activity


def idle_state(timeout: int, last_activity: datetime, now: datetime, kernels: int,
               busy_kernels: int) -> dict:
    """What the front end shows (pure): seconds idle, seconds left before the server
    stops itself (None: it never does, or something runs), and whether to warn now."""
    idle = max(0.0, (now - last_activity).total_seconds())
    if not timeout or busy_kernels:
        return {"timeout": timeout, "idle": idle, "stops_in": None, "warn": False,
                "warn_before": 0, "kernels": kernels}
    warn_before = min(WARN_BEFORE, timeout // 2)
    stops_in = max(0.0, timeout - idle)
    return {"timeout": timeout, "idle": idle, "stops_in": stops_in,
            "warn": stops_in <= warn_before, "warn_before": warn_before, "kernels": kernels}


class IdleHandler(APIHandler):
    @web.authenticated
    def get(self):
        app = self.serverapp
        kernels = self.kernel_manager
        busy = sum(1 for k in kernels.list_kernels() if k.get("execution_state") == "busy")
        now = datetime.now(UTC)
        last = app.web_app.last_activity()
        self.finish(json.dumps(idle_state(int(app.shutdown_no_activity_timeout), last, now,
                                          len(kernels), busy)))

    @web.authenticated
    def post(self):
        """Keep the server: this request is use (jupyter-server records it)."""
        self.set_status(204)
        self.finish()
