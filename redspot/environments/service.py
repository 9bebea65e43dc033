"""The environments service: a JupyterHub service at ``/services/environments/``.

REST API (JSON), every request authenticated by the hub (a token or the hub's OAuth
cookie) and checked against ``custom:redspot:environments:*`` scopes:

    GET    api/bases                             the bases environments build on
    GET    api/environments                      the team's and your own environments
    POST   api/environments                      create one and build it (``"team": true``
                                                 to publish it to everyone: admins only)
    GET    api/environments/<owner>/<name>       one environment (owner: a user or ``team``)
    GET    api/environments/<owner>/<name>/log   its build log (``?follow=1``: until done)
    GET    api/ready/<user>                      the built environments a user may start a
                                                 server in (the hub's spawner asks it:
                                                 ``custom:redspot:environments:ready``)
    DELETE api/environments/<owner>/<name>       delete it (yours, or any as an admin)
    GET    api/openapi.json                      this API, described (OpenAPI 3)
    GET    metrics                               its Prometheus metrics (``read:metrics``)

and its page, ``GET /services/environments/``: the environments the signed-in user may
use, their build state and log, and a form to make one (validation errors shown by
their field).

Any other path under the service's prefix is refused with 403, naming it. A user may
have ``max_builds_per_owner`` builds running at once (a next one is 429).

The hub starts it (``services.environments.enabled``) with the settings below on its
command line; it reads the rest from the ``JUPYTERHUB_*`` variables the hub gives it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Bool, Dict, Enum, Integer, Unicode, default
from traitlets.config import Application

from .. import __version__
from ..hub import scopes
from ..hub.leftovers import record_service
from ..hub.serviceapi import MetricsHandler, serve_forever
from ..metrics import service_metrics
from .builders import BuildahBuilder, KubernetesBuilder, VenvBuilder
from .catalog import Catalog
from .manager import TEAM, EnvironmentManager, Refused, Requester
from .spec import FIELDS

MAX_BODY = 64 * 1024
#: How long the hub's answer about a token is trusted.
TOKEN_CACHE_SECONDS = 5


class ApiHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def manager(self) -> EnvironmentManager:
        return self.settings["manager"]

    def get_login_url(self):
        # an API answers 403, it does not send browsers to a login page
        raise web.HTTPError(403, "sign in to the hub, or send a hub token")

    @property
    def requester(self) -> Requester:
        model = self.current_user
        if not model:
            raise web.HTTPError(403, "sign in to the hub, or send a hub token")
        return Requester.from_hub_model(model)

    def body(self) -> object:
        if len(self.request.body) > MAX_BODY:
            raise web.HTTPError(413, f"a request body may have at most {MAX_BODY} bytes")
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError as e:  # not JSON, or not text at all (UnicodeDecodeError)
            raise web.HTTPError(400, f"the body is not JSON: {e}") from None

    def write_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        body = {"status": status_code, "message": message}
        if getattr(exc, "field", None):
            body["field"] = exc.field  # the environments page shows it by that field
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _handle_request_exception(self, e):
        if isinstance(e, Refused):
            error = web.HTTPError(e.status, str(e))
            error.field = e.field
            self.send_error(e.status, exc_info=(type(e), error, None))
        else:
            super()._handle_request_exception(e)


class BasesHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.requester  # noqa: B018 (authenticated, whoever asks)
        self.write_json({"bases": self.manager.builder.bases(),
                         "builder": self.manager.builder.kind})


class EnvironmentsHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.write_json({"environments": self.manager.list(self.requester)})

    @web.authenticated
    async def post(self):
        data = self.body()
        team = False
        if isinstance(data, dict):
            team = data.pop("team", False)
            if not isinstance(team, bool):
                raise web.HTTPError(400, "team: expected true or false")
        model = await self.manager.create(self.requester, data, team=team)
        self.set_header("Location", url_path_join(self.request.path, model["id"]))
        self.write_json(model, 200 if model["status"] == "ready" else 202)


class EnvironmentHandler(ApiHandler):
    @web.authenticated
    def get(self, owner, name):
        entry = self.manager.get(self.requester, owner, name)
        self.write_json(self.manager.describe(entry))

    @web.authenticated
    def delete(self, owner, name):
        self.manager.delete(self.requester, owner, name)
        self.set_status(204)
        self.finish()


class ReadyHandler(ApiHandler):
    """``GET api/ready/<user>``: the built environments a user may start a server in,
    asked by the hub's spawner (its ``redspot-spawner`` token) when it renders the spawn
    form and when it starts a server."""

    @web.authenticated
    def get(self, user):
        self.write_json({"environments": self.manager.ready_for(self.requester, user)})


class LogHandler(ApiHandler):
    @web.authenticated
    async def get(self, owner, name):
        entry = self.manager.get(self.requester, owner, name)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if self.get_argument("follow", "0") in ("1", "true"):
            async for chunk in self.manager.follow_log(entry.tag):
                self.write(chunk)
                await self.flush()
            return
        path = self.manager.log_path(entry.tag)
        self.finish(path.read_text() if path.exists() else "")


class OpenApiHandler(ApiHandler):
    @web.authenticated
    def get(self):
        self.requester  # noqa: B018 (authenticated, whoever asks)
        self.write_json(openapi())


class PageHandler(ApiHandler):
    """``GET /services/environments/``: the environments page (a browser signed in to
    the hub; one without a session goes through the hub's sign-in first). The page's
    form and buttons call the REST API with the page's XSRF token."""

    def get_login_url(self):
        # a page: the hub's OAuth (with its state cookie), then back here
        return HubOAuthenticated.get_login_url(self)

    def prepare(self):
        if self.request.method not in ("GET", "HEAD"):
            raise web.HTTPError(403, f"{self.request.method} {self.request.path} is not a "
                                     "route of the environments service (the page is GET)")
        return super().prepare()

    @web.authenticated
    def get(self):
        who = self.requester
        environments = self.manager.list(who)
        self.set_header("Cache-Control", "no-store")
        self.render(
            "page.html", user=who.name, admin=who.may(scopes.ENVIRONMENTS_ADMIN),
            environments=environments, team=TEAM, bases=self.manager.builder.bases(),
            builder=self.manager.builder.kind, fields=FIELDS,
            api=url_path_join(self.settings["service_prefix"], "api"),
            hub_home=self.settings["hub_home"], xsrf=self.xsrf_token.decode("ascii"),
            created=lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)))


