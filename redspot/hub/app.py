"""``redspot up``: prepare the data folder, assemble the config, run JupyterHub.

The hub runs in this process; JupyterHub starts configurable-http-proxy beside it
and the spawner starts the single-user servers. Ctrl-C (SIGINT) or SIGTERM stops
all three; with ``--keep-servers`` only the hub goes, and the next ``redspot up``
reconnects to the servers that kept running.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyterhub.utils import random_port

from ..config.layers import CommandLine, Context, assemble, public_hub_home
from ..config.loader import ConfigError, enabled_services, load_settings
from ..config.paths import DataPaths, default_data_dir
from ..hub.userstore import UserStore, generate_password
from ..spawner.profiles import parse_size
from .leftovers import DataFolderBusy, hold_data_folder, stop_leftover_services

STARTER_CONFIG = """\
# Redspot's configuration, written by the first `redspot up`. Every key is optional;
# `redspot config check` validates this file and `redspot config schema` documents
# every key (docs/configuration.md). Restart `redspot up` after a change.

# The model registry (MLflow behind the hub's sign-in), the environment service
# (users' own Python environments), the warehouse service (connections and
# credentials for %%sql) and the sharing service (read-only shares between users,
# %share). Set `enabled: false` to run the hub alone.
services:
  models:
    enabled: true
  environments:
    enabled: true
  warehouse:
    enabled: true
  sharing:
    enabled: true
    # who may invite others into their own server (guests run code as its owner)
    # invite_groups: ["*"]

# %%sql connections (docs/warehouse.md); `demo` (DuckDB, demo data) is there by default.
# warehouse:
#   connections:
#     warehouse:
#       engine: postgresql
#       address: db.example.com:5432
#       database: analytics
#       groups: ["*"]
#       credentials: {kind: postgres-role, admin_dsn_file: /etc/redspot/pg-admin,
#                     grants: {"*": [analyst]}}

# hub:
#   port: 8000                 # where users sign in
# profiles:
#   default: m5.xlarge
#   everyone: [m5.xlarge, r5.4xlarge]
# groups:
#   gpu-team:
#     users: [alice]
#     profiles: [g5.xlarge, p3.2xlarge]
# auth:
#   signup: approval           # people ask for an account at /hub/signup
# ray:
#   idle_timeout: 3600         # stop a user's Ray head after an hour unused
"""


#: What services that download packages keep of the hub's environment.
SERVICE_ENV_KEEP = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS",
                    "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_CACHE_DIR",
                    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                    "no_proxy", "HOME", "PATH", "LANG")


class StartupError(Exception):
    """Redspot cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class UpOptions:
    data_dir: str | None = None
    config: str | None = None
    cli: CommandLine = field(default_factory=CommandLine)


def resolve(options: UpOptions) -> tuple[DataPaths, dict, Path | None]:
    """Find the data folder and the config file; load and validate the settings."""
    config = Path(options.config).resolve() if options.config else None
    settings = load_settings(config) if config else None
    data_dir = options.data_dir or (settings or {}).get("hub", {}).get("data_dir")
    paths = DataPaths(Path(data_dir).expanduser().resolve() if data_dir else default_data_dir())
    if config is None and paths.config_file.exists():
        config = paths.config_file
        settings = load_settings(config)
    return paths, settings if settings is not None else load_settings(None), config


def find_proxy() -> str:
    """configurable-http-proxy: beside this Python (where `make` links it), else on PATH."""
    beside = Path(sys.executable).parent / "configurable-http-proxy"
    if beside.exists():
        return str(beside)
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    raise StartupError(
        "configurable-http-proxy was not found: run `make up` (it installs it from npm), "
        "or `npm install -g configurable-http-proxy`"
    )


#: Loaded into the proxy: a browser leaving mid-websocket is not an "uncaught exception".
CHP_QUIET = Path(__file__).parent / "chp_quiet.js"


