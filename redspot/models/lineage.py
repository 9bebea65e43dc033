"""Where a model came from, recorded without the user typing it: lineage tags.

``lineage()`` gathers, in the notebook's kernel, what is known about the model being
registered: the hub user, the notebook, the Redspot environment and image, the instance
profile, the git commit of the notebook's folder (and whether it had uncommitted
changes), the Ray job or training run that made it, and the warehouse queries the
notebook ran (which data it was trained on). Each becomes an MLflow tag
``redspot.<name>`` on the model version. Nothing here talks to the registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PREFIX = "redspot."
#: Lineage values are cut here: they are also the registration run's tags, which MLflow
#: limits to 8000 characters (registry tags may have 100,000).
MAX_VALUE = 5000


def git_state(folder: Path) -> dict[str, str]:
    """The commit ``folder`` is at, whether it has uncommitted changes, its origin."""

    def git(*args):
        result = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                text=True, timeout=10, stdin=subprocess.DEVNULL)
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
    except (OSError, subprocess.TimeoutExpired):  # no git here, or a hung filesystem
        return {}
    if not commit:
        return {}
    state = {"git_commit": commit,
             "git_dirty": "true" if git("status", "--porcelain", "--untracked-files=no")
             else "false"}
    remote = git("config", "--get", "remote.origin.url")
    if remote:
        state["git_remote"] = _without_credentials(remote)
    return state


def _without_credentials(url: str) -> str:
    """``https://user:token@host/x`` -> ``https://host/x``: tags are readable by all."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}" if sep else url


def notebook_path(environ: dict, user_ns: dict | None = None) -> str | None:
    """The notebook this kernel runs (jupyter-server tells kernels, as JPY_SESSION_NAME;
    ipykernel puts it in ``__session__``)."""
    return environ.get("JPY_SESSION_NAME") or (user_ns or {}).get("__session__") or None


def in_home(path: str, home: str | None) -> str:
    """A notebook's path as its user knows it: inside their home (the server's root
    folder) it is relative to it (``project/train.ipynb``), not the server's absolute
    path."""
    if home and os.path.isabs(path):
        try:
            return str(Path(path).relative_to(home))
        except ValueError:
            pass
    return path


def current_ray_job() -> str | None:
    """The Ray job of this kernel's driver, when it is connected (``%ray_connect``)."""
    ray = sys.modules.get("ray")  # never imported here just to ask
    try:
        if ray is not None and ray.is_initialized():
            return ray.get_runtime_context().get_job_id()
    except Exception:  # noqa: BLE001 - lineage is best effort
        return None
    return None


#: Characters of each query's text kept in the lineage (its hash names the whole text).
QUERY_TEXT = 300


def data_lineage(queries) -> dict[str, str]:
    """The warehouse queries this kernel ran (``redspot.warehouse``): which connections,
    and each query's text (cut) with a SHA-256 of the whole, newest kept first when they
    do not all fit."""
    import json

    if not queries:
        return {}
    seen: dict[str, dict] = {}
    for q in queries:  # each distinct query once, its last run
        seen[q.sha256] = {"connection": q.connection, "engine": q.engine,
                          "sha256": q.sha256, "sql": q.sql[:QUERY_TEXT], "rows": q.rows,
                          "at": round(q.at)}
    entries = list(seen.values())
    while entries and len(json.dumps(entries)) > MAX_VALUE:
        entries.pop(0)
    connections = sorted({q.connection for q in queries})
    return {"data_connections": ",".join(connections), "data_queries": json.dumps(entries)}


def warehouse_queries():
    """The queries of this kernel's warehouse, if it has one (never imported just to ask)."""
    session = sys.modules.get("redspot.warehouse.session")
    warehouse = getattr(session, "_default", None) if session else None
    return list(warehouse.history) if warehouse is not None else []


def lineage(environ: dict | None = None, user_ns: dict | None = None,
            cwd: Path | None = None, ray_job_id: str | None = None,
            training_run_id: str | None = None, queries=None) -> dict[str, str]:
    """The lineage tags of a model registered from this kernel now."""
    environ = os.environ if environ is None else environ
    tags: dict[str, str] = {}
    user = environ.get("JUPYTERHUB_USER")
    if user:
        tags["user"] = user
    notebook = notebook_path(environ, user_ns)
    if notebook:
        tags["notebook"] = in_home(notebook, environ.get("HOME"))
    for key, env in (("environment", "REDSPOT_ENVIRONMENT"),
                     ("environment_tag", "REDSPOT_ENVIRONMENT_TAG"),
                     ("image", "REDSPOT_IMAGE"), ("profile", "REDSPOT_PROFILE")):
        if environ.get(env):
            tags[key] = environ[env]
    folder = Path(cwd or os.getcwd())
    if notebook:
        candidate = folder / notebook
        folder = candidate.parent if candidate.parent.is_dir() else folder
    tags.update(git_state(folder))
    if ray_job_id:
        tags["ray_job_id"] = ray_job_id
    if training_run_id:
        tags["training_run_id"] = training_run_id
    tags.update(data_lineage(warehouse_queries() if queries is None else queries))
    return {PREFIX + k: str(v)[:MAX_VALUE] for k, v in tags.items()}
