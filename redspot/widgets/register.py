"""The registration widget: a model in the notebook becomes a registered version.

    from redspot.widgets import register_model
    register_model(model)            # or: %register_model model

A form (name, with the registry's existing names offered; description; tags; metrics
picked from the notebook's numeric variables or typed; a sample input to infer the
signature from), the detected flavor, a Register button, a progress bar for the upload,
and the result: the version and a link to it in the registry's UI. Lineage tags are
added without asking (``redspot.models.lineage``). The work is ``redspot.models.client.
register``; the widget only gathers its arguments, so it can be driven without a browser
(set the fields, ``widget.register_button.click()``).
"""

from __future__ import annotations

import html
import inspect
import re

import ipywidgets as w

from ..models import client as registry
from ..models.lineage import current_ray_job, lineage
from ..models.validation import InvalidInput, as_number

_TYPED_METRIC = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*(\S+)\s*$")


def numeric_variables(namespace: dict) -> dict[str, float]:
    """The notebook's variables that can be metrics: finite numbers, by name."""
    found = {}
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, type) or callable(value):
            continue
        number = as_number(value)
        if number is not None:
            found[key] = number
    return dict(sorted(found.items()))


def sample_variables(namespace: dict) -> list[str]:
    """Variables that can be a sample input: arrays, tensors, data frames."""
    kinds = ("ndarray", "Tensor", "DataFrame")
    return sorted(k for k, v in namespace.items()
                  if not k.startswith("_") and type(v).__name__ in kinds)


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``name=value`` lines (or comma-separated pairs) as a dict; the first bad one is an
    error naming it."""
    pairs = {}
    for part in re.split(r"[\n,]", text or ""):
        if not part.strip():
            continue
        match = _TYPED_METRIC.match(part)
        if not match:
            raise InvalidInput(f"{what}: {part.strip()!r} is not name=value")
        pairs[match[1]] = match[2]
    return pairs


def suggest_name(model, existing: list[str], user: str | None) -> str:
    """A name to start from: the model's class, made unique among ``existing``."""
    base = model.__name__ if inspect.isfunction(model) else type(model).__name__
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-").lower() or "model"
    if base in ("sequential", "function", "lambda"):
        base = "model"
    stem = f"{user}-{base}" if user else base
    name, n = stem, 2
    while name in existing:
        name, n = f"{stem}-{n}", n + 1
    return name