def proxy_command(paths: DataPaths, isolated: bool, port: int, log=print) -> list[str]:
    """configurable-http-proxy (with ``chp_quiet.js``), run as its own account when
    tenants are isolated (with ``setpriv``: the same pid, so the hub still stops it),
    from a copy every account can read when its installation is private (a checkout
    under /root)."""
    from ..environments.runtime import blocking_path, readable_by_all

    real = Path(os.path.realpath(find_proxy()))
    quiet = CHP_QUIET
    as_account = isolated and port >= 1024
    if isolated and port < 1024:
        log(f"WARNING: port {port} needs root: the proxy runs as root")
    readable = stat.S_IROTH | stat.S_IXOTH
    if as_account and blocking_path(real, readable):
        modules = next((p for p in real.parents if p.name == "node_modules"), None)
        if modules is None:
            raise StartupError(f"configurable-http-proxy at {real} cannot be read by the "
                               "proxy's account; install it where every account can read it")
        dest = paths.runtime / "chp" / "node_modules"
        if not dest.exists():
            log(f"Copying configurable-http-proxy to {dest} (its installation is private)")
            with readable_by_all():
                shutil.copytree(modules, dest, symlinks=True)
        real = dest / real.relative_to(modules)
    if as_account and blocking_path(quiet, stat.S_IROTH):
        copy = paths.runtime / "chp" / quiet.name
        with readable_by_all():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(quiet, copy)
        quiet = copy
    node = shutil.which("node")
    run = [node, "--require", str(quiet), str(real)] if node else [str(real)]
    return [_setpriv(), "--clear-groups", "--", *run] if as_account else run


def _setpriv() -> str:
    found = shutil.which("setpriv") or ("/usr/bin/setpriv" if os.path.exists(
        "/usr/bin/setpriv") else None)
    if not found:
        raise StartupError("setpriv (Debian package util-linux) is needed to run the proxy "
                           "under its own account")
    return found


def isolates_users(settings: dict) -> bool:
    isolation = settings.get("spawner", {}).get("isolation", "auto")
    if isolation == "accounts" and os.geteuid() != 0:
        raise StartupError(
            "spawner.isolation is 'accounts', which needs the hub to run as root "
            "(it creates one system account per user)"
        )
    return isolation == "accounts" or (isolation == "auto" and os.geteuid() == 0)


