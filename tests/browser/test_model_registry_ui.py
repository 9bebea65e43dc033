"""A registered model and its lineage in MLflow's UI, in a real browser signed in to the hub."""

from __future__ import annotations

import re

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.integration

USERS = {"alice": "alice-password-1"}


@pytest.fixture(scope="module")
def registry_hub(test_root, account_prefix):
    import requests

    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "models-ui")
    try:
        hub = pool({"services": {"models": {"enabled": True}}}, users=USERS)
        token = hub.user_token("alice")

        def answers():
            return requests.get(f"{hub.url}/services/models/api/2.0/mlflow/registered-models/"
                                "search", headers={"Authorization": f"Bearer {token}"},
                                timeout=30).status_code == 200

        wait_for(answers, 180, "the model registry")
        hub.alice_token = token
        yield hub
    finally:
        pool.close()


def test_the_ui_shows_a_registered_version_with_its_lineage(registry_hub, page, monkeypatch,
                                                           tmp_path):
    from redspot.models import client as registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{registry_hub.url}/services/models")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", registry_hub.alice_token)
    lineage = {"redspot.user": "alice", "redspot.notebook": "work/churn.ipynb",
               "redspot.git_commit": "0123456789abcdef0123456789abcdef01234567"}
    registered = registry.register(lambda x: x, "ui-model", description="shown in the UI",
                                   metrics={"auc": 0.93}, lineage=lineage)

    page.goto(f"{registry_hub.url}/hub/login")
    page.fill("#username_input", "alice")
    page.fill("#password_input", USERS["alice"])
    page.click("#login_submit")
    page.wait_for_url(re.compile(r".*/hub/.*"))
    # the UI is behind the hub: its OAuth signs the browser in to the service
    page.goto(f"{registry_hub.url}/services/models/")
    page.wait_for_url(re.compile(r".*/services/models/.*"), timeout=60_000)
    page.goto(f"{registry_hub.url}{registered.url}")
    page.wait_for_selector("text=work/churn.ipynb", timeout=60_000)
    text = page.inner_text("body")
    page.screenshot(path=str(tmp_path / "version.png"), full_page=True)
    assert "redspot.user" in text and "redspot.git_commit" in text
    assert "shown in the UI" in text
    # nothing the UI asked for on these pages was refused by the registry's route table
    # (a refusal is logged: one made on purpose shows that the log would tell)
    import requests

    requests.get(f"{registry_hub.url}/services/models/api/2.0/mlflow/traces",
                 headers={"Authorization": f"Bearer {registry_hub.alice_token}"}, timeout=30)
    page.goto(f"{registry_hub.url}/services/models/#/experiments")
    page.wait_for_timeout(3000)
    refused = [line for line in registry_hub.log(tail=5000).splitlines()
               if "Refused" in line and "(403)" in line]
    assert len(refused) == 1 and "/api/2.0/mlflow/traces" in refused[0], refused
