"""Who may change and read a registered model: owners, the groups they granted, admins.

MLflow's registry has no owners. Redspot keeps one per registered model in a SQLite
table of its own (the hub user who created it), with the groups the owner granted write
access to and whether the model is private. The decisions are pure functions.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Requester:
    """A hub identity, as the hub vouched for it."""

    name: str
    groups: tuple[str, ...] = ()
    admin: bool = False


@dataclass(frozen=True)
class ModelAcl:
    name: str
    owner: str
    groups: tuple[str, ...] = ()
    private: bool = False
    created: float = field(default=0.0, compare=False)

    def describe(self) -> dict:
        return {"name": self.name, "owner": self.owner, "groups": list(self.groups),
                "private": self.private}


def may_change(requester: Requester, acl: ModelAcl | None) -> bool:
    """New versions, aliases, tags, renames and deletes: the owner, members of the groups
    the owner granted, admins. A model Redspot has no record of (made before Redspot
    kept records) may be changed by admins only."""
    if requester.admin:
        return True
    if acl is None:
        return False
    return requester.name == acl.owner or bool(set(requester.groups) & set(acl.groups))


def may_read(requester: Requester, acl: ModelAcl | None) -> bool:
    """Every signed-in user reads a model unless it is private."""
    return acl is None or not acl.private or may_change(requester, acl)


_SELECT = "SELECT name, owner, groups, private, created FROM models"


def _acl(row) -> ModelAcl:
    return ModelAcl(row[0], row[1], tuple(json.loads(row[2])), bool(row[3]), row[4])


class PermissionStore:
    def __init__(self, path: Path | str):
        self.path = str(path)
        with self._db() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS models (
                name TEXT PRIMARY KEY, owner TEXT NOT NULL, groups TEXT NOT NULL,
                private INTEGER NOT NULL, created REAL NOT NULL)""")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get(self, name: str) -> ModelAcl | None:
        with self._db() as db:
            row = db.execute(f"{_SELECT} WHERE name = ?", (name,)).fetchone()
        return None if row is None else _acl(row)

    def all(self) -> dict[str, ModelAcl]:
        with self._db() as db:
            return {row[0]: _acl(row) for row in db.execute(_SELECT)}

    def claim(self, name: str, owner: str) -> ModelAcl:
        """Record ``owner`` for a new model (an existing record is kept)."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO models VALUES (?, ?, '[]', 0, ?)",
                       (name, owner, time.time()))
        return self.get(name)

    def update(self, name: str, *, groups: list[str] | None = None,
               private: bool | None = None, owner: str | None = None) -> ModelAcl:
        acl = self.get(name)
        if acl is None:
            raise KeyError(name)
        with self._db() as db:
            db.execute("UPDATE models SET groups = ?, private = ?, owner = ? WHERE name = ?",
                       (json.dumps(sorted(set(acl.groups if groups is None else groups))),
                        int(acl.private if private is None else private),
                        acl.owner if owner is None else owner, name))
        return self.get(name)

    def rename(self, name: str, new_name: str) -> None:
        with self._db() as db:
            db.execute("UPDATE models SET name = ? WHERE name = ?", (new_name, name))

    def forget(self, name: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM models WHERE name = ?", (name,))
