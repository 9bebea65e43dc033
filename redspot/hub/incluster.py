"""The hub in a Kubernetes pod: ``redspot hub``, what the Helm chart's hub Deployment runs.

The same ``redspot.yaml`` and the same layers as ``redspot up`` (``config.layers``), with
what a pod has instead of a machine:

- servers are pods (``spawner.kind: kubernetes``, required), so there are no system
  accounts, no privileged helper and no server runtime to prepare;
- the proxy is a Deployment of its own: the hub does not start it, and reaches its API at
  ``--proxy-api-url`` with the token in ``CONFIGPROXY_AUTH_TOKEN``;
- the hub listens on every interface of its pod (port 8081), and the proxy and servers
  reach it at ``--hub-url`` (its Service);
- the cookie secret and the key that encrypts auth state come from the release's Secret
  (``JPY_COOKIE_SECRET``, ``JUPYTERHUB_CRYPT_KEY``); the database is SQLite in the data
  folder (the hub's volume) or ``REDSPOT_HUB_DB_URL`` (PostgreSQL; the password in
  ``PGPASSWORD``, read by the driver, never in the URL);
- servers outlive a restart of the hub (a new hub pod finds them again).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config

from ..config.layers import CommandLine, Context, assemble
from ..config.loader import ConfigError, enabled_services, load_settings
from ..config.paths import DataPaths

HUB_PORT = 8081


@dataclass(frozen=True)
class InCluster:
    config: Path
    data_dir: Path
    #: how the proxy and the servers reach the hub: ``http://<release>-hub:8081``
    hub_url: str
    #: the proxy's REST API: ``http://<release>-proxy-api:8001``
    proxy_api_url: str


def check_settings(settings: dict, source: str) -> None:
    """What ``redspot.yaml`` may not say in a pod (beyond its schema)."""
    problems = []
    kind = settings.get("spawner", {}).get("kind", "local")
    if kind != "kubernetes":
        problems.append(f"spawner.kind: in a pod, servers are pods: set `kubernetes` "
                        f"(it is {kind!r})")
    enabled = enabled_services(settings)
    if enabled:
        problems.append(f"services: {', '.join(enabled)} cannot run on Kubernetes in this "
                        f"version of the chart yet: set their `enabled: false`")
    if settings.get("auth", {}).get("type") == "pam":
        problems.append("auth.type: pam signs in the machine's accounts, which a pod has "
                        "none of: use oauth (or password)")
    if problems:
        raise ConfigError(source, problems)


def build_config(options: InCluster, environ=os.environ) -> Config:
    """The hub's configuration in its pod (pure but for reading ``options.config``)."""
    settings = load_settings(options.config)
    check_settings(settings, str(options.config))
    paths = DataPaths(options.data_dir)
    ctx = Context(paths=paths, python=sys.executable, isolated=False)
    c = assemble(settings, ctx, CommandLine(), config_d=None)
    layer_incluster(c, options, environ)
    return c


def layer_incluster(c: Config, options: InCluster, environ) -> None:
    c.JupyterHub.hub_ip = "0.0.0.0"  # noqa: S104 - the pod's interfaces; the Service and
    c.JupyterHub.hub_port = HUB_PORT  # the network policies decide who reaches it
    c.JupyterHub.hub_connect_url = options.hub_url
    c.ConfigurableHTTPProxy.should_start = False
    c.ConfigurableHTTPProxy.api_url = options.proxy_api_url
    c.JupyterHub.cleanup_servers = False
    # the proxy's port is its own pod's; JupyterHub only uses these for its log lines
    c.JupyterHub.ip = "0.0.0.0"  # noqa: S104
    c.JupyterHub.port = 8000
    if environ.get("REDSPOT_HUB_DB_URL"):
        c.JupyterHub.db_url = environ["REDSPOT_HUB_DB_URL"]
    if environ.get("JPY_COOKIE_SECRET"):
        # JupyterHub reads the variable before the file
        c.JupyterHub.cookie_secret_file = ""
    namespace = environ.get("POD_NAMESPACE")
    if namespace:
        c.KubeSpawner.namespace = namespace


def prepare(paths: DataPaths, settings: dict) -> dict[str, str]:
    """The data folder and, with password sign-in, the first admin's account."""
    from .app import ensure_admins

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.state.mkdir(mode=0o700, exist_ok=True)
    return ensure_admins(paths, settings)


def run(options: InCluster) -> None:
    try:
        c = build_config(options)
        settings = load_settings(options.config)
    except ConfigError as e:
        print(f"redspot hub: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    paths = DataPaths(options.data_dir)
    created = prepare(paths, settings)
    for name in created:
        print(f"Created the admin account {name!r}; its password is in "
              f"{paths.admin_password} on the hub's volume (kubectl exec ... cat it).",
              flush=True)
    os.chdir(paths.state)
    from .hubapp import RedspotHub

    RedspotHub.instance(config=c)
    RedspotHub.launch_instance(argv=[])
