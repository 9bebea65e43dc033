"""The model browser: my models and my team's, their versions side by side.

    from redspot.widgets import browse_models
    browse_models()

Models are listed as the registry's permissions say (``redspot/api/permissions``):
*mine* (I own them), *my team's* (owned by others, shared with a group I am in) or
*all* I may read. A model's versions are shown in a table with their aliases, metrics
and lineage, and their metrics plotted by version; a version can be given an alias
(``champion``, ``challenger``…) and loaded back into the notebook as a variable.
Everything is also a method (``select``, ``set_alias``, ``load``), so the widget is
driven without a browser in tests.
"""

from __future__ import annotations

import html
import keyword
import re
from datetime import datetime

import ipywidgets as w

from ..models import client as registry
from .register import link

SCOPES = (("Mine", "mine"), ("My team's", "team"), ("All I can read", "all"))
_LINEAGE_SHOWN = ("redspot.user", "redspot.notebook", "redspot.git_commit",
                  "redspot.environment_tag", "redspot.training_run_id")


def in_scope(access: dict, scope: str) -> list[dict]:
    """The models of ``access`` (the registry's listing) in ``scope`` (pure)."""
    me, groups = access.get("user"), set(access.get("groups") or ())
    models = access.get("models") or []
    if scope == "mine":
        return [m for m in models if m["owner"] == me]
    if scope == "team":
        return [m for m in models if m["owner"] != me and groups & set(m.get("groups") or ())]
    return list(models)


