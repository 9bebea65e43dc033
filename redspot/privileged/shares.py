"""Read-only shares, enforced with POSIX ACLs by the privileged helper.

``apply_share(owner, path, grantee)`` lets the grantee (``{"user": "bob"}``, or every
member of a hub group: ``{"group": "vision"}``) read ``path`` in the owner's home:

- the path is walked from the owner's home one component at a time, never following a
  link; every folder on the way and the target must be the owner's; the target must be
  a regular file or a folder (no device, socket or FIFO);
- the folders above it get a traverse-only entry (``--x``: the grantee can pass through
  and cannot list them); a file gets ``r`` (``r-x`` if the owner may execute it); a
  folder gets ``r-x`` on itself and everything in it that is the owner's and not hidden,
  and a default entry, so files made in it later are readable too;
- it is idempotent, and says how many entries it changed: the sharing service runs it
  again now and then, which puts back what a rename or a ``chmod`` took away.

``revoke_share(owner, path, grantee, keep)`` takes the grantee's entries off the target
(everything in a folder, hidden entries too) and off the folders above it, then applies
the grantee's shares of that owner that remain (``keep``), which may need some of them.

Without isolation (every server is the same account) the path is checked and nothing
is changed: there is nobody to keep out.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
from collections.abc import Callable

from ..spawner.storage import Layout, system_group_name
from . import acl, safefs

_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class ShareRefused(Exception):
    """The path cannot be shared; the message says why (the caller turns it into a
    HelperError)."""


def checked_grantee(grantee) -> tuple[str, str]:
    if not isinstance(grantee, dict) or len(grantee) != 1:
        raise ShareRefused(f"grantee: expected {{'user': name}} or {{'group': name}}, got "
                           f"{grantee!r}")
    (kind, name), = grantee.items()
    if kind not in ("user", "group") or not isinstance(name, str) or not name \
            or len(name) > 255 or "\0" in name:
        raise ShareRefused(f"grantee: expected {{'user': name}} or {{'group': name}}, got "
                           f"{grantee!r}")
    return kind, name


def checked_keep(keep) -> list[str]:
    if not isinstance(keep, list) or not all(isinstance(p, str) for p in keep):
        raise ShareRefused(f"keep: expected a list of paths, got {keep!r}")
    return keep


class Target:
    """The descriptors of a shared path: the folders from the home down, and the target
    itself (closed together)."""

    def __init__(self, home: int, path: str, owner_uid: int | None):
        self.folders: list[int] = []
        self.fd: int | None = None
        try:
            parts = safefs.components(path)
        except safefs.UnsafePath as e:
            raise ShareRefused(e.strerror) from None
        if not parts:
            raise ShareRefused("the home itself is never shared")
        if any(part.startswith(".") for part in parts):
            raise ShareRefused("hidden files and folders hold credentials; they are never "
                               "shared")
        self.folders.append(os.dup(home))
        self._owned(self.folders[0], "your home", owner_uid)
        try:
            for i, part in enumerate(parts[:-1]):
                fd = os.open(part, _OPEN | os.O_DIRECTORY, dir_fd=self.folders[-1])
                self.folders.append(fd)
                self._owned(fd, "/".join(parts[:i + 1]), owner_uid)
            self.fd = os.open(parts[-1], _OPEN, dir_fd=self.folders[-1])
        except FileNotFoundError:
            self.close()
            raise ShareRefused(f"{path}: no such file or folder") from None
        except OSError as e:
            self.close()
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ShareRefused(f"{path}: leads through a symbolic link or a file "
                                   "(links are never followed: share the file or folder "
                                   "itself)") from None
            raise
        st = os.fstat(self.fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            self.close()
            raise ShareRefused(f"{path}: only files and folders are shared")
        self._owned(self.fd, path, owner_uid)
        self.is_dir = stat.S_ISDIR(st.st_mode)

    def _owned(self, fd: int, what: str, owner_uid: int | None) -> None:
        if owner_uid is not None and os.fstat(fd).st_uid != owner_uid:
            self.close()
            raise ShareRefused(f"{what} is not the owner's (another account made it); "
                               "only one's own files are shared")

    def close(self) -> None:
        for fd in [*self.folders, *([self.fd] if self.fd is not None else [])]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.folders, self.fd = [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def set_entry(fd: int, tag: int, id_: int, perm: int, default: bool = False) -> bool:
    """Give ``id_`` at least ``perm`` on an open file; True when something changed."""
    current = acl.read(fd, default)
    have = acl.named(current, tag, id_) or 0
    if have & perm == perm and (acl.effective(current, tag, id_) or 0) & perm == perm:
        return False  # granted already (what every periodic check finds, mostly)
    wanted = acl.with_entry(current, tag, id_, have | perm,
                            base_mode=os.fstat(fd).st_mode if default else None)
    if sorted(wanted) == sorted(current):
        return False
    acl.write(fd, wanted, default)
    return True


def drop_entry(fd: int, tag: int, id_: int, default: bool = False) -> bool:
    current = acl.read(fd, default)
    if acl.named(current, tag, id_) is None:
        return False
    acl.write(fd, acl.without_entry(current, tag, id_, default), default)
    return True


def walk_tree(fd: int, visit: Callable[[int, os.stat_result], None], owner_uid: int,
              hidden: bool, _depth: int = 0) -> None:
    """``visit(fd, st)`` for the open folder ``fd`` and everything in it that is the
    owner's, never following a link; hidden entries only with ``hidden``."""
    if _depth > 256:
        raise ShareRefused("folders nested more than 256 deep")
    visit(fd, os.fstat(fd))
    with os.scandir(fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        if name.startswith(".") and not hidden:
            continue
        try:
            child = os.open(name, _OPEN, dir_fd=fd)
        except OSError:
            continue  # a link (ELOOP), gone, or not openable: not followed
        try:
            st = os.fstat(child)
            if st.st_uid != owner_uid:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk_tree(child, visit, owner_uid, hidden, _depth + 1)
            elif stat.S_ISREG(st.st_mode):
                visit(child, st)
        finally:
            os.close(child)


def grant(target: Target, tag: int, id_: int, owner_uid: int) -> int:
    changed = 0
    for folder in target.folders:
        changed += set_entry(folder, tag, id_, acl.EXECUTE)
    if not target.is_dir:
        return changed + set_entry(target.fd, tag, id_, acl.readable_perm(os.fstat(target.fd)))

    def visit(fd, st):
        nonlocal changed
        changed += set_entry(fd, tag, id_, acl.readable_perm(st))
        if stat.S_ISDIR(st.st_mode):
            changed += set_entry(fd, tag, id_, acl.READ | acl.EXECUTE, default=True)

    walk_tree(target.fd, visit, owner_uid, hidden=False)
    return changed


def take_back(target: Target, tag: int, id_: int, owner_uid: int) -> int:
    changed = 0
    for folder in target.folders:
        changed += drop_entry(folder, tag, id_)
    if not target.is_dir:
        return changed + drop_entry(target.fd, tag, id_)

    def visit(fd, st):
        nonlocal changed
        changed += drop_entry(fd, tag, id_)
        if stat.S_ISDIR(st.st_mode):
            changed += drop_entry(fd, tag, id_, default=True)

    walk_tree(target.fd, visit, owner_uid, hidden=True)
    return changed


def group_id(name: str, prefix: str, run) -> int:
    """The gid of a hub group's system group (made when missing: its members join it at
    their next server start)."""
    account = system_group_name(name, prefix)
    try:
        return grp.getgrnam(account).gr_gid
    except KeyError:
        run("groupadd", account)
        return grp.getgrnam(account).gr_gid


def home_name(owner: str) -> str:
    return Layout(owner).home.name


def keep_home_private(fd: int, uid: int, gid: int) -> None:
    """A home is its owner's, 0700, except the traverse entries shares put in its ACL,
    which a plain ``chmod 0700`` would mask off (silently ending every share in it)."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    entries = acl.read(fd)
    if not any(e.tag in (acl.USER, acl.GROUP) for e in entries):
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        return
    private = acl.masked([*acl.from_mode(0o700),
                          *(e for e in entries if e.tag in (acl.USER, acl.GROUP))])
    if sorted(private) != sorted(entries):
        acl.write(fd, private)
