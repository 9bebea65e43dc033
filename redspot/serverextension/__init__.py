"""Redspot's jupyter-server extension: what the JupyterLab side asks the server.

``GET /redspot/api/info``
    the Redspot version and the instance profile this server was started with (from the
    ``REDSPOT_*`` environment the spawner set).
``/redspot/api/shares``
    shares and invitations (``sharing.py``), asked of the sharing service and the hub
    with the server's token.
``/redspot/api/ray``, ``…/environments``, ``…/models``, ``…/warehouse``, ``…/grantees``
    the Redspot panel's: my Ray cluster (and Start/Stop), environments, models, the
    warehouse's connections and catalog, whom I may share with (``platform.py``).
``/redspot/api/idle``
    how long the server has been idle and when it stops itself, for JupyterLab's
    warning; a POST keeps it (``idle.py``). Reads (GET) are not use: an open tab's
    polls do not keep an idle server up.
``/redspot/ray/dashboard/…``
    the user's Ray dashboard, proxied: the browser reaches it behind the hub's login, and
    the server adds the cluster's token, which the browser never sees.

Its contents manager shows Redspot's example notebooks as a read-only ``examples``
folder (``contents.py``). It also stops the user's local Ray head when it has not been used for
``$REDSPOT_RAY_IDLE_TIMEOUT`` seconds, and when the server stops.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
from datetime import UTC, datetime

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import PeriodicCallback

from .. import __version__
from ..info import server_info
from .dashboard import DashboardProxyHandler
from .idle import IdleHandler, check_idle_on_time, reads_are_not_use
from .platform import (
    EnvironmentsHandler,
    GranteesHandler,
    ModelsHandler,
    RayHandler,
    WarehouseHandler,
)
from .sharing import SharesHandler, keep_links


class InfoHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.finish(json.dumps(server_info()))


def _jupyter_server_extension_points():
    return [{"module": "redspot.serverextension"}]


def _link_jupyter_server_extension(serverapp):
    """Before the server makes its contents manager: Redspot's, which adds the
    read-only ``examples`` folder (``contents.py``), unless another was configured."""
    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager

    from .contents import RedspotContentsManager

    if serverapp.contents_manager_class is AsyncLargeFileManager:
        serverapp.contents_manager_class = RedspotContentsManager
    # jupyter-server keeps websockets alive for 3 pings without an answer (its own check)
    # and passes that timeout to Tornado too, which allows one ping at most and says so
    # in every server's log: nothing to act on, so it is not logged
    logging.getLogger("tornado.general").addFilter(_no_ping_timeout_warning)
    # jupyter-resource-usage (the panel's Machine and the status bar) reports CPU too; its
    # limits come from the spawner (MEM_LIMIT, CPU_LIMIT: the profile's). Set here, not in
    # jupyter_server_config.d, whose files only enable extensions
    usage = serverapp.config.ResourceUseDisplay
    if "track_cpu_percent" not in usage:
        usage.track_cpu_percent = True
    # its CPU warning compares the limit in CPUs with a percentage (4 - 8.7% < 0.4): the
    # status bar turned red at once on every server; the memory warning stays
    if "cpu_warning_threshold" not in usage:
        usage.cpu_warning_threshold = 0


def _no_ping_timeout_warning(record: logging.LogRecord) -> bool:
    return "websocket_ping_timeout" not in str(record.msg)


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(".*$", [
        (url_path_join(base, "redspot", "api", "info"), InfoHandler),
        (url_path_join(base, "redspot", "ray", "dashboard") + "(/.*)?", DashboardProxyHandler),
        (url_path_join(base, "redspot", "api", "shares") + "(?:/([0-9a-f]{1,32}))?",
         SharesHandler),
        (url_path_join(base, "redspot", "api", "ray"), RayHandler),
        (url_path_join(base, "redspot", "api", "environments"), EnvironmentsHandler),
        (url_path_join(base, "redspot", "api", "models"), ModelsHandler),
        (url_path_join(base, "redspot", "api", "warehouse"), WarehouseHandler),
        (url_path_join(base, "redspot", "api", "warehouse")
         + "/([^/]+)/(schemas|tables|columns)", WarehouseHandler),
        (url_path_join(base, "redspot", "api", "grantees"), GranteesHandler),
        (url_path_join(base, "redspot", "api", "idle"), IdleHandler),
    ])
    reads_are_not_use()
    check_idle_on_time(serverapp)
    serverapp.log.info("Redspot server extension %s loaded", __version__)
    atexit.register(_stop_ray_head, serverapp.log)
    _watch_ray_head(serverapp.log, serverapp.web_app.settings)
    keep_links(serverapp.log)


def _stop_ray_head(log):
    """The server stops: so does the user's Ray head that its kernels started."""
    from ..compute.local import LocalRayHead

    if LocalRayHead().stop():
        log.info("Stopped this user's Ray head")


def _watch_ray_head(log, settings: dict):
    """Stop the user's local head once no kernel has used it for the idle timeout, and
    count what it runs as the server's activity.

    Kernels let go of the head at the idle timeout (``RaySession.watch_idle``); the head
    stops two checks later, when every kernel that was connected has disconnected. A head
    that runs a submitted job (a ``%%ray_train --submit`` run outlives its kernel) is in
    use: it is not stopped, and the server is not idle (``last_activity_times``, which the
    server's own idle shutdown and the hub's activity reports read), so neither cuts it.
    """
    from ..compute.local import LocalRayHead
    from ..compute.session import idle_check_interval, idle_timeout

    timeout = idle_timeout()
    if os.environ.get("REDSPOT_RAY_CLUSTER"):  # Kubernetes: KubeRay's job
        return None
    interval = idle_check_interval(timeout) if timeout else 60

    async def check():
        head = LocalRayHead()
        if await _runs_jobs():
            head.touch()
            settings.setdefault("last_activity_times", {})["redspot-ray"] = \
                datetime.now(UTC)
        elif timeout and head.stop_if_idle(timeout + 2 * interval):
            log.info("Stopped this user's Ray head: unused for %d s", timeout)

    callback = PeriodicCallback(check, interval * 1000)
    callback.start()
    return callback


async def _runs_jobs() -> bool:
    """Whether the user's local head runs a submitted job (pending or running)."""
    from .dashboard import user_dashboard
    from .platform import _dashboard_json, submitted_and_running

    dashboard = user_dashboard()
    if dashboard is None:
        return False
    try:
        jobs = await _dashboard_json(*dashboard, "/api/jobs/")
    except (OSError, ValueError):
        return False
    return any(submitted_and_running(job) for job in (jobs if isinstance(jobs, list)
                                                      else []))
