"""The attack suite's Redspot: one real ``redspot up`` with every service on.

- ``realm`` (package): the hub, with users ``alice`` and ``bob`` (group ``vision``),
  ``carol`` (group ``nlp``), ``dave`` (no group: the suite removes him), and the
  ``admin``; ``realm.tokens[name]`` is a hub token of each, ``realm.passwords`` their
  passwords. Signup is open, so the suite can try names at ``/hub/signup``. Tests that
  change the realm (removing a user) use users no other test needs.
- ``alice_env`` (package): alice's personal environment ``alice/private``, built.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import needs_root
from tests.helpers import wait_for

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22",
             "carol": "carol-password-3", "dave": "dave-password-44"}
SETTINGS = {
    "auth": {"signup": "open"},
    "groups": {"vision": {"users": ["alice", "bob"]}, "nlp": {"users": ["carol"]}},
    "services": {"environments": {"enabled": True}, "models": {"enabled": True},
                 "warehouse": {"enabled": True},
                 # vision (alice, bob) may invite others into their servers
                 "sharing": {"enabled": True, "invite_groups": ["vision"]}},
    # a connection for vision only (alice and bob), besides the demo for everyone
    "warehouse": {"connections": {"visiondb": {"engine": "duckdb", "groups": ["vision"]}}},
}

pytestmark = needs_root


@pytest.fixture(scope="package")
def realm(test_root, account_prefix):
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "realm")
    try:
        hub = pool(SETTINGS, users=PASSWORDS)
        hub.passwords = dict(PASSWORDS)
        hub.prefix = account_prefix
        hub.tokens = {name: hub.user_token(name) for name in (*PASSWORDS, "admin")}

        def registry_up():
            r = requests.get(f"{hub.url}/services/models/api/2.0/mlflow/registered-models/search",
                             headers={"Authorization": f"Bearer {hub.tokens['alice']}"}, timeout=10)
            return r.status_code == 200

        wait_for(registry_up, 180, "the model registry")
        yield hub
    finally:
        pool.close()


@pytest.fixture(scope="package")
def alice_env(realm):
    """alice's personal environment, built (small: six)."""
    def envs(method, path, **kwargs):
        return requests.request(
            method, f"{realm.url}/services/environments/api/{path}", timeout=60,
            headers={"Authorization": f"token {realm.tokens['alice']}"}, **kwargs)

    r = envs("POST", "environments", json={"name": "private", "python": ["six==1.16.0"],
                                           "env": {"ALICE_SECRET": "s3cr3t"}})
    assert r.status_code in (200, 202), r.text

    def built():
        model = envs("GET", "environments/alice/private").json()
        return model if model["status"] in ("ready", "failed") else None

    model = wait_for(built, 600, "alice/private to build", interval=1)
    assert model["status"] == "ready", envs("GET", "environments/alice/private/log").text
    return model
