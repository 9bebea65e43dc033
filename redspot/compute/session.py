"""The kernel's connection to Ray: connect, describe, and run cells remotely.

The only module of the magics' side that imports ray. A kernel on the same machine as
the cluster joins it as a driver (``ray.init(address=…)``): the fastest transport, with
task round trips of a few milliseconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import cells
from .local import LocalRayHead, auth_env


class ResourceError(ValueError):
    """No node of the cluster can run the request; the message lists what there is."""


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


class RaySession:
    def __init__(self):
        self.address: str | None = None
        self.dashboard: str | None = None
        self._task = None
        self._nodes: tuple[float, list] | None = None

    @property
    def connected(self) -> bool:
        return _ray().is_initialized()

    def connect(self, address: str | None = None, local: bool = False) -> str:
        """Join ``address``, a new in-process cluster (``local``), or the user's own head."""
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        head = None
        if address is None and not local:
            # before ray is imported: it reads some of these when it is
            head = LocalRayHead()
            os.environ.update(auth_env(head.token_path))
        ray = _ray()
        if ray.is_initialized():
            ray.shutdown()
        if local:
            ray.init(logging_level="ERROR", log_to_driver=False,
                     include_dashboard=False, num_cpus=_env_int("REDSPOT_CPUS"))
            self.address, self.dashboard = "local", None
            return "a new local Ray cluster in this kernel"
        if head is not None:
            info = head.start(cpus=_env_float("REDSPOT_CPUS"), gpus=_env_int("REDSPOT_GPUS"))
            address, self.dashboard = info.address, info.dashboard
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        self.address = address
        return f"your Ray cluster at {address}"

    def disconnect(self, stop_head: bool = False) -> None:
        ray = _ray()
        if ray.is_initialized():
            ray.shutdown()
        if stop_head:
            LocalRayHead().stop()
        self.address = None

    def nodes(self, max_age: float = 5.0) -> list[dict]:
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > max_age:
            alive = [n for n in _ray().nodes() if n.get("Alive")]
            self._nodes = (now, alive)
        return self._nodes[1]

    def status(self) -> dict:
        ray = _ray()
        return {"address": self.address, "dashboard": self.dashboard,
                "nodes": len(self.nodes(max_age=0)),
                "resources": ray.cluster_resources(),
                "available": ray.available_resources()}

    def check_resources(self, cpus: float, gpus: float, memory: int | None) -> None:
        """Refuse at once what no node could ever run, instead of waiting forever."""
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

    def run(self, code: str, inputs: dict, writes: list[str], last_expression: bool,
            cpus: float = 1, gpus: float = 0, memory: int | None = None,
            timeout: float | None = None, runtime_env: dict | None = None) -> Iterator:
        """Submit the cell; yield ("stream", name, text) events, then ("result", dict)."""
        ray = _ray()
        task = _remote_cell().options(num_cpus=cpus, num_gpus=gpus, memory=memory,
                                      runtime_env=runtime_env)
        self._task = generator = task.remote(code, inputs, writes, last_expression)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while True:
                # short waits: a deadline is kept and Ctrl-C is seen while the cell runs
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the cell did not finish in {timeout} s; "
                                       "it was cancelled")
                ready, _ = ray.wait([generator], timeout=0.2 if left is None else min(0.2, left))
                if not ready:
                    continue
                try:
                    ref = next(generator)
                except StopIteration:
                    return
                yield ray.get(ref)
        except BaseException:
            self.cancel()
            raise
        finally:
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            try:
                _ray().cancel(self._task, force=True)
            except Exception:  # already finished
                pass


_REMOTE = None


def _remote_cell():
    global _REMOTE
    if _REMOTE is None:
        _REMOTE = _ray().remote(num_returns="streaming")(cells.run_cell_generator)
    return _REMOTE


def _env_int(name):
    value = os.environ.get(name)
    return int(float(value)) if value else None


def _env_float(name):
    value = os.environ.get(name)
    return float(value) if value else None


def _fmt(kind, value):
    return f"{value / 1024**3:.1f} GiB" if kind == "memory" else f"{value:g}"
