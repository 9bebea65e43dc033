"""The layers that turn Redspot's settings into a JupyterHub traitlets ``Config``.

Each layer is a small function that only *sets* values on the ``Config`` it is given
(never appends to or mutates a value an earlier layer set), so a later layer always
wins and every layer can be tested on a fresh ``Config()``:

1. ``layer_defaults``: Redspot's built-in defaults (data folder, spawner, authenticator);
2. ``layer_settings``: the operator's validated ``redspot.yaml``;
3. ``layer_command_line``: the flags given to ``redspot up``;
4. ``layer_config_d``: ``jupyterhub_config.d/*.py`` beside ``redspot.yaml``, in name
   order: the escape hatch for anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from traitlets.config import Config

from ..hub import scopes
from ..smoke import SMOKE_USER, smoke_scopes
from ..spawner.profiles import build_catalog
from .loader import enabled_services, profile_rules
from .paths import DataPaths

#: ``auth.oauth.provider`` -> the OAuthenticator class.
OAUTH_PROVIDERS = {
    "github": "oauthenticator.github.GitHubOAuthenticator",
    "gitlab": "oauthenticator.gitlab.GitLabOAuthenticator",
    "google": "oauthenticator.google.GoogleOAuthenticator",
    "generic": "oauthenticator.generic.GenericOAuthenticator",
    "azuread": "oauthenticator.azuread.AzureAdOAuthenticator",
    "bitbucket": "oauthenticator.bitbucket.BitbucketOAuthenticator",
    "cilogon": "oauthenticator.cilogon.CILogonOAuthenticator",
    "globus": "oauthenticator.globus.GlobusOAuthenticator",
    "openshift": "oauthenticator.openshift.OpenShiftOAuthenticator",
    "auth0": "oauthenticator.auth0.Auth0OAuthenticator",
}

TEMPLATES = Path(__file__).parent.parent / "hub" / "templates"


@dataclass(frozen=True)
class Context:
    """What the layers need to know about this machine (found by the caller, not by a layer)."""

    paths: DataPaths
    #: configurable-http-proxy's command (with ``setpriv`` before it when it runs as an
    #: account of its own)
    proxy_command: tuple = ("configurable-http-proxy",)
    server_python: str | None = None
    #: The Python that runs Redspot's services (the hub's own).
    python: str = "python3"
    #: A free port on 127.0.0.1 for each service, by name.
    service_ports: dict = field(default_factory=dict)
    #: Where a service listens when it is not on 127.0.0.1 (a pod's Service, by name).
    service_urls: dict = field(default_factory=dict)
    #: Variables services that fetch packages need from the hub's environment
    #: (certificates, proxies, package indexes): JupyterHub gives services no others.
    service_env: dict = field(default_factory=dict)
    #: The system account each service runs as, by name (none: the hub's own account).
    service_accounts: dict = field(default_factory=dict)
    #: The privileged helper's socket ("" without isolation: no helper process).
    helper_socket: str = ""
    #: Whether each user has a system account of their own.
    isolated: bool = False
    #: The token ``redspot users`` commands reach the hub's REST API with ("": none).
    cli_token: str = ""
    #: The hub's home page as browsers reach it (services link back to it).
    hub_home: str = "/hub/home"
    #: The token spawners ask Redspot's services with ("": none): the environments
    #: service which environments a user may start in, the sharing service (Kubernetes)
    #: what a starting server mounts.
    spawner_token: str = ""
    #: The token of ``redspot smoke`` in a cluster (the chart's ``helm test``; "": none).
    smoke_token: str = ""
    #: The token Prometheus scrapes the hub's and the services' metrics with ("": none).
    metrics_token: str = ""
    #: The operator's secrets for warehouse connections, read from their files
    #: (``redspot.warehouse.secrets``): for the warehouse service's environment alone.
    warehouse_secrets: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CommandLine:
    """``redspot up`` flags; None means "not given"."""

    ip: str | None = None
    port: int | None = None
    api_port: int | None = None
    proxy_api_port: int | None = None
    keep_servers: bool = False
    log_level: str | None = None


def layer_defaults(c: Config, ctx: Context) -> None:
    paths = ctx.paths
    c.JupyterHub.ip = "127.0.0.1"
    c.JupyterHub.port = 8000
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = 8081
    c.JupyterHub.db_url = f"sqlite:///{paths.hub_db}"
    c.RedspotSpawnerMixin.usage_db_url = f"sqlite:///{paths.usage_db}"
    c.JupyterHub.cookie_secret_file = str(paths.cookie_secret)
    c.JupyterHub.pid_file = str(paths.hub_pid)
    c.JupyterHub.template_paths = [str(TEMPLATES)]
    # sign-in lands on Redspot's home page (redspot.hub.pages), not the spawn form
    c.JupyterHub.default_url = "/hub/home"
    c.JupyterHub.spawner_class = "redspot-local"
    c.JupyterHub.authenticator_class = "redspot-password"
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    c.ConfigurableHTTPProxy.command = list(ctx.proxy_command)
    c.ConfigurableHTTPProxy.pid_file = str(paths.proxy_pid)
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
    c.Authenticator.admin_users = {"admin"}
    # users in the hub's database whose names became invalid (retired while the hub was
    # down, reserved since) are removed at start
    c.Authenticator.delete_invalid_users = True
    c.RedspotLifecycle.users_db = str(paths.users_db)
    c.RedspotLifecycle.data_dir = str(paths.root)
    c.RedspotLifecycle.isolated = ctx.isolated
    if ctx.helper_socket:
        c.RedspotLifecycle.helper_socket = ctx.helper_socket
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
    c.RedspotLocalSpawner.data_dir = str(paths.root)
    c.RedspotLocalSpawner.log_dir = str(paths.logs)
    if ctx.server_python:
        c.RedspotLocalSpawner.python = ctx.server_python
    if ctx.helper_socket:
        c.RedspotLocalSpawner.helper_socket = ctx.helper_socket


#: Seconds a service the hub runs may take to answer after it starts.
SERVICE_START_TIMEOUT = 180


def _managed_service(name: str, command: list[str], ctx: Context, environment=None,
                     **extra) -> dict:
    """A Redspot service the hub runs, on its own port of 127.0.0.1, under its own
    account (``ctx.service_accounts``) in its data folder, when tenants are isolated."""
    env = dict(ctx.service_env)
    env["REDSPOT_HUB_HOME"] = ctx.hub_home
    service = {"name": name, "display": True,
               "url": ctx.service_urls.get(name)
               or f"http://127.0.0.1:{ctx.service_ports[name]}", "command": command,
               "oauth_no_confirm": True,
               # JupyterHub stops when a managed service does not answer in time (30 s by
               # default): the registry's first start (MLflow making its tables) took 55 s
               # on a busy 2-core machine
               "timeout": SERVICE_START_TIMEOUT}
    account = ctx.service_accounts.get(name)
    if account:
        # its own HOME (JupyterHub sets it from the account), not the hub's caches
        for key in ("HOME", "UV_CACHE_DIR"):
            env.pop(key, None)
        service.update(user=account, cwd=str(ctx.paths.root / name))
    env.update(environment or {})
    return {**service, "environment": env, **extra}


def service_python(ctx: Context) -> str:
    """The Python services run with: one their accounts can run."""
    return ctx.server_python or ctx.python


def layer_services(c: Config, settings: dict, ctx: Context) -> None:
    """The Redspot services that ``services.<name>.enabled`` turns on, with their scopes."""
    enabled = enabled_services(settings)
    services = []
    roles = []
    if ctx.cli_token:
        # `redspot smoke`: its user's server's API too
        cli_scopes = ["admin:users", "admin:servers", "delete:users",
                      f"access:servers!user={SMOKE_USER}"]
        if "sharing" in enabled:
            # `redspot shares`: list and revoke anyone's shares
            cli_scopes += ["access:services!service=sharing", scopes.SHARES_ADMIN]
        # `redspot users remove` on this machine: the hub stops the server, drops the
        # tokens and retires the user, as for a removal from the admin page
        services.append({"name": "redspot-cli", "api_token": ctx.cli_token})
        roles.append({"name": "redspot-cli", "services": ["redspot-cli"],
                      "description": "redspot users commands run by the operator",
                      "scopes": cli_scopes})
    if ctx.smoke_token:
        # `redspot smoke` in the chart's `helm test` pod: its own user alone
        services.append({"name": "redspot-smoke", "api_token": ctx.smoke_token})
        roles.append({"name": "redspot-smoke", "services": ["redspot-smoke"],
                      "description": "redspot smoke: start its own user's server and "
                                     "run a Ray task there",
                      "scopes": smoke_scopes()})
    if ctx.metrics_token:
        # Prometheus: the hub's /hub/metrics and each service's /metrics, nothing else
        services.append({"name": "redspot-metrics", "api_token": ctx.metrics_token})
        roles.append({"name": "redspot-metrics", "services": ["redspot-metrics"],
                      "description": "Prometheus: read the hub's and the services' metrics",
                      "scopes": [scopes.METRICS, *(f"access:services!service={name}"
                                                   for name in enabled)]})
    if not enabled:
        if services:
            c.JupyterHub.services = services
            c.JupyterHub.load_roles = roles
        return
    spawner_scopes: list[str] = []
    if "environments" in enabled:
        envs = settings["services"]["environments"]
        command = [service_python(ctx), "-m", "redspot.environments.service",
                   f"--data-dir={ctx.paths.environments}",
                   f"--builder={envs.get('builder', 'venv')}"]
        if envs.get("registry"):
            command.append(f"--registry={envs['registry']}")
        for key in ("repository", "registry_secret", "build_namespace"):
            if envs.get(key):
                command.append(f"--EnvironmentsService.{key}={envs[key]}")
        if envs.get("builder") == "kubernetes" and "build_timeout" in envs:
            # the build Job's deadline (locally the privileged helper enforces it)
            command.append(f"--EnvironmentsService.build_timeout={int(envs['build_timeout'])}")
        for name, ref in envs.get("bases", {}).items():
            command += ["--EnvironmentsService.bases", f"{name}={ref}"]
        if envs.get("tls_verify") is False:
            command.append("--no-tls-verify")
        services.append(_managed_service(
            "environments", command, ctx,
            environment={"REDSPOT_HELPER_SOCKET": ctx.helper_socket} if ctx.helper_socket
            else {},
            oauth_client_allowed_scopes=list(scopes.CUSTOM_SCOPES)))
        # the spawn form and a start in an environment ask which ones are ready
        spawner_scopes += ["access:services!service=environments", scopes.ENVIRONMENTS_READY]
    if "models" in enabled:
        models = settings["services"]["models"]
        command = [service_python(ctx), "-m", "redspot.models.service",
                   f"--data-dir={ctx.paths.models}"]
        # store URIs may hold passwords: in the service's environment, never on a
        # command line (which every account sees in ps, and the hub logs)
        secrets = {f"MLFLOW_{key.upper()}": models[key]
                   for key in ("backend_store_uri", "artifacts_destination") if models.get(key)}
        services.append(_managed_service("models", command, ctx, environment=secrets))
    if "warehouse" in enabled:
        connections = warehouse_connections(settings, ctx.paths)
        command = [service_python(ctx), "-m", "redspot.warehouse.service",
                   f"--data-dir={ctx.paths.root / 'warehouse'}"]
        services.append(_managed_service("warehouse", command, ctx, environment={
            "REDSPOT_WAREHOUSE_CONNECTIONS": json.dumps(connections),
            "REDSPOT_WAREHOUSE_SECRETS": json.dumps(ctx.warehouse_secrets)}))
        # who a user is (groups, admin) from the hub; their sign-in token for `oauth`
        service_scopes = ["read:users"]
        if any((c.get("credentials") or {}).get("kind") == "oauth"
               for c in connections.values()):
            service_scopes.append("admin:auth_state")
        roles.append({"name": "redspot-warehouse-service", "services": ["warehouse"],
                      "description": "The warehouse service asks who users are",
                      "scopes": service_scopes})
    invite_groups = []
    if "sharing" in enabled:
        sharing = settings["services"]["sharing"]
        kube = settings.get("spawner", {}).get("kind") == "kubernetes"
        command = [service_python(ctx), "-m", "redspot.sharing.service",
                   f"--data-dir={ctx.paths.root / 'sharing'}",
                   f"--check-interval={sharing.get('check_interval', 60)}"]
        if kube:
            command.append("--deployment=kubernetes")
        else:
            command.append(f"--storage-root={ctx.paths.root}")
            if not ctx.isolated:
                command.append("--no-isolation")
        services.append(_managed_service(
            "sharing", command, ctx,
            environment={"REDSPOT_HELPER_SOCKET": ctx.helper_socket} if ctx.helper_socket
            else {}))
        # who users are and which groups they are in; on Kubernetes, stopping the
        # servers of a revoked share's recipients (their read-only mounts go with them)
        # (listing them, for the Share… dialog's pickers, takes list:users and list:groups)
        service_scopes = ["list:users", "read:users:name", "read:users:groups",
                          "list:groups", "read:groups:name"]
        if kube:
            service_scopes += ["read:groups", "servers"]
        roles.append({"name": "redspot-sharing-service", "services": ["sharing"],
                      "description": "The sharing service asks who users are",
                      "scopes": service_scopes})
        if kube:
            # the spawner asks what a starting server mounts read-only
            spawner_scopes += ["access:services!service=sharing", scopes.SHARES_ADMIN]
        invite_groups = list(sharing.get("invite_groups", []))
        # real-time collaboration where guests may come
        c.RedspotSpawnerMixin.collaboration_groups = invite_groups
        c.RedspotSpawnerMixin.server_token_cache_seconds = sharing.get(
            "server_token_cache", 30)
    if spawner_scopes and ctx.spawner_token:
        services.append({"name": "redspot-spawner", "api_token": ctx.spawner_token})
        roles.append({"name": "redspot-spawner", "services": ["redspot-spawner"],
                      "description": "The spawner asks Redspot's services about a user "
                                     "(ready environments, what is shared with them)",
                      "scopes": spawner_scopes})
        c.RedspotSpawnerMixin.services_token = ctx.spawner_token
    c.RedspotSpawnerMixin.service_urls = {
        s["name"]: f"{s['url']}/services/{s['name']}/" for s in services if "url" in s}
    c.RedspotSpawnerMixin.service_public_urls = {
        s["name"]: public_service_url(settings, s["name"]) for s in services if "url" in s}
    c.JupyterHub.services = services
    c.JupyterHub.custom_scopes = dict(scopes.CUSTOM_SCOPES)
    admins = settings.get("auth", {}).get("admin_users", ["admin"])
    c.JupyterHub.load_roles = [*roles, *scopes.service_roles(enabled, admins, invite_groups)]


def warehouse_connections(settings: dict, paths: DataPaths) -> dict:
    """The connections the warehouse service serves, without the paths of secret files
    (the demo first, unless ``warehouse.demo`` is false)."""
    from ..warehouse import demo

    section = settings.get("warehouse", {})
    found = {"demo": demo.connection_spec(paths.demo_db)} if section.get("demo", True) else {}
    for name, spec in section.get("connections", {}).items():
        creds = {k: v for k, v in (spec.get("credentials") or {"kind": "none"}).items()
                 if k not in ("admin_dsn_file", "secret_file")}
        found[name] = {**spec, "credentials": creds}
    return found


def public_service_url(settings: dict, name: str) -> str:
    """Where browsers reach a service: a path on the hub's origin, or, with per-user
    subdomains, the service's own origin (JupyterHub's default subdomain hook)."""
    hub = settings.get("hub", {})
    path = f"{hub.get('base_url', '/').rstrip('/')}/services/{name}/"
    host = hub.get("subdomain_host")
    if not host:
        return path
    from urllib.parse import urlparse

    from jupyterhub.utils import subdomain_hook_idna

    parsed = urlparse(host)
    domain = subdomain_hook_idna(name, parsed.hostname, "service")
    return f"{parsed.scheme}://{domain}{f':{parsed.port}' if parsed.port else ''}{path}"


def public_hub_home(settings: dict) -> str:
    """The hub's home page as browsers reach it: a path, or with per-user subdomains a
    URL of the hub's own origin (services link back to it)."""
    hub = settings.get("hub", {})
    path = f"{hub.get('base_url', '/').rstrip('/')}/hub/home"
    host = hub.get("subdomain_host")
    return f"{host.rstrip('/')}{path}" if host else path


