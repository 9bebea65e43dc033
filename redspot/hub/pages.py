"""Redspot's pages in the hub: the home page after sign-in, the docs, the admin's
"set a password" action for accounts added on the admin page, and the usage report.

=================================================  ==========  ===========================
route (under ``/hub/``)                            method      who may
=================================================  ==========  ===========================
``home``                                           GET         any signed-in user (their
                                                               own server and links)
``redspot/docs/``, ``redspot/docs/<page>``         GET         any signed-in user
``redspot/accounts/<name>/password``               POST        admins (``admin:users``),
                                                               with the page's XSRF token
``redspot/usage``                                  GET         admins (``admin:users``):
                                                               everyone's hours and cost
=================================================  ==========  ===========================

Every other ``/hub/redspot/…`` path is 404 (``ROUTES`` is the whole table).
"""

from __future__ import annotations

import html
import re

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.pages import HomeHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from ..resources import docs_dir

#: The docs shown at ``/hub/redspot/docs/<page>``, in the index's order, with titles.
DOC_PAGES = {
    "local": "Running Redspot on one machine",
    "ray": "Ray: %%ray_remote and your cluster",
    "training": "Training with %%ray_train (DeepSpeed ZeRO)",
    "models": "The model registry",
    "environments": "Environments",
    "warehouse": "The warehouse: %%sql",
    "sharing": "Sharing with teammates",
    "jupyterlab": "The Redspot panel in JupyterLab",
    "configuration": "Configuration reference (redspot.yaml)",
    "security": "Security and isolation",
    "operations": "Operations: idle machines, cost and caps, metrics, faults",
    "kubernetes": "Redspot on Kubernetes",
}


def home_links(server_url: str, running: bool, services: dict[str, str],
               base_url: str, admin: bool = False) -> list[dict]:
    """The links of a user's home page (pure): what each is, where, and whether it can
    be used now (``note`` says why not, or what to do first)."""
    links = [{
        "id": "lab", "title": "JupyterLab", "href": f"{server_url}lab",
        "text": "your notebooks, terminals and files",
        "note": "" if running else "start your server first",
    }]
    if "models" in services:
        links.append({"id": "models", "title": "Model registry", "href": services["models"],
                      "text": "registered models, their versions and lineage", "note": ""})
    links.append({
        "id": "ray", "title": "Ray dashboard", "href": f"{server_url}redspot/ray/dashboard/",
        "text": "your Ray cluster: nodes, tasks, jobs, logs",
        "note": "" if running else "start your server first",
        "after": "your cluster starts with %ray_connect (or the first %%ray_remote cell)",
    })
    if "environments" in services:
        links.append({"id": "environments", "title": "Environments",
                      "href": services["environments"],
                      "text": "Python environments for your server and your Ray cells",
                      "note": ""})
    links.append({"id": "docs", "title": "Documentation", "href": f"{base_url}redspot/docs/",
                  "text": "how to use Redspot, and the examples to start from", "note": ""})
    if admin:
        links.append({"id": "usage", "title": "Usage and cost", "href":
                      f"{base_url}redspot/usage",
                      "text": "hours and cost per user, group and profile (admins)",
                      "note": ""})
    return links


class RedspotHomeHandler(HomeHandler):
    """``/hub/home``: the user's server and its profile, links to everything they use,
    and for admins the accounts that cannot sign in yet."""

    @web.authenticated
    async def get(self):
        user = self.current_user
        spawner = user.spawner
        running = bool(spawner.ready)
        pending = spawner.pending
        profile = _profile_of(spawner)
        services = dict(getattr(spawner, "service_public_urls", {}) or {})
        server_url = user.server_url("")
        accounts = []
        if user.admin and hasattr(self.authenticator, "store") and \
                getattr(self.authenticator, "users_db", ""):
            accounts = [a.name for a in self.authenticator.store.list()
                        if not a.has_password]
        html_page = await self.render_template(
            "redspot-home.html",
            user=user,
            running=running,
            pending=pending,
            profile=profile,
            server_url=server_url,
            spawn_url=f"{self.hub.base_url}spawn/{user.escaped_name}",
            links=home_links(server_url, running, services, self.hub.base_url,
                             admin=bool(user.admin)),
            accounts_without_password=accounts,
            new_password=None,
        )
        self.finish(html_page)


def _profile_of(spawner) -> dict | None:
    """The profile the server was started with (or will start with): name and summary."""
    name = (spawner.user_options or {}).get("profile") if spawner.active else None
    catalog = getattr(spawner, "catalog", None)
    if not name or catalog is None:
        return None
    profile = catalog.get(name)
    if profile is None:
        return {"name": name, "summary": ""}
    summary = ", ".join(x for x in (profile.summary, profile.price_label) if x)
    return {"name": profile.title, "summary": summary, "description": profile.description}


class AccountPasswordHandler(BaseHandler):
    """``POST /hub/redspot/accounts/<name>/password``: a new password for an account,
    shown once to the admin who asked (users added on the admin page have none)."""

    @needs_scope("admin:users")
    async def post(self, name):
        store = getattr(self.authenticator, "store", None)
        if store is None or not getattr(self.authenticator, "users_db", ""):
            raise web.HTTPError(404, "this hub's sign-in has no Redspot accounts")
        from .userstore import UserStoreError, generate_password

        password = generate_password()
        try:
            store.set_password(name, password)
        except UserStoreError as e:
            raise web.HTTPError(404, str(e)) from None
        self.log.info("%s set a new password for %s", self.current_user.name, name)
        self.set_header("Cache-Control", "no-store")
        page = await self.render_template(
            "redspot-password.html", account=name, new_password=password)
        self.finish(page)


