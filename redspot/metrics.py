"""Redspot's Prometheus metrics: every one is declared here, with where it is exposed.

The hub's own (spawns, caps, culls, servers, Ray clusters) join JupyterHub's on the
hub's ``/hub/metrics``; each service exposes its own on ``<service>/metrics``. Every
endpoint is behind the hub's auth: a token with ``read:metrics`` (JupyterHub's scope;
on services with ``access:services`` too), which ``redspot up`` gives the
``redspot-metrics`` service (docs/operations.md).

Each process registers only its own metrics (``hub_metrics()``, ``service_metrics(
"environments")``...), in prometheus_client's default registry, once::

    metrics = service_metrics("environments")
    metrics["redspot_builds_total"].labels(builder="venv", outcome="ready").inc()

``CATALOG`` lists them all: the Grafana dashboard and the alert rules may name only
these (and JupyterHub's own, and Prometheus' ``up``); a test checks that.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

#: name -> (type, help, labels, where): where is "hub" or a service's name
CATALOG: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "redspot_spawns_total": (
        "counter", "Servers asked to start, by profile and outcome (ready, failed)",
        ("profile", "outcome"), "hub"),
    "redspot_spawn_duration_seconds": (
        "histogram", "Seconds from a server's start to it answering, by profile",
        ("profile",), "hub"),
    "redspot_spawn_refusals_total": (
        "counter", "Spawns refused by a group's cap, by group and cap (servers, gpus)",
        ("group", "cap"), "hub"),
    "redspot_servers_culled_total": (
        "counter", "Servers that stopped themselves (their idle limit; or File > Shut Down, "
        "which the hub cannot tell apart), by profile",
        ("profile",), "hub"),
    "redspot_servers_running": (
        "gauge", "Servers running or starting now, by profile", ("profile",), "hub"),
    "redspot_server_gpus": (
        "gauge", "GPUs of the servers running now", (), "hub"),
    "redspot_server_idle_seconds": (
        "gauge", "Seconds since each running server was last used (the hub's activity)",
        ("user", "profile", "gpus"), "hub"),
    "redspot_ray_clusters": (
        "gauge", "Users' Ray clusters up now (with at least one node running)", (), "hub"),
    "redspot_ray_nodes": (
        "gauge", "Nodes of users' Ray clusters running now, by profile", ("profile",), "hub"),
    "redspot_ray_cpus": (
        "gauge", "CPUs of users' Ray nodes running now (their profiles')", (), "hub"),
    "redspot_ray_gpus": (
        "gauge", "GPUs of users' Ray nodes running now (their profiles')", (), "hub"),
    "redspot_builds_total": (
        "counter", "Environment builds ended, by builder and outcome (ready, failed)",
        ("builder", "outcome"), "environments"),
    "redspot_build_duration_seconds": (
        "histogram", "Seconds an environment build took, by builder and outcome",
        ("builder", "outcome"), "environments"),
    "redspot_builds_running": (
        "gauge", "Environment builds running now", (), "environments"),
    "redspot_model_registrations_total": (
        "counter", "Model versions registered", (), "models"),
    "redspot_warehouse_grants_total": (
        "counter", "Warehouse credentials granted to users, by connection and engine",
        ("connection", "engine"), "warehouse"),
    "redspot_shares_total": (
        "counter", "Shares made and revoked, by action (made, revoked)", ("action",),
        "sharing"),
}

#: Buckets for spawns and builds: seconds to tens of minutes (a GPU node, a big build).
SLOW_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


def _make(name: str):
    from prometheus_client import Counter, Gauge, Histogram

    kind, help_text, labels, _ = CATALOG[name]
    if kind == "histogram":
        return Histogram(name, help_text, labels, buckets=SLOW_BUCKETS)
    cls = Counter if kind == "counter" else Gauge
    # a counter's name in the catalog ends in _total; prometheus_client adds it back
    return cls(name.removesuffix("_total") if kind == "counter" else name, help_text, labels)


def _metrics_of(where: str, skip: Iterable[str] = ()) -> dict:
    return {name: _make(name) for name, (_, _, _, w) in CATALOG.items()
            if w == where and name not in skip}


#: Hub gauges computed at each scrape (``HubCollector``), not kept as objects.
HUB_SNAPSHOT = ("redspot_servers_running", "redspot_server_gpus",
                "redspot_server_idle_seconds", "redspot_ray_clusters", "redspot_ray_nodes",
                "redspot_ray_cpus", "redspot_ray_gpus")


@functools.cache
def hub_metrics() -> dict:
    """The hub's counters and histograms, registered once per process."""
    return _metrics_of("hub", skip=HUB_SNAPSHOT)


