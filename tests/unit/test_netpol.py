"""The NetworkPolicy evaluator the chart's tests rely on (tests/netpol.py), on cases
whose answers Kubernetes' documentation gives."""

from tests.netpol import Endpoint, allowed

A = Endpoint("a", "10.0.0.1", "team", {"app": "a", "tier": "web"})
B = Endpoint("b", "10.0.0.2", "team", {"app": "b"})
C = Endpoint("c", "10.0.0.3", "other", {"app": "a"})
OUT = Endpoint("out", "8.8.8.8")


def policy(namespace, selector, types, ingress=None, egress=None):
    spec = {"podSelector": selector, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def test_no_policy_allows_everything_and_an_empty_rule_list_denies():
    assert allowed([], A, B, 80) and allowed([], OUT, A, 22)
    deny = [policy("team", {}, ["Ingress"], ingress=[])]
    assert not allowed(deny, A, B, 80) and not allowed(deny, OUT, A, 80)
    assert allowed(deny, A, OUT, 80)  # egress is not isolated


def test_pod_selectors_stay_in_the_policys_namespace_unless_a_namespace_selector_says():
    only_a = [policy("team", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])]
    assert allowed(only_a, A, B, 80) and not allowed(only_a, C, B, 80)
    any_ns = [policy("team", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[
        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "a"}}}]}])]
    assert allowed(any_ns, C, B, 80)


def test_match_expressions_ports_and_protocols():
    rule = [policy("team", {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                   ["Ingress"], ingress=[{"ports": [{"protocol": "TCP", "port": 443}]}])]
    assert allowed(rule, B, A, 443) and not allowed(rule, B, A, 80)
    assert not allowed(rule, B, A, 443, "UDP")
    assert allowed(rule, A, B, 80)  # B has no tier: not selected, not isolated
    not_in = [policy("team", {"matchExpressions": [
        {"key": "app", "operator": "NotIn", "values": ["a"]}]}, ["Ingress"], ingress=[])]
    assert not allowed(not_in, A, B, 80) and allowed(not_in, B, A, 80)


def test_ip_blocks_with_exceptions_and_both_sides_must_agree():
    egress = [policy("team", {"matchLabels": {"app": "a"}}, ["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}])]
    assert allowed(egress, A, OUT, 53) and not allowed(egress, A, B, 80)
    # B accepts only from C: A may send, B does not take it
    ingress = [policy("team", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[
        {"from": [{"ipBlock": {"cidr": "10.0.0.3/32"}}]}])]
    assert not allowed(ingress, A, B, 80) and allowed(ingress, C, B, 80)
    # policies add up: a second one opens what the first did not
    more = ingress + [policy("team", {"matchLabels": {"app": "b"}}, ["Ingress"], ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}])]
    assert allowed(more, A, B, 80)
