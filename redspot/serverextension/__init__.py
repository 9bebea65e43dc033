"""Redspot's jupyter-server extension: what the JupyterLab side asks the server.

``GET /redspot/api/info`` answers the Redspot version and the instance profile this
server was started with (from the ``REDSPOT_*`` environment the spawner set).
"""

from __future__ import annotations

import atexit
import json

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .. import __version__
from ..info import server_info


class InfoHandler(APIHandler):
    @web.authenticated
    def get(self):
        self.finish(json.dumps(server_info()))


def _jupyter_server_extension_points():
    return [{"module": "redspot.serverextension"}]


def _load_jupyter_server_extension(serverapp):
    base = serverapp.web_app.settings["base_url"]
    serverapp.web_app.add_handlers(
        ".*$", [(url_path_join(base, "redspot", "api", "info"), InfoHandler)]
    )
    serverapp.log.info("Redspot server extension %s loaded", __version__)
    atexit.register(_stop_ray_head, serverapp.log)


def _stop_ray_head(log):
    """The server stops: so does the user's Ray head that its kernels started (the hub
    gives a stopping server a few seconds, so Ray gets a short grace period)."""
    from ..compute.local import LocalRayHead

    if LocalRayHead().stop(timeout=3):
        log.info("Stopped this user's Ray head")
