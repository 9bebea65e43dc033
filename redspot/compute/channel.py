"""Live output of remote cells: from the worker back to the kernel, as it comes.

A cell's task is an ordinary Ray task (the fastest kind); what it prints or displays
while it runs comes back on a side channel: the kernel listens on a TCP port of the
address Ray knows it by, and a worker that has output connects to it. A cell that
prints nothing opens no connection and costs nothing more than the task.

Every run has its own id and the channel a secret that goes to the worker inside the
task's arguments (through the token-protected cluster): a connection must present both
on its first line, or it is dropped. Messages are JSON lines, never pickles::

    {"secret": "…", "run": "…"}                 first line of a connection
    {"t": "stream", "name": "stdout", "text": "…"}
    {"t": "display", "data": {…}, "metadata": {…}}
    {"t": "report", "metrics": {…}}               a training run's progress
    {"t": "status", "text": "…"}                  what a training run is doing now
    {"t": "node", "rank": N, "node": {…}}         where a training worker runs (its cost)
    {"t": "end"}                                  the run's last message

The kernel delivers a run's events, in order, to the sink the run was opened with.

Through Ray Client the workers cannot reach the kernel: then a :class:`Relay` (a Ray
queue, an actor of the cluster's) carries the events, and the kernel drains it while it
waits for the run.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Sink = Callable[[tuple], None]

#: A worker's first line must come within this many seconds.
HELLO_TIMEOUT = 10
#: Largest line accepted (a display bundle with an image fits easily).
MAX_LINE = 64 << 20
#: Connections that may wait at once to show the secret (the longest waiting goes first).
MAX_PENDING = 64


@dataclass
class _Run:
    sink: Sink
    ended: threading.Event = field(default_factory=threading.Event)


class _Runs:
    """The runs an outlet delivers output to, by id."""

    def __init__(self):
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def _register(self, sink: Sink) -> str:
        run = uuid.uuid4().hex
        with self._lock:
            self._runs[run] = _Run(sink)
        return run

    def _run(self, run_id: str) -> _Run | None:
        with self._lock:
            return self._runs.get(run_id)

    def _forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


@dataclass(frozen=True)
class ChannelAddress:
    """What a task needs to send its output back (picklable, small)."""

    host: str
    port: int
    secret: str
    run: str


class OutputChannel(_Runs):
    """The kernel's end: accepts workers' connections and hands their events to sinks."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__()
        self.host = host
        self.secret = secrets.token_hex(16)
        self._server = socket.create_server((host, 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="redspot-output", daemon=True).start()

    def open(self, sink: Sink) -> ChannelAddress:
        """Register a run whose events go to ``sink``; its address goes with the task."""
        return ChannelAddress(self.host, self.port, self.secret, self._register(sink))

    def finish(self, address: ChannelAddress, streamed: bool, timeout: float = 10) -> None:
        """Forget a run; first wait for its last message when its worker sent output."""
        run = self._run(address.run)
        if run is not None and streamed:
            run.ended.wait(timeout)
        self._forget(address.run)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _accept(self):
        """One thread takes every connection's first line, with a deadline, before a
        connection gets anything more: a thread of its own only once it showed the
        channel's secret and a run's id. At most ``MAX_PENDING`` wait at once: a new one
        makes the longest waiting go."""
        sel = selectors.DefaultSelector()
        self._server.setblocking(False)
        sel.register(self._server, selectors.EVENT_READ)
        pending: dict[socket.socket, tuple[float, bytearray]] = {}
        try:
            while not self._closed:
                now = time.monotonic()
                for conn, (deadline, _) in list(pending.items()):
                    if now > deadline:
                        self._drop(sel, pending, conn)
                try:
                    events = sel.select(timeout=1)
                except OSError:
                    return
                for key, _ in events:
                    if key.fileobj is self._server:
                        self._take(sel, pending)
                    else:
                        self._read_hello(sel, pending, key.fileobj)
        finally:
            for conn in list(pending):
                self._drop(sel, pending, conn)
            sel.close()

    def _take(self, sel, pending) -> None:
        try:
            conn, _ = self._server.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._closed = True
            return
        if len(pending) >= MAX_PENDING:
            # the longest waiting goes, not the newest: a worker connects and speaks at
            # once, so connections held open without a word cannot keep it out
            oldest = min(pending, key=lambda c: pending[c][0])
            self._drop(sel, pending, oldest)
        conn.setblocking(False)
        pending[conn] = (time.monotonic() + HELLO_TIMEOUT, bytearray())
        sel.register(conn, selectors.EVENT_READ)

    def _read_hello(self, sel, pending, conn) -> None:
        _, buffer = pending[conn]
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(sel, pending, conn)
            return
        buffer += chunk
        if b"\n" not in buffer:
            if len(buffer) > 4096:
                self._drop(sel, pending, conn)
            return
        line, rest = bytes(buffer).split(b"\n", 1)
        sel.unregister(conn)
        del pending[conn]
        try:
            hello = json.loads(line)
            secret, run_id = str(hello["secret"]), str(hello["run"])
        except (ValueError, KeyError, TypeError):
            conn.close()
            return
        if not hmac.compare_digest(secret, self.secret):
            log.warning("Dropped an output connection with a wrong secret")
            conn.close()
            return
        run = self._run(run_id)
        if run is None:
            conn.close()
            return
        conn.setblocking(True)
        threading.Thread(target=self._serve, args=(conn, run, run_id, rest),
                         daemon=True).start()

    @staticmethod
    def _drop(sel, pending, conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
        pending.pop(conn, None)
        conn.close()

    def _serve(self, conn: socket.socket, run: _Run, run_id: str, rest: bytes):
        with conn, conn.makefile("rb") as stream:
            lines = _lines(rest, stream)
            try:
                for line in lines:
                    message = json.loads(line)
                    kind = message.get("t")
                    if kind == "end":
                        break
                    if kind == "stream":
                        run.sink(("stream", message["name"], message["text"]))
                    elif kind == "display":
                        run.sink(("display", message["data"], message.get("metadata", {})))
                    elif kind == "report":
                        run.sink(("report", message["metrics"]))
                    elif kind == "status":
                        run.sink(("status", str(message["text"])))
                    elif kind == "node":
                        run.sink(("node", int(message["rank"]), dict(message["node"])))
            except (OSError, ValueError, KeyError):
                log.exception("Output of run %s was cut short", run_id)
            finally:
                run.ended.set()


def _lines(rest: bytes, stream):
    """The lines after the first: what came with it, then the rest of the stream."""
    while b"\n" in rest:
        line, rest = rest.split(b"\n", 1)
        yield line
    first = stream.readline(MAX_LINE)
    if rest or first:
        yield rest + first
    yield from iter(lambda: stream.readline(MAX_LINE), b"")


@dataclass(frozen=True)
class RelayAddress:
    """A run's output through the session's relay queue (Ray Client)."""

    queue: object  # ray.util.queue.Queue
    run: str


class Relay(_Runs):
    """The kernel's end through Ray Client: a queue on the cluster, drained while waiting."""

    def __init__(self):
        from ray.util.queue import Queue

        super().__init__()
        self.queue = Queue(actor_options={"num_cpus": 0})

    def open(self, sink: Sink) -> RelayAddress:
        return RelayAddress(self.queue, self._register(sink))

    def drain(self) -> None:
        """Deliver what the queue holds to the runs' sinks."""
        size = self.queue.qsize()
        if not size:
            return
        for run_id, event in self.queue.get_nowait_batch(size):
            run = self._run(run_id)
            if run is None:
                continue
            if event[0] == "end":
                run.ended.set()
            else:
                run.sink(event)

    def finish(self, address: RelayAddress, streamed: bool, timeout: float = 10) -> None:
        run = self._run(address.run)
        deadline = time.monotonic() + timeout
        while run is not None and streamed and not run.ended.is_set():
            self.drain()
            if time.monotonic() > deadline:
                break
            run.ended.wait(0.05)
        self._forget(address.run)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.queue.shutdown()


class RemoteOutput:
    """The worker's end: connects on the first event, sends JSON lines, ends the run
    (or puts them on the relay queue)."""

    def __init__(self, address: ChannelAddress | RelayAddress | None):
        self.address = address
        self._sock: socket.socket | None = None
        self._sent = False
        self._lock = threading.Lock()
        self.failed = False

    def emit(self, event: tuple) -> bool:
        """Send one event; False when it could not go (the caller keeps it)."""
        if self.address is None or self.failed:
            return False
        if isinstance(self.address, RelayAddress):
            with self._lock:
                try:
                    self.address.queue.put((self.address.run, event))
                except Exception:
                    self.failed = True
                    return False
                self._sent = True
            return True
        if event[0] == "stream":
            message = {"t": "stream", "name": event[1], "text": event[2]}
        elif event[0] == "report":
            message = {"t": "report", "metrics": event[1]}
        elif event[0] == "status":
            message = {"t": "status", "text": event[1]}
        elif event[0] == "node":
            message = {"t": "node", "rank": event[1], "node": event[2]}
        else:
            message = {"t": "display", "data": event[1], "metadata": event[2]}
        with self._lock:
            try:
                if self._sock is None:
                    self._connect()
                self._sock.sendall(json.dumps(message).encode() + b"\n")
            except OSError:
                self.failed = True
                return False
        return True

    def _connect(self):
        a = self.address
        sock = socket.create_connection((a.host, a.port), timeout=10)
        sock.sendall(json.dumps({"secret": a.secret, "run": a.run}).encode() + b"\n")
        sock.settimeout(None)
        self._sock = sock

    def close(self) -> bool:
        """End the run; True if it had sent anything (the kernel then waits for the end)."""
        with self._lock:
            if isinstance(self.address, RelayAddress):
                if self._sent and not self.failed:
                    with contextlib.suppress(Exception):
                        self.address.queue.put((self.address.run, ("end",)))
                        return True
                return False
            if self._sock is None:
                return False
            with contextlib.suppress(OSError):
                self._sock.sendall(b'{"t": "end"}\n')
                self._sock.close()
            return not self.failed
