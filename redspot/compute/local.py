"""A user's own Ray head on one machine, started on demand by their server.

The head runs under the user's account (the server's), listens on 127.0.0.1 only, has
Ray's token authentication on with a token only that account can read, and usage
statistics off. Its state lives in ``~/.redspot/ray/``:

    token        the cluster's token (0600): what a driver needs to join
    head.json    {"address", "dashboard", "client", "pgid", "temp_dir"}
    last-used    touched whenever a kernel uses the head (its idle time)

Ray's processes are started in a process group of their own; stopping the head signals
that group (by its id, never by process name).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


class RayHeadError(RuntimeError):
    """The head could not be started or reached; the message says why."""


@dataclass(frozen=True)
class HeadInfo:
    address: str  # 127.0.0.1:<gcs port>
    dashboard: str  # http://127.0.0.1:<port>
    client: str  # ray://127.0.0.1:<port>
    pgid: int
    temp_dir: str


def random_port() -> int:
    """A loopback port free now, the kernel's pick. (jupyterhub.utils has one, but
    importing it imports SQLAlchemy: a second of CPU in each kernel or command that
    starts or finds a Ray head.)"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth_env(token_path: Path) -> dict[str, str]:
    """What a Ray process or driver needs to join the user's token-protected cluster.

    A one-machine cluster never takes other nodes: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
    is Ray's switch that makes its node address the loopback one (otherwise Ray replaces
    127.0.0.1 by the machine's network address and binds its servers there).
    """
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path),
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class LocalRayHead:
    def __init__(self, state_dir: Path | None = None, private_dir: Path | None = None,
                 ray: str | None = None):
        self.state_dir = Path(state_dir or Path.home() / ".redspot" / "ray")
        # Ray's sockets must fit in 107 bytes: keep its folder short. Ray opens its temp
        # folder to everyone (0777), so it sits inside one only this account may enter,
        # made afresh with an unpredictable name for each head (a name known in advance
        # could be taken first by another account).
        self.fixed_private_dir = Path(private_dir) if private_dir else None
        self.ray = ray or str(Path(sys.executable).parent / "ray")

    @property
    def token_path(self) -> Path:
        return self.state_dir / "token"

    @property
    def info_path(self) -> Path:
        return self.state_dir / "head.json"

    @property
    def activity_path(self) -> Path:
        return self.state_dir / "last-used"

    def touch(self) -> None:
        """Note that a kernel uses the head now (see :meth:`idle_seconds`)."""
        try:
            os.utime(self.activity_path)
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.activity_path.touch(mode=0o600)

    def idle_seconds(self) -> float | None:
        """Seconds since a kernel last used the running head (None: no head runs)."""
        info = self.info()
        if info is None:
            return None
        times = [self.info_path.stat().st_mtime]
        with contextlib.suppress(FileNotFoundError):
            times.append(self.activity_path.stat().st_mtime)
        return max(0.0, time.time() - max(times))

    def token(self) -> str:
        """The cluster's token, made on first use (0600, in a 0700 folder)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        if not self.token_path.exists():
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return self.token_path.read_text().strip()

    def info(self, forget: bool = True) -> HeadInfo | None:
        """The running head, or None (a head whose processes are gone is forgotten,
        unless ``forget`` is False: for a reader that does not own the record)."""
        try:
            info = HeadInfo(**json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if not group_alive(info.pgid):
            if forget:
                self.info_path.unlink(missing_ok=True)
            return None
        return info

    def stop_if_idle(self, timeout: float) -> bool:
        """Stop the head if no kernel used it for more than ``timeout`` s; True if so."""
        idle = self.idle_seconds()
        return idle is not None and idle > timeout and self.stop()

    def start(self, cpus: float | None = None, gpus: int | None = None,
              memory: int | None = None, timeout: float = 120) -> HeadInfo:
        """Start the head unless it runs; return where it is."""
        running = self.info()
        if running:
            return running
        self.token()
        private = self._private_dir()
        temp_dir = private / "ray"
        temp_dir.mkdir(exist_ok=True, mode=0o700)
        env = {**os.environ, **auth_env(self.token_path)}
        # no Grafana runs beside a user's head: the dashboard hides its metrics tab rather
        # than probe (and link) whatever listens on localhost:3000 (an operator's
        # RAY_GRAFANA_HOST is kept)
        env.setdefault("RAY_GRAFANA_HOST", "DISABLED")
        log = self.state_dir / "head.log"
        began = time.monotonic()
        for attempt in (1, 2):
            # every port of its own: Ray's default for the dashboard agent (52365) is one
            # per machine, and a second head's agent could not listen (so its Jobs API had
            # "no available agent" for anyone but the first user)
            ports = {"gcs": random_port(), "dashboard": random_port(),
                     "client": random_port(), "agent": random_port()}
            cmd = [
                self.ray, "start", "--head", "--node-ip-address=127.0.0.1",
                f"--port={ports['gcs']}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports['dashboard']}",
                f"--ray-client-server-port={ports['client']}",
                f"--dashboard-agent-listen-port={ports['agent']}",
                "--disable-usage-stats", f"--temp-dir={temp_dir}",
            ]
            if cpus is not None:
                cmd.append(f"--num-cpus={max(1, int(cpus))}")
            if gpus is not None:
                cmd.append(f"--num-gpus={gpus}")
            if memory is not None:
                cmd.append(f"--memory={int(memory)}")
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
            code = self._wait_started(proc, log, began + timeout)
            if code is None:
                self._kill_group(proc.pid)
                self._forget_private(private)
                raise RayHeadError(f"the Ray head did not start in {timeout} s; see "
                                   f"{log}")
            if not code:
                break
            self._kill_group(proc.pid)
            tail = log.read_text(errors="replace").splitlines()[-15:]
            if attempt == 1 and any("timed out during startup" in line for line in tail):
                # Ray gives its raylet a fixed 30 s to register: on a machine busy enough
                # to miss it, a second try (new ports, a clean folder) usually starts
                shutil.rmtree(temp_dir, ignore_errors=True)
                temp_dir.mkdir(exist_ok=True, mode=0o700)
                continue
            self._forget_private(private)
            raise RayHeadError("the Ray head did not start:\n" + "\n".join(tail))
        info = HeadInfo(
            address=f"127.0.0.1:{ports['gcs']}",
            dashboard=f"http://127.0.0.1:{ports['dashboard']}",
            client=f"ray://127.0.0.1:{ports['client']}",
            pgid=proc.pid,
            temp_dir=str(temp_dir),
        )
        self.info_path.write_text(json.dumps(asdict(info)))
        with contextlib.suppress(OSError):
            self.timing_path.write_text(f"{time.monotonic() - began:.1f}")
        return info

    @staticmethod
    def _wait_started(proc, log: Path, deadline: float) -> int | None:
        """``ray start``'s exit code, 0 as soon as it says the runtime started (on a busy
        machine the command itself was seen to linger for minutes after that, the head
        running), None at the deadline."""
        while time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                return code
            with contextlib.suppress(OSError):
                if b"Ray runtime started." in log.read_bytes():
                    return 0
            time.sleep(0.25)
        return None

    @property
    def timing_path(self) -> Path:
        return self.state_dir / "start-seconds"

    def expected_start_seconds(self) -> float:
        """How long starting the head took last time (a first guess before that)."""
        try:
            return float(self.timing_path.read_text())
        except (OSError, ValueError):
            return 15.0

    def _private_dir(self) -> Path:
        if self.fixed_private_dir is None:
            return Path(tempfile.mkdtemp(prefix=f"rs{os.getuid()}-", dir="/tmp"))
        private = self.fixed_private_dir
        private.mkdir(exist_ok=True, mode=0o700)
        st = private.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise RayHeadError(f"{private} is not a folder of this account's; remove it or "
                               "choose another folder for Ray")
        os.chmod(private, 0o700)  # our own folder, made for Ray alone
        return private

    def _forget_private(self, private: Path) -> None:
        shutil.rmtree(private / "ray", ignore_errors=True)
        if self.fixed_private_dir is None:
            shutil.rmtree(private, ignore_errors=True)

    def stop(self, timeout: float = 1) -> bool:
        """Stop the head's process group (SIGTERM, then SIGKILL after ``timeout`` s); True
        if one was running. What ends on SIGTERM (the dashboard, workers) ends within
        0.3 s; Ray's GCS server and raylet were still running 12 s later, so waiting
        longer only made stopping slow (a head keeps nothing that needs a clean end)."""
        info = self.info()
        if info is None:
            return False
        self._kill_group(info.pgid, timeout)
        self.info_path.unlink(missing_ok=True)
        shutil.rmtree(info.temp_dir, ignore_errors=True)  # Ray's sessions: sockets, logs
        try:
            Path(info.temp_dir).parent.rmdir()  # the private folder, when nothing else is in it
        except OSError:
            pass
        return True

    @staticmethod
    def _kill_group(pgid: int, timeout: float = 10) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not group_alive(pgid):
                    return
                time.sleep(0.2)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, waiting to be reaped by
    their parent, do not count). Cheap in the common cases: no such group (signal 0),
    or its leader running; only a group whose leader is gone or a zombie is looked for
    in all of ``/proc``."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, another account's
    leader = proc_stat(pgid)
    if leader is not None and int(leader[2]) == pgid and leader[0] != "Z":
        return True
    return any(fields is not None and int(fields[2]) == pgid and fields[0] != "Z"
               for fields in map(proc_stat, pids()))


def pids() -> list[str]:
    """The pids in ``/proc`` now."""
    return [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command's name (which may hold spaces
    and parentheses): state, parent, group, ...; None if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
