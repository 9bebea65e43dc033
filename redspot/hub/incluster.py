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
- servers outlive a restart of the hub (a new hub pod finds them again);
- each Redspot service (models, environments, sharing, warehouse) runs in a Deployment of
  its own (``redspot service NAME``): the
  hub knows it as an external service at ``http://<release>-<name>:8080`` with the token
  in ``REDSPOT_SERVICE_TOKEN_<NAME>``, and the service's command and environment come
  from the same layers as the managed service ``redspot up`` would start.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config

from ..config.layers import CommandLine, Context, assemble
from ..config.loader import ConfigError, enabled_services, load_settings
from ..config.paths import DataPaths

HUB_PORT = 8081
#: The port each service's pod listens on.
SERVICE_PORT = 8080


@dataclass(frozen=True)
class InCluster:
    config: Path
    data_dir: Path
    #: how the proxy and the servers reach the hub: ``http://<release>-hub:8081``
    hub_url: str
    #: the proxy's REST API: ``http://<release>-proxy-api:8001``
    proxy_api_url: str
    #: the Helm release: services are reached at ``http://<release>-<name>:8080``
    release: str = "redspot"

    def service_url(self, name: str) -> str:
        return f"http://{self.release}-{name}:{SERVICE_PORT}"


def check_settings(settings: dict, source: str) -> None:
    """What ``redspot.yaml`` may not say in a pod (beyond its schema)."""
    problems = []
    kind = settings.get("spawner", {}).get("kind", "local")
    if kind != "kubernetes":
        problems.append(f"spawner.kind: in a pod, servers are pods: set `kubernetes` "
                        f"(it is {kind!r})")
    enabled = enabled_services(settings)
    if "warehouse" in enabled and settings.get("warehouse", {}).get("demo", True):
        problems.append("warehouse.demo: the demo data set is a file on one machine's "
                        "disk, which users' pods cannot read: set `false` on Kubernetes")
    builder = settings.get("services", {}).get("environments", {}).get("builder", "venv")
    if "environments" in enabled and builder != "kubernetes":
        problems.append(f"services.environments.builder: in a pod, environments are built "
                        f"by Jobs: set `kubernetes` (it is {builder!r})")
    if settings.get("auth", {}).get("type") == "pam":
        problems.append("auth.type: pam signs in the machine's accounts, which a pod has "
                        "none of: use oauth (or password)")
    if problems:
        raise ConfigError(source, problems)


#: The variable the hub's pod has the ``redspot-spawner`` token in (the release's Secret).
SPAWNER_TOKEN = "REDSPOT_SPAWNER_TOKEN"
#: The variable the hub's pod and the ``helm test`` pod have ``redspot smoke``'s token in.
SMOKE_TOKEN = "REDSPOT_SMOKE_TOKEN"
#: The variable the hub's pod has Prometheus' token in (the release's Secret).
METRICS_TOKEN = "REDSPOT_METRICS_TOKEN"
#: The services the spawner asks about a user (with that token).
ASKED_BY_THE_SPAWNER = ("environments", "sharing")


def _assemble(options: InCluster, settings: dict | None = None,
              spawner_token: str = "", smoke_token: str = "",
              metrics_token: str = "") -> Config:
    settings = settings if settings is not None else load_settings(options.config)
    check_settings(settings, str(options.config))
    enabled = enabled_services(settings)
    ctx = Context(paths=DataPaths(options.data_dir), python=sys.executable, isolated=False,
                  service_ports={name: SERVICE_PORT for name in enabled},
                  service_urls={name: options.service_url(name) for name in enabled},
                  spawner_token=spawner_token, smoke_token=smoke_token,
                  metrics_token=metrics_token)
    return assemble(settings, ctx, CommandLine(), config_d=None)


def build_config(options: InCluster, environ=os.environ,
                 settings: dict | None = None) -> Config:
    """The hub's configuration in its pod (pure but for reading ``options.config`` when
    ``settings`` are not given)."""
    settings = settings if settings is not None else load_settings(options.config)
    check_settings(settings, str(options.config))
    asked = [n for n in enabled_services(settings) if n in ASKED_BY_THE_SPAWNER]
    token = environ.get(SPAWNER_TOKEN, "")
    if asked and not token:
        raise ConfigError("the hub's environment", [
            f"{SPAWNER_TOKEN} is not set: the chart gives it from the release's Secret "
            f"(the spawner asks {' and '.join(asked)} about users with it)"])
    # `helm test` (redspot smoke) with the token the chart gives both pods
    c = _assemble(options, settings, spawner_token=token,
                  smoke_token=environ.get(SMOKE_TOKEN, ""),
                  metrics_token=environ.get(METRICS_TOKEN, ""))
    layer_incluster(c, options, environ)
    return c


