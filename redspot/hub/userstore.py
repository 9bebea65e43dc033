"""Redspot's own accounts: names and scrypt password hashes in a SQLite file (mode 0600).

Used by ``RedspotPasswordAuthenticator`` in the hub and by ``redspot users`` on the
command line (both may use the file at once: SQLite locks it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..privileged.accounts import name_problem

#: Hub user names Redspot accepts for its own accounts.
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserStoreError(ValueError):
    """A request to the store is wrong; the message says what is allowed."""


@dataclass(frozen=True)
class Account:
    name: str
    approved: bool
    created: float
    #: False for a user added on the hub (admin page, REST API) who has no password
    #: yet: they sign in once an admin sets one (``redspot users passwd NAME``)
    has_password: bool = True


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf8"), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.b64encode
    return (
        f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}$"
        f"{b64(salt).decode()}${b64(digest).decode()}"
    )


def check_password(password: str, encoded: str) -> bool:
    try:
        kind, n, r, p, salt, digest = encoded.split("$")
        if kind != "scrypt":
            return False
        actual = hashlib.scrypt(
            password.encode("utf8"), salt=base64.b64decode(salt), dklen=32,
            n=int(n), r=int(r), p=int(p),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


#: Checked against when a name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def validate_username(name: str) -> str:
    if not isinstance(name, str) or not USERNAME.match(name):
        raise UserStoreError(
            f"user name {name!r} is not allowed: use 1 to 64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def validate_password(password: str) -> str:
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise UserStoreError(
            f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )
    return password


class UserStore:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # create the file private before SQLite writes anything into it
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, timeout=10)
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS accounts ("
            " name TEXT PRIMARY KEY, password TEXT NOT NULL,"
            " approved INTEGER NOT NULL, created REAL NOT NULL);"
            # removed users: their name stays taken until an admin restores them
            "CREATE TABLE IF NOT EXISTS retired ("
            " name TEXT PRIMARY KEY, record TEXT NOT NULL, retired REAL NOT NULL,"
            " password TEXT, approved INTEGER, created REAL);"
        )
        return conn

    def add(self, name: str, password: str | None, approved: bool = True) -> Account:
        """Add an account; ``password=None`` adds one that cannot sign in until a
        password is set (a user the hub's admin page added)."""
        validate_username(name)
        if password is not None:
            validate_password(password)
        problem = name_problem(name, retired=self.is_retired)
        if problem:
            raise UserStoreError(problem)
        account = Account(name, approved, time.time(), has_password=password is not None)
        with closing(self._connect()) as conn, conn:
            try:
                conn.execute(
                    "INSERT INTO accounts VALUES (?, ?, ?, ?)",
                    (name, hash_password(password) if password is not None else "",
                     int(approved), account.created),
                )
            except sqlite3.IntegrityError:
                raise UserStoreError(f"user {name!r} exists already") from None
        return account

    def set_password(self, name: str, password: str) -> None:
        validate_password(password)
        with closing(self._connect()) as conn, conn:
            cur = conn.execute(
                "UPDATE accounts SET password = ? WHERE name = ?", (hash_password(password), name)
            )
        if cur.rowcount == 0:
            raise UserStoreError(f"no such user: {name!r}")

    def approve(self, name: str) -> None:
        with closing(self._connect()) as conn, conn:
            cur = conn.execute("UPDATE accounts SET approved = 1 WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise UserStoreError(f"no such user: {name!r}")

    def remove(self, name: str) -> None:
        with closing(self._connect()) as conn, conn:
            cur = conn.execute("DELETE FROM accounts WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise UserStoreError(f"no such user: {name!r}")

    # --- removed users ------------------------------------------------------------------

    def retire(self, name: str, record: dict) -> None:
        """Remove ``name``: its account (if any) moves to ``retired`` with ``record`` (what
        the privileged helper did), and the name stays taken."""
        with closing(self._connect()) as conn, conn:
            row = conn.execute("SELECT password, approved, created FROM accounts "
                               "WHERE name = ?", (name,)).fetchone()
            conn.execute("DELETE FROM accounts WHERE name = ?", (name,))
            conn.execute("INSERT OR REPLACE INTO retired VALUES (?, ?, ?, ?, ?, ?)",
                         (name, json.dumps(record), time.time(), *(row or (None,) * 3)))

    def is_retired(self, name: str) -> bool:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT 1 FROM retired WHERE name = ?",
                                (name,)).fetchone() is not None

    def retired(self) -> list[tuple[str, float]]:
        with closing(self._connect()) as conn:
            return list(conn.execute("SELECT name, retired FROM retired ORDER BY name"))

    def restore(self, name: str) -> dict:
        """Take ``name`` out of ``retired`` (its account back, if it had one); returns the
        record kept when it was retired."""
        with closing(self._connect()) as conn, conn:
            row = conn.execute("SELECT record, password, approved, created FROM retired "
                               "WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise UserStoreError(f"{name!r} is not a removed user")
            record, password, approved, created = row
            if password is not None:
                conn.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?)",
                             (name, password, approved, created))
            conn.execute("DELETE FROM retired WHERE name = ?", (name,))
        return json.loads(record)

    def get(self, name: str) -> Account | None:
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT name, approved, created, password != '' FROM accounts WHERE name = ?",
                (name,)).fetchone()
        return Account(row[0], bool(row[1]), row[2], bool(row[3])) if row else None

    def list(self) -> list[Account]:
        with closing(self._connect()) as conn:
            rows = conn.execute("SELECT name, approved, created, password != '' FROM accounts "
                                "ORDER BY name")
            return [Account(n, bool(a), c, bool(p)) for n, a, c, p in rows]

    def verify(self, name: str, password: str) -> Account | None:
        """The account when ``password`` is right (approved or not), else None."""
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT password, approved, created FROM accounts WHERE name = ?", (name,)
            ).fetchone()
        if row is None or not row[0]:  # no such account, or no password yet
            check_password(password, _DUMMY_HASH)
            return None
        if not check_password(password, row[0]):
            return None
        return Account(name, bool(row[1]), row[2])


def generate_password() -> str:
    return secrets.token_urlsafe(18)
