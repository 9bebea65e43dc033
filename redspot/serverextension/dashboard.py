"""The user's Ray dashboard through their server: ``/user/<name>/redspot/ray/dashboard/``.

The browser is already signed in to the user's server; this handler checks that (as
every handler of the server does), then forwards the request to the dashboard of the
user's cluster with the cluster's token in Ray's own header. The browser's cookies and
credentials for the hub are not passed on, and the token never reaches the browser.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jupyter_server.base.handlers import JupyterHandler
from tornado import httpclient, web

from ..origin import cross_origin_problem

#: Request headers not passed on to the dashboard.
_DROP_REQUEST = {"host", "cookie", "authorization", "x-ray-authorization", "x-xsrftoken",
                 "connection", "keep-alive", "transfer-encoding", "upgrade",
                 "proxy-authorization", "te", "trailer", "content-length"}
#: Response headers not passed back to the browser.
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length",
                  "content-encoding", "set-cookie", "server", "date"}


#: The dashboard's probes for what a Redspot cluster does not run: Prometheus (unless the
#: operator set one up) and Ray Serve (its extras are not installed). Ray answers them
#: with an error status, which the dashboard expects but the browser reports as an error;
#: the proxy answers what they mean, as Ray itself does where the feature is off:
#: ``path -> (Ray's status, the answer)``.
NOT_RUNNING = {
    "/api/prometheus_health": (500, {"result": False, "data": {},
                                     "msg": "Prometheus is not set up for this cluster"}),
    "/api/serve/applications/": (501, {"controller_info": {}, "proxies": {},
                                       "applications": {}, "target_capacity": None}),
}


def user_dashboard() -> tuple[str, str] | None:
    """The URL and token of the user's own cluster's dashboard, or None if none runs."""
    if os.environ.get("REDSPOT_RAY_CLUSTER"):
        # Kubernetes: the RayCluster the spawner made, its token given to the pod
        from ..compute.transport import resolve

        token = os.environ.get("RAY_AUTH_TOKEN") or _read(os.environ.get("RAY_AUTH_TOKEN_PATH"))
        return resolve().dashboard, token or ""
    from ..compute.local import LocalRayHead

    head = LocalRayHead()
    info = head.info()
    if info is None:
        return None
    return info.dashboard, head.token()


def _read(path: str | None) -> str | None:
    try:
        return Path(path).read_text().strip() if path else None
    except OSError:
        return None


class DashboardProxyHandler(JupyterHandler):
    """Forwards the dashboard's pages and API calls (HTTP; not its websockets)."""

    def check_xsrf_cookie(self):
        """The dashboard's own pages call its API without Jupyter's XSRF token, so a
        request that changes something must show where it comes from instead: the
        browser's ``Origin`` must be this server's own, or ``Sec-Fetch-Site`` say
        ``same-origin``. A token (``Authorization``) is no browser's ambient credential
        and needs neither. See ``cross_origin_problem``."""
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        if self.request.headers.get("Authorization"):
            return None
        problem = cross_origin_problem(self.request.headers, self.request.protocol,
                                       self.request.host)
        if problem:
            raise web.HTTPError(403, f"Refused a request to your Ray dashboard: {problem}")
        return None

    @web.authenticated
    async def get(self, path):
        await self._forward(path)

    post = put = delete = patch = head = get

    async def _forward(self, path):
        dashboard = user_dashboard()
        if dashboard is None:
            raise web.HTTPError(
                404, "Your Ray cluster is not running: %ray_connect in a notebook starts it")
        base, token = dashboard
        if path in (None, ""):
            # relative links of the dashboard's page need the trailing slash
            self.redirect(self.request.path + "/" + (
                f"?{self.request.query}" if self.request.query else ""))
            return
        url = base + path + (f"?{self.request.query}" if self.request.query else "")
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in _DROP_REQUEST}
        headers["X-Ray-Authorization"] = f"Bearer {token}"
        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        request = httpclient.HTTPRequest(
            url, method=self.request.method, headers=headers, body=body,
            follow_redirects=False, request_timeout=60, decompress_response=True,
            allow_nonstandard_methods=True)
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as e:
            raise web.HTTPError(502, f"Your Ray dashboard cannot be reached: {e}") from None
        absent = NOT_RUNNING.get(path)
        if absent and self.request.method == "GET" and response.code == absent[0]:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(absent[1]))
            return
        self.set_status(response.code, response.reason)
        seen = set()
        for name, value in response.headers.get_all():
            key = name.lower()
            if key in _DROP_RESPONSE:
                continue
            if key == "location" and value.startswith("/"):
                value = self.request.path[: len(self.request.path) - len(path)] + value
            # the dashboard's header replaces the handler's default (Content-Type is
            # text/html until set: a second one makes browsers refuse scripts and styles)
            if key in seen:
                self.add_header(name, value)
            else:
                self.set_header(name, value)
                seen.add(key)
        if "content-type" not in seen:
            self.clear_header("Content-Type")
        self.finish(response.body if self.request.method != "HEAD" else None)
