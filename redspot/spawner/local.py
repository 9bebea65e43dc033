"""RedspotLocalSpawner: single-user servers as local processes, one OS account per user.

As root (``isolation: auto`` or ``accounts``), each hub user gets a system account
(``redspot-<name>``) whose home is ``<data>/home/<name>``, mode 0700, and the server
runs as that account: tenants are isolated by the operating system. ``~/shared`` links
to ``<data>/shared/public`` and ``<data>/shared/<group>`` for the user's hub groups,
each guarded by a Linux group whose members follow the hub's groups. Not as root,
every server runs as the invoking account, and ``redspot up`` says so at start.

Servers start in their own session, so neither Ctrl-C in the hub's terminal nor the
hub's death reaches them; their output goes to ``<data>/hub/logs/<name>.log``. A hub
restarted with ``--keep-servers`` finds them again by the pid kept in its database.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Enum, Unicode, default

from .base import RedspotSpawnerMixin
from .storage import Layout, safe_name, system_account_name, system_group_name

_account_lock = asyncio.Lock()


class SpawnError(RuntimeError):
    """The server cannot start; the message says why and what to change."""


class RedspotLocalSpawner(RedspotSpawnerMixin, LocalProcessSpawner):
    data_dir = Unicode(
        config=True,
        help="The data folder; homes are ``<data_dir>/home/<user>``. Set by ``redspot up``.",
    )
    log_dir = Unicode(
        config=True,
        help="Folder for each server's output (``<log_dir>/<user>.log``). Empty: the hub's.",
    )
    isolation = Enum(
        ["auto", "accounts", "none"],
        default_value="auto",
        config=True,
        help="""How servers are kept apart.

        ``auto`` (default): per-user system accounts when the hub runs as root, else none.
        ``accounts``: always per-user accounts (the hub must run as root).
        ``none``: every server runs as the hub's account (no isolation between tenants).
        """,
    )
    account_prefix = Unicode(
        "redspot-",
        config=True,
        help="""Prefix of per-user system accounts: ``redspot-alice``. Set ``""`` to run
        servers as existing accounts named like the hub users (with PAM).""",
    )
    python = Unicode(
        config=True,
        help="""Python of the environment servers run in (JupyterLab and Redspot installed).

        Default: the hub's own. As root, it must be reachable by the per-user accounts;
        ``redspot up`` prepares ``<data>/runtime`` when the hub's is not.
        """,
    )

    @default("python")
    def _python_default(self):
        return sys.executable

    @default("cmd")
    def _cmd_default(self):
        return [self.python, "-m", "jupyterhub.singleuser"]

    _default_python: str | None = None

    def apply_environment(self, environment: dict | None) -> None:
        """Servers in an environment run its virtualenv's Python; others the default one."""
        if self._default_python is None:
            self._default_python = self.python
        self.python = environment["location"] if environment else self._default_python
        self.cmd = [self.python, "-m", "jupyterhub.singleuser"]

    @property
    def uses_accounts(self) -> bool:
        return self.isolation == "accounts" or (self.isolation == "auto" and os.geteuid() == 0)

    @property
    def account_name(self) -> str:
        if self.uses_accounts:
            return system_account_name(self.user.name, self.account_prefix)
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def layout(self) -> Layout:
        return Layout(self.user.name, groups=tuple(g.name for g in self.user.groups))

    @property
    def home(self) -> Path:
        if not self.data_dir:
            raise SpawnError("RedspotLocalSpawner.data_dir is not set")
        return Path(self.data_dir) / self.layout.home

    # --- accounts and folders -----------------------------------------------------------

    async def ensure_account(self) -> pwd.struct_passwd:
        name = self.account_name
        if os.geteuid() != 0:
            raise SpawnError(
                "isolation is 'accounts' but the hub does not run as root, so it cannot "
                "create or switch to per-user accounts; run as root or set spawner.isolation"
            )
        async with _account_lock:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                pass
            await _run("useradd", "--home-dir", str(self.home), "--no-create-home",
                       "--shell", "/bin/bash", "--user-group", "--comment",
                       f"Redspot user {self.user.name}", name)
            self.log.info("Created system account %s for %s", name, self.user.name)
            return pwd.getpwnam(name)

    async def ensure_groups(self, account: pwd.struct_passwd) -> None:
        """Make the account a member of exactly its shared folders' groups.

        One Linux group per hub group the user is in, and the group of ``shared/public``;
        a user who left a hub group loses its folder at their next start.
        """
        prefix = self.account_prefix
        wanted = {system_group_name(None, prefix)} | {
            system_group_name(g, prefix) for g in self.layout.groups
        }
        managed = f"{prefix}grp_"
        async with _account_lock:
            existing = {g.gr_name: g for g in grp.getgrall()}
            for name in sorted(wanted - set(existing)):
                await _run("groupadd", name)
            current = {
                name for name, g in existing.items()
                if name.startswith(managed) and account.pw_name in g.gr_mem
            }
            for name in sorted(wanted - current):
                await _run("gpasswd", "--add", account.pw_name, name)
            for name in sorted(current - wanted):
                await _run("gpasswd", "--delete", account.pw_name, name)

    def ensure_home(self, account: pwd.struct_passwd | None) -> Path:
        home = self.home
        homes = home.parent
        homes.mkdir(parents=True, exist_ok=True)
        if account is not None:
            # others may pass through home/ to their own folder, but not list it
            os.chmod(homes, 0o711)
        home.mkdir(mode=0o700, exist_ok=True)
        os.chmod(home, 0o700)
        if account is not None:
            st = home.stat()
            if (st.st_uid, st.st_gid) != (account.pw_uid, account.pw_gid):
                os.chown(home, account.pw_uid, account.pw_gid)
        return home

    def ensure_shared(self, account: pwd.struct_passwd | None) -> None:
        """The shared folders of the layout, and links to them in ``~/shared``.

        As root, ``shared/<group>`` belongs to the group's Linux group (mode 2770: files
        made there stay the group's), ``shared/public`` to every account's (3770: nobody
        deletes another's files). Without accounts, all is the hub account's.
        """
        root = Path(self.data_dir)
        (root / "shared").mkdir(exist_ok=True)
        os.chmod(root / "shared", 0o711 if account else 0o700)
        groups = {path.name: group for group, path in self.layout.group_dirs().items()}
        links = self.home / "shared"
        if links.is_symlink() or (links.exists() and not links.is_dir()):
            self.log.warning("%s is not a folder: not linking shared folders there", links)
            return
        links.mkdir(mode=0o700, exist_ok=True)
        if account:
            os.chown(links, account.pw_uid, account.pw_gid)
        wanted = self.layout.shared_links()
        for name, relative in wanted.items():
            folder = root / relative
            folder.mkdir(exist_ok=True)
            if account:
                group = system_group_name(groups.get(name), self.account_prefix)
                os.chown(folder, 0, grp.getgrnam(group).gr_gid)
                os.chmod(folder, 0o3770 if name == "public" else 0o2770)
            else:
                os.chmod(folder, 0o700)
            link = links / name
            if link.is_symlink() and os.readlink(link) != str(folder):
                link.unlink()
            if not link.is_symlink() and not link.exists():
                link.symlink_to(folder)
                if account:
                    os.lchown(link, account.pw_uid, account.pw_gid)
        # links to folders of groups the user has left
        for link in links.iterdir():
            if (link.is_symlink() and link.name not in wanted
                    and os.readlink(link).startswith(str(root / "shared") + os.sep)):
                link.unlink()

    # --- the process --------------------------------------------------------------------

    def make_preexec_fn(self, name):
        home = str(self.home)
        if not self.uses_accounts:

            def preexec():
                os.chdir(home)

            return preexec
        account = pwd.getpwnam(self.account_name)
        uid, gid = account.pw_uid, account.pw_gid
        groups = os.getgrouplist(account.pw_name, gid)

        def preexec():
            os.setgid(gid)
            os.setgroups(groups)
            os.setuid(uid)
            # home is 0700; files in shared folders stay readable by the folder's group
            os.umask(0o007)
            os.chdir(home)

        return preexec

    def user_env(self, env):
        env["USER"] = env["LOGNAME"] = self.account_name
        env["HOME"] = str(self.home)
        env["SHELL"] = "/bin/bash"
        env["PATH"] = os.pathsep.join(
            [str(Path(self.python).parent), "/usr/local/bin", "/usr/bin", "/bin"]
        )
        env.pop("VIRTUAL_ENV", None)
        return env

    def get_env(self):
        env = super().get_env()
        env.update(self.redspot_env())
        # the user's Ray cluster is this machine alone, with its token in their home:
        # set from the start, as Ray reads these once per process
        from ..compute.local import auth_env

        env.update(auth_env(Path(self.home) / ".redspot" / "ray" / "token"))
        return env

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and not self.uses_accounts:
            args.append("--allow-root")
        return args

    async def start(self):
        account = await self.ensure_account() if self.uses_accounts else None
        if account:
            await self.ensure_groups(account)
        home = self.ensure_home(account)
        self.ensure_shared(account)
        self.notebook_dir = str(home)
        log = None
        if self.log_dir:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
            log = open(Path(self.log_dir) / f"{safe_name(self.user.name)}.log", "ab")  # noqa: SIM115
        self.popen_kwargs = {
            **self.popen_kwargs,
            "stdin": subprocess.DEVNULL,
            **({"stdout": log, "stderr": subprocess.STDOUT} if log else {}),
        }
        try:
            return await super().start()
        except PermissionError as e:
            raise SpawnError(
                f"the server's Python {self.python} cannot be run by account "
                f"{self.account_name!r} ({e.strerror}); make its environment readable by "
                "every account, or let `redspot up` prepare <data>/runtime"
            ) from None
        finally:
            if log:
                log.close()


async def _run(*cmd: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode:
        raise SpawnError(f"{cmd[0]} failed: {out.decode(errors='replace').strip()}")
