"""The kernel's connection to Ray: connect, describe, ship values, and run cells.

The only module of the magics' side that imports ray. Which cluster and how to reach it
is ``transport.py``'s decision; this module holds the connection, the output channel
that brings back what remote cells print, and the cache of large values already in the
object store (``shipping.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from . import cells, transport
from .channel import OutputChannel, Relay
from .local import LocalRayHead
from .shipping import InputCache, Shipment

#: How long a cancelled cell gets to stop (KeyboardInterrupt) before its worker is killed.
CANCEL_GRACE = 3.0
#: Default seconds without use after which a kernel lets go of the user's own head.
DEFAULT_IDLE_TIMEOUT = 3600


def idle_timeout() -> int:
    """``$REDSPOT_RAY_IDLE_TIMEOUT`` (set by the spawner), in seconds; 0: never."""
    try:
        return max(0, int(os.environ.get("REDSPOT_RAY_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT)))
    except ValueError:
        return DEFAULT_IDLE_TIMEOUT


def idle_check_interval(timeout: float) -> float:
    """How often kernels and the server look at idleness (both must agree: the server
    stops the head two of these after the kernels let go of it)."""
    return min(60.0, max(0.5, timeout / 4))


class ResourceError(ValueError):
    """No node of the cluster can run the request; the message lists what there is."""


class NotConnected(RuntimeError):
    """The kernel is not connected to a cluster (any more)."""


@dataclass
class RemoteCellError(Exception):
    """A cell failed on the cluster: the remote error's type, message and traceback."""

    name: str
    value: str
    traceback: str
    error_type: type | None = None

    def __str__(self):
        return f"{self.name}: {self.value}"


def _ray():
    import ray

    return ray


class RunOutput:
    """Where a run's output goes: kept until someone shows it, then passed on live.

    A cell that waits for its run attaches at once; an ``--async`` run keeps its output
    until ``%ray_result`` (or the handle) attaches.
    """

    def __init__(self):
        self.events: list[tuple] = []
        self._target: Callable | None = None
        self._lock = threading.Lock()

    def __call__(self, event: tuple) -> None:
        with self._lock:
            if self._target is None:
                self.events.append(event)
                return
            self._target(event)

    def attach(self, target: Callable) -> None:
        with self._lock:
            for event in self.events:
                target(event)
            self._target = target

    def detach(self) -> None:
        with self._lock:
            self._target = None


class RemoteRun:
    """One cell sent to the cluster: wait for it, ask whether it is done, or cancel it."""

    def __init__(self, session: RaySession):
        self.session = session
        self.ref = None
        self.channel_address = None
        self.output = RunOutput()
        self.started = time.monotonic()
        #: what the run's task reserved: cpus, gpus, memory (bytes; 0: none asked)
        self.reserved: dict = {}
        self._result: dict | None = None
        self._lock = threading.Lock()

    def done(self) -> bool:
        if self._result is not None:
            return True
        self.session.pump()
        ready, _ = _ray().wait([self.ref], timeout=0)
        return bool(ready)

    def wait(self, timeout: float | None = None) -> dict:
        """The run's result (see :func:`cells.execute`); cancels the run when the wait is
        interrupted or ``timeout`` s pass (then TimeoutError)."""
        with self._lock:
            if self._result is None:
                try:
                    self._result = self._wait(timeout)
                except BaseException:
                    self.cancel()
                    raise
                finally:
                    self.session.touch()
            return self._result

    def _wait(self, timeout):
        ray = _ray()
        deadline = None if timeout is None else self.started + timeout
        relayed = self.session.relay is not None
        while True:
            # in slices: a running cell counts as use of the cluster (see touch); through
            # Ray Client its output is fetched from the relay between slices
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"the cell did not finish in {timeout:g} s; it was cancelled")
            step = 0.2 if relayed else 60
            try:
                result = ray.get(self.ref, timeout=step if left is None else min(left, step))
                break
            except ray.exceptions.GetTimeoutError:
                self.session.touch()
                self.session.pump()
        self._release(result.get("streamed", False))
        for event in result.get("output", ()):
            self.output(event)
        return result

    def cost(self) -> str:
        """What the finished run cost (:func:`redspot.cost.cost_sentence`): the share of
        its node it reserved x the node's price x the time it ran there; empty when it
        did not run on a Redspot node."""
        from ..cost import Node, Use, cost_sentence

        result = self._result or {}
        node = Node.from_dict(result.get("node") or {})
        if node is None:
            return ""
        return cost_sentence([Use(node, **self.reserved)], result.get("seconds", 0.0))

    def cancel(self) -> None:
        """Stop the run: KeyboardInterrupt in the cell, then its worker killed if it does
        not stop within a few seconds."""
        if self._result is not None:
            return
        ray = _ray()
        with contextlib.suppress(Exception):
            ray.cancel(self.ref, force=False)
            ready, _ = ray.wait([self.ref], timeout=CANCEL_GRACE)
            if not ready:
                ray.cancel(self.ref, force=True)
        self._release(streamed=False)

    def _release(self, streamed: bool) -> None:
        """Forget the run's output address (after its last output, when it sent any)."""
        outlet = self.session.outlet
        if self.channel_address is not None and outlet is not None:
            outlet.finish(self.channel_address, streamed)


