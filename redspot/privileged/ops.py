"""The privileged helper's operations: all that Redspot does as root to accounts and to
folders tenants can write.

Each operation checks its arguments before it acts: hub names against the reserved
names (``accounts.name_problem``), accounts against the normal uid range (never root,
never a system account), paths through ``safefs`` (no path outside the data folder, no
symlink followed). The operations:

``ensure_user(user, groups)``
    the user's account (``<prefix><name>``, made on first use; with an empty prefix the
    machine's own account, which must exist), its membership of exactly its shared
    folders' groups, its home (0700) and ``~/shared`` links.
``retire_user(user)`` / ``restore_user(user, record)``
    a removed user: processes stopped, account locked and renamed (its uid is never
    given to anyone else), home moved to ``retired/``; and back, for an admin.
``ensure_service(service)``
    a service's own system account and its data folder (0700, its own).
``build_venv(owner, tag, requirements)``, ``build_image(owner, tag, files, image)``
    an environment built as the owner's build account (``<prefix>bld_<owner>``) with a
    scrubbed environment, a fresh HOME, a time limit and a size limit: a virtualenv with
    uv, or an image with rootless buildah, pushed to the registry.
``apply_share(owner, path, grantee)`` / ``revoke_share(owner, path, grantee, keep)``
    a read-only share of a file or folder in a user's home, with POSIX ACLs set through
    descriptors (``shares``), asked for by the sharing service.
``prepare_data_dir()``
    the data folder's own modes, and the migration of a folder from an earlier version.

Without isolation (the hub does not run as root) the same code runs in the hub's
process and account: no accounts are made, folders are the hub account's.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..spawner.storage import Layout, system_account_name, system_group_name
from . import safefs, shares
from .accounts import (
    ACCOUNT_NAME,
    build_account_name,
    name_problem,
    service_account_name,
    system_account,
    uid_min,
)

log = logging.getLogger("redspot.helper")

NOLOGIN = "/usr/sbin/nologin"
_TAG = re.compile(r"^env-[0-9a-f]{16}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9.:_/-]{0,254}$")
#: What an image build's context may hold (``environments.render.build_context``).
CONTEXT_FILES = frozenset({"Dockerfile", "requirements.txt"})
_USER_COMMENT = "Redspot user {}"
#: Variables a build keeps from the helper's environment (package indexes, proxies,
#: certificates); nothing else reaches it: no hub or service token.
BUILD_ENV_KEEP = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT",
                  "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "UV_INDEX_URL",
                  "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "HTTP_PROXY", "HTTPS_PROXY",
                  "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "LANG")


class HelperError(Exception):
    """The operation was refused or failed; the message says why (shown to the caller)."""


@dataclass
class Helper:
    data_dir: Path
    prefix: str = "redspot-"
    #: True: one system account per user (the helper runs as root).
    isolated: bool = True
    #: A Python environment every account can run (uv is taken from it for builds).
    server_python: str | None = None
    build_timeout: float = 3600.0
    build_max_bytes: int = 20 << 30
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir)
        if self.isolated and os.geteuid() != 0:
            raise HelperError("isolation needs the helper to run as root")

    # --- small pieces -----------------------------------------------------------------

    @contextlib.contextmanager
    def _root(self):
        fd = safefs.open_root(self.data_dir)
        try:
            yield fd
        finally:
            os.close(fd)

    def _checked_user(self, user) -> str:
        if not isinstance(user, str) or not user or len(user) > 255 or "\0" in user:
            raise HelperError(f"not a hub user name: {user!r}")
        problem = name_problem(user)
        if problem:
            raise HelperError(problem)
        return user

    def _owner(self) -> tuple[int, int]:
        return os.geteuid(), os.getegid()

    # --- users ------------------------------------------------------------------------

    def user_account(self, user: str) -> pwd.struct_passwd:
        """The account a hub user's processes run as (made on first use)."""
        user = self._checked_user(user)
        if not self.isolated:
            return pwd.getpwuid(os.geteuid())
        if not self.prefix:
            # PAM: the machine's own account of that name, never made by Redspot
            try:
                account = pwd.getpwnam(user)
            except KeyError:
                raise HelperError(f"there is no system account {user!r}: with an empty "
                                  "spawner.account_prefix, servers run as the machine's "
                                  "own accounts (PAM)") from None
            self._check_uid(account)
            return account
        name = system_account_name(user, self.prefix)
        with self._lock:
            try:
                account = pwd.getpwnam(name)
            except KeyError:
                home = self.data_dir / Layout(user).home
                _run("useradd", "--home-dir", str(home), "--no-create-home",
                     "--shell", "/bin/bash", "--user-group",
                     "--comment", _USER_COMMENT.format(user), name)
                log.info("Created system account %s for %s", name, user)
                account = pwd.getpwnam(name)
        self._check_uid(account)
        if account.pw_gecos != _USER_COMMENT.format(user):
            raise HelperError(f"the system account {name!r} exists but is not Redspot's "
                              f"account for {user!r} ({account.pw_gecos!r}); refusing to run "
                              "a server as it")
        return account

    def _check_uid(self, account: pwd.struct_passwd) -> None:
        if account.pw_uid == 0 or account.pw_uid < uid_min():
            raise HelperError(f"the account {account.pw_name!r} (uid {account.pw_uid}) is "
                              f"below the normal uid range ({uid_min()}): no server runs as "
                              "root or a system account")

    def ensure_user(self, user: str, groups: list[str] | tuple = ()) -> dict:
        """Account, groups, home and ``~/shared`` links of a user whose server starts."""
        groups = _checked_groups(groups)
        account = self.user_account(user)
        if self.isolated:
            self._set_groups(account, groups)
        layout = Layout(user, groups=tuple(groups))
        uid, gid = (account.pw_uid, account.pw_gid)
        with self._root() as root:
            with safefs.opened(root, "home", create=0o711) as homes:
                owner = self._owner()
                safefs.set_owner_mode(homes, *owner, 0o711 if self.isolated else 0o700)
                with safefs.opened(homes, layout.home.name, create=0o700) as home:
                    shares.keep_home_private(home, uid, gid)
                    self._shared(root, home, layout, account)
        return {"account": account.pw_name, "uid": uid, "gid": gid,
                "home": str(self.data_dir / layout.home)}

    def _set_groups(self, account: pwd.struct_passwd, groups: list[str]) -> None:
        wanted = {system_group_name(None, self.prefix)} | {
            system_group_name(g, self.prefix) for g in groups}
        managed = f"{self.prefix}grp_"
        with self._lock:
            existing = {g.gr_name: g for g in grp.getgrall()}
            for name in sorted(wanted - set(existing)):
                _run("groupadd", name)
            current = {name for name, g in existing.items()
                       if name.startswith(managed) and account.pw_name in g.gr_mem}
            for name in sorted(wanted - current):
                _run("gpasswd", "--add", account.pw_name, name)
            for name in sorted(current - wanted):
                _run("gpasswd", "--delete", account.pw_name, name)

    def _shared(self, root: int, home: int, layout: Layout, account) -> None:
        """``shared/public`` and ``shared/<group>`` (root : the group's group, 3770 and
        2770), and ``~/shared/<name>`` links to them, made through descriptors only."""
        owner = self._owner()
        groups = {path.name: group for group, path in layout.group_dirs().items()}
        with safefs.opened(root, "shared", create=0o711) as shared:
            safefs.set_owner_mode(shared, *owner, 0o711 if self.isolated else 0o700)
            for name in layout.shared_links():
                with safefs.opened(shared, name, create=0o770) as folder:
                    if self.isolated:
                        gid = grp.getgrnam(system_group_name(groups.get(name),
                                                             self.prefix)).gr_gid
                        safefs.set_owner_mode(folder, 0, gid,
                                              0o3770 if name == "public" else 0o2770)
                    else:
                        safefs.set_owner_mode(folder, *owner, 0o700)
        try:
            links = safefs.open_dir(home, "shared", create=0o700)
        except safefs.UnsafePath:
            log.warning("%s/shared is not a folder: not linking shared folders there",
                        layout.home)
            return
        try:
            st = os.fstat(links)
            if (st.st_uid, st.st_gid) != (account.pw_uid, account.pw_gid):
                os.fchown(links, account.pw_uid, account.pw_gid)
            wanted = {name: str(self.data_dir / rel)
                      for name, rel in layout.shared_links().items()}
            prefix = str(self.data_dir / "shared") + os.sep
            for name in os.listdir(links):
                try:
                    target = os.readlink(name, dir_fd=links)
                except OSError:
                    continue  # not a link: the user's own
                if target.startswith(prefix) and wanted.get(name) != target:
                    os.unlink(name, dir_fd=links)
            for name, target in wanted.items():
                try:
                    os.symlink(target, name, dir_fd=links)
                except FileExistsError:
                    continue
                os.chown(name, account.pw_uid, account.pw_gid, dir_fd=links,
                         follow_symlinks=False)
        finally:
            os.close(links)

    def stop_user_processes(self, user: str) -> dict:
        """What a user's server left running when it ended without stopping (killed, out
        of memory): its Ray head and anything else of the user's Redspot account, by uid.
        The machine's own accounts (PAM) are left alone: they may have other sessions."""
        user = self._checked_user(user)
        if not self.isolated or not self.prefix:
            return {"stopped": 0, "enforced": False}
        account = system_account(system_account_name(user, self.prefix))
        if account is None or account.pw_gecos != _USER_COMMENT.format(user):
            return {"stopped": 0, "enforced": True}
        self._check_uid(account)
        return {"stopped": kill_account_processes(account.pw_uid), "enforced": True}

    def retire_user(self, user: str) -> dict:
        """A removed user: their processes stop, the account is locked and renamed (its
        uid stays taken, so no later account owns their files), the home goes to
        ``retired/``. Returns the record ``restore_user`` needs."""
        if not isinstance(user, str) or not user:
            raise HelperError(f"not a hub user name: {user!r}")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        record = {"user": user, "retired": stamp}
        safe = Layout(user).home.name
        if self.isolated and self.prefix:
            name = system_account_name(user, self.prefix)
            account = system_account(name)
            if account is not None and account.pw_gecos == _USER_COMMENT.format(user):
                self._check_uid(account)
                stopped = kill_account_processes(account.pw_uid)
                retired_name = _checked_account(f"{self.prefix}old_{account.pw_uid}")
                with self._lock:
                    for group in grp.getgrall():
                        if name in group.gr_mem:
                            _run("gpasswd", "--delete", name, group.gr_name)
                    _run("usermod", "--lock", "--expiredate", "1", "--shell", NOLOGIN,
                         "--comment", f"Redspot retired user {user}", "--login",
                         retired_name, name)
                    with contextlib.suppress(HelperError):
                        _run("groupmod", "--new-name", retired_name, name)
                record.update(account=name, retired_account=retired_name,
                              uid=account.pw_uid, processes_stopped=stopped)
        with self._root() as root:
            with safefs.opened(root, "retired", create=0o700) as retired, \
                    safefs.opened(root, "home", create=0o711) as homes:
                safefs.set_owner_mode(retired, *self._owner(), 0o700)
                folder = f"{safe}.{stamp}"
                try:
                    os.rename(safe, folder, src_dir_fd=homes, dst_dir_fd=retired)
                    record["home"] = folder
                except FileNotFoundError:
                    pass
        log.info("Retired user %s: %s", user, record)
        return record

    def restore_user(self, user: str, record: dict) -> dict:
        """Undo ``retire_user`` with the record it returned."""
        user = self._checked_user(user)
        if record.get("user") != user:
            raise HelperError(f"the record is {record.get('user')!r}'s, not {user!r}'s")
        safe = Layout(user).home.name
        if record.get("retired_account") and self.isolated and self.prefix:
            name = system_account_name(user, self.prefix)
            old = _checked_account(str(record["retired_account"]))
            account = system_account(old)
            if account is None or account.pw_uid != record.get("uid"):
                raise HelperError(f"the retired account {old!r} of {user!r} is gone")
            if system_account(name) is not None:
                raise HelperError(f"an account {name!r} exists already")
            with self._lock:
                _run("usermod", "--unlock", "--expiredate", "", "--shell", "/bin/bash",
                     "--comment", _USER_COMMENT.format(user), "--login", name, old)
                with contextlib.suppress(HelperError):
                    _run("groupmod", "--new-name", name, old)
        folder = record.get("home")
        if folder:
            if "/" in folder or not folder.startswith(safe + "."):
                raise HelperError(f"not a retired home of {user!r}: {folder!r}")
            with self._root() as root, safefs.opened(root, "retired") as retired, \
                    safefs.opened(root, "home", create=0o711) as homes:
                try:
                    os.stat(safe, dir_fd=homes, follow_symlinks=False)
                    raise HelperError(f"home/{safe} exists already; move it away first")
                except FileNotFoundError:
                    os.rename(folder, safe, src_dir_fd=retired, dst_dir_fd=homes)
        log.info("Restored user %s", user)
        return {"user": user}

    # --- services ---------------------------------------------------------------------

    def ensure_service(self, service: str) -> dict:
        """A service's account and its data folder ``<data>/<service>`` (its own; entries
        that root made there in earlier versions are handed over)."""
        if not self.isolated:
            name = pwd.getpwuid(os.geteuid()).pw_name
            uid, gid = self._owner()
        else:
            name = service_account_name(service, self.prefix)
            with self._lock:
                if system_account(name) is None:
                    _run("useradd", "--system", "--no-create-home", "--shell", NOLOGIN,
                         "--home-dir", str(self.data_dir / service), "--user-group",
                         "--comment", f"Redspot {service} service", name)
                    log.info("Created system account %s", name)
            account = pwd.getpwnam(name)
            uid, gid = account.pw_uid, account.pw_gid
        mode = 0o711 if service == "environments" else 0o700
        with self._root() as root, safefs.opened(root, service, create=0o700) as folder:
            if self.isolated:
                # the folder itself is root's when it was just made: only what is in it
                # tells of an earlier version
                safefs.set_owner_mode(folder, uid, gid, mode)
                moved = safefs.chown_tree(folder, uid, gid, only_from={0})
                if moved:
                    log.warning("Handed %d files of %s/ from root to %s (a data folder "
                                "from an earlier Redspot)", moved, service, name)
            safefs.set_owner_mode(folder, uid, gid, mode)
            # the service's own files are its alone (a catalog, logs and secrets made
            # readable by earlier versions are closed)
            private = _close_entries(folder, skip=HELPER_FOLDERS)
            if private:
                log.warning("Closed %d entries of %s/ to other accounts", private, service)
            if service == "environments":
                self._environments_layout(folder)
        return {"account": name, "uid": uid, "gid": gid,
                "home": str(self.data_dir / service)}

    def _environments_layout(self, folder: int) -> None:
        """``environments/``: the service's files, and the helper's folders for builds:
        ``venvs/`` (0711: servers reach their own environment, nobody lists them),
        ``cache/`` and ``work/`` (0711; each build account's own inside, 0700)."""
        for name in ("venvs", "cache", "work"):
            with safefs.opened(folder, name, create=0o711) as sub:
                safefs.set_owner_mode(sub, *self._owner(), 0o711)

    # --- shares -----------------------------------------------------------------------

    def _share_target(self, owner, path):
        owner = self._checked_user(owner)
        owner_uid = self.user_account(owner).pw_uid if self.isolated else None
        root = safefs.open_root(self.data_dir)
        try:
            homes = safefs.open_dir(root, "home")
            try:
                home = safefs.open_dir(homes, shares.home_name(owner))
            except FileNotFoundError:
                raise HelperError(f"{owner} has no home yet (it is made when their server "
                                  "first starts)") from None
            finally:
                os.close(homes)
            try:
                if not isinstance(path, str):
                    raise shares.ShareRefused("path: expected a path in the home")
                return shares.Target(home, path, owner_uid), owner_uid
            finally:
                os.close(home)
        except shares.ShareRefused as e:
            raise HelperError(f"cannot share {path!r} of {owner}: {e}") from None
        finally:
            os.close(root)

    def _grantee_id(self, grantee) -> tuple[int, int] | None:
        """The ACL tag and id of a grantee (None without isolation)."""
        try:
            kind, name = shares.checked_grantee(grantee)
        except shares.ShareRefused as e:
            raise HelperError(str(e)) from None
        if kind == "user":
            self._checked_user(name)
        else:
            _checked_groups([name])
        if not self.isolated:
            return None
        if kind == "user":
            return shares.acl.USER, self.user_account(name).pw_uid
        with self._lock:
            return shares.acl.GROUP, shares.group_id(name, self.prefix, _run)

    def apply_share(self, owner: str, path: str, grantee: dict) -> dict:
        """Let ``grantee`` read ``path`` in ``owner``'s home (``redspot.privileged.shares``);
        again and again: says how many ACL entries it had to put back."""
        ident = self._grantee_id(grantee)
        target, owner_uid = self._share_target(owner, path)
        with target:
            kind = "folder" if target.is_dir else "file"
            if ident is None:
                return {"kind": kind, "changed": 0, "enforced": False}
            try:
                changed = shares.grant(target, *ident, owner_uid)
            except shares.ShareRefused as e:
                raise HelperError(f"cannot share {path!r} of {owner}: {e}") from None
        return {"kind": kind, "changed": changed, "enforced": True}

    def revoke_share(self, owner: str, path: str, grantee: dict, keep: list) -> dict:
        """Take ``grantee``'s access to ``path`` away, then apply the shares of
        ``owner`` that ``grantee`` keeps (``keep``: their paths). A path that is gone
        needs nothing taken away."""
        ident = self._grantee_id(grantee)
        try:
            keep = shares.checked_keep(keep)
        except shares.ShareRefused as e:
            raise HelperError(str(e)) from None
        if ident is None:
            return {"changed": 0, "enforced": False}
        changed = 0
        try:
            target, owner_uid = self._share_target(owner, path)
        except HelperError as e:
            log.info("Revoking %s of %s: %s", path, owner, e)
        else:
            with target:
                changed += shares.take_back(target, *ident, owner_uid)
        for kept in keep:
            try:
                changed += self.apply_share(owner, kept, grantee)["changed"]
            except HelperError as e:
                log.info("Keeping %s of %s: %s", kept, owner, e)
        return {"changed": changed, "enforced": True}

    # --- builds -----------------------------------------------------------------------

    def _checked_build(self, owner, tag) -> bool:
        """Check a build's owner (a hub user, or ``team``) and tag; True for the team."""
        team = owner == "team"
        if not team:
            self._checked_user(owner)
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise HelperError(f"not an environment tag: {tag!r}")
        return team

    def build_account(self, owner: str) -> pwd.struct_passwd:
        if not self.isolated:
            return pwd.getpwuid(os.geteuid())
        name = build_account_name(owner, self.prefix)
        with self._lock:
            if system_account(name) is None:
                _run("useradd", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", NOLOGIN, "--user-group",
                     "--comment", f"Redspot builds of {owner}", name)
                log.info("Created build account %s", name)
        account = pwd.getpwnam(name)
        self._check_uid(account)
        return account

    def build_venv(self, owner: str, tag: str, requirements: list[str],
                   output: Callable[[str], None] = lambda line: None) -> str:
        """Build a virtualenv of ``requirements`` (and Redspot) as ``owner``'s build
        account into ``environments/venvs/<tag>``; return its Python.

        The result is readable by ``owner``'s account only (a team environment's by
        everyone); a failed or stopped build leaves nothing.
        """
        from ..environments import runtime

        team = self._checked_build(owner, tag)
        requirements = _checked_requirements(requirements)
        builder = self.build_account(owner)
        reader_gid = None
        if self.isolated and not team:
            reader_gid = self.user_account(owner).pw_gid
        cache_name = builder.pw_name if self.isolated else "hub"
        uv = self._uv()
        redspot_from = self._redspot_wheel(output)
        with self._root() as root, safefs.opened(root, "environments") as envs, \
                safefs.opened(envs, "venvs") as venvs, \
                safefs.opened(envs, "work") as works, \
                safefs.opened(envs, "cache") as caches:
            _remove(venvs, tag)
            _remove(works, tag)
            os.mkdir(tag, 0o700, dir_fd=venvs)
            os.mkdir(tag, 0o700, dir_fd=works)
            with contextlib.suppress(FileExistsError):
                os.mkdir(cache_name, 0o700, dir_fd=caches)
            dest = self.data_dir / "environments" / "venvs" / tag
            work = self.data_dir / "environments" / "work" / tag
            cache = self.data_dir / "environments" / "cache" / cache_name
            # the commands and their files are written while the folder is root's alone
            reqs = work / "requirements.txt"
            reqs.write_text("".join(f"{r}\n" for r in requirements))
            base = self.clone_source()
            cloned = base is not None and _clone_venv(base, dest, output)
            linked = file_ids(dest) if cloned else frozenset()
            commands = runtime.server_venv_commands(dest, reqs, uv=uv,
                                                    redspot_from=redspot_from,
                                                    create=not cloned)
            if cloned:
                # its folders only: the files stay links to the runtime's, which the
                # build account may replace but never change
                with safefs.opened(venvs, tag) as fd:
                    _give_folders(fd, builder.pw_uid, builder.pw_gid)
                    safefs.set_owner_mode(fd, builder.pw_uid, builder.pw_gid, 0o700)
                _hand_over(builder, (works, tag), (caches, cache_name))
            else:
                _hand_over(builder, (venvs, tag), (works, tag), (caches, cache_name))
            env = build_env(work, cache)
            ok = False
            try:
                deadline = time.monotonic() + self.build_timeout
                for cmd in commands:
                    self._run_build_step(cmd, builder, env, work, deadline,
                                         (dest, work), output, linked)
                ok = True
            finally:
                if ok:
                    with safefs.opened(venvs, tag) as fd:
                        # the owner's server reads it; the build account keeps it, so
                        # only the owner's own later builds could change it
                        if self.isolated:
                            os.fchown(fd, builder.pw_uid,
                                      reader_gid if reader_gid is not None else builder.pw_gid)
                        os.fchmod(fd, 0o755 if team else 0o750)
                else:
                    _remove(venvs, tag)
                _remove(works, tag)
        return str(dest / "bin" / "python")

    def build_image(self, owner: str, tag: str, files: dict, image: str,
                    tls_verify: bool = True,
                    output: Callable[[str], None] = lambda line: None) -> str:
        """Build the context ``files`` (a Dockerfile and what it copies) with buildah as
        ``owner``'s build account, rootless (its ``RUN`` steps are root in a user
        namespace of that account, never on the machine), push it as ``image`` (which
        ends in ``:<tag>``); return the pushed digest."""
        self._checked_build(owner, tag)
        if not isinstance(image, str) or not _IMAGE.match(image) or \
                not image.endswith(f":{tag}"):
            raise HelperError(f"not an image reference for {tag}: {image!r}")
        if not isinstance(files, dict) or "Dockerfile" not in files or not all(
                name in CONTEXT_FILES and isinstance(text, str) and len(text) < (1 << 20)
                for name, text in files.items()):
            raise HelperError(f"files: a Dockerfile and at most {sorted(CONTEXT_FILES)}")
        buildah = shutil.which("buildah")
        if not buildah:
            raise HelperError("buildah is not installed (Debian package buildah)")
        builder = self.build_account(owner)
        if self.isolated and not _has_subordinate_ids(builder.pw_name):
            raise HelperError(f"{builder.pw_name} has no subordinate uids in /etc/subuid: "
                              "rootless buildah needs them (usermod --add-subuids)")
        store = builder.pw_name if self.isolated else "hub"
        with self._root() as root, safefs.opened(root, "environments") as envs, \
                safefs.opened(envs, "work") as works, \
                safefs.opened(envs, "buildah", create=0o711) as stores:
            safefs.set_owner_mode(stores, *self._owner(), 0o711)
            _remove(works, tag)
            os.mkdir(tag, 0o700, dir_fd=works)
            with contextlib.suppress(FileExistsError):
                os.mkdir(store, 0o700, dir_fd=stores)
            work = self.data_dir / "environments" / "work" / tag
            storage = self.data_dir / "environments" / "buildah" / store
            context = work / "context"
            with safefs.opened(works, tag) as fd:
                os.mkdir("context", 0o755, dir_fd=fd)
                with safefs.opened(fd, "context") as ctx:
                    for name, text in files.items():
                        safefs.write_private(ctx, name, text.encode(), mode=0o644)
            _hand_over(builder, (works, tag), (stores, store))
            env = {**build_env(work, work / "cache"), "XDG_RUNTIME_DIR": str(work),
                   "BUILDAH_ISOLATION": "chroot"}
            base = [buildah, "--storage-driver", "vfs", "--root", str(storage / "storage"),
                    "--runroot", str(storage / "run")]
            tls = f"--tls-verify={'true' if tls_verify else 'false'}"
            digest_file = work / "digest"
            try:
                deadline = time.monotonic() + self.build_timeout
                watched = (storage, work)
                self._run_build_step([*base, "bud", "--isolation", "chroot", tls,
                                      "-f", str(context / "Dockerfile"), "-t", image,
                                      str(context)], builder, env, work, deadline, watched,
                                     output)
                self._run_build_step([*base, "push", tls, "--digestfile", str(digest_file),
                                      image, f"docker://{image}"], builder, env, work,
                                     deadline, watched, output)
                with safefs.opened(works, tag) as fd:
                    # the build account's file: never through a link, never shown
                    digest = _read_small(fd, "digest").strip()
            finally:
                # vfs keeps whole copies of every image: only the base layers stay
                with contextlib.suppress(HelperError):
                    self._run_build_step([*base, "rmi", "--force", image], builder, env,
                                         work, time.monotonic() + 120, (), lambda line: None)
                _remove(works, tag)
        if not re.match(r"^sha256:[0-9a-f]{64}$", digest):
            raise HelperError("buildah's digest file does not hold a sha256 digest")
        return digest

    def _run_build_step(self, cmd, builder, env, cwd, deadline, watched, output,
                        linked: frozenset = frozenset()) -> None:
        """Run one step of a build as ``builder``, its output to ``output``; stop it past
        the deadline, or when the files under ``watched`` (less those of ``linked``, the
        runtime's, by device and inode) pass the size limit."""
        output("$ " + " ".join(cmd))
        limit = self.build_max_bytes
        preexec = (_drop_to(builder.pw_uid, builder.pw_gid, limit) if self.isolated
                   else _drop_to(None, None, limit))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(cwd),
                                preexec_fn=preexec, start_new_session=True)
        try:
            self._follow_step(proc, deadline, watched, output, linked, limit)
        finally:
            # whatever the step left behind in its session (a build backend's children,
            # a step stopped for its limits) ends with it
            _kill_group(proc.pid)
            proc.wait()

    def _follow_step(self, proc, deadline, watched, output, linked, limit) -> None:
        reason = None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            pending = b""
            next_size_check = 0.0
            while True:
                now = time.monotonic()
                if now > deadline:
                    reason = (f"the build ran longer than its limit of "
                              f"{self.build_timeout:.0f} s and was stopped")
                    break
                if now > next_size_check:
                    used = sum(tree_size(p, linked) for p in watched)
                    if used > limit:
                        reason = (f"the build wrote {_size(used)}, more than its limit of "
                                  f"{_size(limit)}, and was stopped")
                        break
                    next_size_check = now + 2
                if not sel.select(timeout=1):
                    if proc.poll() is not None:
                        break
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    output(line.decode(errors="replace"))
            if pending:
                output(pending.decode(errors="replace"))
        if reason:
            raise HelperError(reason)
        code = proc.wait()
        if code == -signal.SIGXFSZ:
            raise HelperError(f"{os.path.basename(proc.args[0])} was stopped: it wrote a "
                              f"file larger than the build's limit of {_size(limit)}")
        if code:
            raise HelperError(f"{os.path.basename(proc.args[0])} exited with {code}")

    def clone_source(self) -> Path | None:
        """The virtualenv builds start from: the servers' runtime (or the hub's own
        environment, when servers run with it), if it is a virtualenv."""
        python = self.server_python or sys.executable
        if not self.server_python and sys.prefix == sys.base_prefix:
            return None
        venv = Path(python).parent.parent
        return venv if (venv / "pyvenv.cfg").is_file() else None

    def _uv(self) -> str:
        """A uv binary every account can run (the servers' environment's)."""
        from ..environments import runtime

        if self.server_python:
            candidate = Path(self.server_python).parent / "uv"
            if candidate.exists():
                return str(candidate)
        return runtime._uv()

    def _redspot_wheel(self, output) -> str:
        """Redspot as a wheel every account can read, built (as root, from Redspot's own
        source) once per version of the source."""
        from ..environments import runtime

        source = runtime.redspot_source()
        if source.endswith(".whl") or not self.isolated:
            return source
        digest = runtime._source_digest(source)[:16]
        with self._root() as root, safefs.opened(root, "environments") as envs, \
                safefs.opened(envs, "wheels", create=0o755) as wheels:
            safefs.set_owner_mode(wheels, 0, 0, 0o755)
            with safefs.opened(wheels, digest, create=0o755) as fd:
                safefs.set_owner_mode(fd, 0, 0, 0o755)
        folder = self.data_dir / "environments" / "wheels" / digest
        found = sorted(folder.glob("redspot-*.whl"))
        if found:
            return str(found[-1])
        output(f"Building Redspot's wheel from {source}")
        old = os.umask(0o022)
        try:
            subprocess.run([self._uv(), "build", "--wheel", "--out-dir", str(folder), source],
                           check=True, capture_output=True, text=True,
                           env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})
        except subprocess.CalledProcessError as e:
            raise HelperError(f"building Redspot's wheel failed: {e.stderr[-2000:]}") from None
        finally:
            os.umask(old)
        wheel = sorted(folder.glob("redspot-*.whl"))[-1]
        os.chmod(wheel, 0o644)
        return str(wheel)

    # --- the data folder --------------------------------------------------------------

    def prepare_data_dir(self) -> list[str]:
        """Modes of the data folder's own entries; returns warnings for the operator.

        ``<data>`` 0711 (servers pass through to their home, the shared folders and the
        runtime; nobody lists it), ``redspot.yaml`` and ``jupyterhub_config.d`` the
        operator's alone, ``hub/`` 0700, ``runtime/`` readable by every account.
        """
        warnings = []
        owner = self._owner()
        with self._root() as root:
            st = os.fstat(root)
            os.fchmod(root, 0o711 if self.isolated else 0o700)
            if stat.S_IMODE(st.st_mode) & 0o044 and self.isolated:
                warnings.append(f"{self.data_dir} was readable by every account "
                                f"(mode {stat.filemode(st.st_mode)}); it is 0711 now")
            try:
                fd = os.open("redspot.yaml", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                             dir_fd=root)
            except FileNotFoundError:
                fd = None
            if fd is not None:
                try:
                    st = os.fstat(fd)
                    if stat.S_IMODE(st.st_mode) & 0o077:
                        os.fchmod(fd, 0o600)
                        warnings.append(
                            f"{self.data_dir / 'redspot.yaml'} was readable by other accounts "
                            f"(mode {stat.filemode(st.st_mode)}); it is 0600 now. Any secret "
                            "in it (OAuth client secrets, database passwords) may have been "
                            "read: rotate them")
                finally:
                    os.close(fd)
            for name, mode in (("hub", 0o700), ("jupyterhub_config.d", 0o700)):
                with contextlib.suppress(FileNotFoundError), \
                        safefs.opened(root, name, create=0o700 if name == "hub" else None) as fd:
                    safefs.set_owner_mode(fd, *owner, mode)
        return warnings


# --- helpers ----------------------------------------------------------------------------

#: Folders of ``environments/`` that are the helper's (builds), not the service's.
HELPER_FOLDERS = frozenset({"venvs", "cache", "work", "wheels", "buildah"})


def _close_entries(folder: int, skip=frozenset()) -> int:
    """Take group and other bits off everything in ``folder`` but the ``skip`` entries."""
    closed = 0
    for name in os.listdir(folder):
        if name in skip:
            continue
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            with safefs.opened(folder, name) as sub:
                closed += safefs.chmod_tree(sub, lambda s: stat.S_IMODE(s.st_mode) & ~0o077)
        elif stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            try:
                os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
                closed += 1
            finally:
                os.close(fd)
    return closed


def _checked_groups(groups) -> list[str]:
    if not isinstance(groups, (list, tuple)) or not all(
            isinstance(g, str) and g and len(g) <= 255 and "\0" not in g for g in groups):
        raise HelperError(f"groups: expected a list of group names, got {groups!r}")
    return sorted(set(groups))


def _checked_requirements(requirements) -> list[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(requirements, list) or len(requirements) > 2000:
        raise HelperError("requirements: expected a list of at most 2000 requirements")
    checked = []
    for text in requirements:
        if not isinstance(text, str) or not text.strip() or text.lstrip().startswith("-") \
                or "\n" in text or "\r" in text:
            raise HelperError(f"not a package requirement: {text!r}")
        try:
            req = Requirement(text)
        except InvalidRequirement:
            raise HelperError(f"not a package requirement: {text!r}") from None
        if req.url:
            raise HelperError(f"{text!r}: direct URLs are not built")
        checked.append(text.strip())
    return checked


def _hand_over(builder: pwd.struct_passwd, *entries: tuple[int, str]) -> None:
    """Give each (folder, name) the helper made for a build to the build account, 0700
    (only what the helper made there: root's, or the helper's own account's)."""
    for parent, name in entries:
        with safefs.opened(parent, name) as fd:
            safefs.chown_tree(fd, builder.pw_uid, builder.pw_gid, only_from={0, os.geteuid()})
            safefs.set_owner_mode(fd, builder.pw_uid, builder.pw_gid, 0o700)


def _read_small(folder: int, name: str, limit: int = 4096) -> str:
    """A short file in ``folder``, opened without following a link."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                 dir_fd=folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HelperError(f"{name} is not a file")
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def _has_subordinate_ids(account: str) -> bool:
    try:
        return all(any(line.split(":", 1)[0] == account for line in
                       Path(path).read_text().splitlines())
                   for path in ("/etc/subuid", "/etc/subgid"))
    except OSError:
        return False


def _checked_account(name: str) -> str:
    if not ACCOUNT_NAME.match(name):
        raise HelperError(f"not an account name: {name!r}")
    return name


def _run(*cmd: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode:
        raise HelperError(f"{cmd[0]} failed: {(result.stdout + result.stderr).strip()}")


def _remove(parent: int, name: str) -> None:
    """Remove ``name`` in the folder ``parent`` (a tree, a file or a link), following no
    link (``shutil.rmtree`` with a directory descriptor)."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _clone_venv(base: Path, dest: Path, output: Callable[[str], None]) -> bool:
    """Make the empty folder ``dest`` a copy of the virtualenv ``base`` whose files are
    hard links to ``base``'s (seconds, and no space): a build then installs only what
    differs. The scripts that name ``base`` are rewritten to name ``dest``. False, with
    ``dest`` left empty, where links cannot be made (another file system)."""
    output(f"Starting from the server runtime {base} (hard links; only what differs "
           f"is installed)")
    # ``dest`` is the helper's new folder, which nobody else can enter yet
    done = subprocess.run(["cp", "-a", "--link", "--no-target-directory", str(base),
                           str(dest)], capture_output=True, text=True)
    if done.returncode:
        output(f"Could not link the runtime's files ({done.stderr.strip()[-300:]}); "
               f"installing every package instead")
        for entry in list(dest.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return False
    # links out of the runtime (an editable install's) would have the build remove or
    # change what they point to: they are left out; the interpreter's stay
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            link = os.path.join(folder, name)
            if not os.path.islink(link) or (folder == str(dest / "bin")
                                             and name.startswith("python")):
                continue
            target = os.path.realpath(link)
            if not (target + "/").startswith(str(dest) + "/"):
                output(f"Leaving out {os.path.relpath(link, dest)}: it links to {target}")
                os.unlink(link)
    old, new = str(base).encode(), str(dest).encode()
    for script in (dest / "bin").iterdir():
        st = script.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
            continue
        text = script.read_bytes()
        if old in text:
            # a new file in place of the link: the runtime's own stays as it is
            fresh = script.with_name(script.name + ".redspot-new")
            fresh.write_bytes(text.replace(old, new))
            os.chmod(fresh, stat.S_IMODE(st.st_mode))
            os.replace(fresh, script)
    return True


def _give_folders(fd: int, uid: int, gid: int) -> None:
    """Give the folders under ``fd`` (not their files, never through a link) to
    ``uid:gid``."""
    def visit(dir_fd, name, st):
        if not stat.S_ISDIR(st.st_mode):
            return
        if name is None:
            os.fchown(dir_fd, uid, gid)
        else:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    safefs.walk(fd, visit)


def build_env(work: Path, cache: Path) -> dict[str, str]:
    """A build's whole environment: a fresh HOME and TMPDIR, its own uv cache, the
    package index settings, and nothing else of the helper's (no tokens)."""
    env = {k: os.environ[k] for k in BUILD_ENV_KEEP if k in os.environ}
    env.update({"HOME": str(work), "TMPDIR": str(work), "PATH": "/usr/local/bin:/usr/bin:/bin",
                "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never",
                "DS_BUILD_OPS": "0", "PYTHONDONTWRITEBYTECODE": "1"})
    if env.get("PIP_FIND_LINKS") and "UV_FIND_LINKS" not in env:
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    if "UV_FIND_LINKS" in env:
        # only the folders every account can read (a wheelhouse in root's HOME is not)
        from ..environments.runtime import blocking_path

        readable = [place for place in env["UV_FIND_LINKS"].split(",") if place and (
            "://" in place or blocking_path(place) is None)]
        if readable:
            env["UV_FIND_LINKS"] = ",".join(readable)
        else:
            del env["UV_FIND_LINKS"]
    return env


def _drop_to(uid: int | None, gid: int | None, max_bytes: int):
    """A build step's start: no file larger than ``max_bytes`` (a write past it fails),
    and, with isolation (``uid`` given), the build account's identity alone."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
        if uid is not None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        os.umask(0o022)

    return preexec


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _file_stats(path: Path):
    """``lstat`` of each file under ``path`` (those gone meanwhile left out)."""
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                yield os.lstat(os.path.join(folder, name))


def tree_size(path: Path, skip: frozenset = frozenset()) -> int:
    """The bytes the files under ``path`` take, less those in ``skip`` (device, inode)."""
    return sum(st.st_blocks * 512 for st in _file_stats(path)
               if (st.st_dev, st.st_ino) not in skip)


def file_ids(path: Path) -> frozenset:
    """(device, inode) of every file under ``path``."""
    return frozenset((st.st_dev, st.st_ino) for st in _file_stats(path))


def _kill_group(pgid: int) -> None:
    """Stop every process of the group ``pgid``: SIGTERM, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return  # none left
        time.sleep(0.5)


def kill_account_processes(uid: int, grace: float = 3.0) -> int:
    """Stop every process running as ``uid`` (found by uid in /proc, never by name):
    SIGTERM, then SIGKILL to those left after ``grace`` seconds. Returns how many."""
    if uid == 0 or uid < uid_min():
        raise HelperError(f"refusing to stop the processes of uid {uid}")

    def running() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == uid:
                        pids.append(int(entry.name))
        return pids

    pids = running()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)

