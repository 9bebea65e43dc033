"""redspot.yaml: validation messages, and each config layer on a fresh Config."""

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from traitlets.config import Config

from redspot.config.docs import schema_markdown
from redspot.config.layers import (
    CommandLine,
    Context,
    assemble,
    layer_command_line,
    layer_config_d,
    layer_defaults,
    layer_settings,
)
from redspot.config.loader import ConfigError, load_settings, validate_settings
from redspot.config.paths import DataPaths

REPO = Path(__file__).resolve().parents[2]


def problems(settings):
    with pytest.raises(ConfigError) as e:
        validate_settings(settings)
    return e.value.problems


def test_empty_settings_are_valid():
    assert validate_settings(None) == {}
    assert validate_settings({}) == {}


@pytest.mark.parametrize("settings, expected", [
    ({"hub": {"colour": "red"}},
     "hub: unknown key 'colour'; allowed keys: api_port, base_url, data_dir, ip, log_level, "
     "port, proxy_api_port"),
    ({"huub": {}}, "(top level): unknown key 'huub'; allowed keys: auth, culling, groups, hub, "
                   "kubernetes, profiles, ray, services, spawner"),
    ({"hub": {"port": "eighty"}}, "hub.port: expected an integer, got 'eighty'"),
    ({"hub": {"port": 70000}}, "hub.port: 70000 is greater than the maximum of 65535"),
    ({"auth": {"type": "ldap"}}, "auth.type: 'ldap' is not allowed; allowed: password, pam, oauth"),
    ({"auth": {"signup": "maybe"}},
     "auth.signup: 'maybe' is not allowed; allowed: disabled, approval, open"),
    ({"profiles": {"catalog": {"m5.xlarge": {"memory": "lots"}}}},
     "profiles.catalog.m5.xlarge.memory: 'lots' is not a size; use bytes or e.g. '16GiB', '500M'"),
    ({"profiles": {"catalog": {"c6i.8xlarge": {"vcpus": 32}}}},
     "profiles.catalog: profile 'c6i.8xlarge' is not in the built-in catalog, so it needs memory"),
    ({"groups": {"gpu": {"profiles": ["p9.huge"]}}},
     "groups.gpu.profiles: unknown profile 'p9.huge'; known profiles: m5.xlarge"),
    ({"profiles": {"offered": ["m5.xlarge"], "default": "p3.2xlarge"}},
     "profiles.default: profile 'p3.2xlarge' is not offered; offered: m5.xlarge"),
    ({"groups": {"gpu": {"members": ["alice"]}}},
     "groups.gpu: unknown key 'members'; allowed keys: caps, description, profiles, users"),
    ({"auth": {"type": "oauth"}}, "auth.oauth: required when auth.type is oauth"),
    ({"auth": {"type": "pam", "signup": "open"}},
     "auth.signup: only applies to auth.type password"),
    ({"services": {"sharing": {"invite_groups": "vision"}}},
     "services.sharing.invite_groups: expected a list, got 'vision'"),
    ({"services": {"sharing": {"server_token_cache": 600}}},
     "services.sharing.server_token_cache: 600 is greater than the maximum of 300"),
    ({"spawner": {"isolation": "vm"}},
     "spawner.isolation: 'vm' is not allowed; allowed: auto, accounts, none"),
    ({"kubernetes": {"storage": {"mode": "nfs"}}},
     "kubernetes.storage.mode: 'nfs' is not allowed; allowed: shared-pvc, access-points"),
    ({"kubernetes": {"storage": {"claim": "My_Claim"}}},
     "kubernetes.storage: 'My_Claim' is not a valid PersistentVolumeClaim name"),
    ({"kubernetes": {"storage": {"datasets": [
        {"name": "x", "claim": "data", "mount_path": "/data", "sub_path": "../../etc"}]}}},
     "kubernetes.storage: data set 'x': subPath '../../etc' must be relative, without '..'"),
    ({"kubernetes": {"storage": {"datasets": [{"name": "x", "claim": "data"}]}}},
     "kubernetes.storage.datasets.0: 'mount_path' is a required property"),
    ({"kubernetes": {"images": {}}}, "kubernetes.images: {} should be non-empty"),
    ({"kubernetes": {"node_overhead": {"daemonset_memory": "lots"}}},
     "kubernetes.node_overhead.daemonset_memory: 'lots' is not a size"),
])
def test_bad_settings_name_the_key_and_what_is_allowed(settings, expected):
    found = problems(settings)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once():
    found = problems({"hub": {"port": "x", "ip": 1}, "auth": {"type": "ldap"}})
    assert len(found) == 3


