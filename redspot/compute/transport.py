"""How a kernel reaches a Ray cluster: which cluster, and by which of Ray's three ways.

``driver``
    ``ray.init(address="host:port")``: the kernel joins the cluster as a driver. The
    fastest (a task's round trip is a couple of milliseconds) and what Redspot uses for
    a user's own cluster: locally a head on the same machine, on Kubernetes a RayCluster
    whose pods reach the notebook pod. Cell output comes back on the kernel's output
    channel (``channel.py``).
``client``
    ``ray.init("ray://host:10001")``: Ray Client, through one port of the head, for a
    kernel the cluster cannot reach back. Slower (10-15 ms a round trip) and less sturdy;
    cell output comes back through a queue actor on the cluster. Chosen by a ``ray://``
    address.
``jobs``
    Ray's Jobs API, over the dashboard's HTTP port: for runs that must outlive the kernel.
    :class:`Jobs` submits, follows and stops them.

Which cluster: an address given by the user; ``--cluster NAME`` (a RayCluster of the
server's namespace, on Kubernetes); otherwise the user's own: on Kubernetes the
RayCluster the spawner made (``$REDSPOT_RAY_CLUSTER``), locally a head started on
demand under the user's account (``local.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .kuberay import PORTS
from .local import LocalRayHead, auth_env

#: How many times a Ray Client connection is tried.
CLIENT_ATTEMPTS = 3
#: Where Kubernetes tells a pod its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9.\-]+:\d{1,5}$|^(ray://)?\[[0-9a-fA-F:]+\]:\d{1,5}$")


class TransportError(ValueError):
    """The cluster cannot be reached as asked; the message says what is allowed."""


@dataclass(frozen=True)
class Target:
    """A cluster and the way to reach it."""

    kind: str  # "driver", "client" or "in-process"
    address: str | None  # what ray.init gets
    description: str
    dashboard: str | None = None  # the dashboard's URL, where known
    own_head: bool = False  # the user's local head: started on demand
    autoscaling: bool = False  # nodes may be added for what is asked (KubeRay)
    users_own: bool = False  # the user's own cluster (its dashboard is proxied)

    @property
    def streams_by_channel(self) -> bool:
        """Whether the cluster's workers can connect back to the kernel."""
        return self.kind != "client"


def resolve(address: str | None = None, *, local: bool = False, cluster: str | None = None,
            environ: dict | None = None) -> Target:
    """The cluster a ``%ray_connect`` asks for (pure: it starts nothing)."""
    environ = os.environ if environ is None else environ
    if sum(bool(x) for x in (address, local, cluster)) > 1:
        raise TransportError("give one of ADDRESS, --local and --cluster NAME")
    if local:
        return Target("in-process", None, "a new Ray cluster inside this kernel")
    if address:
        address = address.strip()
        if not _ADDRESS.match(address):
            raise TransportError(
                f"{address!r} is not a Ray address: use HOST:PORT (the GCS port, e.g. "
                "10.0.0.5:6379) to join as a driver, or ray://HOST:PORT for Ray Client")
        if address.startswith("ray://"):
            return Target("client", address, f"the Ray cluster at {address} (Ray Client)")
        return Target("driver", address, f"the Ray cluster at {address}")
    name = cluster or environ.get("REDSPOT_RAY_CLUSTER")
    if name:
        if not _NAME.match(name):
            raise TransportError(f"--cluster: {name!r} is not a RayCluster name (lowercase "
                                 "letters, digits and '-', at most 63)")
        namespace = environ.get("REDSPOT_NAMESPACE") or _pod_namespace()
        if not namespace:
            raise TransportError("--cluster needs Kubernetes: no namespace is known here "
                                 "(REDSPOT_NAMESPACE is not set)")
        host = f"{name}-head-svc.{namespace}.svc"
        own = name == environ.get("REDSPOT_RAY_CLUSTER")
        return Target("driver", f"{host}:{PORTS['gcs-server']}",
                      f"{'your' if own else 'the'} Ray cluster {name}",
                      dashboard=f"http://{host}:{PORTS['dashboard']}", autoscaling=True,
                      users_own=own)
    return Target("driver", None, "your Ray cluster", own_head=True, users_own=True)