class UsageHandler(BaseHandler):
    """``/hub/redspot/usage?since=30d&until=now&by=user``: hours and cost from the usage
    log, per user, group or profile, as a page or (``format=json``) as JSON."""

    @needs_scope("admin:users")
    async def get(self):
        from ..usage import GROUPINGS, format_report, period, report_dict, summarise

        since_text = self.get_argument("since", "30d")
        until_text = self.get_argument("until", "now")
        by = self.get_argument("by", "user")
        if by not in GROUPINGS:
            raise web.HTTPError(400, f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
        try:
            since, until = period(since_text, until_text)
        except ValueError as e:
            raise web.HTTPError(400, f"since/until: {e}") from None
        log = self.usage_log()
        if log is None:
            raise web.HTTPError(404, "this hub keeps no usage log "
                                     "(RedspotSpawnerMixin.usage_db_url is empty)")
        lines = summarise(log.records(since, until), since, until, by=by)
        if self.get_argument("format", "") == "json":
            self.set_header("Content-Type", "application/json")
            self.finish(report_dict(lines, since, until, by))
            return
        picks = " · ".join(
            f'<a href="?since={html.escape(since_text)}&amp;until={html.escape(until_text)}'
            f'&amp;by={g}">by {g}</a>' if g != by else f"<strong>by {g}</strong>"
            for g in GROUPINGS)
        body = (
            '<form method="get" class="form-inline" id="redspot-usage-period">'
            f'<label>From <input name="since" value="{html.escape(since_text)}"></label> '
            f'<label>to <input name="until" value="{html.escape(until_text)}"></label> '
            f'<input type="hidden" name="by" value="{by}">'
            '<button class="btn btn-primary btn-sm">Show</button></form>'
            f"<p>{picks}</p>"
            '<p><small>Dates are UTC (2026-11-01, 2026-11-01T08:00) or spans ago (7d, '
            "12h). Costs are hours × each profile's price when it started (US dollars); "
            "on one machine a Ray head shares its server's machine and costs nothing "
            "more. The same report: <code>redspot usage</code>.</small></p>"
            f'<pre id="redspot-usage">{html.escape(format_report(lines, since, until, by))}'
            "</pre>")
        self.finish(await self.render_template("redspot-docs.html", title="Usage and cost",
                                               body=body))

    def usage_log(self):
        """The spawners' usage log (``usage_db_url`` as the hub's config sets it for
        its spawner class), or None."""
        from ..spawner.base import RedspotSpawnerMixin, configured

        spawner_class = self.settings.get("spawner_class")
        if not (isinstance(spawner_class, type)
                and issubclass(spawner_class, RedspotSpawnerMixin)):
            return None
        url = configured(spawner_class, self.settings.get("config") or {}, "usage_db_url")
        return RedspotSpawnerMixin.usage_log_at(url) if url else None


class DocsHandler(BaseHandler):
    """``/hub/redspot/docs/`` and ``/hub/redspot/docs/<page>``: Redspot's docs."""

    @web.authenticated
    async def get(self, page=None):
        folder = docs_dir()
        if not page:
            body = "<ul>" + "".join(
                f'<li><a href="{name}">{html.escape(title)}</a></li>'
                for name, title in DOC_PAGES.items()) + "</ul>"
            title = "Redspot documentation"
        else:
            if page not in DOC_PAGES or folder is None or not (folder / f"{page}.md").exists():
                raise web.HTTPError(404, f"no Redspot doc page {page!r}; the pages are: "
                                         + ", ".join(DOC_PAGES))
            body = render_markdown((folder / f"{page}.md").read_text())
            title = DOC_PAGES[page]
        self.finish(await self.render_template("redspot-docs.html", title=title, body=body))


class DocImageHandler(BaseHandler):
    """``/hub/redspot/docs/images/<name>.png``: the docs' screenshots."""

    @web.authenticated
    async def get(self, name):
        folder = docs_dir()
        path = folder / "images" / name if folder is not None else None
        if path is None or not path.is_file():
            raise web.HTTPError(404, f"no image {name!r} in Redspot's docs")
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "max-age=3600")
        self.finish(path.read_bytes())


def render_markdown(text: str) -> str:
    """A doc page as HTML (raw HTML in it escaped), its links to sibling pages kept
    inside the docs (``ray.md`` -> ``ray``)."""
    import mistune

    markdown = mistune.create_markdown(escape=True, plugins=["table"])
    rendered = markdown(text)
    return re.sub(r'href="([a-z]+)\.md(#[^"]*)?"', r'href="\1\2"', rendered)


ROUTES = [
    (r"/home", RedspotHomeHandler),
    (r"/redspot/docs/?", DocsHandler),
    (r"/redspot/docs/([a-z]+)", DocsHandler),
    (r"/redspot/docs/images/([a-z0-9][a-z0-9-]*\.png)", DocImageHandler),
    (r"/redspot/accounts/([^/]+)/password", AccountPasswordHandler),
    (r"/redspot/usage", UsageHandler),
]
