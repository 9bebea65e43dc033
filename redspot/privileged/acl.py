"""POSIX ACLs on open file descriptors, with no library and no path.

Linux keeps a file's ACL in the ``system.posix_acl_access`` extended attribute (and a
folder's inherited one in ``system.posix_acl_default``), in a small binary form: a
version word, then one ``(tag, perm, id)`` entry per line of ``getfacl``'s output. The
privileged helper reads and writes it with ``os.getxattr``/``os.setxattr`` on a
descriptor it opened without following links, so no symlink can redirect it (``setfacl``
works on paths, and skips a ``/proc/self/fd`` link when it walks without following).

The rules kept here are the kernel's: an ACL with named entries has a mask, the union of
every group-class entry; the file's group mode bits show the mask; writing an ACL that
says no more than the mode bits leaves only the mode.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from dataclasses import dataclass

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
_VERSION = 2
_UNDEFINED = 0xFFFFFFFF

USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
READ, WRITE, EXECUTE = 4, 2, 1
_NAMED = (USER, GROUP)


@dataclass(frozen=True, order=True)
class Entry:
    tag: int
    id: int
    perm: int


def decode(blob: bytes) -> list[Entry]:
    if len(blob) < 4 or (len(blob) - 4) % 8:
        raise ValueError(f"not an ACL: {len(blob)} bytes")
    (version,) = struct.unpack_from("<I", blob)
    if version != _VERSION:
        raise ValueError(f"ACL version {version} is not {_VERSION}")
    return [Entry(tag, id_, perm)
            for tag, perm, id_ in struct.iter_unpack("<HHI", blob[4:])]


def encode(entries: list[Entry]) -> bytes:
    ordered = sorted(entries, key=lambda e: (e.tag, e.id))
    return struct.pack("<I", _VERSION) + b"".join(
        struct.pack("<HHI", e.tag, e.perm, e.id) for e in ordered)


def from_mode(mode: int) -> list[Entry]:
    """The ACL that a file with no extended ACL has: its mode bits."""
    return [Entry(USER_OBJ, _UNDEFINED, (mode >> 6) & 7),
            Entry(GROUP_OBJ, _UNDEFINED, (mode >> 3) & 7),
            Entry(OTHER, _UNDEFINED, mode & 7)]


def read(fd: int, default: bool = False) -> list[Entry]:
    """The access ACL of an open file (its mode bits when it has none), or a folder's
    default ACL (empty when it has none)."""
    try:
        return decode(os.getxattr(fd, DEFAULT if default else ACCESS))
    except OSError as e:
        if e.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
    return [] if default else from_mode(os.fstat(fd).st_mode)


def write(fd: int, entries: list[Entry], default: bool = False) -> None:
    """Set an ACL; an empty default ACL removes the folder's default ACL."""
    name = DEFAULT if default else ACCESS
    if default and not entries:
        try:
            os.removexattr(fd, name)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
        return
    os.setxattr(fd, name, encode(entries))


def named(entries: list[Entry], tag: int, id_: int) -> int | None:
    """The permissions of the named user or group ``id_`` (None: no entry)."""
    return next((e.perm for e in entries if e.tag == tag and e.id == id_), None)


def with_entry(entries: list[Entry], tag: int, id_: int, perm: int,
               base_mode: int | None = None) -> list[Entry]:
    """``entries`` with the named ``tag``/``id_`` set to ``perm`` and the mask made
    again (a default ACL that was empty starts from ``base_mode``)."""
    if tag not in _NAMED:
        raise ValueError("only named users and groups are set")
    if not entries:
        entries = from_mode(base_mode or 0)
    kept = [e for e in entries if not (e.tag == tag and e.id == id_)]
    return masked([*kept, Entry(tag, id_, perm)])


def without_entry(entries: list[Entry], tag: int, id_: int,
                  default: bool = False) -> list[Entry]:
    """``entries`` less the named ``tag``/``id_``; a default ACL left with no named
    entry is dropped (empty)."""
    kept = [e for e in entries if not (e.tag == tag and e.id == id_)]
    if not any(e.tag in _NAMED for e in kept):
        return [] if default else [e for e in kept if e.tag != MASK]
    return masked(kept)


def masked(entries: list[Entry]) -> list[Entry]:
    """The entries with the mask recomputed as the union of the group class (which is
    what ``setfacl -m`` does: a mask narrowed by a ``chmod`` is opened again)."""
    body = [e for e in entries if e.tag != MASK]
    if not any(e.tag in _NAMED for e in body):
        return body
    mask = 0
    for e in body:
        if e.tag in (USER, GROUP_OBJ, GROUP):
            mask |= e.perm
    return [*body, Entry(MASK, _UNDEFINED, mask)]


def effective(entries: list[Entry], tag: int, id_: int) -> int | None:
    """What the named entry really allows (its permissions under the mask)."""
    perm = named(entries, tag, id_)
    if perm is None:
        return None
    mask = next((e.perm for e in entries if e.tag == MASK), 7)
    return perm & mask


def readable_perm(st: os.stat_result) -> int:
    """Read, and execute where the owner may execute (``setfacl``'s ``rX``)."""
    if stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR:
        return READ | EXECUTE
    return READ
