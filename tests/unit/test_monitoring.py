"""Grafana's dashboard and Prometheus' alert rules (helm/redspot/files/monitoring/):
they parse, their queries name only metrics that exist, every Redspot metric has a
panel, the alerts the operators asked for are there, and the chart ships them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from redspot.metrics import CATALOG

promql = pytest.importorskip("promql_parser", reason="promql-parser is in the test extra")

FILES = Path(__file__).resolve().parents[2] / "helm" / "redspot" / "files" / "monitoring"
DASHBOARD = json.loads((FILES / "redspot-dashboard.json").read_text())
RULES = yaml.safe_load((FILES / "redspot-alerts.yaml").read_text())


def _jupyterhub_metrics() -> set[str]:
    import jupyterhub.metrics as hub
    from prometheus_client.metrics import MetricWrapperBase

    names = set()
    for value in vars(hub).values():
        if isinstance(value, MetricWrapperBase):
            names.add(value._name + ("_total" if value._type == "counter" else ""))
            if value._type == "histogram":
                names |= {value._name + s for s in ("_bucket", "_sum", "_count")}
    return names


def known_metrics() -> set[str]:
    names = {"up"}  # Prometheus' own, per scrape target
    for name, (kind, *_rest) in CATALOG.items():
        names.add(name)
        if kind == "histogram":
            names |= {name + s for s in ("_bucket", "_sum", "_count")}
    return names | _jupyterhub_metrics()


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL query selects (raises ValueError if it does not parse)."""
    def walk(node, found):
        if node is None:
            return found
        if isinstance(node, list | tuple):
            for item in node:
                walk(item, found)
        elif type(node).__name__ == "VectorSelector":
            found.add(node.name)
        else:
            for attr in ("args", "expr", "lhs", "rhs", "param", "vector_selector"):
                if hasattr(node, attr):
                    walk(getattr(node, attr), found)
        return found
    return walk(promql.parse(expr), set())


def dashboard_queries() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"]
            for target in panel["targets"]]


def rule_queries() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for group in RULES["groups"]
            for rule in group["rules"]]


def test_the_walk_finds_every_selector_and_a_bad_query_fails():
    assert metric_names('sum(rate(a_total{x="1"}[5m])) / on() b + histogram_quantile('
                        '0.9, sum by (le) (rate(c_bucket[1h])))') == {"a_total", "b", "c_bucket"}
    with pytest.raises(ValueError):
        metric_names("sum(")


@pytest.mark.parametrize(("where", "expr"), dashboard_queries() + rule_queries())
def test_every_query_parses_and_names_only_metrics_that_exist(where, expr):
    unknown = metric_names(expr) - known_metrics()
    assert not unknown, f"{where}: {sorted(unknown)} are not metrics Redspot or JupyterHub expose"


def test_every_redspot_metric_has_a_panel():
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    shown = {name.removesuffix("_bucket") for name in shown}
    assert set(CATALOG) <= shown, sorted(set(CATALOG) - shown)


def test_the_dashboard_is_a_grafana_dashboard():
    assert DASHBOARD["uid"] == "redspot-overview" and DASHBOARD["schemaVersion"] >= 36
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])


def test_the_alerts_operators_need_are_there():
    rules = {rule["alert"]: rule for group in RULES["groups"] for rule in group["rules"]}
    idle = rules["RedspotGpuServerIdle"]
    assert "redspot_server_idle_seconds" in idle["expr"] and 'gpus!="0"' in idle["expr"]
    assert idle["expr"].rstrip().endswith("> 3600")
    assert "redspot_builds_total" in rules["RedspotBuildsFailing"]["expr"]
    assert rules["RedspotServiceDown"]["expr"].startswith("up{")
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["for"]


def test_the_chart_ships_the_dashboard_and_the_rules():
    from tests.unit.test_chart import find, render

    docs = render({"metrics": {"prometheusRule": {"enabled": True,
                                                  "labels": {"release": "kps"}},
                               "scrapeFrom": [{"namespaceSelector": {"matchLabels": {
                                   "kubernetes.io/metadata.name": "monitoring"}}}]}})
    dashboard = find(docs, "ConfigMap", "redspot-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["redspot.json"]) == DASHBOARD
    rules = find(docs, "ConfigMap", "redspot-alert-rules")
    assert yaml.safe_load(rules["data"]["redspot.rules.yaml"]) == RULES
    operator = find(docs, "PrometheusRule", "redspot")
    assert operator["spec"] == RULES and operator["metadata"]["labels"]["release"] == "kps"
    # Prometheus' namespace may reach the hub's and the services' metrics ports
    for policy, port in (("redspot-hub", 8081), ("redspot-services", 8080)):
        ingress = find(docs, "NetworkPolicy", policy)["spec"]["ingress"]
        assert {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": port}]} in ingress
    hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDSPOT_METRICS_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "redspot-secrets", "key": "metrics-token"}}} in hub["env"]
    # by default: no PrometheusRule (its CRD may be missing), nobody else scrapes
    plain = render({})
    assert not [d for d in plain if d["kind"] == "PrometheusRule"]
    assert len(find(plain, "NetworkPolicy", "redspot-hub")["spec"]["ingress"]) == 1
