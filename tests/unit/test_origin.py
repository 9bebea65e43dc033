"""Where a browser's request comes from: the check that stands in for XSRF tokens on
pages that cannot send one (Ray's dashboard through the user's server)."""

from __future__ import annotations

import pytest

from redspot.origin import cross_origin_problem

HOST = "hub.example:8000"


@pytest.mark.parametrize("headers, allowed", [
    ({"Origin": "http://hub.example:8000"}, True),
    ({"Origin": "https://hub.example:8000"}, True),  # TLS ended at a proxy in front
    ({"Sec-Fetch-Site": "same-origin"}, True),
    ({"Sec-Fetch-Site": "none"}, True),  # typed into the address bar
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "http://bob.hub.example:8000"}, False),  # another user's subdomain
    ({"Origin": "null"}, False),  # a sandboxed frame or a data: URL
    ({"Sec-Fetch-Site": "same-site"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, False),
    ({}, False),
])
def test_only_this_hosts_own_pages_may_change_things(headers, allowed):
    problem = cross_origin_problem(headers, "http", HOST)
    assert (problem is None) is allowed, problem