class RegisterModel(w.VBox):
    """The form; ``register()`` (the button) registers and returns the version."""

    def __init__(self, model, namespace: dict | None = None, names: list[str] | None = None,
                 sample_input=None, sample_name: str | None = None,
                 training_run_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.namespace = namespace if namespace is not None else {}
        self.registered: registry.Registered | None = None
        self.flavor = registry.detect_flavor(model)  # refuses what cannot be registered
        self.training_run_id = training_run_id
        self.lineage = self._lineage()
        if names is None:
            try:
                names = registry.model_names()
            except Exception:  # noqa: BLE001 - offering names is a convenience
                names = []
        self.existing = names
        user = self.lineage.get("redspot.user")
        self.name = w.Combobox(value=suggest_name(model, names, user), options=names,
                               ensure_option=False, description="Name",
                               placeholder="a new or an existing model")
        self.description = w.Textarea(description="Description",
                                      placeholder="what it is, what it was trained on")
        self.tags = w.Textarea(description="Tags", placeholder="team=search\nstage=dev")
        numeric = numeric_variables(self.namespace)
        self.metric_variables = w.SelectMultiple(
            options=[(f"{k} = {v:.6g}", k) for k, v in numeric.items()],
            description="Metrics", rows=min(6, max(2, len(numeric))))
        self.typed_metrics = w.Text(description="", placeholder="or type: auc=0.93, f1=0.8")
        samples = sample_variables(self.namespace)
        if sample_name and sample_name not in samples:  # named by the user: any kind
            samples.append(sample_name)
        self.sample = w.Dropdown(options=[("(none)", "")] + [(s, s) for s in samples],
                                 value=sample_name or "", description="Sample input")
        self.private = w.Checkbox(
            value=False, indent=False,
            description="Private: only I (and admins) can see this model",
            style={"description_width": "initial"})
        self.register_button = w.Button(description="Register", button_style="primary",
                                        icon="upload")
        self.progress = w.IntProgress(value=0, min=0, max=100, description="",
                                      layout=w.Layout(visibility="hidden"))
        self.status = w.HTML()
        self.result = w.HTML()
        self._sample_input = sample_input
        self.children = [
            w.HTML(f"<b>Register a {html.escape(self.flavor)} model</b> "
                   f"({html.escape(type(model).__name__)})"),
            self.name, self.description, self.tags, self.metric_variables,
            self.typed_metrics, self.sample, self.private,
            w.HTML(lineage_html(self.lineage)),
            w.HBox([self.register_button, self.progress, self.status]), self.result,
        ]
        for field in (self.name, self.description, self.tags, self.metric_variables,
                      self.typed_metrics, self.sample):
            field.style.description_width = "100px"  # "Sample input" in full
        self.register_button.on_click(lambda _: self._clicked())

    def _lineage(self) -> dict[str, str]:
        return lineage(user_ns=self.namespace, ray_job_id=current_ray_job(),
                       training_run_id=self.training_run_id)

    # the form's values, checked
    def metrics(self) -> dict[str, float]:
        metrics = {k: numeric_variables(self.namespace).get(k)
                   for k in self.metric_variables.value}
        for key, value in parse_pairs(self.typed_metrics.value, "metrics").items():
            number = as_number(_float(value))
            if number is None:
                raise InvalidInput(f"metrics: {key}={value} is not a finite number")
            metrics[key] = number
        return {k: v for k, v in metrics.items() if v is not None}

    def sample_input(self):
        if self.sample.value:
            return self.namespace[self.sample.value]
        return self._sample_input

    def _progress(self, done: int, total: int, what: str) -> None:
        self.progress.layout.visibility = "visible"
        if total:
            self.progress.max = 1000
            self.progress.value = int(1000 * done / total)
            self.status.value = f"{what} {_size(done)} of {_size(total)}"
        else:
            self.status.value = f"{what}…"

    def register(self) -> registry.Registered:
        self.register_button.disabled = True
        self.result.value = ""
        try:
            self.registered = registry.register(
                self.model, self.name.value.strip(), description=self.description.value,
                tags=parse_pairs(self.tags.value, "tags"), metrics=self.metrics(),
                sample_input=self.sample_input(), progress=self._progress,
                lineage=self._lineage(),  # as the notebook is now
                private=True if self.private.value else None)
        except (InvalidInput, registry.RegistrationError) as e:
            self.status.value = ""
            self.result.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
            raise
        finally:
            self.register_button.disabled = False
        r = self.registered
        self.progress.value = self.progress.max
        self.status.value = "done"
        self.result.value = (
            f"Registered <b>{html.escape(r.name)}</b> version <b>{r.version}</b>"
            f"{' (private)' if self.private.value else ''}: "
            f"{link(r.url, 'open it in the registry')}")
        return r

    def _clicked(self):
        try:
            self.register()
        except (InvalidInput, registry.RegistrationError):
            pass  # shown in the widget
        except KeyboardInterrupt:
            self.result.value = "Interrupted: nothing was registered."


#: Links in widgets' HTML look like links (JupyterLab's output styles reset them).
LINK_STYLE = "color: var(--jp-content-link-color, #1976d2); text-decoration: underline"


def link(url: str, text: str) -> str:
    return (f"<a href='{html.escape(url, quote=True)}' target='_blank' rel='noopener' "
            f"style='{LINK_STYLE}'>{html.escape(text)} &#x2197;</a>")


def lineage_html(tags: dict[str, str]) -> str:
    """The lineage the version will carry, one line each, nothing cut."""
    if not tags:
        return "<small>Lineage: none found</small>"
    rows = "".join(
        f"<tr><td style='padding-right:1em'>{html.escape(k.removeprefix('redspot.'))}</td>"
        f"<td style='word-break:break-all'><code>{html.escape(v)}</code></td></tr>"
        for k, v in tags.items())
    return f"<small>Lineage, recorded with the version:<table>{rows}</table></small>"


def _float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n}"


def register_model(model, namespace: dict | None = None, **kwargs) -> RegisterModel:
    """Show the registration form for ``model`` (the notebook's variables are offered as
    metrics and sample inputs)."""
    if namespace is None:
        try:
            from IPython import get_ipython

            shell = get_ipython()
            namespace = shell.user_ns if shell is not None else {}
        except ImportError:
            namespace = {}
    return RegisterModel(model, namespace=namespace, **kwargs)