@functools.cache
def service_metrics(service: str) -> dict:
    """A service's metrics, registered once per process."""
    return _metrics_of(service)


class HubCollector:
    """The hub's gauges, read at each scrape from what the hub holds: its users'
    active servers (``servers()``: (user, profile or None, last activity or None,
    gpus)) and their Ray nodes (``ray_nodes()``: user -> [profile]), with the catalog
    for the nodes' CPUs and GPUs."""

    def __init__(self, servers: Callable[[], Iterable[tuple]],
                 ray_nodes: Callable[[], dict], catalog: Callable[[], dict]):
        self.servers, self.ray_nodes, self.catalog = servers, ray_nodes, catalog

    def describe(self):
        return []  # collected at each scrape only: nothing to check at registration

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        def family(name, labels=()):
            return GaugeMetricFamily(name, CATALOG[name][1], labels=list(labels))

        now = time.time()
        running, gpus = {}, 0
        idle = family("redspot_server_idle_seconds", CATALOG["redspot_server_idle_seconds"][2])
        for user, profile, last_activity, server_gpus in self.servers():
            name = profile or "unknown"
            running[name] = running.get(name, 0) + 1
            gpus += server_gpus
            if last_activity is not None:
                idle.add_metric([user, name, str(server_gpus)], max(0.0, now - last_activity))
        servers = family("redspot_servers_running", ("profile",))
        for name, count in sorted(running.items()):
            servers.add_metric([name], count)
        yield servers
        server_gpus = family("redspot_server_gpus")
        server_gpus.add_metric([], gpus)
        yield server_gpus
        yield idle

        catalog = self.catalog()
        clusters = {user: nodes for user, nodes in self.ray_nodes().items() if nodes}
        by_profile: dict[str, int] = {}
        cpus = ray_gpus = 0.0
        for nodes in clusters.values():
            for profile in nodes:
                by_profile[profile] = by_profile.get(profile, 0) + 1
                known = catalog.get(profile)
                if known is not None:
                    cpus += known.vcpus
                    ray_gpus += known.gpus
        up = family("redspot_ray_clusters")
        up.add_metric([], len(clusters))
        yield up
        nodes_family = family("redspot_ray_nodes", ("profile",))
        for name, count in sorted(by_profile.items()):
            nodes_family.add_metric([name], count)
        yield nodes_family
        for name, value in (("redspot_ray_cpus", cpus), ("redspot_ray_gpus", ray_gpus)):
            metric = family(name)
            metric.add_metric([], value)
            yield metric


_hub_collector: list = []


def register_hub(servers: Callable[[], Iterable[tuple]], ray_nodes: Callable[[], dict],
                 catalog: Callable[[], dict]) -> None:
    """Once per hub process: the hub's counters, and its gauges (``HubCollector``)."""
    hub_metrics()
    if _hub_collector:
        return
    from prometheus_client import REGISTRY

    collector = HubCollector(servers, ray_nodes, catalog)
    REGISTRY.register(collector)
    _hub_collector.append(collector)


def exposition(registry=None) -> tuple[bytes, str]:
    """The registry's metrics in Prometheus' text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST
