"""The sharing service's client, and the links a recipient's server keeps.

``SharingClient`` asks the sharing service with a hub token: in a server or a kernel,
the server's own (``$JUPYTERHUB_API_TOKEN``), so the service knows who asks; for
``redspot shares``, the operator's. ``HubShares`` asks the hub itself about invitations
into one's server (JupyterHub's sharing: ``/hub/api/shares``, share codes).

On one machine, what others shared with a user appears in their home as links,
``~/shared-with-me/<owner>/<path>``, to the owner's file or folder, which the storage
lets them read (``sync_links``). The user's server keeps them: at start, now and then,
and whenever ``%shares`` or the JupyterLab extension lists shares.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..spawner.storage import safe_name
from .shares import SHARED_WITH_ME


class SharingError(RuntimeError):
    """The service or the hub refused, or could not be reached; the message says which."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def _request(url: str, token: str, method: str, body=None, what: str = "the sharing "
             "service", timeout: float = 30) -> dict:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message", e.reason)
        except ValueError:
            message = e.reason
        raise SharingError(f"{what} answered {e.code}: {message}", e.code) from None
    except OSError as e:
        raise SharingError(f"{what} cannot be reached ({url}): {e}") from None


class SharingClient:
    def __init__(self, url: str, token: str, timeout: float = 30):
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> SharingClient | None:
        url = os.environ.get("REDSPOT_SHARING_URL")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        return cls(url, token) if url and token else None

    def _call(self, method: str, path: str, body=None) -> dict:
        return _request(self.url + path, self.token, method, body, timeout=self.timeout)

    def list(self) -> dict:
        """``{"mine": [...], "with_me": [...]}``."""
        return self._call("GET", "api/shares")

    def list_all(self, owner: str = "") -> list[dict]:
        query = f"owner={urllib.parse.quote(owner)}" if owner else "all=true"
        return self._call("GET", f"api/shares?{query}")["shares"]

    def share(self, path: str, with_: str, owner: str | None = None) -> dict:
        body = {"path": path, "with": with_}
        if owner:
            body["owner"] = owner
        return self._call("POST", "api/shares", body)

    def revoke(self, share_id: str, stop_servers: bool = False) -> dict:
        query = "?stop_servers=true" if stop_servers else ""
        return self._call("DELETE", f"api/shares/{urllib.parse.quote(share_id)}{query}")

    def grantees(self) -> dict:
        return self._call("GET", "api/grantees")

    def check(self) -> dict:
        return self._call("POST", "api/check", {})


class HubShares:
    """Invitations into one's own server (JupyterHub's sharing), asked of the hub."""

    def __init__(self, api_url: str, token: str, user: str, server: str = ""):
        self.api = api_url.rstrip("/")
        self.token = token
        self.user = urllib.parse.quote(user, safe="")
        self.server = urllib.parse.quote(server, safe="")

    @classmethod
    def from_environment(cls) -> HubShares | None:
        api, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
        user = os.environ.get("JUPYTERHUB_USER")
        if not (api and token and user):
            return None
        return cls(api, token, user, os.environ.get("JUPYTERHUB_SERVER_NAME", ""))

    def _call(self, method: str, path: str, body=None) -> dict:
        return _request(f"{self.api}/{path}", self.token, method, body, what="the hub")

    def list(self) -> list[dict]:
        return self._call("GET", f"shares/{self.user}/{self.server}")["items"]

    def invite(self, grantee: str) -> dict:
        return self._call("POST", f"shares/{self.user}/{self.server}", _who(grantee))

    def uninvite(self, grantee: str) -> dict:
        return self._call("PATCH", f"shares/{self.user}/{self.server}", _who(grantee))

    def code(self, expires_in: int = 86400) -> dict:
        """A share code: whoever opens its ``accept_url`` (signed in) gets in, until it
        expires."""
        return self._call("POST", f"share-codes/{self.user}/{self.server}",
                          {"expires_in": expires_in})


def _who(grantee: str) -> dict:
    if grantee.startswith("group:"):
        return {"group": grantee[len("group:"):]}
    return {"user": grantee}


# --- links in a recipient's home ---------------------------------------------------------

def link_path(share: dict) -> PurePosixPath:
    """Where a share appears in a recipient's home."""
    return PurePosixPath(SHARED_WITH_ME, safe_name(share["owner"]), share["path"])


def sync_links(home: Path, with_me: list[dict], storage_root: str | None = None) -> dict:
    """Make ``~/shared-with-me`` hold a link for each share in ``with_me`` (those with a
    ``source``: one machine) and nothing else that this function made: links into other
    homes that no share names go, and folders left empty. The user's own files there are
    never touched. Returns ``{"linked": [...], "removed": [...]}``."""
    base = home / SHARED_WITH_ME
    wanted = {link_path(s): s["source"] for s in with_me if s.get("source")}
    homes = (str(Path(storage_root) / "home") if storage_root
             else str(home.parent)) + os.sep
    linked, removed = [], []
    if base.is_symlink():
        return {"linked": [], "removed": [], "problem": f"{base} is a link: not used"}
    if wanted:
        base.mkdir(mode=0o700, exist_ok=True)
    if not base.is_dir():
        return {"linked": [], "removed": []}
    for dirpath, dirnames, filenames in os.walk(base, topdown=False):
        for name in [*dirnames, *filenames]:
            entry = Path(dirpath) / name
            if not entry.is_symlink():
                continue
            target = os.readlink(entry)
            rel = PurePosixPath(entry.relative_to(home).as_posix())
            if target.startswith(homes) and wanted.get(rel) != target:
                entry.unlink()
                removed.append(str(rel))
        if Path(dirpath) != base:
            with contextlib.suppress(OSError):
                Path(dirpath).rmdir()  # only when empty
    for rel, source in sorted(wanted.items(), key=lambda item: str(item[0])):
        entry = home / rel
        if entry.is_symlink() or entry.exists():
            continue
        try:
            entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            entry.symlink_to(source)
            linked.append(str(rel))
        except OSError:
            continue  # a file of the user's own in the way: left alone
    return {"linked": linked, "removed": removed}


def copy_to_home(home: Path, shared: str, dest: str | None = None) -> Path:
    """Copy a file or folder shared with you (``shared-with-me/alice/plan.ipynb``) into
    your home, to edit it: the copy is yours. Refuses to overwrite."""
    source = (home / shared) if not os.path.isabs(shared) else Path(shared)
    rel = PurePosixPath(os.path.relpath(source, home))
    if rel.parts[:1] != (SHARED_WITH_ME,) or ".." in rel.parts:
        raise SharingError(f"{shared}: not in ~/{SHARED_WITH_ME}; copy only what was "
                           "shared with you")
    if not source.exists():
        raise SharingError(f"{shared}: not there (was it revoked?); %shares lists what "
                           "is shared with you")
    target = home / (dest or source.name)
    if target.exists() or target.is_symlink():
        raise SharingError(f"{target.relative_to(home)} exists already; name another "
                           "destination")
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copyfile(source, target)
    return target
