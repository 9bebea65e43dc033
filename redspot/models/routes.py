"""Every MLflow route the registry serves, and what it touches: deny by default (pure).

The guard (``app.py``) looks each request up here before anything else; a route that is
not in ``ROUTES`` is refused with 403, naming it. Each row says which object the route
reads or changes, and so which check the guard makes:

===================  =====================================================================
kind                 who may
===================  =====================================================================
``open``             any signed-in user (MLflow's UI, its version, experiment listings)
``admin``            admins only (webhooks: every model's events, calls out; the AI
                     gateway: stored provider keys, calls out)
``experiment:*``     create: anyone (they own it); change: its owner or an admin (the
                     shared Default experiment: admins); read: anyone
``run:*``            create: in the Default experiment or one's own (they own the run);
                     change: its owner or an admin; read: anyone, unless it belongs to a
                     private model they may not read
``logged:*``         MLflow 3's logged models, as runs
``artifact:*``       by artifact path: the run or logged model it belongs to
``model:*``          registered models: the owner, granted groups, admins (see
                     ``permissions.py``); private ones hidden from others
``graphql``          MLflow's GraphQL (the UI's reads), filtered
``absent``           nobody: answered 404, as MLflow answers what it does not have
``ui``               MLflow's UI page, with Redspot's additions (``ui.py``)
``fixed``            any signed-in user: a fixed answer (``ui.FIXED``) for the UI's
                     questions about features that are not served
===================  =====================================================================

Paths are MLflow's own (the ``/ajax-api`` twin of every ``/api`` route is the same row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern
    kind: str


def _r(methods: str, path: str, kind: str) -> Route:
    regex = re.escape(path).replace(r"<path>", "(?P<path>.+)").replace(
        r"<id>", "(?P<id>[^/]+)")
    return Route(frozenset(methods.split(",")), re.compile(f"^{regex}$"), kind)


API = "/api/2.0/mlflow"
ART = "/api/2.0/mlflow-artifacts"

ROUTES: tuple[Route, ...] = (
    # MLflow's UI: its pages and static files, its version and health
    _r("GET", "/", "ui"),
    _r("GET", "/static-files/<path>", "open"),
    _r("GET", "/version", "open"),
    _r("GET", "/health", "open"),
    _r("GET", "/api/3.0/mlflow/server-info", "open"),
    # the UI asks whether to report usage: telemetry is off, so MLflow answers "no"
    _r("GET", "/api/3.0/mlflow/ui-telemetry", "open"),
    # the UI asks whether MLflow's own user accounts are on: they are not (the hub is who
    # says who is asking); nor is MLflow's AI assistant (it calls out to model providers
    # with stored keys): fixed answers that say so (a 404 is an error in the browser)
    _r("GET", f"{API}/users/current", "fixed"),
    _r("GET", "/api/3.0/mlflow/assistant/config", "fixed"),
    _r("GET", "/api/3.0/mlflow/assistant/providers", "fixed"),
    _r("GET,POST", "/graphql", "graphql"),
    # experiments
    _r("POST", f"{API}/experiments/create", "experiment:create"),
    _r("GET", f"{API}/experiments/get", "open"),
    _r("GET", f"{API}/experiments/get-by-name", "open"),
    _r("GET,POST", f"{API}/experiments/search", "open"),
    _r("POST", f"{API}/experiments/delete", "experiment:change"),
    _r("POST", f"{API}/experiments/restore", "experiment:change"),
    _r("POST", f"{API}/experiments/update", "experiment:change"),
    _r("POST", f"{API}/experiments/set-experiment-tag", "experiment:change"),
    _r("POST", f"{API}/experiments/delete-experiment-tag", "experiment:change"),
    # runs
    _r("POST", f"{API}/runs/create", "run:create"),
    _r("GET", f"{API}/runs/get", "run:read"),
    _r("POST", f"{API}/runs/search", "run:search"),
    _r("POST", f"{API}/runs/update", "run:change"),
    _r("POST", f"{API}/runs/delete", "run:change"),
    _r("POST", f"{API}/runs/restore", "run:change"),
    _r("POST", f"{API}/runs/log-metric", "run:change"),
    _r("POST", f"{API}/runs/log-parameter", "run:change"),
    _r("POST", f"{API}/runs/log-batch", "run:change"),
    _r("POST", f"{API}/runs/log-model", "run:change"),
    _r("POST", f"{API}/runs/log-inputs", "run:change"),
    _r("POST", f"{API}/runs/outputs", "run:change"),
    _r("POST", f"{API}/runs/set-tag", "run:change"),
    _r("POST", f"{API}/runs/delete-tag", "run:change"),
    _r("GET", f"{API}/metrics/get-history", "run:read"),
    _r("GET", f"{API}/metrics/get-history-bulk-interval", "run:read"),
    _r("GET", f"{API}/artifacts/list", "run:read"),
    _r("GET", "/get-artifact", "run:read"),
    _r("GET", "/model-versions/get-artifact", "model:read"),
    # logged models (MLflow 3)
    _r("POST", f"{API}/logged-models", "logged:create"),
    _r("POST", f"{API}/logged-models/search", "logged:search"),
    _r("GET", f"{API}/logged-models/<id>", "logged:read"),
    _r("PATCH", f"{API}/logged-models/<id>", "logged:change"),
    _r("DELETE", f"{API}/logged-models/<id>", "logged:change"),
    _r("POST", f"{API}/logged-models/<id>/params", "logged:change"),
    _r("PATCH", f"{API}/logged-models/<id>/tags", "logged:change"),
    _r("DELETE", f"{API}/logged-models/<id>/tags/<path>", "logged:change"),
    _r("GET", f"{API}/logged-models/<id>/artifacts/files", "logged:read"),
    _r("GET", f"{API}/logged-models/<id>/artifacts/directories", "logged:read"),
    # artifacts served by the registry, by path
    _r("GET", f"{ART}/artifacts", "artifact:list"),
    _r("GET", f"{ART}/artifacts/<path>", "artifact:read"),
    _r("PUT", f"{ART}/artifacts/<path>", "artifact:write"),
    _r("DELETE", f"{ART}/artifacts/<path>", "artifact:write"),
    _r("POST", f"{ART}/mpu/create/<path>", "artifact:write"),
    _r("POST", f"{ART}/mpu/complete/<path>", "artifact:write"),
    _r("POST", f"{ART}/mpu/abort/<path>", "artifact:write"),
    # the model registry
    _r("POST", f"{API}/registered-models/create", "model:create"),
    _r("GET", f"{API}/registered-models/get", "model:read"),
    _r("GET,POST", f"{API}/registered-models/get-latest-versions", "model:read"),
    _r("GET", f"{API}/registered-models/search", "model:search"),
    _r("GET", f"{API}/registered-models/alias", "model:read"),
    _r("POST,DELETE", f"{API}/registered-models/alias", "model:change"),
    _r("POST", f"{API}/registered-models/rename", "model:change"),
    _r("PATCH", f"{API}/registered-models/update", "model:change"),
    _r("DELETE", f"{API}/registered-models/delete", "model:change"),
    _r("POST", f"{API}/registered-models/set-tag", "model:change"),
    _r("DELETE", f"{API}/registered-models/delete-tag", "model:change"),
    _r("POST", f"{API}/model-versions/create", "model:change"),
    _r("GET", f"{API}/model-versions/get", "model:read"),
    _r("GET", f"{API}/model-versions/get-download-uri", "model:read"),
    _r("GET", f"{API}/model-versions/search", "model:search"),
    _r("PATCH", f"{API}/model-versions/update", "model:change"),
    _r("DELETE", f"{API}/model-versions/delete", "model:change"),
    _r("POST", f"{API}/model-versions/set-tag", "model:change"),
    _r("DELETE", f"{API}/model-versions/delete-tag", "model:change"),
    _r("POST", f"{API}/model-versions/transition-stage", "model:change"),
    # admins only: they reach every model's events, or call out with stored keys
    _r("GET,POST", f"{API}/webhooks", "admin"),
    _r("GET,PATCH,DELETE", f"{API}/webhooks/<id>", "admin"),
    _r("POST", f"{API}/webhooks/<id>/test", "admin"),
    _r("GET,POST,PATCH,DELETE", "/api/3.0/mlflow/gateway/<path>", "admin"),
)


def normalize(path: str) -> str:
    """MLflow serves every API route twice, for clients and for its UI."""
    return "/api/" + path[len("/ajax-api/"):] if path.startswith("/ajax-api/") else path


def find(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The row for ``method path`` (MLflow's own path, after the service's prefix)."""
    path = normalize(path)
    if method == "HEAD":
        method = "GET"
    for route in ROUTES:
        match = route.pattern.match(path)
        if match and method in route.methods:
            return route, {k: v for k, v in match.groupdict().items() if v is not None}
    return None


#: Where MLflow keeps artifacts, by path under its artifact root.
_RUN_ARTIFACTS = re.compile(r"^(?P<experiment>\d+)/(?P<run>[0-9a-f]{32})(?:/(?P<rest>.*))?$")
_MODEL_ARTIFACTS = re.compile(
    r"^(?P<experiment>\d+)/models/(?P<model>m-[0-9a-f]{32})(?:/(?P<rest>.*))?$")


def artifact_owner(path: str) -> tuple[str, str] | None:
    """The object an artifact path belongs to: ``("run", id)`` or ``("logged", id)``;
    None for any other path (only admins may touch those)."""
    path = path.strip("/")
    if any(part in ("", ".", "..") for part in path.split("/")):
        return None
    match = _MODEL_ARTIFACTS.match(path)
    if match:
        return "logged", match["model"]
    match = _RUN_ARTIFACTS.match(path)
    if match:
        return "run", match["run"]
    return None
