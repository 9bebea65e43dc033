"""RedspotLocalSpawner: single-user servers as local processes, one OS account per user.

As root (``isolation: auto`` or ``accounts``), each hub user gets a system account
(``redspot-<name>``) whose home is ``<data>/home/<name>``, mode 0700, and the server
runs as that account: tenants are isolated by the operating system. Accounts, homes
and shared folders are made by Redspot's privileged helper (``redspot.privileged``),
never by the spawner itself. ``~/shared`` links
to ``<data>/shared/public`` and ``<data>/shared/<group>`` for the user's hub groups,
each guarded by a Linux group whose members follow the hub's groups. Not as root,
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
    helper_socket = Unicode(
        "",
        config=True,
        help="""The privileged helper's socket (set by ``redspot up`` when tenants are
        isolated). Empty: its operations run in the hub's process.""",
    )
    python = Unicode(
        config=True,
        help="""Python of the environment servers run in (JupyterLab and Redspot installed).

        Default: the hub's own. As root, it must be reachable by the per-user accounts;
        ``redspot up`` prepares ``<data>/runtime`` when the hub's is not.
        """,
    )

    def shared_machine(self):
        from .profiles import this_machine

        return this_machine()

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

    # --- accounts and folders: the privileged helper's -----------------------------------

    #: What the helper answered when this server last started: account, uid, gid, home.
    _prepared: dict | None = None

    @property
    def helper(self):
        """The privileged helper (``redspot up`` runs it; in this process without one)."""
        from ..privileged.client import helper_for

        if self.helper_socket:
            return helper_for(self.helper_socket, self.data_dir)
        if self.uses_accounts and os.geteuid() != 0:
            raise SpawnError(
                "isolation is 'accounts' but the hub does not run as root, so it cannot "
                "create or switch to per-user accounts; run as root or set spawner.isolation"
            )
        if not self.data_dir:
            raise SpawnError("RedspotLocalSpawner.data_dir is not set")
        return helper_for("", self.data_dir, prefix=self.account_prefix,
                          isolated=self.uses_accounts)

    async def prepare_user(self) -> dict:
        """The user's account, its groups, home and ``~/shared`` links (the helper's)."""
        from ..privileged.ops import HelperError

        helper = self.helper
        try:
            return await asyncio.to_thread(
                helper.call, "ensure_user", user=self.user.name,
                groups=[g.name for g in self.user.groups])
        except HelperError as e:
            raise SpawnError(f"{self.user.name}'s server cannot start: {e}") from None

    # --- the process --------------------------------------------------------------------

    async def poll(self):
        """The server's state; when it ended without being stopped (killed, out of
        memory), what it started goes with it: its Ray head would otherwise run on
        forever (a stopped server stops it; a killed one cannot)."""
        had = self.pid
        status = await super().poll()
        if status is None and self.usage_log is not None:
            self.note_usage("ray", self.ray_nodes())
        if had and status is not None and not getattr(self, "_stop_pending", False):
            # found dead, not stopped: in the background, so the hub's poll goes on
            task = asyncio.ensure_future(self.stop_leftovers())
            self._leftovers_task = task  # referenced until it is done
        return status

    def ray_nodes(self) -> dict:
        """The user's Ray head, if it runs, for the usage log: ``{"head": (profile,
        0.0)}``. It shares its server's machine, whose hours are the server's, so it
        costs nothing more. Read from its record in the user's home."""
        from ..compute.local import LocalRayHead

        head = LocalRayHead(state_dir=self.home / ".redspot" / "ray").info(forget=False)
        if head is None:
            return {}
        return {"head": (self.profile.name if self.profile else "unknown", 0.0)}

    async def stop_leftovers(self) -> None:
        from ..compute.local import LocalRayHead
        from ..privileged.ops import HelperError

        try:
            if self.uses_accounts:
                done = await asyncio.to_thread(self.helper.call, "stop_user_processes",
                                               user=self.user.name)
                stopped = done.get("stopped", 0)
            else:  # one account for all: the head by its own record, the hub's account's
                head = LocalRayHead(state_dir=self.home / ".redspot" / "ray")
                stopped = int(await asyncio.to_thread(head.stop))
        except (HelperError, OSError) as e:
            self.log.warning("%s's server ended; what it left running was not stopped: %s",
                             self.user.name, e)
            return
        if stopped:
            self.log.info("%s's server ended without stopping; stopped %d processes it "
                          "left running (its Ray head)", self.user.name, stopped)

    def make_preexec_fn(self, name):
        home = str(self.home)
        if not self.uses_accounts:

            def preexec():
                os.chdir(home)

            return preexec
        # the account the helper vouched for (with PAM: the machine's own, by exact name)
        account = pwd.getpwnam(self._prepared["account"] if self._prepared
                               else self.account_name)
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
        env["USER"] = env["LOGNAME"] = (self._prepared["account"] if self._prepared
                                        else self.account_name)
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
        prepared = self._prepared = await self.prepare_user()
        self.notebook_dir = prepared["home"]
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

