"""Where a Redspot hub keeps things inside its data folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``/var/lib/redspot`` as root, ``$XDG_DATA_HOME/redspot`` (``~/.local/share``) otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/redspot")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "redspot"


@dataclass(frozen=True)
class DataPaths:
    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "redspot.yaml"

    @property
    def state(self) -> Path:
        """Hub-only state (database, secrets): mode 0700."""
        return self.root / "hub"

    @property
    def hub_db(self) -> Path:
        return self.state / "jupyterhub.sqlite"

    @property
    def usage_db(self) -> Path:
        """Redspot's usage log (``redspot.usage``): servers' and Ray nodes' hours."""
        return self.state / "usage.sqlite"

    @property
    def metrics_token(self) -> Path:
        """The token Prometheus scrapes the metrics with (0600, made on first start)."""
        return self.state / "metrics-token"

    @property
    def cookie_secret(self) -> Path:
        return self.state / "jupyterhub_cookie_secret"

    @property
    def proxy_pid(self) -> Path:
        return self.state / "jupyterhub-proxy.pid"

    @property
    def hub_pid(self) -> Path:
        return self.state / "jupyterhub.pid"

    @property
    def users_db(self) -> Path:
        return self.state / "users.sqlite"

    @property
    def admin_password(self) -> Path:
        return self.state / "admin-password"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def helper_socket(self) -> Path:
        """The privileged helper's socket (``run/`` is 0711: anyone may connect; the
        helper asks the kernel who they are)."""
        return self.root / "run" / "helper.sock"

    @property
    def retired(self) -> Path:
        """Homes of removed users (0700, root's), kept until an admin restores them."""
        return self.root / "retired"

    @property
    def runtime(self) -> Path:
        """The server environment prepared for per-user accounts when the hub's is private."""
        return self.root / "runtime"

    @property
    def environments(self) -> Path:
        """The environment service's catalog, build logs and builds."""
        return self.root / "environments"

    @property
    def models(self) -> Path:
        """The model registry's store, artifacts and permissions (0700, its account's)."""
        return self.root / "models"

    @property
    def homes(self) -> Path:
        return self.root / "home"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def demo_db(self) -> Path:
        """The demo connection's database (every user reads it)."""
        return self.root / "demo" / "listings.duckdb"
