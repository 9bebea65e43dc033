"""The environments and sharing services' REST APIs, fuzzed from their OpenAPI
descriptions (schemathesis): whatever a signed-in user sends, the answer is never a
server error and never hangs."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.integration


from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

import redspot.sharing  # noqa: E402
from redspot.environments.service import openapi  # noqa: E402

schema = schemathesis.openapi.from_dict(openapi())
sharing_schema = schemathesis.openapi.from_dict(yaml.safe_load(
    (Path(redspot.sharing.__file__).parent / "openapi.yaml").read_text()))


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error_or_hangs(case, realm):
    response = case.call(base_url=f"{realm.url}/services/environments/api",
                         headers={"Authorization": f"token {realm.tokens['carol']}"},
                         timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                        response.status_code, response.text[:500])


@sharing_schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_sharing_request_is_a_server_error_or_hangs(case, realm):
    response = case.call(base_url=f"{realm.url}/services/sharing/api",
                         headers={"Authorization": f"token {realm.tokens['carol']}"},
                         timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body,
                                        response.status_code, response.text[:500])


def test_a_body_that_is_not_text_is_a_400_not_a_500(realm):
    """What the fuzz found first: invalid UTF-8 as the body of a POST."""
    import requests

    r = requests.post(f"{realm.url}/services/environments/api/environments", data=b"\x80",
                      headers={"Authorization": f"token {realm.tokens['carol']}"}, timeout=30)
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
