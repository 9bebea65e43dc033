"""RedspotLocalSpawner's handling of user options, on a spawner with a stand-in hub user.

Only the hub user is a stand-in (the edge of a pure unit test); starting real servers
is covered in tests/integration.
"""

import asyncio
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

from redspot.spawner.local import RedspotLocalSpawner
from redspot.spawner.profiles import GiB
from tests.helpers import ReadyService


def make_spawner(name="alice", groups=(), admin=False, **config):
    c = Config()
    c.RedspotSpawnerMixin.group_profiles = {"gpu": ["p3.2xlarge", "g5.xlarge"]}
    for key, value in config.items():
        setattr(c.RedspotLocalSpawner, key, value)
    user = SimpleNamespace(name=name, admin=admin, groups=[SimpleNamespace(name=g) for g in groups],
                           url=f"/user/{name}/", escaped_name=name)
    return RedspotLocalSpawner(user=user, config=c, data_dir="/data", orm_spawner=None,
                               hub=SimpleNamespace(url="http://127.0.0.1:8081/hub/",
                                                   api_url="http://127.0.0.1:8081/hub/api",
                                                   public_host="", base_url="/hub/"))


def apply(spawner, options):
    asyncio.run(spawner.apply_user_options(spawner, options))


def test_form_data_becomes_user_options_without_the_xsrf_field():
    spawner = make_spawner()
    assert spawner.run_options_from_form({"profile": ["g5.xlarge"], "_xsrf": ["t"]}) == {
        "profile": "g5.xlarge"}


def test_the_chosen_profile_reaches_limits_and_environment():
    spawner = make_spawner(groups=["gpu"])
    apply(spawner, {"profile": "p3.2xlarge"})
    assert spawner.profile.name == "p3.2xlarge"
    assert (spawner.cpu_limit, spawner.mem_limit) == (8.0, 61 * GiB)
    env = spawner.redspot_env()
    assert env["REDSPOT_GPUS"] == "1" and env["REDSPOT_PROFILE"] == "p3.2xlarge"


def test_no_options_means_the_default_profile():
    spawner = make_spawner()
    apply(spawner, {})
    assert spawner.profile.name == "m5.xlarge"


@pytest.mark.parametrize("groups, admin, options, allowed", [
    ([], False, {"profile": "p3.2xlarge"}, "choose one of: m5.xlarge"),
    (["gpu"], False, {"profile": "p4d.24xlarge"},
     "choose one of: m5.xlarge, g5.xlarge, p3.2xlarge"),
    ([], False, {"profile": "nope"}, "choose one of: m5.xlarge"),
])
def test_refusals_are_400_with_the_allowed_list(groups, admin, options, allowed):
    spawner = make_spawner(groups=groups, admin=admin)
    with pytest.raises(web.HTTPError) as e:
        apply(spawner, options)
    assert e.value.status_code == 400
    assert allowed in e.value.log_message
    assert spawner.profile is None


def test_admins_may_use_every_offered_profile():
    spawner = make_spawner(admin=True)
    apply(spawner, {"profile": "p4d.24xlarge"})
    assert spawner.profile.gpus == 8


def test_the_profile_survives_a_hub_restart_in_the_state():
    spawner = make_spawner(groups=["gpu"])
    apply(spawner, {"profile": "g5.xlarge"})
    spawner.pid = 1234
    state = spawner.get_state()
    assert state == {"pid": 1234, "profile": "g5.xlarge"}
    restored = make_spawner(groups=["gpu"])
    restored.load_state(state)
    assert restored.profile.name == "g5.xlarge" and restored.pid == 1234


def test_accounts_and_homes_follow_the_isolation_setting():
    spawner = make_spawner(name="Alice.S", isolation="accounts", account_prefix="rs-")
    assert spawner.uses_accounts
    assert spawner.account_name.startswith("rs-alice-s-")
    assert str(spawner.home).startswith("/data/home/alice-s-")
    assert not make_spawner(isolation="none").uses_accounts


@pytest.fixture
def ready_service():
    six = {"id": "alice/six", "description": "", "tag": "env-1",
           "location": "/envs/env-1/bin/python", "env": {"SIX": "1"}}
    with ReadyService({"alice": [six]}, token="spawner-secret") as service:
        yield service


def test_a_server_started_without_an_environment_leaves_the_last_one(ready_service):
    spawner = make_spawner(python="/srv/runtime/bin/python",
                           service_urls={"environments": ready_service.url},
                           services_token="spawner-secret")
    apply(spawner, {"environment": "alice/six"})
    assert ready_service.asked == ["alice"]
    assert spawner.cmd[0] == "/envs/env-1/bin/python"
    assert spawner.redspot_env()["SIX"] == "1"
    apply(spawner, {})  # the next start, in the default environment: nothing asked
    assert ready_service.asked == ["alice"]
    assert spawner.cmd[0] == "/srv/runtime/bin/python"
    assert "SIX" not in spawner.redspot_env()
    with pytest.raises(web.HTTPError) as e:
        apply(spawner, {"environment": "bob/other"})
    assert "choose one of: alice/six" in e.value.log_message


def test_the_form_lists_ready_environments_and_a_silent_service_is_a_clear_503(
        ready_service):
    spawner = make_spawner(service_urls={"environments": ready_service.url},
                           services_token="spawner-secret")
    assert 'value="alice/six"' in asyncio.run(spawner.render_options_form())
    # a wrong token: the service refuses, the form lists none, a start in one says why
    spawner = make_spawner(service_urls={"environments": ready_service.url},
                           services_token="wrong")
    assert 'value="alice/six"' not in asyncio.run(spawner.render_options_form())
    with pytest.raises(web.HTTPError) as e:
        apply(spawner, {"environment": "alice/six"})
    assert e.value.status_code == 503
    assert "the environments service did not answer" in e.value.log_message
    assert "start without an environment" in e.value.log_message


def test_servers_are_told_their_ray_token_services_and_idle_timeout(tmp_path):
    spawner = make_spawner()
    spawner.data_dir = str(tmp_path)
    spawner.service_urls = {"environments": "http://127.0.0.1:9100/services/environments/",
                            "models": "http://127.0.0.1:9200/services/models/"}
    spawner.ray_idle_timeout = 600
    spawner.api_token = "server-token"
    apply(spawner, {})
    env = spawner.get_env()
    # from the start: Ray reads its auth settings once per process
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(spawner.home / ".redspot" / "ray" / "token")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["REDSPOT_ENVIRONMENTS_URL"] == "http://127.0.0.1:9100/services/environments/"
    assert env["REDSPOT_RAY_IDLE_TIMEOUT"] == "600"
    # MLflow's own client reaches the registry with the server's hub token
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9200/services/models"
    assert env["MLFLOW_TRACKING_TOKEN"] == "server-token"
