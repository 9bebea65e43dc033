"""One Redspot per data folder, and nothing left of the one before.

``redspot up`` holds a lock on its data folder for as long as it runs
(``hub/redspot-up.lock``): a second one on the same folder is refused with the first
one's pid. A hub that was killed (SIGKILL, an OOM kill, a power cut of the process)
releases the lock with its death, but the services it started run on as orphans. Each
Redspot service says who it is when it starts (``record_service``: ``.service.json`` in
its own folder, with its pid and the kernel's start time of that pid), and the next
``redspot up``, holding the lock, stops each of them and its children
(``stop_leftover_services``) before it starts its own: never two copies of a service on
the same data.

Processes are found by pid and checked by their start time (``/proc/<pid>/stat``) and
owner, never by name: a pid the kernel has given to another process since is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path

from ..compute.local import pids, proc_stat

RECORD = ".service.json"
LOCK = "redspot-up.lock"
#: The services whose records the next hub reads (their folders: <data>/<name>).
SERVICES = ("environments", "models", "sharing", "warehouse")


class DataFolderBusy(RuntimeError):
    """Another ``redspot up`` runs on this data folder."""


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks after boot), None if it is gone."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def record_service(folder: str | os.PathLike) -> int:
    """Called by a service at its start: who it is, for the next hub after a crash.
    First, what a killed run of this service left (``stop_orphans``); how many."""
    stopped = stop_orphans(Path(folder))
    if stopped:
        print(f"Stopped {_processes(stopped)} that a killed run of this service left "
              "running", file=sys.stderr, flush=True)
    path = Path(folder) / RECORD
    pid = os.getpid()
    data = json.dumps({"pid": pid, "started": start_time(pid)})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    return stopped


def stop_orphans(folder: Path, grace: float = 5.0, uid: int | None = None) -> int:
    """What the last run of the service of ``folder`` left when it was killed. JupyterHub
    starts a service in a session of its own and restarts it when it exits; killed
    (SIGKILL, out of memory), its children run on as orphans (MLflow's server, holding
    the port the next run needs). They keep the group of the killed one: its pid. Those
    this account (or ``uid``) owns, started since it started, are stopped (SIGTERM,
    then SIGKILL); a recorded process that still runs is another copy's, and is left
    alone."""
    record = _read_record(folder)
    if record is None or record["pid"] == os.getpid():
        return 0
    if start_time(record["pid"]) == record["started"]:
        return 0  # it runs: not a killed run's
    uid = os.getuid() if uid is None else uid
    found = []
    for pid in pids():
        fields = proc_stat(pid)
        if not fields or int(fields[2]) != record["pid"] or int(fields[19]) < record["started"]:
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid == uid:
                found.append(int(pid))
    _stop(found, grace)
    return len(found)


def _stop(pids: list[int], grace: float) -> None:
    """SIGTERM, then SIGKILL to what is left after ``grace`` s; back once all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not any(_alive(pid) for pid in pids):
            return


_HELD: dict[str, object] = {}


def hold_data_folder(state_dir: Path) -> None:
    """Lock the data folder for this process's life; DataFolderBusy if another process
    holds it."""
    path = Path(state_dir) / LOCK
    if str(path) in _HELD:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise DataFolderBusy(
            f"another redspot up (pid {holder}) runs on this data folder; stop it first, "
            f"or give this one a data folder of its own (--data-dir)") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    _HELD[str(path)] = lock


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for pid in pids():
        fields = proc_stat(pid)
        if fields:
            found.setdefault(int(fields[1]), []).append(int(pid))
    return found


def _tree(pid: int) -> list[int]:
    children, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _read_record(folder: Path) -> dict | None:
    try:
        fd = os.open(folder / RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > 4096:
            return None
        data = json.loads(os.read(fd, 4096))
        record = {"pid": int(data["pid"]), "started": int(data["started"]), "uid": st.st_uid}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)
    return record


def stop_leftover_services(data_dir: Path, log=print, grace: float = 5.0) -> list[str]:
    """Stop the services an earlier ``redspot up`` of this data folder left running
    (call it holding the data folder's lock). Returns what it stopped, as log lines."""
    stopped = []
    for name in SERVICES:
        folder = Path(data_dir) / name
        record = _read_record(folder)
        if record is None:
            continue
        pid = record["pid"]
        try:
            owner = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            owner = None
        # the same process (its start time), run by the account that wrote the record
        if owner is None or owner != record["uid"] or start_time(pid) != record["started"]:
            # gone (or another's now): what it started may run on, orphaned
            orphans = stop_orphans(folder, grace, uid=record["uid"])
            if orphans:
                line = (f"Stopped {_processes(orphans)} that a killed {name} service "
                        f"(pid {pid}) left running")
                log(line)
                stopped.append(line)
            with contextlib.suppress(OSError):
                (folder / RECORD).unlink()
            continue
        tree = _tree(pid)
        _stop(tree, grace)
        line = (f"Stopped the {name} service (pid {pid}, {len(tree)} processes) that an "
                f"earlier redspot up of this data folder left running")
        log(line)
        stopped.append(line)
        with contextlib.suppress(OSError):
            (folder / RECORD).unlink()
    return stopped


def _processes(n: int) -> str:
    return f"{n} process" + ("" if n == 1 else "es")


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"
