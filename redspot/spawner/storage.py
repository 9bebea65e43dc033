"""Storage layout and safe names: pure functions shared by every spawner.

The data folder (locally) or the EFS file system (on Kubernetes) has one layout::

    home/<user>        a user's home, only theirs
    shared/<group>     a folder for each group, its members only
    shared/public      every signed-in user

``<user>`` and ``<group>`` are *safe names*: lower-case letters, digits and ``-``,
with a hash of the original name appended whenever the name had to change, so two
different hub names never share a folder and no name can climb out of the layout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_UNSAFE = re.compile(r"[^a-z0-9]+")


def safe_name(name: str, max_length: int = 63, reserved: tuple[str, ...] = ()) -> str:
    """A name usable as a path component, a Linux account suffix or a Kubernetes label.

    ``alice`` stays ``alice``; ``Alice.Smith@corp`` becomes ``alice-smith-corp-<hash8>``.
    A name in ``reserved`` gets the hash too, so it cannot take a reserved folder.
    """
    if not name:
        raise ValueError("a name must not be empty")
    slug = _UNSAFE.sub("-", name.lower()).strip("-")
    if slug == name and len(slug) <= max_length and slug not in reserved:
        return slug
    digest = hashlib.sha256(name.encode("utf8")).hexdigest()[:8]
    slug = slug[: max_length - len(digest) - 1].strip("-")
    return f"{slug}-{digest}" if slug else f"x-{digest}"


def system_account_name(name: str, prefix: str = "redspot-") -> str:
    """The Linux account that runs a hub user's server: ``redspot-alice``.

    Debian's ``useradd`` wants ``^[a-z][-a-z0-9_]*$`` and at most 32 characters. An empty
    prefix maps hub users to accounts of the same name (with PAM).
    """
    if prefix and not re.match(r"^[a-z][-a-z0-9_]*$", prefix):
        raise ValueError(f"account prefix {prefix!r} must start with a letter: [a-z][-a-z0-9_]*")
    account = prefix + safe_name(name, max_length=32 - len(prefix))
    if not re.match(r"^[a-z]", account):
        raise ValueError(
            f"hub user {name!r} maps to {account!r}, which is not a valid account name "
            "(it must start with a letter): set spawner.account_prefix"
        )
    return account


@dataclass(frozen=True)
class Layout:
    """Where a user's folders are, relative to the storage root (the data folder or EFS)."""

    user: str
    groups: tuple[str, ...] = ()

    @property
    def home(self) -> PurePosixPath:
        return PurePosixPath("home", safe_name(self.user))

    @property
    def public(self) -> PurePosixPath:
        return PurePosixPath("shared", "public")

    def group_dirs(self) -> dict[str, PurePosixPath]:
        return {
            g: PurePosixPath("shared", safe_name(g, reserved=("public",)))
            for g in sorted(self.groups)
        }
