"""Per-user PostgreSQL roles, managed by the warehouse service.

For hub user ``alice`` the service keeps a login role (``rs_alice`` by default) whose
password it sets and rotates, valid until the credential expires (PostgreSQL refuses it
after: ``VALID UNTIL``), and whose memberships follow alice's hub groups through the
connection's ``grants`` (``{group: [postgres roles]}``, ``*`` for everyone). The
password reaches PostgreSQL as a SCRAM verifier computed here (libpq's
``PQencryptPasswordConn``), so it is in no statement the server could log.

The service signs in with the connection's admin DSN: a role with ``CREATEROLE`` (not a
superuser) that may grant the roles named in ``grants``.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass


class RoleError(RuntimeError):
    """The role could not be prepared; the message says why (without secrets)."""


def role_name(pattern: str, user: str) -> str:
    """The PostgreSQL role for hub user ``user``: lower-case letters, digits and ``_``."""
    name = pattern.format(user=re.sub(r"[^a-z0-9_]", "_", user.lower()))
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise RoleError(f"role name {name!r} (from {pattern!r}) is not a PostgreSQL name")
    return name


def wanted_roles(grants: dict, groups) -> set[str]:
    wanted = set(grants.get("*", ()))
    for group in groups:
        wanted |= set(grants.get(group, ()))
    return wanted


@dataclass
class Issued:
    user: str
    password: str
    expires: float


class PostgresRoles:
    def __init__(self, admin_dsn: str, grants: dict, pattern: str = "rs_{user}",
                 ttl: int = 3600):
        self.admin_dsn = admin_dsn
        self.grants = {group: list(roles) for group, roles in (grants or {}).items()}
        self.pattern = pattern
        self.ttl = ttl
        self._issued: dict[str, Issued] = {}
        self._lock = threading.Lock()

    @property
    def managed(self) -> set[str]:
        return {role for roles in self.grants.values() for role in roles}

    def issue(self, user: str, groups) -> Issued:
        """A password for ``user``'s role, reused while it has more than half its life
        left; the role's memberships set to what ``groups`` grant."""
        import psycopg
        from psycopg import sql

        role = role_name(self.pattern, user)
        wanted = wanted_roles(self.grants, groups)
        now = time.time()
        with self._lock:
            held = self._issued.get(user)
            rotate = held is None or held.expires - now < self.ttl / 2
            password = secrets.token_urlsafe(24) if rotate else held.password
            expires = now + self.ttl if rotate else held.expires
            try:
                with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=10
                                     ) as con:
                    exists = con.execute("select 1 from pg_roles where rolname = %s",
                                         (role,)).fetchone()
                    if rotate or not exists:
                        verifier = con.pgconn.encrypt_password(
                            password.encode(), role.encode(), b"scram-sha-256").decode()
                        until = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(expires))
                        verb = "alter" if exists else "create"
                        con.execute(sql.SQL(
                            "{} role {} with login inherit nocreatedb nocreaterole "
                            "password {} valid until {}").format(
                                sql.SQL(verb), sql.Identifier(role), sql.Literal(verifier),
                                sql.Literal(until)))
                    current = {r[0] for r in con.execute(
                        "select g.rolname from pg_auth_members m "
                        "join pg_roles g on g.oid = m.roleid "
                        "join pg_roles u on u.oid = m.member where u.rolname = %s",
                        (role,))}
                    for granted in sorted(wanted - current):
                        con.execute(sql.SQL("grant {} to {}").format(
                            sql.Identifier(granted), sql.Identifier(role)))
                    for revoked in sorted((current & self.managed) - wanted):
                        con.execute(sql.SQL("revoke {} from {}").format(
                            sql.Identifier(revoked), sql.Identifier(role)))
            except psycopg.Error as e:
                raise RoleError(f"PostgreSQL refused to prepare role {role}: "
                                f"{str(e).strip().splitlines()[0]}") from None
            issued = Issued(role, password, expires)
            self._issued[user] = issued
            return issued
