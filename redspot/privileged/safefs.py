"""File operations that stay safe when a tenant controls part of the path.

Root acting on ``<data>/home/alice/shared`` must not be led elsewhere by a symlink alice
put there, nor race one in between a check and the act. Every function here walks from
a directory file descriptor one component at a time with ``O_NOFOLLOW``, and acts on
the file descriptor it opened (``fchown``, ``fchmod``), never on a path again:

- ``open_dir(base, "home/alice/shared", create=0o700)``: the folder, made if missing;
  a symlink or a non-folder anywhere on the way is :class:`UnsafePath`;
- ``chown_tree(fd, uid, gid, only_from=...)``: an ownership change down a tree that
  follows no link and touches only entries owned by ``only_from``;
- ``chmod_tree`` likewise for modes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path leads through a symlink or a non-folder; nothing was done there."""


def components(relative: str) -> list[str]:
    """The names of a relative path; refused if it climbs out, or is absolute."""
    if relative.startswith("/"):
        raise UnsafePath(errno.EINVAL, f"expected a relative path, got {relative!r}")
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    for part in parts:
        if part == ".." or "\0" in part:
            raise UnsafePath(errno.EINVAL, f"{relative!r} climbs out of its folder")
    return parts


def open_root(path: str | os.PathLike) -> int:
    """A descriptor of a trusted folder (the data folder): it must be a real folder that
    only its owner, root or the caller, may write."""
    fd = os.open(path, _DIR)
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UnsafePath(errno.EPERM, f"{path} may be written by other accounts "
                                      f"(mode {stat.filemode(st.st_mode)}, uid {st.st_uid})")
    return fd


def open_dir(base: int, relative: str, create: int | None = None) -> int:
    """Open ``relative`` under the folder ``base`` without following any link.

    With ``create`` (a mode), missing folders on the way are made with it. The caller
    closes the returned descriptor.
    """
    fd = os.dup(base)
    try:
        for part in components(relative):
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, create, dir_fd=fd)
                child = _open_child(fd, part)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(e.errno, f"{relative}: {part!r} is a link or not a "
                                              "folder") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, part: str) -> int:
    try:
        return os.open(part, _DIR, dir_fd=fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(e.errno, f"{part!r} is a link or not a folder") from None
        raise


@contextlib.contextmanager
def opened(base: int, relative: str, create: int | None = None) -> Iterator[int]:
    fd = open_dir(base, relative, create)
    try:
        yield fd
    finally:
        os.close(fd)


def set_owner_mode(fd: int, uid: int, gid: int, mode: int) -> None:
    """Owner and mode of an open folder (ownership first: a chown clears set-id bits)."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)


def walk(fd: int, visit: Callable[[int, str | None, os.stat_result], None],
         _depth: int = 0) -> None:
    """Call ``visit(dir_fd, name, st)`` for every entry under the open folder ``fd``
    (``name`` None for the folder itself), never following a link. Folders are visited
    before their contents; links are visited as links."""
    if _depth > 256:
        raise UnsafePath(errno.ELOOP, "folders nested too deep")
    visit(fd, None, os.fstat(fd))
    with os.scandir(fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, _DIR, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    continue  # replaced under us: not followed
                raise
            try:
                walk(child, visit, _depth + 1)
            finally:
                os.close(child)
        else:
            visit(fd, name, st)


def chown_tree(fd: int, uid: int, gid: int, only_from: set[int] | None = None) -> int:
    """Give everything under ``fd`` to ``uid:gid`` without following links; with
    ``only_from``, only entries now owned by one of those uids. Returns how many changed."""
    changed = 0

    def visit(dir_fd, name, st):
        nonlocal changed
        if only_from is not None and st.st_uid not in only_from:
            return
        if (st.st_uid, st.st_gid) == (uid, gid):
            return
        if name is None:
            os.fchown(dir_fd, uid, gid)
        else:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        changed += 1

    walk(fd, visit)
    return changed


def chmod_tree(fd: int, mode_for: Callable[[os.stat_result], int | None]) -> int:
    """Set each entry's mode to ``mode_for(st)`` (None: leave it); links are left alone."""
    changed = 0

    def visit(dir_fd, name, st):
        nonlocal changed
        if stat.S_ISLNK(st.st_mode):
            return
        mode = mode_for(st)
        if mode is None or stat.S_IMODE(st.st_mode) == mode:
            return
        if name is None:
            os.fchmod(dir_fd, mode)
        else:
            # no lchmod on Linux: open the file itself, refusing links
            try:
                f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                            dir_fd=dir_fd)
            except OSError:
                return
            try:
                os.fchmod(f, mode)
            finally:
                os.close(f)
        changed += 1

    walk(fd, visit)
    return changed


def write_private(base: int, name: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``name`` in the folder ``base`` atomically (a new file renamed over the
    old one), created with ``mode`` and never through a link."""
    if "/" in name or name in ("", ".", ".."):
        raise UnsafePath(errno.EINVAL, f"{name!r} is not a file name")
    temp = f".{name}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp, dir_fd=base)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=base)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=base, dst_dir_fd=base)
