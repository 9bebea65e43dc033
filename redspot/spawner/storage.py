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


def system_group_name(group: str | None, prefix: str = "redspot-") -> str:
    """The Linux group of a hub group's shared folder: ``redspot-grp_gpu-team``.

    ``None`` names the group of ``shared/public`` (every Redspot account):
    ``redspot-grp_public``. Safe names never hold ``_``, so no per-user account (and its
    own group) can ever be called like one of these.
    """
    base = f"{prefix}grp_"
    if group is None:
        return base + "public"
    return base + safe_name(group, max_length=32 - len(base), reserved=("public",))


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

    def shared_links(self) -> dict[str, PurePosixPath]:
        """``~/shared/<name>`` -> the folder it shows, for servers on one machine."""
        links = {"public": self.public}
        links.update({path.name: path for path in self.group_dirs().values()})
        return links


# --- Kubernetes: the same layout on EFS ---------------------------------------------------

STORAGE_MODES = ("shared-pvc", "access-points")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Dataset:
    """A read-only data set mounted into every server: a PVC (or a folder of one)."""

    name: str
    claim: str
    mount_path: str
    sub_path: str = ""


@dataclass(frozen=True)
class KubeStorage:
    """Where users' folders live on Kubernetes.

    - ``shared-pvc``: one ReadWriteMany PVC (EFS through the EFS CSI driver) holds the
      whole layout; a home is mounted with ``subPath: home/<user>``.
    - ``access-points``: each user's home is a PVC of its own from a StorageClass with
      ``provisioningMode: efs-ap`` (one EFS access point per user, which also enforces
      the uid); the shared folders still come from ``claim``.
    """

    mode: str = "shared-pvc"
    claim: str = "redspot-efs"
    home_storage_class: str = "efs-ap"
    home_size: str = "10Gi"
    home_mount: str = "/home/jovyan"
    shared_mount: str = "/home/jovyan/shared"
    datasets: tuple[Dataset, ...] = ()

    def __post_init__(self):
        if self.mode not in STORAGE_MODES:
            raise ValueError(
                f"storage mode {self.mode!r} is not known; allowed: {', '.join(STORAGE_MODES)}"
            )
        for name in (self.claim, *(d.claim for d in self.datasets)):
            if not _K8S_NAME.match(name) or len(name) > 253:
                raise ValueError(f"{name!r} is not a valid PersistentVolumeClaim name")
        for path in (self.home_mount, self.shared_mount, *(d.mount_path for d in self.datasets)):
            if not path.startswith("/") or ".." in PurePosixPath(path).parts:
                raise ValueError(f"mount path {path!r} must be absolute, without '..'")
        for d in self.datasets:
            if d.sub_path.startswith("/") or ".." in PurePosixPath(d.sub_path).parts:
                raise ValueError(f"data set {d.name!r}: subPath {d.sub_path!r} must be relative, "
                                 "without '..'")

    def home_claim(self, layout: Layout) -> str | None:
        """The per-user PVC's name in ``access-points`` mode, else None."""
        if self.mode != "access-points":
            return None
        return f"redspot-home-{safe_name(layout.user, max_length=40)}"


def kube_volumes(layout: Layout, storage: KubeStorage) -> tuple[list[dict], list[dict]]:
    """Volumes and volume mounts for a user's pod: home, shared folders, data sets."""
    volumes = [{"name": "redspot-shared", "persistentVolumeClaim": {"claimName": storage.claim}}]
    mounts = []
    home_claim = storage.home_claim(layout)
    if home_claim:
        volumes.append({"name": "redspot-home",
                        "persistentVolumeClaim": {"claimName": home_claim}})
        mounts.append({"name": "redspot-home", "mountPath": storage.home_mount})
    else:
        mounts.append({"name": "redspot-shared", "mountPath": storage.home_mount,
                       "subPath": str(layout.home)})
    mounts.append({"name": "redspot-shared", "mountPath": f"{storage.shared_mount}/public",
                   "subPath": str(layout.public)})
    for path in layout.group_dirs().values():
        mounts.append({"name": "redspot-shared",
                       "mountPath": f"{storage.shared_mount}/{path.name}",
                       "subPath": str(path)})
    for i, dataset in enumerate(storage.datasets):
        volume = f"redspot-data-{i}"
        volumes.append({"name": volume,
                        "persistentVolumeClaim": {"claimName": dataset.claim, "readOnly": True}})
        mount = {"name": volume, "mountPath": dataset.mount_path, "readOnly": True}
        if dataset.sub_path:
            mount["subPath"] = dataset.sub_path
        mounts.append(mount)
    return volumes, mounts


def share_mounts(shares: list[dict], storage: KubeStorage) -> tuple[list[dict], list[dict]]:
    """Read-only volumes and mounts for what was shared with a user: each share
    (``{"owner": "alice", "path": "notebooks/plan.ipynb"}``) at
    ``<home>/shared-with-me/<owner>/<path>``, from the owner's home: a ``subPath`` of the
    shared volume, or of the owner's own home PVC in ``access-points`` mode.

    A share inside another share of the same owner is mounted with it already; the same
    path shared twice (with the user, and with their group) is mounted once.
    """
    wanted: dict[tuple[str, PurePosixPath], None] = {}
    for share in shares:
        path = PurePosixPath(share["path"])
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError(f"share path {share['path']!r} must be relative, without '..'")
        wanted[(share["owner"], path)] = None
    kept = [(owner, path) for owner, path in wanted
            if not any(o == owner and p != path and path.is_relative_to(p) for o, p in wanted)]
    volumes, mounts = [], []
    claims: dict[str, str] = {}
    for owner, path in sorted(kept, key=lambda item: (safe_name(item[0]), str(item[1]))):
        owner_layout = Layout(owner)
        mount = {"mountPath": f"{storage.home_mount}/shared-with-me/{safe_name(owner)}/{path}",
                 "readOnly": True}
        claim = storage.home_claim(owner_layout)
        if claim is None:
            mounts.append({"name": "redspot-shared", "subPath": str(owner_layout.home / path),
                           **mount})
            continue
        if claim not in claims:
            claims[claim] = f"redspot-shared-by-{len(claims)}"
            volumes.append({"name": claims[claim], "persistentVolumeClaim": {
                "claimName": claim, "readOnly": True}})
        mounts.append({"name": claims[claim], "subPath": str(path), **mount})
    return volumes, mounts
