"""Who may change and read what in the registry: owners, the groups they granted, admins.

MLflow has no owners. Redspot keeps them in a SQLite file of its own:

- ``models``: each registered model's owner (the hub user who created it), the groups
  the owner granted write access to, and whether the model is private;
- ``objects``: the owner of each experiment, run and logged model (recorded when it is
  made; objects made before Redspot kept owners have none: only admins change them);
- ``links``: which runs and logged models a model's versions come from, so that a
  private model's files and metrics are private too.

The decisions are pure functions.
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


#: The experiment every user's runs may go to (MLflow's Default): changed by admins only.
DEFAULT_EXPERIMENT = "0"


def may_change_object(requester: Requester, owner: str | None) -> bool:
    """An experiment, run or logged model: its owner or an admin (none recorded: admins)."""
    return requester.admin or (owner is not None and owner == requester.name)


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
            db.execute("""CREATE TABLE IF NOT EXISTS objects (
                kind TEXT NOT NULL, id TEXT NOT NULL, owner TEXT NOT NULL,
                created REAL NOT NULL, PRIMARY KEY (kind, id))""")
            db.execute("""CREATE TABLE IF NOT EXISTS links (
                kind TEXT NOT NULL, id TEXT NOT NULL, model TEXT NOT NULL,
                PRIMARY KEY (kind, id, model))""")

    # --- experiments, runs and logged models --------------------------------------------

    def own(self, kind: str, object_id: str, owner: str) -> None:
        """Record ``owner`` of a new object (an existing record is kept)."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO objects VALUES (?, ?, ?, ?)",
                       (kind, str(object_id), owner, time.time()))

    def owner(self, kind: str, object_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT owner FROM objects WHERE kind = ? AND id = ?",
                             (kind, str(object_id))).fetchone()
        return row[0] if row else None

    def link(self, kind: str, object_id: str, model: str) -> None:
        """A version of ``model`` comes from this run or logged model."""
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO links VALUES (?, ?, ?)",
                       (kind, str(object_id), model))

    def linked_models(self, kind: str, object_id: str) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute(
                "SELECT model FROM links WHERE kind = ? AND id = ?", (kind, str(object_id)))]

    def hidden_from(self, requester: Requester, kind: str, object_id: str) -> str | None:
        """The private model that keeps ``requester`` from reading this run or logged
        model, or None."""
        for name in self.linked_models(kind, object_id):
            acl = self.get(name)
            if not may_read(requester, acl):
                return name
        return None

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
            db.execute("UPDATE links SET model = ? WHERE model = ?", (new_name, name))

    def forget(self, name: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM models WHERE name = ?", (name,))