class RaySession:
    def __init__(self, head: LocalRayHead | None = None):
        self.head = head
        self.target: transport.Target | None = None
        self.channel: OutputChannel | None = None  # driver: workers connect to the kernel
        self.relay: Relay | None = None  # Ray Client: output through a queue actor
        self.cache: InputCache | None = None
        self.last_used = time.monotonic()
        self._nodes: tuple[float, list] | None = None
        self._remote: dict = {}
        self._runs: weakref.WeakSet = weakref.WeakSet()
        self.idle_disconnected = False
        self._watch: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self.target is not None and _ray().is_initialized()

    @property
    def address(self) -> str | None:
        return self.target.address if self.target else None

    @property
    def dashboard(self) -> str | None:
        return self.target.dashboard if self.target else None

    def connect(self, address: str | None = None, local: bool = False,
                cluster: str | None = None, progress=None) -> str:
        """Join a cluster (see ``transport.resolve``); say which. ``progress(text)`` is
        told what takes time (starting the user's head)."""
        target = transport.resolve(address, local=local, cluster=cluster)
        self.disconnect()
        self.target = transport.connect(
            target, head=self.head, cpus=_env_float("REDSPOT_CPUS"),
            gpus=_env_int("REDSPOT_GPUS"), progress=progress)
        if self.target.streams_by_channel:
            self.channel = OutputChannel(transport.channel_host(self.target))
        else:
            self.relay = Relay()
        self.cache = InputCache(_ray().put)
        self._nodes = None
        self.touch()
        return self.target.description

    def watch_idle(self, busy: Callable[[], bool], timeout: int | None = None) -> None:
        """Let go of the user's own head after ``timeout`` s without use, so that it may
        stop (a driver whose head stops dies with it: the kernel would die). In use: a
        run not yet collected, or ``busy()`` (the kernel runs a cell)."""
        timeout = idle_timeout() if timeout is None else timeout
        if not timeout or self._watch is not None:
            return

        def watch():
            interval = idle_check_interval(timeout)
            while True:
                time.sleep(interval)
                if self.target is None or not self.target.own_head:
                    continue
                if busy() or any(not run.done() for run in list(self._runs)):
                    self.touch()
                elif time.monotonic() - self.last_used >= timeout:
                    with contextlib.suppress(Exception):
                        self.disconnect()
                    self.idle_disconnected = True

        self._watch = threading.Thread(target=watch, name="redspot-ray-idle", daemon=True)
        self._watch.start()

    def disconnect(self, stop_head: bool = False) -> None:
        ray = _ray() if self.target is not None or stop_head else None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        self.cache = None
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        if stop_head:
            (self.head or LocalRayHead()).stop()
        self.target = None

    @property
    def outlet(self) -> OutputChannel | Relay | None:
        """Where remote cells' output comes in."""
        return self.channel or self.relay

    def pump(self) -> None:
        """Fetch relayed output (Ray Client); the channel needs no help."""
        if self.relay is not None:
            with contextlib.suppress(Exception):
                self.relay.drain()

    def touch(self) -> None:
        """Note that the cluster is in use (the user's local head stops when idle)."""
        self.last_used = time.monotonic()
        if self.target is not None and self.target.own_head:
            (self.head or LocalRayHead()).touch()

    def nodes(self, max_age: float = 5.0) -> list[dict]:
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > max_age:
            alive = [n for n in _ray().nodes() if n.get("Alive")]
            self._nodes = (now, alive)
        return self._nodes[1]

    def status(self) -> dict:
        ray = _ray()
        return {"address": self.address, "dashboard": self.dashboard,
                "transport": self.target.kind if self.target else None,
                "own": bool(self.target and self.target.users_own),
                "nodes": len(self.nodes(max_age=0)),
                "resources": ray.cluster_resources(),
                "available": ray.available_resources()}

    def check_resources(self, cpus: float, gpus: float, memory: int | None) -> None:
        """Refuse at once what no node could ever run, instead of waiting forever.

        On an autoscaling cluster (KubeRay) a node that fits may be added: the error then
        says so, and the caller may wait instead (``self.target.autoscaling``)."""
        wanted = {"CPU": cpus, "GPU": gpus, "memory": memory or 0}
        for node in self.nodes():
            have = node.get("Resources", {})
            if all(have.get(k, 0) >= v for k, v in wanted.items() if v):
                return
        described = "; ".join(
            f"{n.get('NodeManagerAddress', '?')}: " + ", ".join(
                f"{k} {_fmt(k, v)}" for k, v in sorted(n.get("Resources", {}).items())
                if k in ("CPU", "GPU", "memory"))
            for n in self.nodes()
        ) or "no nodes"
        asked = ", ".join(f"{k} {_fmt(k, v)}" for k, v in wanted.items() if v)
        raise ResourceError(f"no node of the cluster has {asked}; the cluster has: {described}")

    def ship(self, values: dict, alive: Callable[[str], bool]) -> Shipment:
        """The cell's inputs, large ones by reference (see ``shipping.py``); references
        of names the notebook no longer has are let go."""
        if self.cache is None:
            raise NotConnected("not connected to a Ray cluster: run %ray_connect")
        self.cache.forget(keep=alive)
        return self.cache.prepare(values)

    def submit(self, code: str, shipment: Shipment, writes: list[str], last_expression: bool,
               cpus: float = 1, gpus: float = 0, memory: int | None = None,
               runtime_env: dict | None = None) -> RemoteRun:
        """Start the cell on the cluster; its output is kept in the run's ``output``."""
        if not self.connected:
            raise NotConnected("not connected to a Ray cluster: run %ray_connect")
        self.touch()
        run = RemoteRun(self)
        run.reserved = {"cpus": cpus, "gpus": gpus, "memory": memory or 0}
        self._runs.add(run)
        run.channel_address = self.outlet.open(run.output)
        spec = (code, writes, last_expression, shipment.inline, run.channel_address,
                list(shipment.refs))
        task = self._task(cpus, gpus, memory, runtime_env)
        run.ref = task.remote(spec, *shipment.refs.values())
        return run

    def _task(self, cpus, gpus, memory, runtime_env):
        """The cell's remote function with these options (made once: options cost)."""
        key = (cpus, gpus, memory, json.dumps(runtime_env, sort_keys=True))
        task = self._remote.get(key)
        if task is None:
            task = _ray().remote(cells.run_cell).options(
                num_cpus=cpus, num_gpus=gpus, memory=memory,
                runtime_env=runtime_env or None, max_retries=0)
            if len(self._remote) > 64:
                self._remote.clear()
            self._remote[key] = task
        return task


def _env_int(name):
    value = os.environ.get(name)
    return int(float(value)) if value else None


def _env_float(name):
    value = os.environ.get(name)
    return float(value) if value else None


def _fmt(kind, value):
    return f"{value / 1024**3:.1f} GiB" if kind == "memory" else f"{value:g}"