def _pod_namespace() -> str | None:
    try:
        return NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def _check_token_mode_seen() -> None:
    """Ray reads ``RAY_AUTH_MODE`` once, when it is first imported: a process that
    imported it before the token settings were made cannot join a token-protected
    cluster. Said at once, instead of after Ray's minutes of retries."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:  # another Ray: nothing to check
        return
    if not is_token_auth_enabled():
        raise ConnectionError(
            "Ray was imported in this process before its token settings were made (an "
            "`import ray` above %ray_connect?), and Ray reads them only once: this kernel "
            "cannot join the token-protected cluster. Restart the kernel and run "
            "%ray_connect before importing Ray (in a Redspot server the settings are "
            "there from the start).")


def _loopback_only(ray) -> None:
    """What ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` does, also when Ray was imported
    before it was set (an ``import ray`` above ``%ray_connect``): otherwise Ray rewrites
    the head's 127.0.0.1 into the machine's address, where nothing listens, and waits
    for it for minutes."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and getattr(constants, "ENABLE_RAY_CLUSTER", False):
        constants.ENABLE_RAY_CLUSTER = False


def connect(target: Target, head: LocalRayHead | None = None, cpus: float | None = None,
            gpus: int | None = None, progress=None) -> Target:
    """Connect this process to ``target`` (starting the user's head if it is theirs);
    return the target with its address and dashboard filled in. ``progress(text)`` is
    told what takes time, before it does."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    say = progress or (lambda text: None)
    if target.own_head:
        head = head or LocalRayHead()
        # before Ray reads them: its token and the loopback-only switch
        os.environ.update(auth_env(head.token_path))
        if head.info() is None:
            say(f"Starting your Ray cluster (about {head.expected_start_seconds():.0f} s)...")
        info = head.start(cpus=cpus, gpus=gpus)
        target = Target("driver", info.address, f"your Ray cluster at {info.address}",
                        dashboard=info.dashboard, own_head=True, users_own=True)
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _check_token_mode_seen()
    if target.kind == "in-process":
        ray.init(logging_level="ERROR", log_to_driver=False, include_dashboard=False,
                 num_cpus=int(cpus) if cpus else None)
    else:
        options = {}
        if channel_host(target) == "127.0.0.1" and target.kind == "driver":
            # a one-machine cluster: this driver is on the loopback address too, whatever
            # Ray read from its environment when it was imported
            options["_node_ip_address"] = "127.0.0.1"
            _loopback_only(ray)
        # Ray Client's server sometimes fails to start a connection's server (about one
        # connect in six here): a client connect is tried again before giving up
        attempts = CLIENT_ATTEMPTS if target.kind == "client" else 1
        for attempt in range(1, attempts + 1):
            try:
                context = ray.init(address=target.address, logging_level="ERROR",
                                   log_to_driver=False, **options)
                break
            except (ConnectionError, RuntimeError):
                if attempt == attempts:
                    raise
                with contextlib.suppress(Exception):
                    ray.shutdown()
                time.sleep(attempt)
        url = getattr(context, "dashboard_url", None)
        if target.dashboard is None and url and target.kind == "driver":
            target = replace(target, dashboard=url if "//" in url else f"http://{url}")
    return target


def channel_host(target: Target) -> str:
    """The address this kernel's output channel listens on: one the workers reach."""
    if target.own_head or target.kind == "in-process" or (
            target.address or "").startswith(("127.", "localhost:")):
        return "127.0.0.1"
    import ray.util

    return ray.util.get_node_ip_address()


class Jobs:
    """Ray's Jobs API on a cluster's dashboard: runs that outlive the kernel.

    The token goes in Ray's own header (``X-Ray-Authorization``), which proxies pass on.
    """

    def __init__(self, dashboard: str, token: str):
        from ray.job_submission import JobSubmissionClient

        self.client = JobSubmissionClient(
            dashboard, headers={"X-Ray-Authorization": f"Bearer {token}"})

    #: how long a submission is retried while the head's dashboard has no job agent to
    #: give it to (a head just started, or one under load): Ray answers "try again later"
    SUBMIT_PATIENCE = 180.0

    def submit(self, entrypoint: str, *, runtime_env: dict | None = None,
               metadata: dict | None = None, submission_id: str | None = None) -> str:
        deadline = time.monotonic() + self.SUBMIT_PATIENCE
        delay = 0.5
        while True:
            try:
                return self.client.submit_job(
                    entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata,
                    submission_id=submission_id)
            except RuntimeError as e:
                retry = "please try again later" in str(e)
                if retry and submission_id and self._exists(submission_id):
                    # the agent took it, only its answer was late
                    return submission_id
                if not retry or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _exists(self, job_id: str) -> bool:
        try:
            self.client.get_job_info(job_id)
        except RuntimeError:
            return False
        return True

    def status(self, job_id: str) -> str:
        return str(self.client.get_job_status(job_id).value)

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)

    async def follow(self, job_id: str):
        async for lines in self.client.tail_job_logs(job_id):
            yield lines

    def stop(self, job_id: str) -> bool:
        return self.client.stop_job(job_id)