class UnlistedHandler(ApiHandler):
    """Everything the service's routes do not name: refused, naming it."""

    def prepare(self):
        raise web.HTTPError(403, f"{self.request.method} {self.request.path} is not a route of "
                                 "the environments service (its routes: api/openapi.json)")


def openapi() -> dict:
    """The REST API's OpenAPI description (``openapi.yaml``)."""
    import yaml

    return yaml.safe_load((Path(__file__).parent / "openapi.yaml").read_text())


class EnvironmentsService(Application):
    name = "redspot-environments"
    version = __version__
    description = "Redspot's environment service (a JupyterHub service)."

    data_dir = Unicode(
        config=True, help="Where the catalog, the build logs and the builds live.",
    )
    builder = Enum(["venv", "buildah", "kubernetes"], default_value="venv", config=True,
                   help="""How environments are built. ``venv`` (default): uv virtualenvs.
                   ``buildah``: OCI images pushed to ``registry``. ``kubernetes``: build
                   Jobs in the cluster, pushing to ``repository``.""")
    repository = Unicode(config=True, help="kubernetes: the repository images are pushed to.")
    registry_secret = Unicode(
        config=True, help="kubernetes: the dockerconfigjson Secret build pods push with.")
    build_namespace = Unicode("redspot-builds", config=True,
                              help="kubernetes: the namespace build Jobs run in.")
    build_timeout = Integer(3600, config=True,
                            help="kubernetes: seconds a build Job may run.")
    registry = Unicode(config=True, help="buildah: the registry images are pushed to.")
    bases = Dict(value_trait=Unicode(), config=True,
                 help="buildah: base images by name, pinned by digest (name@sha256:…).")
    tls_verify = Bool(True, config=True, help="buildah: verify the registry's certificate.")
    max_builds_per_owner = Integer(
        2, config=True,
        help="Builds one owner may have running at once; a next request is refused (429).")
    service_url = Unicode(
        config=True, help="Where to listen. Default: $JUPYTERHUB_SERVICE_URL.",
    )
    prefix = Unicode(config=True, help="URL prefix. Default: $JUPYTERHUB_SERVICE_PREFIX.")
    helper_socket = Unicode(
        config=True, help="The privileged helper's socket. Default: $REDSPOT_HELPER_SOCKET.")

    @default("helper_socket")
    def _helper_socket_default(self):
        return os.environ.get("REDSPOT_HELPER_SOCKET", "")

    aliases = {"data-dir": "EnvironmentsService.data_dir",
               "builder": "EnvironmentsService.builder",
               "registry": "EnvironmentsService.registry",
               "log-level": "Application.log_level"}
    flags = {"no-tls-verify": ({"EnvironmentsService": {"tls_verify": False}},
                               "Do not verify the registry's TLS certificate.")}

    @default("service_url")
    def _service_url_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101/")

    @default("prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/environments/")

    def helper(self):
        """The privileged helper that builds environments: its socket when the hub runs
        one (tenants isolated), else the same build in this process and account."""
        from ..privileged.client import helper_for

        return helper_for(self.helper_socket, Path(self.data_dir).parent,
                          caller="environments", isolated=False,
                          server_python=sys.executable)

    def make_app(self) -> web.Application:
        service_metrics("environments")  # exposed from the start, at 0
        if not self.data_dir:
            raise SystemExit("redspot-environments: --data-dir is required")
        root = Path(self.data_dir)
        # a revoked token (a removed user's) stops working within seconds
        HubOAuth.instance(cache_max_age=TOKEN_CACHE_SECONDS)
        catalog = Catalog(root / "catalog.sqlite")
        catalog.recover()
        if self.builder == "kubernetes":
            from .jobs import BuildJobSettings

            builder = KubernetesBuilder(BuildJobSettings(
                namespace=self.build_namespace, repository=self.repository,
                registry_secret=self.registry_secret,
                deadline_seconds=self.build_timeout), self.bases)
        elif self.builder == "buildah":
            builder = BuildahBuilder(self.helper(), self.registry, self.bases,
                                     tls_verify=self.tls_verify)
        else:
            builder = VenvBuilder(self.helper())
        manager = EnvironmentManager(catalog, builder, root / "logs",
                                     max_builds_per_owner=self.max_builds_per_owner)
        api = url_path_join(self.prefix, "api")
        return web.Application(
            [
                (url_path_join(self.prefix, "oauth_callback"), HubOAuthCallbackHandler),
                (url_path_join(api, "bases"), BasesHandler),
                (url_path_join(api, "environments"), EnvironmentsHandler),
                (url_path_join(api, "environments", r"([^/]+)", r"([^/]+)"),
                 EnvironmentHandler),
                (url_path_join(api, "environments", r"([^/]+)", r"([^/]+)", "log"),
                 LogHandler),
                (url_path_join(api, "ready", r"([^/]+)"), ReadyHandler),
                (url_path_join(api, "openapi.json"), OpenApiHandler),
                (url_path_join(self.prefix, "metrics"), MetricsHandler),
                (self.prefix.rstrip("/") + "/?", PageHandler),
                (url_path_join(self.prefix, ".*"), UnlistedHandler),
            ],
            manager=manager,
            cookie_secret=os.urandom(32),
            template_path=str(Path(__file__).parent / "templates"),
            service_prefix=self.prefix,
            hub_home=os.environ.get("REDSPOT_HUB_HOME") or url_path_join(
                os.environ.get("JUPYTERHUB_BASE_URL", "/"), "hub/home"),
        )

    def start(self):
        os.umask(0o077)  # the catalog, specs and build logs are this account's alone
        url = urlparse(self.service_url)
        app = self.make_app()
        app.listen(url.port, url.hostname)
        record_service(self.data_dir)  # a next hub stops it if this one's hub is killed
        self.log.info("Redspot environments service on %s (builder: %s)",
                      self.service_url, self.builder)
        serve_forever()


main = EnvironmentsService.launch_instance

if __name__ == "__main__":
    main()