def test_oauth_settings_are_checked_against_the_authenticator(pytest_oauth=None):
    pytest.importorskip("oauthenticator")
    found = problems({"auth": {"type": "oauth", "oauth": {
        "provider": "github", "config": {"client_id": "x", "clientsecret": "y"}}}})
    assert found == [
        "auth.oauth.config: GitHubOAuthenticator has no setting 'clientsecret'; see "
        "`jupyterhub --help-all` or the oauthenticator docs for GitHubOAuthenticator's settings"
    ]


def test_load_settings_reports_yaml_syntax_and_shape(tmp_path):
    path = tmp_path / "redspot.yaml"
    path.write_text("hub:\n  port: [1, 2\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: not valid YAML"):
        load_settings(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        load_settings(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.yaml")


CTX = Context(paths=DataPaths(Path("/data")), proxy_command=("/opt/chp",), server_python="/py")


def test_layer_defaults():
    c = Config()
    layer_defaults(c, CTX)
    assert c.JupyterHub.ip == "127.0.0.1" and c.JupyterHub.port == 8000
    assert c.JupyterHub.db_url == "sqlite:////data/hub/jupyterhub.sqlite"
    assert c.JupyterHub.cookie_secret_file == "/data/hub/jupyterhub_cookie_secret"
    assert c.JupyterHub.spawner_class == "redspot-local"
    assert c.JupyterHub.authenticator_class == "redspot-password"
    assert c.ConfigurableHTTPProxy.command == ["/opt/chp"]
    assert c.RedspotLocalSpawner.python == "/py"
    assert c.Authenticator.admin_users == {"admin"}
    assert c.Spawner.default_url == "/lab"


def test_layer_settings_profiles_groups_and_auth():
    c = Config()
    layer_settings(c, validate_settings({
        "hub": {"port": 9000, "api_port": 9001, "proxy_api_port": 9002},
        "auth": {"admin_users": ["root-ops"], "signup": "approval"},
        "profiles": {"everyone": ["m5.xlarge", "r5.4xlarge"],
                     "catalog": {"c6i.8xlarge": {"vcpus": 32, "memory": "64GiB"}}},
        "groups": {"gpu": {"users": ["alice"], "profiles": ["p3.2xlarge"],
                           "description": "GPU users"}},
        "spawner": {"start_timeout": 300, "isolation": "none"},
    }))
    assert (c.JupyterHub.port, c.JupyterHub.hub_port) == (9000, 9001)
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:9002"
    assert c.Authenticator.admin_users == {"root-ops"}
    assert c.RedspotPasswordAuthenticator.signup == "approval"
    assert c.RedspotSpawnerMixin.profiles_everyone == ["m5.xlarge", "r5.4xlarge"]
    assert c.RedspotSpawnerMixin.group_profiles == {"gpu": ["p3.2xlarge"]}
    assert c.RedspotSpawnerMixin.default_profile == "m5.xlarge"
    assert c.RedspotSpawnerMixin.profile_catalog == {
        "c6i.8xlarge": {"vcpus": 32, "memory": "64GiB"}}
    assert c.JupyterHub.load_groups == {
        "gpu": {"users": ["alice"], "properties": {"description": "GPU users"}}}
    assert c.Spawner.start_timeout == 300
    assert c.RedspotLocalSpawner.isolation == "none"


def test_layer_settings_defaults_the_everyone_list_to_the_default_profile():
    c = Config()
    layer_settings(c, validate_settings({"profiles": {"default": "r5.4xlarge"}}))
    assert c.RedspotSpawnerMixin.profiles_everyone == ["r5.4xlarge"]


def test_layer_settings_pam_and_oauth():
    c = Config()
    layer_settings(c, {"auth": {"type": "pam", "allowed_users": ["ann"]}})
    # JupyterHub's PAM authenticator with Redspot's names and removals first in its bases
    assert c.JupyterHub.authenticator_class == "redspot-pam"
    assert c.Authenticator.allowed_users == {"ann"}
    c = Config()
    layer_settings(c, {"auth": {"type": "oauth", "oauth": {
        "provider": "github", "config": {"client_id": "abc"}}}})
    assert c.JupyterHub.authenticator_class == "redspot.hub.oauth.GitHubOAuthenticator"
    assert c.GitHubOAuthenticator.client_id == "abc"
    from oauthenticator.github import GitHubOAuthenticator

    from redspot.hub.lifecycle import RedspotLifecycle
    from redspot.hub.oauth import GitHubOAuthenticator as Wrapped

    assert Wrapped.__mro__[1:3] == (RedspotLifecycle, GitHubOAuthenticator)
    # the provider's own settings apply to it as they do to the provider's class
    assert Wrapped(config=c).client_id == "abc"
    assert c.Authenticator.allow_all is True


def test_layer_settings_kubernetes():
    c = Config()
    layer_settings(c, validate_settings({
        "spawner": {"kind": "kubernetes"},
        "kubernetes": {
            "namespace": "ml", "images": {"cpu": "r/cpu:1", "gpu": "r/gpu:1"},
            "node_selector": {"karpenter.sh/capacity-type": "on-demand"},
            "node_overhead": {"max_pods": 58, "daemonset_memory": "1Gi"},
            "storage": {"mode": "access-points", "claim": "team-efs",
                        "datasets": [{"name": "d", "claim": "data", "mount_path": "/data"}]},
        },
    }))
    assert c.JupyterHub.spawner_class == "redspot-kube"
    k = c.RedspotKubeSpawner
    assert (k.namespace, k.images) == ("ml", {"cpu": "r/cpu:1", "gpu": "r/gpu:1"})
    assert k.extra_node_selector == {"karpenter.sh/capacity-type": "on-demand"}
    assert (k.max_pods_per_node, k.daemonset_memory) == (58, "1Gi")
    assert (k.storage_mode, k.storage_claim) == ("access-points", "team-efs")
    assert k.datasets == [{"name": "d", "claim": "data", "mount_path": "/data"}]


def test_layer_services_runs_the_warehouse_service_with_connections_but_no_secret_paths():
    import json

    from redspot.config.layers import layer_services

    ctx = Context(paths=DataPaths(Path("/data")), python="/py",
                  service_ports={"warehouse": 9200},
                  warehouse_secrets={"wh": {"admin_dsn": "postgresql://a:pw@db/x"}})
    c = Config()
    layer_services(c, validate_settings({
        "services": {"warehouse": {"enabled": True}},
        "warehouse": {"connections": {
            "wh": {"engine": "postgresql", "address": "db:5432", "groups": ["vision"],
                   "credentials": {"kind": "postgres-role", "admin_dsn_file": "/etc/dsn",
                                   "grants": {"vision": ["vision_reader"]}}},
            "sso": {"engine": "trino", "address": "trino:8443", "groups": ["*"],
                    "credentials": {"kind": "oauth"}}}}}), ctx)
    (service,) = c.JupyterHub.services
    assert service["command"] == ["/py", "-m", "redspot.warehouse.service",
                                  "--data-dir=/data/warehouse"]
    connections = json.loads(service["environment"]["REDSPOT_WAREHOUSE_CONNECTIONS"])
    assert list(connections) == ["demo", "wh", "sso"]
    assert connections["demo"]["database"] == "/data/demo/listings.duckdb"
    assert connections["wh"]["credentials"] == {"kind": "postgres-role",
                                                "grants": {"vision": ["vision_reader"]}}
    # the secret itself goes to the service's environment, never its file's path
    assert json.loads(service["environment"]["REDSPOT_WAREHOUSE_SECRETS"]) == {
        "wh": {"admin_dsn": "postgresql://a:pw@db/x"}}
    assert "/etc/dsn" not in json.dumps(service)
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["redspot-warehouse-service"]["scopes"] == ["read:users", "admin:auth_state"]
    assert "custom:redspot:warehouse:use" in roles["server"]["scopes"]
    assert "custom:redspot:warehouse:use" in roles["user"]["scopes"]
    assert "custom:redspot:warehouse:admin" in roles["redspot-admin"]["scopes"]
    assert "custom:redspot:warehouse:admin" not in roles["user"]["scopes"]


def test_layer_services_runs_the_environments_service_with_its_scopes():
    from redspot.config.layers import layer_services

    ctx = Context(paths=DataPaths(Path("/data")), python="/py",
                  service_ports={"environments": 9100}, service_env={"SSL_CERT_FILE": "/ca"},
                  spawner_token="spawner-secret")
    c = Config()
    layer_services(c, validate_settings({"services": {"environments": {
        "enabled": True, "builder": "buildah", "registry": "reg:5000", "tls_verify": False,
        "bases": {"singleuser": "reg:5000/su@sha256:" + "a" * 64}}}}), ctx)
    service, spawner = c.JupyterHub.services
    # the spawner asks which environments are ready with a token of its own, whose only
    # power is that question
    assert spawner == {"name": "redspot-spawner", "api_token": "spawner-secret"}
    assert c.RedspotSpawnerMixin.services_token == "spawner-secret"
    spawner_role = c.JupyterHub.load_roles[0]
    assert spawner_role["services"] == ["redspot-spawner"]
    assert spawner_role["scopes"] == ["access:services!service=environments",
                                      "custom:redspot:environments:ready"]
    assert service["name"] == "environments"
    assert service["url"] == "http://127.0.0.1:9100"
    assert service["command"] == [
        "/py", "-m", "redspot.environments.service", "--data-dir=/data/environments",
        "--builder=buildah", "--registry=reg:5000",
        "--EnvironmentsService.bases", "singleuser=reg:5000/su@sha256:" + "a" * 64,
        "--no-tls-verify"]
    assert service["environment"] == {"SSL_CERT_FILE": "/ca", "REDSPOT_HUB_HOME": "/hub/home"}
    assert {"custom:redspot:environments:read", "custom:redspot:environments:write",
            "custom:redspot:environments:admin"} <= set(c.JupyterHub.custom_scopes)
    _, user_role, server_role, admin_role = c.JupyterHub.load_roles
    assert user_role["name"] == "user"
    assert "access:services!service=environments" in user_role["scopes"]
    assert "custom:redspot:environments:write" in user_role["scopes"]
    # a server's own token (its kernels: %%ray_remote --env, making one in a notebook)
    # acts as its user, who makes and deletes their own environments (not the team's)
    assert server_role["name"] == "server"
    assert {"access:servers!server", "users:activity!user",
            "access:services!service=environments",
            "custom:redspot:environments:write"} == set(server_role["scopes"])
    assert admin_role["users"] == ["admin"]
    assert not any("ready" in scope for role in (user_role, server_role, admin_role)
                   for scope in role["scopes"])
    assert c.RedspotSpawnerMixin.service_urls == {
        "environments": "http://127.0.0.1:9100/services/environments/"}
    c = Config()
    layer_services(c, validate_settings({}), ctx)
    assert "services" not in c.JupyterHub


def test_the_buildah_builder_needs_a_registry_and_bases():
    assert problems({"services": {"environments": {"enabled": True, "builder": "buildah"}}}) == [
        "services.environments: the buildah builder needs registry and bases"]


def test_the_kubernetes_builder_needs_a_repository_bases_and_a_cluster():
    assert problems({"services": {"environments": {"enabled": True, "builder": "kubernetes"}}}) == [
        "services.environments: the kubernetes builder needs repository and bases",
        "services.environments.builder: kubernetes builds run in the cluster of "
        "spawner.kind: kubernetes"]


def test_layer_services_gives_the_environments_service_its_kubernetes_builds(tmp_path):
    from redspot.config.layers import layer_services
    from redspot.environments.builders import KubernetesBuilder
    from redspot.environments.service import EnvironmentsService

    repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env"
    base = "123456789012.dkr.ecr.us-east-1.amazonaws.com/su@sha256:" + "a" * 64
    ctx = Context(paths=DataPaths(tmp_path), python="/py", service_ports={"environments": 9100})
    c = Config()
    layer_services(c, validate_settings({"spawner": {"kind": "kubernetes"}, "services": {
        "environments": {"enabled": True, "builder": "kubernetes", "repository": repository,
                         "registry_secret": "ecr-push", "bases": {"singleuser": base},
                         "build_timeout": 1800}}}), ctx)
    (service,) = c.JupyterHub.services
    args = service["command"][3:]
    assert "--builder=kubernetes" in args and "--EnvironmentsService.registry_secret=ecr-push" \
        in args and f"--EnvironmentsService.repository={repository}" in args
    # the service started with that command line builds with Jobs
    app = EnvironmentsService()
    app.initialize(args)
    app.data_dir = str(tmp_path / "environments")
    builder = app.make_app().settings["manager"].builder
    assert isinstance(builder, KubernetesBuilder) and builder.bases() == {"singleuser": base}
    assert builder.settings.repository == repository
    assert builder.settings.registry_secret == "ecr-push"
    assert builder.settings.namespace == "redspot-builds"
    assert builder.settings.deadline_seconds == 1800


def test_layer_command_line():
    c = Config()
    layer_command_line(c, CommandLine(ip="0.0.0.0", port=80, keep_servers=True))
    assert (c.JupyterHub.ip, c.JupyterHub.port) == ("0.0.0.0", 80)
    assert c.JupyterHub.cleanup_servers is False and c.JupyterHub.cleanup_proxy is False
    c = Config()
    layer_command_line(c, CommandLine())
    assert "JupyterHub" not in c


def test_layer_config_d_loads_files_in_name_order(tmp_path):
    (tmp_path / "20-second.py").write_text("c.JupyterHub.port = 2\nc.Spawner.cmd = ['x']\n")
    (tmp_path / "10-first.py").write_text("c.JupyterHub.port = 1\nc.JupyterHub.ip = 'a'\n")
    (tmp_path / "notes.txt").write_text("c.JupyterHub.port = 3\n")
    c = Config()
    loaded = layer_config_d(c, tmp_path)
    assert [p.name for p in loaded] == ["10-first.py", "20-second.py"]
    assert (c.JupyterHub.port, c.JupyterHub.ip, c.Spawner.cmd) == (2, "a", ["x"])
    assert layer_config_d(Config(), tmp_path / "missing") == []


def test_config_d_files_see_and_extend_earlier_layers(tmp_path):
    (tmp_path / "10-more.py").write_text(
        "c.JupyterHub.services.append({'name': 'mine'})\n"
        "c.JupyterHub.port = c.JupyterHub.port + 1\n"
    )
    c = Config()
    c.JupyterHub.services = [{"name": "environments"}]
    c.JupyterHub.port = 8000
    layer_config_d(c, tmp_path)
    assert c.JupyterHub.services == [{"name": "environments"}, {"name": "mine"}]
    assert c.JupyterHub.port == 8001


def test_layers_apply_in_order(tmp_path):
    (tmp_path / "50-port.py").write_text("c.JupyterHub.port = 7000\n")
    settings = validate_settings({"hub": {"port": 9000, "ip": "10.0.0.1"}})
    c = assemble(settings, CTX, CommandLine(port=8001), tmp_path)
    assert c.JupyterHub.ip == "10.0.0.1"  # yaml over defaults
    assert c.JupyterHub.port == 7000  # config.d over the command line over yaml
    c = assemble(settings, CTX, CommandLine(port=8001), None)
    assert c.JupyterHub.port == 8001


def test_the_configuration_reference_is_generated_from_the_schema():
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == schema_markdown(), "run: redspot config schema > docs/configuration.md"


def test_layer_services_runs_the_model_registry():
    from redspot.config.layers import Context, layer_services

    ctx = Context(paths=DataPaths(Path("/data")), python="/py",
                  service_ports={"models": 9200}, service_env={"HOME": "/root"},
                  service_accounts={"models": "redspot-svc_models"})
    c = Config()
    uri = "postgresql://mlflow:s3cret@db:5432/mlflow"
    layer_services(c, validate_settings({"services": {"models": {
        "enabled": True, "artifacts_destination": "s3://bucket/models",
        "backend_store_uri": uri}}}), ctx)
    (service,) = c.JupyterHub.services
    assert service["name"] == "models" and service["url"] == "http://127.0.0.1:9200"
    # the store URIs (a password) go through the environment, never the command line
    assert service["command"] == ["/py", "-m", "redspot.models.service", "--data-dir=/data/models"]
    assert service["environment"] == {"MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/models",
                                      "MLFLOW_BACKEND_STORE_URI": uri,
                                      "REDSPOT_HUB_HOME": "/hub/home"}
    # its own account, in its own folder, with its own HOME (not the hub's)
    assert service["user"] == "redspot-svc_models" and service["cwd"] == "/data/models"
    # MLflow's first start takes long on a busy machine: JupyterHub's 30 s stopped the hub
    assert service["timeout"] >= 120
    assert c.RedspotSpawnerMixin.service_urls == {
        "models": "http://127.0.0.1:9200/services/models/"}
    server_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "server")
    assert "access:services!service=models" in server_role["scopes"]


def test_with_per_user_subdomains_services_are_reached_on_their_own_origin():
    from redspot.config.layers import Context, layer_services

    settings = validate_settings({"hub": {"subdomain_host": "https://hub.example.com"},
                                  "services": {"models": {"enabled": True}}})
    c = Config()
    layer_settings(c, settings)
    assert c.JupyterHub.subdomain_host == "https://hub.example.com"
    layer_services(c, settings, Context(paths=DataPaths(Path("/data")),
                                        service_ports={"models": 9200}))
    assert c.RedspotSpawnerMixin.service_public_urls == {
        "models": "https://models--service.hub.example.com/services/models/"}
    c = Config()
    layer_services(c, validate_settings({"services": {"models": {"enabled": True}}}),
                   Context(paths=DataPaths(Path("/data")), service_ports={"models": 9200}))
    assert c.RedspotSpawnerMixin.service_public_urls == {"models": "/services/models/"}
    with pytest.raises(ConfigError, match="subdomain_host"):
        validate_settings({"hub": {"subdomain_host": "hub.example.com/x"}})
    # services link back to the hub's home page, on the hub's own origin
    from redspot.config.layers import public_hub_home

    assert public_hub_home(settings) == "https://hub.example.com/hub/home"
    assert public_hub_home({"hub": {"base_url": "/team/"}}) == "/team/hub/home"


def test_admin_passwords_are_kept_alone_one_file_per_admin(tmp_path):
    from redspot.hub.app import admin_passwords, ensure_admins

    paths = DataPaths(tmp_path)
    paths.state.mkdir(parents=True)
    settings = {"auth": {"admin_users": ["admin", "ops"]}}
    created = ensure_admins(paths, settings)
    assert set(created) == {"admin", "ops"}
    # the password alone: `$(cat hub/admin-password)` is the password
    assert (paths.state / "admin-password").read_text() == created["admin"] + "\n"
    assert (paths.state / "admin-password.ops").read_text() == created["ops"] + "\n"
    assert admin_passwords(paths, settings) == created
    assert ensure_admins(paths, settings) == {}  # only on first start


def test_admin_passwords_of_earlier_data_folders_are_still_read(tmp_path):
    from redspot.hub.app import admin_passwords

    paths = DataPaths(tmp_path)
    paths.state.mkdir(parents=True)
    (paths.state / "admin-password").write_text("admin s3cret-one\nops s3cret-two\n")
    settings = {"auth": {"admin_users": ["admin", "ops"]}}
    assert admin_passwords(paths, settings) == {"admin": "s3cret-one", "ops": "s3cret-two"}


def test_the_starter_config_is_valid_and_runs_the_services(tmp_path):
    from redspot.config.loader import enabled_services
    from redspot.hub.app import STARTER_CONFIG

    path = tmp_path / "redspot.yaml"
    path.write_text(STARTER_CONFIG)
    settings = load_settings(path)
    assert enabled_services(settings) == ["models", "environments", "warehouse", "sharing"]
    # every commented example is valid once uncommented
    uncommented = re.sub(r"^# (?=( *)[a-z_-]+:)", "", STARTER_CONFIG, flags=re.M)
    path.write_text(uncommented)
    assert load_settings(path)["ray"]["idle_timeout"] == 3600


def test_the_first_start_runs_with_the_starter_config_it_writes(monkeypatch):
    """The first `redspot up` on an empty data folder writes redspot.yaml and starts
    with it (it used to start without the services and run them only the next time)."""
    import redspot.hub.app as app
    from redspot.config.loader import enabled_services

    seen = {}

    def stop_before_the_helper(paths, settings, isolated, python, log=print):
        seen["services"] = enabled_services(settings)
        raise app.StartupError("stopped by the test before anything starts")

    monkeypatch.setattr(app, "start_helper", stop_before_the_helper)
    monkeypatch.setattr(app, "server_python", lambda *args, **kwargs: None)
    # a folder every account can pass through, as a data folder must be when isolated
    data = Path(tempfile.mkdtemp(prefix="redspot-first-start-", dir="/tmp"))
    try:
        data.chmod(0o711)
        with pytest.raises(app.StartupError, match="stopped by the test"):
            app.build_config(app.UpOptions(data_dir=str(data)), log=lambda *args: None)
        assert (data / "redspot.yaml").read_text() == app.STARTER_CONFIG
        assert seen["services"] == ["models", "environments", "warehouse", "sharing"]
    finally:
        shutil.rmtree(data)


def test_the_registry_command_and_stores(tmp_path):
    from redspot.models.service import command, store_env

    assert command("http://127.0.0.1:4321/services/models/", "/v/bin/mlflow") == [
        "/v/bin/mlflow", "server", "--app-name", "redspot",
        "--host", "127.0.0.1", "--port", "4321", "--workers", "1", "--serve-artifacts",
        "--allowed-hosts", "127.0.0.1:4321",
        "--uvicorn-opts", "--timeout-graceful-shutdown 1",
    ]
    sqlite = f"sqlite:///{tmp_path / 'mlflow.sqlite'}"
    assert store_env(tmp_path, {}) == {
        "MLFLOW_BACKEND_STORE_URI": sqlite, "MLFLOW_REGISTRY_STORE_URI": sqlite,
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    operator = {"MLFLOW_BACKEND_STORE_URI": "postgresql://db/mlflow",
                "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlflow"}
    assert store_env(tmp_path, operator) == {
        **operator, "MLFLOW_REGISTRY_STORE_URI": "postgresql://db/mlflow"}


def test_culling_gives_each_profile_its_idle_limit_and_reads_the_old_ray_key():
    from redspot.config.layers import layer_settings
    from redspot.config.loader import config_warnings
    from redspot.spawner.base import idle_args
    from redspot.spawner.local import RedspotLocalSpawner
    from redspot.spawner.profiles import BUILTIN_CATALOG

    settings = validate_settings({"culling": {"gpu_server_idle_timeout": 1800,
                                              "profiles": {"m5.xlarge": 0}},
                                  "ray": {"idle_timeout": 900}})
    c = Config()
    layer_settings(c, settings)
    spawner = RedspotLocalSpawner(config=c)
    assert spawner.ray_idle_timeout == 900
    assert config_warnings(settings) == [
        "ray.idle_timeout is deprecated (still read): write it as culling.ray_idle_timeout"]
    assert spawner.idle_timeout_of(BUILTIN_CATALOG["r5.4xlarge"]) == 28800
    assert spawner.idle_timeout_of(BUILTIN_CATALOG["p3.2xlarge"]) == 1800
    assert spawner.idle_timeout_of(BUILTIN_CATALOG["m5.xlarge"]) == 0
    assert idle_args(0) == []
    assert idle_args(1800) == [
        "--ServerApp.shutdown_no_activity_timeout=1800",
        "--MappingKernelManager.cull_idle_timeout=1800",
        "--MappingKernelManager.cull_interval=60",
        "--MappingKernelManager.cull_connected=True",
        "--MappingKernelManager.cull_busy=False",
        "--TerminalManager.cull_inactive_timeout=1800",
        "--TerminalManager.cull_interval=60"]
    settings = validate_settings({"culling": {"ray_idle_timeout": 60},
                                  "ray": {"idle_timeout": 900}})
    assert "ignored: culling.ray_idle_timeout is set" in config_warnings(settings)[0]
