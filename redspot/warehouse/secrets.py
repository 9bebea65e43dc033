"""The operator's secrets for warehouse connections, read by ``redspot up`` from the files
``redspot.yaml`` names and handed to the warehouse service in its environment (never on
a command line, never to a user's server)."""

from __future__ import annotations

from pathlib import Path

import yaml


class SecretsError(RuntimeError):
    """A secret file is missing or malformed; the message names it (not its content)."""


def _read(path: str, where: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as e:
        raise SecretsError(f"{where}: cannot read {path}: {e.strerror}") from None


def read_secrets(connections: dict) -> dict:
    """``{connection: {...}}``: ``admin_dsn`` (postgres-role), ``user``/``password``/
    ``token`` (static), ``aws`` (s3-sts)."""
    found: dict[str, dict] = {}
    for name, spec in connections.items():
        creds = spec.get("credentials") or {}
        kind = creds.get("kind")
        where = f"warehouse.connections.{name}.credentials"
        if kind == "postgres-role":
            dsn = _read(creds["admin_dsn_file"], f"{where}.admin_dsn_file").strip()
            if not dsn.startswith(("postgresql://", "postgres://")) and "=" not in dsn:
                raise SecretsError(f"{where}.admin_dsn_file: {creds['admin_dsn_file']} does "
                                   "not hold a libpq URI (postgresql://...) or key=value DSN")
            found[name] = {"admin_dsn": dsn}
        elif kind in ("static", "s3-sts") and creds.get("secret_file"):
            path = creds["secret_file"]
            try:
                data = yaml.safe_load(_read(path, f"{where}.secret_file")) or {}
            except yaml.YAMLError:
                raise SecretsError(f"{where}.secret_file: {path} is not YAML") from None
            if not isinstance(data, dict):
                raise SecretsError(f"{where}.secret_file: {path} is not a mapping")
            if kind == "static":
                allowed = {"user", "password", "token"}
                if not set(data) & allowed or set(data) - allowed:
                    raise SecretsError(f"{where}.secret_file: {path} may hold user, password "
                                       "and token, and holds at least one of them")
                found[name] = {k: str(v) for k, v in data.items()}
            else:
                if set(data) != {"access_key_id", "secret_access_key"}:
                    raise SecretsError(f"{where}.secret_file: {path} holds access_key_id "
                                       "and secret_access_key")
                found[name] = {"aws": {k: str(v) for k, v in data.items()}}
    return found
