"""Shares: what they are, which inputs make one, and where they are kept (pure, and SQLite).

A share lets a *grantee* (a hub user, or every member of a hub group) read a *path*
inside its *owner's* home, a file or a folder, until the owner (or an admin) revokes it.
Shares are read-only: nobody writes into another user's home.

User input is parsed and checked here before anything acts on it:

- ``check_path("notebooks/plan.ipynb")``: relative to the owner's home, no ``..``, no
  hidden component (``.redspot``, ``.ssh`` and ``.jupyter`` hold credentials: they are
  never shared), not the home itself;
- ``parse_grantee("bob")`` / ``parse_grantee("group:vision")``.

Whether the path exists and leads through no symlink is the privileged helper's check,
made on the file system as it acts (``redspot.privileged.shares``).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

MAX_PATH = 1024
GRANTEE_KINDS = ("user", "group")
#: Where a recipient finds what was shared with them, in their home.
SHARED_WITH_ME = "shared-with-me"
_GROUP_PREFIX = "group:"
_NAME = re.compile(r"^[^\s/:\x00]{1,255}$")


class ShareError(ValueError):
    """Bad input for a share; the message says what was wrong and what is allowed."""


@dataclass(frozen=True)
class Grantee:
    kind: str  # "user" | "group"
    name: str

    def __str__(self) -> str:
        return self.name if self.kind == "user" else f"{_GROUP_PREFIX}{self.name}"

    def helper_args(self) -> dict:
        return {self.kind: self.name}


def parse_grantee(text: object) -> Grantee:
    """``bob`` (a hub user) or ``group:vision`` (every member of a hub group)."""
    if not isinstance(text, str) or not text.strip():
        raise ShareError("with: expected a hub user name (bob) or a group (group:vision)")
    text = text.strip()
    kind, name = ("group", text[len(_GROUP_PREFIX):]) if text.startswith(_GROUP_PREFIX) \
        else ("user", text)
    if not _NAME.match(name):
        raise ShareError(f"with: {text!r} is not a hub user name (bob) or a group "
                         "(group:vision)")
    return Grantee(kind, name)


def check_path(path: object) -> str:
    """A path inside the owner's home, normalised (``a//b/./c`` -> ``a/b/c``)."""
    if not isinstance(path, str) or not path.strip():
        raise ShareError("path: expected a file or folder in your home, e.g. "
                         "notebooks/plan.ipynb")
    if len(path) > MAX_PATH or "\x00" in path:
        raise ShareError(f"path: longer than {MAX_PATH} characters, or not text")
    if path.startswith(("/", "~")):
        raise ShareError(f"path: {path!r} must be relative to your home (notebooks/plan."
                         "ipynb), not absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ShareError(f"path: {path!r} climbs out of your home ('..'); share only "
                         "files and folders inside it")
    if not parts:
        raise ShareError("path: your whole home cannot be shared; share a file or a "
                         "folder in it")
    hidden = next((p for p in parts if p.startswith(".")), None)
    if hidden:
        raise ShareError(f"path: {hidden!r} is hidden; hidden files and folders "
                         "(.redspot, .ssh, .jupyter...) hold credentials and are never "
                         "shared")
    if parts[0] == SHARED_WITH_ME:
        raise ShareError(f"path: {path!r} was shared with you by someone else; only its "
                         "owner may share it")
    return "/".join(parts)


@dataclass(frozen=True)
class Share:
    id: str
    owner: str
    path: str
    grantee: Grantee
    created: float
    created_by: str
    revoked: float | None = None
    revoked_by: str | None = None
    #: "file" or "folder", as the helper found it when the share was made
    kind: str = "file"

    @property
    def active(self) -> bool:
        return self.revoked is None

    def reaches(self, user: str, groups: Iterable[str]) -> bool:
        """Whether ``user`` (in ``groups``) is a recipient (the owner never is)."""
        if user == self.owner:
            return False
        if self.grantee.kind == "user":
            return self.grantee.name == user
        return self.grantee.name in set(groups)

    def model(self) -> dict:
        data = asdict(self)
        data["with"] = str(self.grantee)
        data["grantee"] = asdict(self.grantee)
        data["active"] = self.active
        # where a recipient finds it in their own home
        data["shared_as"] = str(PurePosixPath(SHARED_WITH_ME, self.owner, self.path))
        return data


_SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    grantee_kind TEXT NOT NULL,
    grantee TEXT NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    created_by TEXT NOT NULL,
    revoked REAL,
    revoked_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_share
    ON shares (owner, path, grantee_kind, grantee) WHERE revoked IS NULL;
"""


class ShareStore:
    """Shares in SQLite, kept after revocation (who shared what with whom, and when)."""

    def __init__(self, path: str):
        self.path = path
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    @staticmethod
    def _share(row) -> Share:
        (id_, owner, path, gkind, gname, kind, created, created_by, revoked,
         revoked_by) = row
        return Share(id_, owner, path, Grantee(gkind, gname), created, created_by,
                     revoked, revoked_by, kind)

    def add(self, owner: str, path: str, grantee: Grantee, kind: str, by: str) -> Share:
        """A new active share, or the active one that already says the same."""
        found = self.find(owner, path, grantee)
        if found:
            return found
        share = Share(uuid.uuid4().hex[:12], owner, path, grantee, time.time(), by, kind=kind)
        with self._db() as db:
            db.execute("INSERT INTO shares VALUES (?,?,?,?,?,?,?,?,?,?)",
                       (share.id, owner, path, grantee.kind, grantee.name, kind,
                        share.created, by, None, None))
        return share

    def find(self, owner: str, path: str, grantee: Grantee) -> Share | None:
        return next(iter(self.query("owner = ? AND path = ? AND grantee_kind = ? AND "
                                    "grantee = ? AND revoked IS NULL",
                                    (owner, path, grantee.kind, grantee.name))), None)

    def get(self, share_id: str) -> Share | None:
        return next(iter(self.query("id = ?", (share_id,))), None)

    def query(self, where: str = "1", args: tuple = ()) -> list[Share]:
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM shares WHERE {where} ORDER BY created",  # noqa: S608
                              args).fetchall()
        return [self._share(r) for r in rows]

    def active(self) -> list[Share]:
        return self.query("revoked IS NULL")

    def owned_by(self, owner: str, include_revoked: bool = False) -> list[Share]:
        return self.query("owner = ?" + ("" if include_revoked else " AND revoked IS NULL"),
                          (owner,))

    def reaching(self, user: str, groups: Iterable[str]) -> list[Share]:
        """The active shares ``user`` (a member of ``groups``) receives."""
        return [s for s in self.active() if s.reaches(user, groups)]

    def revoke(self, share: Share, by: str) -> Share:
        revoked = time.time()
        with self._db() as db:
            db.execute("UPDATE shares SET revoked = ?, revoked_by = ? WHERE id = ? AND "
                       "revoked IS NULL", (revoked, by, share.id))
        return self.get(share.id)