def prepare_data_dir(paths: DataPaths, isolated: bool, write_starter: bool) -> None:
    """The data folder itself, and the starter ``redspot.yaml`` (0600: it will hold the
    operator's secrets). Modes of what is inside are the privileged helper's."""
    from ..environments.runtime import blocking_path

    paths.root.mkdir(parents=True, exist_ok=True)
    if isolated:
        mode = paths.root.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(paths.root, stat.S_IMODE(mode) | 0o711)
        blocker = blocking_path(paths.root, stat.S_IXOTH)
        if blocker:
            raise StartupError(
                f"the data folder {paths.root} cannot be reached by the per-user accounts: "
                f"{blocker} does not let other accounts through (mode "
                f"{stat.filemode(blocker.stat().st_mode)}); choose a data folder outside it "
                "with --data-dir"
            )
    if write_starter and not paths.config_file.exists():
        fd = os.open(paths.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w") as f:
            f.write(STARTER_CONFIG)


def account_prefix(settings: dict) -> str:
    return settings.get("spawner", {}).get("account_prefix", "redspot-")


def start_helper(paths: DataPaths, settings: dict, isolated: bool, server_python: str | None,
                 log=print):
    """The privileged helper: a root process of its own when tenants are isolated (it
    ends with this one), else the same operations in this process. Returns
    ``(helper, process or None)``."""
    from ..privileged.client import InProcessHelper, SocketHelper
    from ..privileged.ops import Helper, HelperError

    envs = settings.get("services", {}).get("environments", {})
    limits = {"build_timeout": float(envs.get("build_timeout", 3600)),
              "build_max_bytes": int(parse_size(envs.get("build_max_size", "20GiB")))}
    if not isolated:
        helper = Helper(paths.root, prefix=account_prefix(settings), isolated=False,
                        server_python=server_python, **limits)
        return InProcessHelper(helper), None
    cmd = [sys.executable, "-m", "redspot.privileged", f"--data-dir={paths.root}",
           f"--socket={paths.helper_socket}", f"--prefix={account_prefix(settings)}",
           f"--build-timeout={limits['build_timeout']}",
           f"--build-max-size={limits['build_max_bytes']}"]
    if server_python:
        cmd.append(f"--server-python={server_python}")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    helper = SocketHelper(str(paths.helper_socket), timeout=None)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise StartupError(f"Redspot's privileged helper exited with {proc.returncode}")
        try:
            helper.call("ping")
            return helper, proc
        except HelperError:
            if time.monotonic() > deadline:
                proc.kill()
                raise StartupError("Redspot's privileged helper did not start in 60 s") from None
            time.sleep(0.1)


def _die_with_parent() -> None:
    """In the helper's process before it runs: SIGTERM when ``redspot up`` dies."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_helper(proc) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def prepare_services(helper, settings: dict, log=print) -> dict[str, str]:
    """Each enabled service's own account and data folder; returns {service: account}."""
    from ..privileged.ops import HelperError

    accounts = {}
    for name in enabled_services(settings):
        try:
            accounts[name] = helper.call("ensure_service", service=name)["account"]
        except HelperError as e:
            raise StartupError(f"the {name} service cannot be prepared: {e}") from None
    return accounts


def prepare_warehouse(paths: DataPaths, settings: dict) -> dict:
    """With the warehouse service on: the demo data set (unless ``warehouse.demo`` is
    false), and the operator's secrets for its connections, read here (they go to the
    service alone)."""
    if "warehouse" not in enabled_services(settings):
        return {}
    from ..warehouse import demo
    from ..warehouse.secrets import SecretsError, read_secrets

    section = settings.get("warehouse", {})
    if section.get("demo", True):
        try:
            demo.ensure(paths.demo_db)  # 0644 in a 0755 folder: every user reads it
        except ImportError:
            raise StartupError(
                "warehouse.demo: the demo connection's data is made with DuckDB, which is "
                "not in the hub's environment; install redspot[warehouse], or set "
                "warehouse.demo: false") from None
    try:
        return read_secrets(section.get("connections", {}))
    except SecretsError as e:
        raise StartupError(str(e)) from None


def ensure_metrics_token(paths: DataPaths) -> str:
    """The token Prometheus scrapes with, made on first start and kept (0600, the
    operator's: ``hub/metrics-token``), so that a scrape config keeps working."""
    path = paths.metrics_token
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def ensure_admins(paths: DataPaths, settings: dict) -> dict[str, str]:
    """Create the admin accounts on first start; return {name: generated password}.

    Each generated password is kept, alone on its line, in a file of the operator's
    (0600): ``hub/admin-password`` for the first admin (``admin`` unless
    ``auth.admin_users`` names others), ``hub/admin-password.<name>`` for the others.
    """
    auth = settings.get("auth", {})
    if auth.get("type", "password") != "password":
        return {}
    store = UserStore(paths.users_db)
    admins = list(auth.get("admin_users", ["admin"]))
    created = {}
    for name in admins:
        if store.get(name) is None:
            password = generate_password()
            store.add(name, password)
            created[name] = password
            path = admin_password_file(paths, name, first=name == admins[0])
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            os.chmod(path, 0o600)
    return created


def admin_password_file(paths: DataPaths, name: str, first: bool) -> Path:
    return paths.admin_password if first else paths.admin_password.with_name(
        f"{paths.admin_password.name}.{name}")


def admin_passwords(paths: DataPaths, settings: dict) -> dict[str, str]:
    """The generated admin passwords still on file, by admin name.

    Data folders of earlier versions hold ``<name> <password>`` lines in
    ``hub/admin-password``; those are read too.
    """
    admins = list(settings.get("auth", {}).get("admin_users", ["admin"]))
    found = {}
    for i, name in enumerate(admins):
        path = admin_password_file(paths, name, first=i == 0)
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if " " in line:  # the old format: every admin's, one per line
                old_name, _, password = line.partition(" ")
                found.setdefault(old_name, password)
            elif line:
                found[name] = line
    return {name: found[name] for name in admins if name in found}


def server_python(paths: DataPaths, settings: dict, isolated: bool, log=print) -> str | None:
    """The Python servers run with: the hub's, or a prepared runtime if accounts can't use it."""
    if not isolated:
        return None
    from ..environments.runtime import (
        RuntimePreparationError,
        hub_environment_blocker,
        prepare_runtime,
    )

    blocker = hub_environment_blocker()
    if blocker is None:
        return None
    log(f"The hub's Python environment is private ({blocker} is closed to other accounts).")
    runtime = settings.get("spawner", {}).get("runtime_dir")
    try:
        return prepare_runtime(Path(runtime) if runtime else paths.runtime, log=log)
    except RuntimePreparationError as e:
        raise StartupError(str(e)) from None


def banner(url: str, paths: DataPaths, config: Path | None, settings: dict, isolated: bool,
           passwords: dict[str, str]) -> str:
    lines = [
        "",
        f"Redspot is starting on {url}",
        f"  data folder:  {paths.root}",
        f"  config file:  {config or '(none: built-in defaults)'}",
    ]
    for name, password in passwords.items():
        first = name == settings.get("auth", {}).get("admin_users", ["admin"])[0]
        lines.append(f"  admin login:  {name} / {password}   (kept in "
                     f"{admin_password_file(paths, name, first)})")
    if isolated:
        prefix = settings.get("spawner", {}).get("account_prefix", "redspot-")
        lines.append(f"  isolation:    one system account per user ({prefix}<name>)")
    else:
        account = pwd.getpwuid(os.geteuid()).pw_name
        why = "spawner.isolation is 'none'" if os.geteuid() == 0 else "not running as root"
        lines.append(
            f"  WARNING: {why}: every user's server runs as {account!r}; "
            "tenants are NOT isolated from each other."
        )
    services = enabled_services(settings)
    lines += ["", "Starting the hub and the proxy"
              + (f", then the services ({', '.join(services)})" if services else "")
              + "; 'ready' follows..."]
    return "\n".join(lines) + "\n"


def build_config(options: UpOptions, prepare: bool = True, log=print):
    """Everything ``redspot up`` does before the hub starts.

    Returns the traitlets Config, the banner to print, the data folder's paths and the
    privileged helper's process (None without isolation, or with ``prepare=False``).

    With ``prepare=False`` nothing is written or started: the config is only assembled.
    """
    paths, settings, config_file = resolve(options)
    isolated = isolates_users(settings)
    helper = helper_proc = None
    if prepare:
        from ..config.loader import config_warnings

        for warning in config_warnings(settings):
            log(f"WARNING: {warning}")
        prepare_data_dir(paths, isolated, write_starter=options.config is None)
        if config_file is None and paths.config_file.exists():
            # the starter file just written: this first start runs with it too
            config_file = paths.config_file
            settings = load_settings(config_file)
            isolated = isolates_users(settings)
        try:
            hold_data_folder(paths.state)
        except DataFolderBusy as e:
            raise StartupError(f"{paths.root}: {e}") from None
        # a hub killed before (SIGKILL, out of memory) left its services running
        stop_leftover_services(paths.root, log=log)
        python = server_python(paths, settings, isolated, log=log)
        helper, helper_proc = start_helper(paths, settings, isolated, python, log=log)
        try:
            for warning in helper.call("prepare_data_dir"):
                log(f"WARNING: {warning}")
            accounts = prepare_services(helper, settings, log=log)
            proxy = proxy_command(paths, isolated,
                                  options.cli.port or settings.get("hub", {}).get("port", 8000),
                                  log=log)
            if proxy[0].endswith("setpriv"):
                info = helper.call("ensure_service", service="proxy")
                proxy[1:1] = [f"--reuid={info['uid']}", f"--regid={info['gid']}"]
            ensure_admins(paths, settings)
            warehouse_secrets = prepare_warehouse(paths, settings)
        except BaseException:
            stop_helper(helper_proc)
            raise
        ctx = Context(
            paths=paths,
            proxy_command=tuple(proxy),
            server_python=python,
            python=sys.executable,
            service_ports={name: random_port() for name in settings.get("services", {})},
            service_env={k: os.environ[k] for k in SERVICE_ENV_KEEP if k in os.environ},
            service_accounts=accounts,
            helper_socket=str(paths.helper_socket) if helper_proc else "",
            isolated=isolated,
            cli_token=secrets.token_hex(32),
            spawner_token=secrets.token_hex(32),
            metrics_token=ensure_metrics_token(paths),
            hub_home=public_hub_home(settings),
            warehouse_secrets=warehouse_secrets,
        )
    else:
        # what is made at each start is named, not made: the config shown has the
        # spawner's service and role as a start would
        ctx = Context(paths=paths, python=sys.executable, isolated=isolated,
                      service_ports={name: 0 for name in settings.get("services", {})},
                      spawner_token=MADE_AT_START, metrics_token=MADE_AT_START)
    config_d = (config_file.parent if config_file else paths.root) / "jupyterhub_config.d"
    c = assemble(settings, ctx, options.cli, config_d)
    url = f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}{c.JupyterHub.get('base_url', '/')}"
    text = banner(url, paths, config_file, settings, isolated,
                  admin_passwords(paths, settings))
    if prepare:
        write_cli_access(paths, c, ctx.cli_token)
    return c, text, paths, helper_proc


