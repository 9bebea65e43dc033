"""RedspotLocalSpawner: single-user servers as local processes, one OS account per user.

As root (``isolation: auto`` or ``accounts``), each hub user gets a system account
(``redspot-<name>``) whose home is ``<data>/home/<name>``, mode 0700, and the server
runs as that account: tenants are isolated by the operating system. Not as root,
every server runs as the invoking account, and ``redspot up`` says so at start.

Servers start in their own session, so neither Ctrl-C in the hub's terminal nor the
hub's death reaches them; their output goes to ``<data>/hub/logs/<name>.log``. A hub
restarted with ``--keep-servers`` finds them again by the pid kept in its database.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Enum, Unicode, default

from .base import RedspotSpawnerMixin
from .storage import Layout, safe_name, system_account_name

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

    @property
    def uses_accounts(self) -> bool:
        return self.isolation == "accounts" or (self.isolation == "auto" and os.geteuid() == 0)

    @property
    def account_name(self) -> str:
        if self.uses_accounts:
            return system_account_name(self.user.name, self.account_prefix)
        return pwd.getpwuid(os.geteuid()).pw_name

    @property
    def home(self) -> Path:
        if not self.data_dir:
            raise SpawnError("RedspotLocalSpawner.data_dir is not set")
        return Path(self.data_dir) / Layout(self.user.name).home

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
            cmd = ["useradd", "--home-dir", str(self.home), "--no-create-home",
                   "--shell", "/bin/bash", "--user-group", "--comment",
                   f"Redspot user {self.user.name}", name]
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            out, _ = await proc.communicate()
            if proc.returncode:
                raise SpawnError(
                    f"could not create the system account {name!r} for {self.user.name!r}: "
                    f"useradd said {out.decode(errors='replace').strip()!r}"
                )
            self.log.info("Created system account %s for %s", name, self.user.name)
            return pwd.getpwnam(name)

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
            os.umask(0o077)
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
        return env

    def get_args(self):
        args = super().get_args()
        if os.geteuid() == 0 and not self.uses_accounts:
            args.append("--allow-root")
        return args

    async def start(self):
        account = await self.ensure_account() if self.uses_accounts else None
        home = self.ensure_home(account)
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