def _token_variable(name: str) -> str:
    return f"REDSPOT_SERVICE_TOKEN_{name.upper()}"


def external_services(services: list[dict], environ) -> list[dict]:
    """The services the layers made to be run by the hub, as services of their own pods
    (the layers gave them their Service's URL): a token from the release's Secret, no
    command (pure)."""
    kept = ("name", "url", "display", "oauth_no_confirm", "oauth_client_allowed_scopes")
    out = []
    for service in services:
        if "command" not in service:
            out.append(service)
            continue
        name = service["name"]
        token = environ.get(_token_variable(name))
        if not token:
            raise ConfigError("the hub's environment", [
                f"{_token_variable(name)} is not set: the chart gives it from the "
                f"release's Secret (services.{name})"])
        out.append({**{k: service[k] for k in kept if k in service}, "api_token": token})
    return out


def service_process(name: str, options: InCluster, environ=os.environ) -> tuple[list, dict]:
    """What the pod of service ``name`` runs: the command and environment ``redspot up``
    would start it with, and what JupyterHub gives a managed service (pure but for
    reading ``options.config``)."""
    c = _assemble(options)
    services = c.JupyterHub.services if "services" in c.JupyterHub else []
    managed = {s["name"]: s for s in services if "command" in s}
    if name not in managed:
        raise ConfigError(str(options.config), [
            f"services.{name}: not enabled (enabled: {', '.join(sorted(managed)) or 'none'})"])
    service = managed[name]
    token = environ.get("JUPYTERHUB_API_TOKEN") or environ.get(_token_variable(name))
    if not token:
        raise ConfigError("the service's environment", [
            f"{_token_variable(name)} is not set: the chart gives it from the release's "
            f"Secret"])
    extra = {}
    if name == "warehouse":
        extra["REDSPOT_WAREHOUSE_SECRETS"] = json.dumps(_warehouse_secrets(options))
    base = c.JupyterHub.get("base_url", "/").rstrip("/") + "/"
    prefix = f"{base}services/{name}/"
    hub = options.hub_url.rstrip("/")
    env = {
        # what the chart gives the pod is the service's (a database password from a
        # Secret, the AWS role of its service account...)
        **environ,
        **service.get("environment", {}),
        **extra,
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_API_URL": f"{hub}{base}hub/api",
        "JUPYTERHUB_BASE_URL": base,
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{SERVICE_PORT}",
        "JUPYTERHUB_CLIENT_ID": f"service-{name}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": f'["access:services!service={name}"]',
        "JUPYTERHUB_OAUTH_SCOPES": f'["access:services!service={name}"]',
        "JUPYTERHUB_HOST": "",
    }
    return list(service["command"]), env


def _warehouse_secrets(options: InCluster) -> dict:
    """The operator's secrets for the warehouse's connections, read in the service's own
    pod from the files ``redspot.yaml`` names (Secrets the chart mounts there alone:
    ``services.warehouse.secretMounts``), as ``redspot up`` reads them on one machine."""
    from ..warehouse.secrets import SecretsError, read_secrets

    settings = load_settings(options.config)
    try:
        return read_secrets(settings.get("warehouse", {}).get("connections", {}))
    except SecretsError as e:
        raise ConfigError(str(options.config), [
            f"{e} (mount its Secret with services.warehouse.secretMounts)"]) from None


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
        # the usage log is a table of its own in the hub's database
        c.RedspotSpawnerMixin.usage_db_url = environ["REDSPOT_HUB_DB_URL"]
    if environ.get("JPY_COOKIE_SECRET"):
        # JupyterHub reads the variable before the file
        c.JupyterHub.cookie_secret_file = ""
    namespace = environ.get("POD_NAMESPACE")
    if namespace:
        c.KubeSpawner.namespace = namespace
    if "services" in c.JupyterHub:
        c.JupyterHub.services = external_services(list(c.JupyterHub.services), environ)


def prepare(paths: DataPaths, settings: dict) -> dict[str, str]:
    """The data folder and, with password sign-in, the first admin's account."""
    from .app import ensure_admins

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.state.mkdir(mode=0o700, exist_ok=True)
    return ensure_admins(paths, settings)


def run_service(name: str, options: InCluster) -> None:
    try:
        command, env = service_process(name, options)
    except ConfigError as e:
        print(f"redspot service: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    # its volume, mounted where the layers put its data folder (<data>/<name>)
    folder = Path(options.data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    print(f"Redspot's {name} service: {' '.join(command)}", flush=True)
    os.execvpe(command[0], command, env)


def run(options: InCluster) -> None:
    try:
        settings = load_settings(options.config)
        c = build_config(options, settings=settings)
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
