"""Named connections: the operator's (``warehouse.connections`` in ``redspot.yaml``) and a
user's own (``~/.redspot/connections.yaml``). Pure: parsing and checks, no I/O but reading
the personal file.

A connection says which engine, where, the limits of a query, which hub groups may use
it, and how its credentials are obtained. It never holds a secret: the operator's secrets
stay with the warehouse service (files only it reads), a user's are asked for at first
use or read from a variable of their own environment.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ENGINES = ("duckdb", "postgresql", "spark-connect", "hive", "trino")
#: The name ``%%sql local`` queries the notebook's own data frames with (DuckDB).
LOCAL = "local"
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
DEFAULT_MAX_ROWS = 100_000
DEFAULT_TIMEOUT = 300.0
DEFAULT_CONNECT_TIMEOUT = 10.0

#: Credential kinds the operator declares, and the engines each serves.
SERVICE_KINDS = {
    "none": ENGINES,
    # a per-user role the service creates, with a password it rotates
    "postgres-role": ("postgresql",),
    # the token the hub's authenticator keeps in the user's auth_state
    "oauth": ("postgresql", "trino", "spark-connect"),
    # one set of credentials for everyone (engines that have no per-user identity)
    "static": ENGINES,
    # S3 credentials minted per user with STS, limited to a bucket and prefix
    "s3-sts": ("duckdb",),
}
#: Kinds of a personal connection: asked for (getpass) or read from the user's variable.
PERSONAL_KINDS = ("none", "prompt", "env")
#: Keys a personal connection may not have: it must not hold a secret.
SECRET_KEYS = re.compile(r"pass(word)?|secret|token|key$|credential", re.IGNORECASE)


class ConnectionError(ValueError):  # noqa: A001 - the module's own, named for what it says
    """A connection is unknown, not allowed, or badly described; the message says which."""


@dataclass(frozen=True)
class Credentials:
    kind: str = "none"
    #: seconds a credential the service hands out lives
    ttl: int = 3600
    #: the rest of the kind's settings (no secrets: those are in files the service reads)
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Connection:
    name: str
    engine: str
    description: str = ""
    #: ``host:port`` (a file path or nothing for DuckDB)
    address: str = ""
    database: str = ""
    schema: str = ""
    options: dict = field(default_factory=dict)
    max_rows: int = DEFAULT_MAX_ROWS
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: hub groups that may use it (``*``: every user); admins may use every connection
    groups: tuple[str, ...] = ()
    credentials: Credentials = field(default_factory=Credentials)
    #: where it comes from: ``hub`` (the operator's), ``personal`` or ``builtin``
    source: str = "hub"
    #: for a personal connection: the user name to sign in as
    user: str = ""

    def allows(self, groups, admin: bool = False) -> bool:
        return admin or "*" in self.groups or bool(set(self.groups) & set(groups))

    def host_port(self, default_port: int) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":") if ":" in self.address else (
            self.address, "", "")
        return host or "127.0.0.1", int(port) if port else default_port

    def public(self) -> dict:
        """What a user may know of it (everything: it holds no secret)."""
        data = asdict(self)
        data["groups"] = list(self.groups)
        data["credentials"] = {"kind": self.credentials.kind, "ttl": self.credentials.ttl}
        return data

    @classmethod
    def from_public(cls, data: dict) -> Connection:
        data = dict(data)
        creds = data.pop("credentials", {}) or {}
        return cls(**{**data, "groups": tuple(data.get("groups", ())),
                      "credentials": Credentials(kind=creds.get("kind", "none"),
                                                 ttl=int(creds.get("ttl", 3600)))})


def from_settings(name: str, spec: dict) -> Connection:
    """An operator's connection from its (schema-checked) ``redspot.yaml`` entry."""
    creds = dict(spec.get("credentials") or {"kind": "none"})
    kind = creds.pop("kind")
    ttl = int(creds.pop("ttl", 3600))
    return Connection(
        name=name, engine=spec["engine"], description=spec.get("description", ""),
        address=str(spec.get("address", "")), database=spec.get("database", ""),
        schema=spec.get("schema", ""), options=dict(spec.get("options", {})),
        max_rows=int(spec.get("max_rows", DEFAULT_MAX_ROWS)),
        timeout=float(spec.get("timeout", DEFAULT_TIMEOUT)),
        connect_timeout=float(spec.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        groups=tuple(spec.get("groups", ())),
        credentials=Credentials(kind=kind, ttl=ttl, settings=creds))


def check_settings(connections: dict) -> list[str]:
    """What is wrong with ``warehouse.connections`` beyond its schema, one line each."""
    problems = []
    for name, spec in connections.items():
        where = f"warehouse.connections.{name}"
        engine = spec.get("engine")
        creds = spec.get("credentials") or {"kind": "none"}
        kind = creds.get("kind", "none")
        if engine not in SERVICE_KINDS.get(kind, ()):
            fits = [k for k, engines in SERVICE_KINDS.items() if engine in engines]
            problems.append(f"{where}.credentials.kind: {kind!r} does not serve {engine}; "
                            f"for {engine}: {', '.join(fits)}")
        needs = {"postgres-role": ["admin_dsn_file"], "static": ["secret_file"],
                 "s3-sts": ["bucket", "role_arn"]}.get(kind, [])
        for key in needs:
            if not creds.get(key):
                problems.append(f"{where}.credentials.{key}: required for kind {kind}")
        if engine != "duckdb" and not spec.get("address"):
            problems.append(f"{where}.address: required for {engine} (host:port)")
    return problems


def parse_personal(text: str, source: str = "~/.redspot/connections.yaml") -> dict[
        str, Connection]:
    """A user's own connections. They hold no secret: ``password: prompt`` asks at first
    use, ``password_env: VAR`` reads the user's variable."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConnectionError(f"{source} is not YAML: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("connections", {}), dict):
        raise ConnectionError(f"{source}: expected a mapping 'connections: {{name: ...}}'")
    allowed = {"engine", "description", "address", "database", "schema", "options",
               "max_rows", "timeout", "connect_timeout", "user", "password", "password_env"}
    found = {}
    for name, spec in (data.get("connections") or {}).items():
        where = f"{source}: connections.{name}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ConnectionError(f"{where}: a name is lower-case letters, digits, - and _, "
                                  "starting with a letter")
        if name == LOCAL:
            raise ConnectionError(f"{where}: '{LOCAL}' is reserved (the notebook's own data)")
        if not isinstance(spec, dict):
            raise ConnectionError(f"{where}: expected a mapping")
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ConnectionError(f"{where}: unknown key {', '.join(map(repr, unknown))}; "
                                  f"allowed: {', '.join(sorted(allowed))}")
        if spec.get("engine") not in ENGINES:
            raise ConnectionError(f"{where}.engine: {spec.get('engine')!r} is not allowed; "
                                  f"allowed: {', '.join(ENGINES)}")
        password = spec.get("password")
        if password not in (None, "prompt"):
            raise ConnectionError(
                f"{where}.password: a personal connection holds no secret; write "
                "'password: prompt' (asked at first use, kept in the kernel's memory) or "
                "'password_env: VARIABLE' (read from your environment)")
        for key, value in (spec.get("options") or {}).items():
            if SECRET_KEYS.search(str(key)) and value not in (None, "prompt"):
                raise ConnectionError(f"{where}.options.{key}: a personal connection holds "
                                      "no secret; use password_env or password: prompt")
        kind = "env" if spec.get("password_env") else "prompt" if password else "none"
        settings = {"variable": spec["password_env"]} if kind == "env" else {}
        try:
            found[name] = Connection(
                name=name, engine=spec["engine"], description=spec.get("description", ""),
                address=str(spec.get("address", "")), database=spec.get("database", ""),
                schema=spec.get("schema", ""), options=dict(spec.get("options") or {}),
                max_rows=int(spec.get("max_rows", DEFAULT_MAX_ROWS)),
                timeout=float(spec.get("timeout", DEFAULT_TIMEOUT)),
                connect_timeout=float(spec.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
                groups=("*",), credentials=Credentials(kind=kind, settings=settings),
                source="personal", user=str(spec.get("user", "")))
        except (TypeError, ValueError) as e:
            raise ConnectionError(f"{where}: {e}") from None
    return found


def personal_file() -> Path:
    return Path(os.environ.get("REDSPOT_CONNECTIONS_FILE")
                or Path.home() / ".redspot" / "connections.yaml")


def load_personal() -> dict[str, Connection]:
    path = personal_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return parse_personal(text, str(path))