def versions_table(infos: list[registry.VersionInfo]) -> str:
    """The versions as an HTML table: aliases, metrics (one column each), lineage."""
    metric_names = sorted({k for v in infos for k in v.metrics})
    head = ["version", "aliases", "created", *metric_names, "lineage"]
    rows = []
    for v in reversed(infos):  # newest first
        created = datetime.fromtimestamp(v.created / 1000).strftime("%Y-%m-%d %H:%M") \
            if v.created else ""
        lineage = "; ".join(f"{k.removeprefix('redspot.')}={v.tags[k][:12]}"
                            for k in _LINEAGE_SHOWN if v.tags.get(k))
        cells = [v.version, ", ".join(v.aliases), created,
                 *(f"{v.metrics[m]:.4g}" if m in v.metrics else "" for m in metric_names),
                 lineage]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + "</tr>")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (f"<table class='redspot-versions'><thead><tr>{header}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


class ModelBrowser(w.VBox):
    def __init__(self, namespace: dict | None = None, client=None, **kwargs):
        super().__init__(**kwargs)
        self.namespace = namespace if namespace is not None else {}
        self.client = client
        self.access: dict = {"models": []}
        self.infos: list[registry.VersionInfo] = []
        self.scope = w.ToggleButtons(options=SCOPES, value="mine")
        self.models = w.Select(options=[], rows=8, description="Models")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.table = w.HTML()
        self.open_link = w.HTML()
        # hidden until there is a plot (an empty Image is a broken icon)
        self.plot = w.Image(format="png", layout=w.Layout(max_width="640px", display="none"))
        self.private = w.Checkbox(value=False, indent=False, disabled=True,
                                  description="Private: only its owner and admins see it")
        self.version = w.Dropdown(options=[], description="Version")
        self.alias = w.Combobox(options=["champion", "challenger"], value="champion",
                                ensure_option=False, description="Alias")
        self.alias_button = w.Button(description="Set alias")
        self.variable = w.Text(value="", description="Load as",
                               placeholder="a new notebook variable")
        self.load_button = w.Button(description="Load")
        self.status = w.HTML()
        self.children = [
            w.HBox([self.scope, self.refresh_button]), self.models,
            w.HBox([self.open_link, self.private]), self.table, self.plot,
            w.HBox([self.version, self.alias, self.alias_button]),
            w.HBox([self.variable, self.load_button]), self.status,
        ]
        self.scope.observe(lambda _: self._show_models(), "value")
        self.models.observe(lambda change: self.select(change["new"]) if change["new"]
                            else None, "value")
        self.version.observe(lambda change: self._suggest_variable(), "value")
        self.private.observe(self._private_changed, "value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.alias_button.on_click(lambda _: self._guarded(
            lambda: self.set_alias(self.version.value, self.alias.value)))
        self.load_button.on_click(lambda _: self._guarded(
            lambda: self.load(self.version.value, self.variable.value)))
        self.refresh()

    def _guarded(self, action):
        try:
            action()
        except Exception as e:  # noqa: BLE001 - shown where the user clicked
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"

    def refresh(self) -> None:
        self.access = registry.access()
        self._show_models()

    def _show_models(self) -> None:
        names = [m["name"] for m in in_scope(self.access, self.scope.value)]
        current = self.models.value
        self.models.options = names
        if current in names:
            self.select(current)
        elif names:
            self.models.value = names[0]
        else:
            self.table.value = "<i>No models here yet.</i>"
            self.open_link.value = ""
            self._show_plot(None)

    @property
    def selected(self) -> str | None:
        return self.models.value

    def select(self, name: str) -> None:
        if self.models.value != name:
            self.models.value = name  # comes back here through the observer
            return
        self.infos = registry.versions(name, client=self.client)
        self.table.value = versions_table(self.infos)
        self.open_link.value = link(registry.ui_url(name), "open it in the registry")
        acl = self._acl(name)
        self._showing_acl = True
        self.private.value = bool(acl.get("private"))
        self.private.disabled = not (acl.get("owner") == self.access.get("user")
                                     or self.access.get("admin"))
        self._showing_acl = False
        newest_first = [v.version for v in reversed(self.infos)]
        self.version.options = newest_first
        # the newest version is picked, never nothing
        self.version.value = newest_first[0] if newest_first else None
        self._suggest_variable()
        self._plot()

    def _acl(self, name: str) -> dict:
        return next((m for m in self.access.get("models", []) if m["name"] == name), {})

    _showing_acl = False

    def _private_changed(self, change) -> None:
        if self._showing_acl or not self.selected:
            return
        try:
            described = registry.set_access(self.selected, private=change["new"])
        except registry.RegistrationError as e:
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
            self._showing_acl = True
            self.private.value = change["old"]
            self._showing_acl = False
            return
        self._acl(self.selected).update(private=described["private"])
        self.status.value = (f"{html.escape(self.selected)} is now "
                             f"{'private' if described['private'] else 'visible to everyone'}")

    def _suggest_variable(self) -> None:
        """A name for the loaded model that no notebook variable has (loading must not
        replace the notebook's own ``model``)."""
        if self.selected and self.version.value:
            self.variable.value = free_variable(self.selected, self.version.value,
                                                self.namespace)

    def _plot(self) -> None:
        """The versions' metrics, one line each, as a PNG (no pyplot state touched)."""
        metric_names = sorted({k for v in self.infos for k in v.metrics})
        if not metric_names or not self.infos:
            self._show_plot(None)
            return
        from .plots import lines_png

        series = {metric: [(int(v.version), v.metrics[metric]) for v in self.infos
                           if metric in v.metrics] for metric in metric_names}
        self._show_plot(lines_png(series, "version", self.selected, marker="o",
                                  xticks=[int(v.version) for v in self.infos]))

    def _show_plot(self, png: bytes | None) -> None:
        self.plot.value = png or b""
        self.plot.layout.display = None if png else "none"

    def set_alias(self, version: str, alias: str) -> None:
        from mlflow import MlflowClient

        alias = (alias or "").strip()
        if not alias:
            raise ValueError("an alias needs a name (champion, challenger…)")
        client = self.client or MlflowClient(tracking_uri=registry.tracking_uri())
        client.set_registered_model_alias(self.selected, alias, str(version))
        self.status.value = (f"{html.escape(alias)} is now version {html.escape(str(version))}"
                             f" of {html.escape(self.selected)}")
        self.select(self.selected)

    def load(self, version: str, variable: str | None = None):
        """Load a version; with ``variable``, also into the notebook under that name."""
        if not version:
            raise ValueError("pick a version to load first")
        info = next((v for v in self.infos if v.version == str(version)), None)
        if info is None:
            raise ValueError(f"{self.selected} has no version {version}")
        model = registry.load(self.selected, info.version, info.flavor)
        if variable:
            if not variable.isidentifier():
                raise ValueError(f"{variable!r} is not a Python variable name")
            self.namespace[variable] = model
            self.status.value = (f"Loaded {html.escape(self.selected)} version "
                                 f"{html.escape(info.version)} as <code>"
                                 f"{html.escape(variable)}</code>")
        return model


def free_variable(model: str, version: str, namespace: dict) -> str:
    """``churn-model`` version 3 -> ``churn_model_v3`` (``_2``… when that is taken)."""
    stem = re.sub(r"\W+", "_", model).strip("_").lower() or "model"
    if stem[0].isdigit():
        stem = "model_" + stem
    name = base = f"{stem}_v{version}"
    n = 2
    while name in namespace or keyword.iskeyword(name):
        name, n = f"{base}_{n}", n + 1
    return name


def browse_models(namespace: dict | None = None) -> ModelBrowser:
    """Show the model browser (loaded models go into the notebook's variables)."""
    if namespace is None:
        from IPython import get_ipython

        shell = get_ipython()
        namespace = shell.user_ns if shell is not None else {}
    return ModelBrowser(namespace=namespace)