def layer_settings(c: Config, settings: dict) -> None:
    hub = settings.get("hub", {})
    for key, trait in (("ip", "ip"), ("port", "port"), ("base_url", "base_url"),
                       ("api_port", "hub_port"), ("log_level", "log_level"),
                       ("subdomain_host", "subdomain_host")):
        if key in hub:
            setattr(c.JupyterHub, trait, hub[key])
    if "base_url" in hub:
        c.JupyterHub.default_url = f"{hub['base_url'].rstrip('/')}/hub/home"
    if "proxy_api_port" in hub:
        c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{hub['proxy_api_port']}"

    auth = settings.get("auth", {})
    kind = auth.get("type", "password")
    if kind == "pam":
        c.JupyterHub.authenticator_class = "redspot-pam"
    elif kind == "oauth":
        provider = auth["oauth"]["provider"]
        name = OAUTH_PROVIDERS[provider].rsplit(".", 1)[1]
        # the same class, with Redspot's names and removals (redspot.hub.oauth)
        c.JupyterHub.authenticator_class = f"redspot.hub.oauth.{name}"
        section = c[name]
        for trait, value in auth["oauth"].get("config", {}).items():
            section[trait] = value
    if "admin_users" in auth:
        c.Authenticator.admin_users = set(auth["admin_users"])
    elif kind == "pam":
        # PAM's users are the machine's accounts: there is no built-in "admin" among them
        c.Authenticator.admin_users = set()
    if auth.get("allowed_users"):
        c.Authenticator.allowed_users = set(auth["allowed_users"])
    elif kind in ("pam", "oauth"):
        c.Authenticator.allow_all = True
    if "signup" in auth:
        c.RedspotPasswordAuthenticator.signup = auth["signup"]

    catalog = build_catalog(settings.get("profiles", {}).get("catalog"))
    rules = profile_rules(settings, catalog)
    spawner = c.RedspotSpawnerMixin
    spawner.profile_catalog = dict(settings.get("profiles", {}).get("catalog", {}))
    spawner.profiles_offered = list(rules.offered) if rules.offered is not None else None
    spawner.profiles_everyone = list(rules.everyone)
    spawner.group_profiles = {g: list(p) for g, p in rules.groups.items()}
    spawner.default_profile = rules.default or ""
    spawner.admins_use_all_profiles = rules.admins_use_all

    groups = settings.get("groups", {})
    caps = {name: dict(group["caps"]) for name, group in groups.items() if group.get("caps")}
    if caps:
        spawner.group_caps = caps
    if groups:
        c.JupyterHub.load_groups = {
            name: {
                "users": list(group.get("users", [])),
                "properties": {"description": group["description"]}
                if "description" in group
                else {},
            }
            for name, group in groups.items()
        }

    local = settings.get("spawner", {})
    if local.get("kind") == "kubernetes":
        c.JupyterHub.spawner_class = "redspot-kube"
    for key in ("start_timeout", "http_timeout", "default_url"):
        if key in local:
            setattr(c.Spawner, key, local[key])
    if "isolation" in local:
        c.RedspotLocalSpawner.isolation = local["isolation"]
    if "account_prefix" in local:
        c.RedspotLocalSpawner.account_prefix = local["account_prefix"]
        c.RedspotLifecycle.account_prefix = local["account_prefix"]
    culling = settings.get("culling", {})
    ray_timeout = culling.get("ray_idle_timeout", settings.get("ray", {}).get("idle_timeout"))
    if ray_timeout is not None:
        c.RedspotSpawnerMixin.ray_idle_timeout = ray_timeout
    for key, trait in (("server_idle_timeout", "server_idle_timeout"),
                       ("gpu_server_idle_timeout", "gpu_server_idle_timeout"),
                       ("profiles", "profile_idle_timeouts")):
        if key in culling:
            setattr(c.RedspotSpawnerMixin, trait, culling[key])

    layer_kubernetes(c, settings.get("kubernetes", {}))