#: What ``redspot config show`` says in place of a token made at each start.
MADE_AT_START = "(made at each start)"


def write_cli_access(paths: DataPaths, c, token: str) -> None:
    """How ``redspot users`` reaches this hub's REST API: its address and a token of the
    ``redspot-cli`` service, new at each start, and the address users sign in at, in
    ``hub/`` (0700, the operator's)."""
    from ..privileged import safefs

    base = c.JupyterHub.get("base_url", "/").rstrip("/")
    url = f"http://{c.JupyterHub.hub_ip}:{c.JupyterHub.hub_port}{base}/hub/api"
    public = f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}{base}/"
    fd = safefs.open_root(paths.root)
    try:
        with safefs.opened(fd, "hub", create=0o700) as hub:
            safefs.write_private(hub, "cli-access.json",
                                 json.dumps({"url": url, "token": token,
                                            "public_url": public}).encode())
    finally:
        os.close(fd)


def cli_access(paths: DataPaths) -> dict | None:
    try:
        return json.loads((paths.state / "cli-access.json").read_text())
    except (OSError, ValueError):
        return None


def ready_message(c) -> str:
    url = f"http://{c.JupyterHub.ip}:{c.JupyterHub.port}{c.JupyterHub.get('base_url', '/')}"
    return f"\nRedspot is ready on {url}   (Ctrl-C stops it)\n"


def up(options: UpOptions) -> None:
    try:
        c, text, paths, helper_proc = build_config(options)
    except (ConfigError, StartupError) as e:
        print(f"redspot up: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(text, flush=True)
    # JupyterHub also reads ./jupyterhub_config.py: run where only Redspot writes
    os.chdir(paths.state)
    try:
        from .hubapp import RedspotHub

        c.RedspotHub.ready_message = ready_message(c)
        RedspotHub.instance(config=c)
        RedspotHub.launch_instance(argv=[])
    except KeyboardInterrupt:
        # before the hub started anything (its own handlers take over from its start)
        print("\nInterrupted before the hub started.", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        stop_helper(helper_proc)
