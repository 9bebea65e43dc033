"""The environment catalog: who defined which environment, and the state of each build.

Two tables in one SQLite file:

- ``environments``: (owner, name) -> spec and tag; ``owner`` is a user name, or ``team``
  for the environments admins publish to everyone;
- ``builds``: tag -> status (``building``, ``ready``, ``failed``), location, times.

Many environments may share one build: the tag depends only on what the build depends
on, so the same packages are built once, whoever asks.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

TEAM = "team"


@dataclass(frozen=True)
class Build:
    tag: str
    status: str
    location: str
    error: str
    started: float
    finished: float | None


@dataclass(frozen=True)
class Entry:
    owner: str
    name: str
    spec: dict
    tag: str
    created: float


class CatalogError(ValueError):
    pass


class Catalog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn, conn:
            conn.executescript(
                "CREATE TABLE IF NOT EXISTS environments ("
                " owner TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL,"
                " tag TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (owner, name));"
                "CREATE TABLE IF NOT EXISTS builds ("
                " tag TEXT PRIMARY KEY, status TEXT NOT NULL, location TEXT NOT NULL,"
                " error TEXT NOT NULL, started REAL NOT NULL, finished REAL);"
            )

    def recover(self) -> None:
        """At the service's start: a build that was running when it stopped did not finish."""
        with closing(self._connect()) as conn, conn:
            conn.execute("UPDATE builds SET status = 'failed', error = 'interrupted: the "
                         "service stopped during the build' WHERE status = 'building'")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    # --- environments ---------------------------------------------------------------

    def add(self, owner: str, name: str, spec: dict, tag: str) -> Entry:
        entry = Entry(owner, name, spec, tag, time.time())
        with closing(self._connect()) as conn, conn:
            try:
                conn.execute("INSERT INTO environments VALUES (?, ?, ?, ?, ?)",
                             (owner, name, json.dumps(spec), tag, entry.created))
            except sqlite3.IntegrityError:
                raise CatalogError(f"{owner}/{name} exists already") from None
        return entry

    def get(self, owner: str, name: str) -> Entry | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT owner, name, spec, tag, created FROM environments "
                               "WHERE owner = ? AND name = ?", (owner, name)).fetchone()
        return _entry(row) if row else None

    def entries(self, owners: list[str] | None = None) -> list[Entry]:
        """Every entry, or those of ``owners``, by owner then name."""
        query = "SELECT owner, name, spec, tag, created FROM environments"
        args: tuple = ()
        if owners is not None:
            query += f" WHERE owner IN ({','.join('?' * len(owners))})"
            args = tuple(owners)
        with closing(self._connect()) as conn:
            rows = conn.execute(query + " ORDER BY owner, name", args).fetchall()
        return [_entry(r) for r in rows]

    def remove(self, owner: str, name: str) -> None:
        with closing(self._connect()) as conn, conn:
            conn.execute("DELETE FROM environments WHERE owner = ? AND name = ?", (owner, name))

    # --- builds ---------------------------------------------------------------------

    def build(self, tag: str) -> Build | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT tag, status, location, error, started, finished "
                               "FROM builds WHERE tag = ?", (tag,)).fetchone()
        return Build(*row) if row else None

    def claim_build(self, tag: str) -> bool:
        """Mark ``tag`` as building unless it is ready or building; True if claimed."""
        with closing(self._connect()) as conn, conn:
            cur = conn.execute(
                "INSERT INTO builds VALUES (?, 'building', '', '', ?, NULL) "
                "ON CONFLICT(tag) DO UPDATE SET status = 'building', error = '', "
                "started = excluded.started, finished = NULL WHERE status = 'failed'",
                (tag, time.time()),
            )
            return cur.rowcount == 1

    def finish_build(self, tag: str, location: str = "", error: str = "") -> None:
        status = "failed" if error else "ready"
        with closing(self._connect()) as conn, conn:
            conn.execute("UPDATE builds SET status = ?, location = ?, error = ?, finished = ? "
                         "WHERE tag = ?", (status, location, error, time.time(), tag))


def _entry(row) -> Entry:
    owner, name, spec, tag, created = row
    return Entry(owner, name, json.loads(spec), tag, created)


def owners_visible_to(user: str, admin: bool = False) -> list[str] | None:
    """Whose environments ``user`` may see and use: the team's and their own (an admin
    everyone's: None). The one rule, used by the service's API and by the spawner."""
    return None if admin else [TEAM, user]


def may_use(user: str, entry: Entry, admin: bool = False) -> bool:
    owners = owners_visible_to(user, admin)
    return owners is None or entry.owner in owners


def ready_environments(catalog: Catalog, user: str) -> list[dict]:
    """The environments ``user`` may start a server in: the team's and their own, built
    (an admin starts in their own and the team's too: others' are theirs).

    Each: ``{"id": "owner/name", "description", "tag", "location", "env": {...}}``.
    """
    ready = []
    for entry in catalog.entries(owners_visible_to(user)):
        build = catalog.build(entry.tag)
        if build and build.status == "ready":
            ready.append({
                "id": f"{entry.owner}/{entry.name}",
                "description": entry.spec.get("description", ""),
                "tag": entry.tag,
                "location": build.location,
                "env": dict(entry.spec.get("env", {})),
            })
    return ready