def layer_kubernetes(c: Config, kube: dict) -> None:
    spawner = c.RedspotKubeSpawner
    if "namespace" in kube:
        spawner.namespace = kube["namespace"]
    if "images" in kube:
        spawner.images = dict(kube["images"])
    if "node_selector" in kube:
        spawner.extra_node_selector = dict(kube["node_selector"])
    overhead = kube.get("node_overhead", {})
    for key, trait in (("max_pods", "max_pods_per_node"),
                       ("memory_capacity", "memory_capacity_fraction"),
                       ("daemonset_cpu", "daemonset_cpu"),
                       ("daemonset_memory", "daemonset_memory")):
        if key in overhead:
            setattr(spawner, trait, overhead[key])
    storage = kube.get("storage", {})
    for key, trait in (("mode", "storage_mode"), ("claim", "storage_claim"),
                       ("home_storage_class", "home_storage_class"),
                       ("home_size", "home_size")):
        if key in storage:
            setattr(spawner, trait, storage[key])
    if "datasets" in storage:
        spawner.datasets = [dict(d) for d in storage["datasets"]]


def layer_command_line(c: Config, cli: CommandLine) -> None:
    if cli.ip is not None:
        c.JupyterHub.ip = cli.ip
    if cli.port is not None:
        c.JupyterHub.port = cli.port
    if cli.api_port is not None:
        c.JupyterHub.hub_port = cli.api_port
    if cli.proxy_api_port is not None:
        c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{cli.proxy_api_port}"
    if cli.log_level is not None:
        c.JupyterHub.log_level = cli.log_level
    if cli.keep_servers:
        # the hub alone goes down: servers (and their kernels) keep running, and the
        # next hub reconnects to them.
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.cleanup_proxy = False


def layer_config_d(c: Config, directory: Path) -> list[Path]:
    """Run ``directory/*.py`` in name order on ``c``; return the files run.

    Like ``jupyterhub_config.py``, each file gets ``c`` (and ``get_config()``); unlike it,
    ``c`` already holds what the earlier layers set, so a file may read or extend it
    (``c.JupyterHub.services.append(...)``) as well as set values.
    """
    loaded = []
    if not directory.is_dir():
        return loaded
    for path in sorted(directory.glob("*.py")):
        namespace = {"c": c, "get_config": lambda: c, "__file__": str(path)}
        exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102
        loaded.append(path)
    return loaded


def assemble(settings: dict, ctx: Context, cli: CommandLine, config_d: Path | None) -> Config:
    """All the layers, in order, on a fresh ``Config``."""
    c = Config()
    layer_defaults(c, ctx)
    layer_settings(c, settings)
    layer_services(c, settings, ctx)
    layer_command_line(c, cli)
    if config_d is not None:
        layer_config_d(c, config_d)
    return c
