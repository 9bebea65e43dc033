"""helm/redspot rendered offline (helm-python-sdk embeds Helm) for several value sets,
linted strictly, every document validated against Kubernetes' schemas, and the hub's
configuration checked to be what `redspot config show` makes of the same redspot.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import redspot
from redspot.config import chart as chart_schema
from redspot.hub import app, incluster

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is in the dev extra")

CHART = Path(__file__).resolve().parents[2] / "helm" / "redspot"
# the chart's kubeVersion is >=1.29: each minor version kubernetes-validate knows since
KUBE_VERSIONS = [v for v in sorted(set(kubernetes_validate.utils.all_versions()))
                 if tuple(map(int, v.split(".")[:2])) >= (1, 29)]
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

VALUE_SETS = {
    "minimal": {},
    "eks": {
        "redspot": {
            "hub": {"base_url": "/"},
            "auth": {"type": "oauth", "admin_users": ["ana@example.com"], "oauth": {
                "provider": "generic", "config": {
                    "client_id": "redspot", "scope": ["openid", "email", "groups"],
                    "authorize_url": "https://login.example.com/oauth2/authorize",
                    "token_url": "https://login.example.com/oauth2/token",
                    "userdata_url": "https://login.example.com/oauth2/userinfo",
                    "username_claim": "email",
                    "oauth_callback_url": "https://hub.example.com/hub/oauth_callback"}}},
            "profiles": {"default": "m5.xlarge", "everyone": ["m5.xlarge"]},
            "groups": {"vision": {"users": ["ana@example.com"],
                                  "profiles": ["g5.xlarge", "p4d.24xlarge"]}},
            "spawner": {"kind": "kubernetes", "start_timeout": 900},
            "services": {
                "models": {
                    "enabled": True, "artifacts_destination": "s3://acme-models/registry",
                    "backend_store_uri": "postgresql://mlflow@mlflow.cluster.rds.amazonaws"
                                         ".com:5432/mlflow"},
                "environments": {
                    "enabled": True, "builder": "kubernetes",
                    "repository": f"{ECR}/redspot-env", "registry_secret": "ecr-push",
                    "build_namespace": "redspot-builds",
                    "bases": {"singleuser": f"{ECR}/redspot-singleuser@sha256:" + "a" * 64}},
                "sharing": {"enabled": True},
                "warehouse": {"enabled": True}},
            "warehouse": {"demo": False, "connections": {"analytics": {
                "engine": "postgresql", "address": "analytics.xxxx.rds.amazonaws.com:5432",
                "database": "analytics", "groups": ["*"],
                "credentials": {"kind": "postgres-role",
                                "admin_dsn_file": "/etc/redspot/secrets/pg/dsn"}}}},
            "kubernetes": {
                "images": {"cpu": f"{ECR}/redspot-singleuser:0.1.0",
                           "gpu": f"{ECR}/redspot-singleuser-gpu:0.1.0"},
                "node_selector": {"karpenter.sh/nodepool": "redspot"},
                "storage": {"mode": "access-points", "claim": "redspot-efs",
                            "home_storage_class": "efs-ap"}},
        },
        "hub": {"image": {"name": f"{ECR}/redspot-hub", "tag": "0.1.0"},
                "imagePullSecrets": ["ecr"], "nodeSelector": {"role": "system"},
                "secretEnv": [{"name": "OAUTH_CLIENT_SECRET", "secretName": "redspot-oidc",
                               "key": "secret"}]},
        "proxy": {"service": {"type": "ClusterIP"}},
        "prePuller": {"enabled": True, "nodeSelector": {"karpenter.sh/nodepool": "gpu"}},
        "services": {
            "models": {
                "secretEnv": [{"name": "PGPASSWORD", "secretName": "mlflow-db",
                               "key": "password"}],
                "serviceAccountAnnotations": {
                    "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/redspot-models"}},
            "warehouse": {"secretMounts": [
                {"secretName": "warehouse-pg-admin", "mountPath": "/etc/redspot/secrets/pg"}]}},
        "ingress": {"enabled": True, "className": "alb", "hosts": ["hub.example.com"],
                    "annotations": {"alb.ingress.kubernetes.io/scheme": "internet-facing"},
                    "tls": [{"secretName": "redspot-tls", "hosts": ["hub.example.com"]}]},
    },
    "external-postgres": {
        "hub": {"db": {"type": "postgres", "url": "postgresql://redspot@db.example.com:5432/hub",
                       "passwordSecret": {"name": "redspot-db", "key": "password"}}},
        "proxy": {"service": {"type": "LoadBalancer", "annotations": {
            "service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}}},
    },
}


def render(values: dict, name: str = "redspot") -> list[dict]:
    rendered = helm.Chart.load(str(CHART)).render(values, name=name, namespace="jhub",
                                                   is_install=True)
    assert rendered, "nothing rendered (a missing dependency renders {})"
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def find(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request):
    return request.param, render(VALUE_SETS[request.param])


def test_values_schema_json_is_made_from_its_two_sources():
    committed = (CHART / "values.schema.json").read_text()
    assert committed == chart_schema.render(chart_schema.values_schema()), (
        "helm/redspot/values.schema.json is not what `make chart-schema` makes")


def test_the_chart_follows_redspots_version():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert meta["version"] == meta["appVersion"] == redspot.__version__
    assert values["hub"]["image"]["tag"] == redspot.__version__


def test_every_document_is_valid_for_every_supported_kubernetes(rendered):
    name, docs = rendered
    assert KUBE_VERSIONS and KUBE_VERSIONS[0].startswith("1.29"), KUBE_VERSIONS
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Secret", "ConfigMap", "PersistentVolumeClaim",
            "ServiceAccount", "Role", "RoleBinding"} <= kinds, (name, kinds)
    for doc in docs:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_chart_lints_strictly(name):
    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True, namespace="jhub",
                       kube_version="v1.31.0")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("values, named", [
    ({"redspot": {"profiles": {"default": 5}}}, "redspot"),
    ({"redspot": {"spawner": {"kind": "local"}}}, "kind"),
    ({"redspot": {"no_such_key": 1}}, "no_such_key"),
    ({"hub": {"db": {"type": "mysql"}}}, "type"),
    ({"hub": {"cookieSecret": "short"}}, "cookieSecret"),
    ({"hub": {"image": {"tag": 5}}}, "tag"),
    ({"ingres": {"enabled": True}}, "ingres"),
])
def test_the_schema_refuses_bad_values_naming_the_key(values, named):
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    assert named in str(refused.value), str(refused.value)


@pytest.mark.parametrize("values, says", [
    ({"ingress": {"enabled": True}}, "ingress.hosts"),
    ({"redspot": {"services": {"environments": {"enabled": True}}}},
     "redspot.services.environments.builder: on Kubernetes, environments are built by Jobs"),
    ({"redspot": {"services": {"warehouse": {"enabled": True}}}},
     "redspot.warehouse.demo: the demo data set is a file on one machine's disk"),
    ({"hub": {"db": {"type": "postgres"}}}, "hub.db.url"),
])
def test_what_the_schema_cannot_say_fails_the_render_with_the_key(values, says):
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert says in str(refused.value), str(refused.value)


def test_generated_secrets_are_kept_when_given_and_never_in_a_pod_spec():
    given = "ab" * 32
    docs = render({"hub": {"cookieSecret": given}})
    secret = find(docs, "Secret", "redspot-secrets")
    import base64

    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["cookie-secret"] == given
    assert len(data["proxy-token"]) == 64 and len(data["crypt-key"]) == 64
    # rendered offline, lookup finds no Secret: each render makes new ones (an upgrade
    # reads them back from the cluster)
    again = find(render({}), "Secret", "redspot-secrets")
    assert again["data"]["proxy-token"] != secret["data"]["proxy-token"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    text = json.dumps([d for d in docs if d["kind"] == "Deployment"])
    assert given not in text and data["proxy-token"] not in text


def test_pods_run_unprivileged(rendered):
    _, docs = rendered
    pods = [d["spec"]["template"]["spec"] for d in docs
            if d["kind"] in ("Deployment", "DaemonSet")]
    pods += [d["spec"] for d in docs if d["kind"] == "Pod"]  # helm test's
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["readOnlyRootFilesystem"] is True
    proxy = find(docs, "Deployment", "redspot-proxy")["spec"]["template"]["spec"]
    assert proxy["automountServiceAccountToken"] is False


def test_the_hub_may_do_what_the_spawner_does_and_no_more():
    docs = render({})
    role = find(docs, "Role", "redspot-hub")
    allowed = {(group, resource, verb) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert ("", "pods", "create") in allowed and ("ray.io", "rayclusters", "delete") in allowed
    assert not any(resource in ("nodes", "roles", "rolebindings", "clusterroles")
                   for _, resource, _ in allowed)
    assert not any(verb in ("*", "escalate", "bind", "impersonate") for *_, verb in allowed)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def _hub_options(docs, tmp_path) -> incluster.InCluster:
    config = find(docs, "ConfigMap", "redspot-hub")["data"]["redspot.yaml"]
    path = tmp_path / "redspot.yaml"
    path.write_text(config)
    container = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"][
        "containers"][0]
    args = dict(a[2:].split("=", 1) for a in container["args"] if a.startswith("--"))
    assert container["args"][:2] == ["redspot", "hub"]
    assert args["config"] == "/etc/redspot/redspot.yaml"
    return incluster.InCluster(config=path, data_dir=tmp_path / "data",
                               hub_url=args["hub-url"], proxy_api_url=args["proxy-api-url"])


@pytest.mark.parametrize("name", ["minimal", "eks"])
def test_the_hub_applies_the_values_as_redspot_config_show_does(name, tmp_path):
    values = VALUE_SETS[name]
    docs = render(values)
    options = _hub_options(docs, tmp_path)
    given = {"spawner": {"kind": "kubernetes"}, "kubernetes": {}, "services": {},
             **values.get("redspot", {})}
    assert yaml.safe_load(options.config.read_text()) == given
    tokens = {f"REDSPOT_SERVICE_TOKEN_{name.upper()}": name[0] * 64
              for name in ("models", "environments", "sharing", "warehouse")}
    tokens["REDSPOT_SPAWNER_TOKEN"] = "s" * 64
    tokens["REDSPOT_METRICS_TOKEN"] = "m" * 64  # Prometheus', as `redspot up` makes one
    in_pod = json.loads(json.dumps(incluster.build_config(options, environ=tokens),
                                   default=str))
    shown = app.build_config(app.UpOptions(data_dir=str(tmp_path / "data"),
                                           config=str(options.config)), prepare=False)[0]
    shown = json.loads(json.dumps(shown, default=str))
    # what the pod changes: where the hub and proxy listen and are reached, and that a
    # pod has no system accounts (this machine's `config show`, as root, would make them)
    pod_only = {"JupyterHub": {"hub_ip", "hub_port", "hub_connect_url", "cleanup_servers",
                               "ip", "port"},
                "ConfigurableHTTPProxy": {"should_start", "api_url"},
                "RedspotLifecycle": {"isolated"},
                # services run in pods of their own: compared below
                "RedspotSpawnerMixin": {"service_urls", "services_token"}}
    for section in (in_pod, shown):
        section["JupyterHub"]["services"] = {
            s["name"]: {k: v for k, v in s.items() if k in ("display", "oauth_no_confirm")}
            for s in section["JupyterHub"].get("services", [])}
    for section in set(in_pod) | set(shown):
        ours = {k: v for k, v in in_pod.get(section, {}).items()
                if k not in pod_only.get(section, ())}
        theirs = {k: v for k, v in shown.get(section, {}).items()
                  if k not in pod_only.get(section, ())}
        assert ours == theirs, section
    assert in_pod["JupyterHub"]["hub_connect_url"] == "http://redspot-hub:8081"
    assert in_pod["ConfigurableHTTPProxy"] == {**in_pod["ConfigurableHTTPProxy"],
                                               "should_start": False,
                                               "api_url": "http://redspot-proxy-api:8001"}
    assert in_pod["JupyterHub"]["spawner_class"] == "redspot-kube"
    if values.get("redspot", {}).get("services"):
        assert in_pod["RedspotSpawnerMixin"]["service_urls"] == {
            name: f"http://redspot-{name}:8080/services/{name}/"
            for name in ("environments", "models", "warehouse", "sharing")}
        # the spawner asks the environments service which are ready, with the token the
        # chart gives the hub from the release's Secret
        assert in_pod["RedspotSpawnerMixin"]["services_token"] == "s" * 64
        hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"][
            "containers"][0]
        assert {"name": "REDSPOT_SPAWNER_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": "redspot-secrets", "key": "spawner-token"}}} in hub["env"]
        with pytest.raises(Exception, match="REDSPOT_SPAWNER_TOKEN is not set"):
            incluster.build_config(options, environ={
                k: v for k, v in tokens.items() if k != "REDSPOT_SPAWNER_TOKEN"})


def test_a_services_pod_runs_what_redspot_up_would_with_what_the_hub_gives_services(
        tmp_path):
    docs = render(VALUE_SETS["eks"])
    options = _hub_options(docs, tmp_path)
    pod = find(docs, "Deployment", "redspot-models")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = dict(a[2:].split("=", 1) for a in container["args"] if a.startswith("--"))
    assert container["args"][:3] == ["redspot", "service", "models"]
    assert args["hub-url"] == options.hub_url and args["release"] == "redspot"
    env = {e["name"]: e for e in container["env"]}
    assert env["REDSPOT_SERVICE_TOKEN_MODELS"]["valueFrom"]["secretKeyRef"] == {
        "name": "redspot-secrets", "key": "service-token-models"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    hub_env = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"][
        "containers"][0]["env"]
    assert {"name": "OAUTH_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {
        "name": "redspot-oidc", "key": "secret"}}} in hub_env
    assert find(docs, "ServiceAccount", "redspot-models")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/redspot-models"}
    # the hub gets the same token, from the same key
    hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDSPOT_SERVICE_TOKEN_MODELS", "valueFrom": {"secretKeyRef": {
        "name": "redspot-secrets", "key": "service-token-models"}}} in hub["env"]

    command, environ = incluster.service_process("models", options, environ={
        "REDSPOT_SERVICE_TOKEN_MODELS": "s" * 64, "PGPASSWORD": "pw"})
    assert command[1:] == ["-m", "redspot.models.service",
                           f"--data-dir={tmp_path / 'data' / 'models'}"]
    assert environ["JUPYTERHUB_API_TOKEN"] == "s" * 64 and environ["PGPASSWORD"] == "pw"
    assert environ["JUPYTERHUB_API_URL"] == "http://redspot-hub:8081/hub/api"
    assert environ["JUPYTERHUB_SERVICE_PREFIX"] == "/services/models/"
    assert environ["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8080"
    # the stores as redspot.yaml says them, through MLflow's own variables
    assert environ["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://acme-models/registry"
    assert environ["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://mlflow@")
    with pytest.raises(Exception, match="REDSPOT_SERVICE_TOKEN_SHARING is not set"):
        incluster.service_process("sharing", options, environ={})
    (tmp_path / "minimal").mkdir()
    minimal = _hub_options(render(VALUE_SETS["minimal"]), tmp_path / "minimal")
    with pytest.raises(Exception, match="services.sharing: not enabled"):
        incluster.service_process("sharing", minimal, environ={})


def test_the_environments_service_submits_build_jobs_in_the_builds_namespace_only(
        tmp_path):
    docs = render(VALUE_SETS["eks"])
    # of the services, only the environments one has a Kubernetes token
    for service, mounted in (("environments", True), ("models", False)):
        account = find(docs, "ServiceAccount", f"redspot-{service}")
        pod = find(docs, "Deployment", f"redspot-{service}")["spec"]["template"]["spec"]
        assert account["automountServiceAccountToken"] is mounted
        assert pod["automountServiceAccountToken"] is mounted
    role = find(docs, "Role", "redspot-environments-builds")
    assert role["metadata"]["namespace"] == "redspot-builds"
    allowed = {(group, resource, verb) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    # what redspot.kubernetes.BuildJobs calls, and nothing more
    assert allowed == {
        ("batch", "jobs", "create"), ("batch", "jobs", "get"), ("batch", "jobs", "delete"),
        ("batch", "jobs/status", "get"), ("", "configmaps", "create"),
        ("", "configmaps", "delete"), ("", "pods", "list"), ("", "pods/log", "get")}
    binding = find(docs, "RoleBinding", "redspot-environments-builds")
    assert binding["metadata"]["namespace"] == "redspot-builds"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "redspot-environments",
                                    "namespace": "jhub"}]
    # build pods: nobody reaches them; they reach the internet but not the metadata
    # service
    policy = find(docs, "NetworkPolicy", "redspot-builds")
    assert policy["metadata"]["namespace"] == "redspot-builds"
    assert policy["spec"]["ingress"] == []
    assert any("169.254.169.254/32" in rule["to"][0].get("ipBlock", {}).get("except", [])
               for rule in policy["spec"]["egress"])
    # its pod runs the service with the kubernetes builder, as `redspot up` would
    options = _hub_options(docs, tmp_path)
    command, environ = incluster.service_process("environments", options, environ={
        "REDSPOT_SERVICE_TOKEN_ENVIRONMENTS": "e" * 64})
    assert command[1:5] == ["-m", "redspot.environments.service",
                            f"--data-dir={tmp_path / 'data' / 'environments'}",
                            "--builder=kubernetes"]
    assert f"--EnvironmentsService.repository={ECR}/redspot-env" in command
    assert "--EnvironmentsService.build_namespace=redspot-builds" in command
    assert environ["JUPYTERHUB_SERVICE_PREFIX"] == "/services/environments/"


def test_the_warehouse_reads_its_secrets_in_its_own_pod_alone(tmp_path):
    docs = render(VALUE_SETS["eks"])
    for service in ("models", "environments", "sharing", "warehouse"):
        pod = find(docs, "Deployment", f"redspot-{service}")["spec"]["template"]["spec"]
        secrets = [v for v in pod["volumes"] if "secret" in v]
        assert bool(secrets) is (service == "warehouse"), service
    pod = find(docs, "Deployment", "redspot-warehouse")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "warehouse-pg-admin", "defaultMode": 0o440}
    assert {"name": volume["name"], "mountPath": "/etc/redspot/secrets/pg",
            "readOnly": True} in pod["containers"][0]["volumeMounts"]
    hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"]
    assert not [v for v in hub["volumes"] if "secret" in v]
    # the service's pod reads the files redspot.yaml names, as `redspot up` does
    options = _hub_options(docs, tmp_path)
    settings = yaml.safe_load(options.config.read_text())
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://admin:pw@db.example.com:5432/analytics\n")
    settings["warehouse"]["connections"]["analytics"]["credentials"]["admin_dsn_file"] = \
        str(dsn)
    options.config.write_text(yaml.safe_dump(settings))
    token = {"REDSPOT_SERVICE_TOKEN_WAREHOUSE": "w" * 64}
    _, environ = incluster.service_process("warehouse", options, environ=token)
    assert json.loads(environ["REDSPOT_WAREHOUSE_SECRETS"]) == {
        "analytics": {"admin_dsn": "postgresql://admin:pw@db.example.com:5432/analytics"}}
    assert "pw@" not in environ["REDSPOT_WAREHOUSE_CONNECTIONS"]
    dsn.unlink()
    with pytest.raises(Exception, match="admin_dsn_file: cannot read .*secretMounts"):
        incluster.service_process("warehouse", options, environ=token)
    # the sharing service runs without the privileged helper: shares are mounts
    command, _ = incluster.service_process("sharing", options, environ={
        "REDSPOT_SERVICE_TOKEN_SHARING": "s" * 64})
    assert "--deployment=kubernetes" in command


def test_helm_test_runs_redspot_smoke_with_a_token_for_its_own_user_alone(tmp_path):
    docs = render({"smokeTest": {"profile": "m5.xlarge"}})
    pod = find(docs, "Pod", "redspot-smoke-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["redspot", "smoke", "--hub-url=http://redspot-proxy-public:80",
                                 "--timeout=900", "--profile=m5.xlarge"]
    secret = {"secretKeyRef": {"name": "redspot-secrets", "key": "smoke-token"}}
    assert {"name": "REDSPOT_SMOKE_TOKEN", "valueFrom": secret} in container["env"]
    hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "REDSPOT_SMOKE_TOKEN", "valueFrom": secret} in hub["env"]
    assert "smoke-token" in find(docs, "Secret", "redspot-secrets")["data"]
    # the hub knows that token as the redspot-smoke service, whose scopes reach the user
    # redspot-smoke alone
    c = incluster.build_config(_hub_options(docs, tmp_path),
                               environ={"REDSPOT_SMOKE_TOKEN": "k" * 64})
    assert {"name": "redspot-smoke", "api_token": "k" * 64} in c.JupyterHub.services
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "redspot-smoke")
    assert role["scopes"] == ["admin:users!user=redspot-smoke",
                              "admin:servers!user=redspot-smoke",
                              "access:servers!user=redspot-smoke"]


def test_the_pre_puller_pulls_every_users_image_where_gpu_nodes_are():
    docs = render(VALUE_SETS["eks"])
    pod = find(docs, "DaemonSet", "redspot-image-puller")["spec"]["template"]["spec"]
    assert sorted(c["image"] for c in pod["initContainers"]) == sorted(
        VALUE_SETS["eks"]["redspot"]["kubernetes"]["images"].values())
    assert pod["nodeSelector"] == {"karpenter.sh/nodepool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists",
            "effect": "NoSchedule"} in pod["tolerations"]
    assert not [d for d in render({}) if d["kind"] == "DaemonSet"]  # off by default
    with pytest.raises(helm.HelmError, match="prePuller.enabled"):
        render({"prePuller": {"enabled": True}})


def test_the_hub_in_a_pod_refuses_what_a_pod_cannot_do(tmp_path):
    from redspot.config.loader import ConfigError

    path = tmp_path / "redspot.yaml"
    path.write_text(yaml.safe_dump({"auth": {"type": "pam"},
                                    "services": {"warehouse": {"enabled": True},
                                                 "environments": {"enabled": True}}}))
    with pytest.raises(ConfigError) as refused:
        incluster.build_config(incluster.InCluster(path, tmp_path, "http://h:8081",
                                                   "http://p:8001"))
    text = str(refused.value)
    for named in ("spawner.kind", "warehouse.demo", "services.environments.builder",
                  "auth.type"):
        assert named in text, text


def test_the_database_is_postgres_with_the_password_from_its_secret(tmp_path):
    docs = render(VALUE_SETS["external-postgres"])
    hub = find(docs, "Deployment", "redspot-hub")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in hub["containers"][0]["env"]}
    assert env["REDSPOT_HUB_DB_URL"]["value"] == "postgresql://redspot@db.example.com:5432/hub"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redspot-db",
                                                              "key": "password"}
    options = _hub_options(docs, tmp_path)
    c = incluster.build_config(options, environ={
        "REDSPOT_HUB_DB_URL": env["REDSPOT_HUB_DB_URL"]["value"]})
    assert c.JupyterHub.db_url == "postgresql://redspot@db.example.com:5432/hub"


# --- network policies: who may talk to whom --------------------------------------------

def _scene():
    from redspot.compute.kuberay import ray_cluster_name, server_selector
    from tests.netpol import Endpoint

    chart = {"app.kubernetes.io/name": "redspot", "app.kubernetes.io/instance": "redspot"}

    def server(user, ip):
        return Endpoint(f"{user}'s server", ip, "jhub",
                        {**server_selector(user)["matchLabels"],
                         "app.kubernetes.io/name": "jupyterhub"})

    def ray(user, node, ip):
        return Endpoint(f"{user}'s ray {node}", ip, "jhub", {
            "app.kubernetes.io/name": "redspot", "app.kubernetes.io/component": "ray",
            "ray.io/cluster": ray_cluster_name(user), "ray.io/node-type": node})

    return {
        "hub": Endpoint("hub", "10.0.1.10", "jhub",
                        {**chart, "app.kubernetes.io/component": "hub"}),
        "proxy": Endpoint("proxy", "10.0.1.11", "jhub",
                          {**chart, "app.kubernetes.io/component": "proxy"}),
        "alice": server("ana@example.com", "10.0.2.10"),
        "bob": server("bob", "10.0.2.11"),
        "alice-head": ray("ana@example.com", "head", "10.0.3.10"),
        "alice-worker": ray("ana@example.com", "worker", "10.0.3.11"),
        "bob-head": ray("bob", "head", "10.0.3.20"),
        "models": Endpoint("the registry", "10.0.1.12", "jhub", {
            **chart, "app.kubernetes.io/component": "models", "redspot.io/service": "models"}),
        "dns": Endpoint("coredns", "10.0.0.53", "kube-system", {"k8s-app": "kube-dns"}),
        "metadata": Endpoint("instance metadata", "169.254.169.254"),
        "database": Endpoint("the hub's RDS database", "10.1.2.3"),
        "warehouse": Endpoint("a warehouse in the VPC", "10.20.1.1"),
        "internet": Endpoint("pypi.org", "151.101.0.223"),
    }


def _policies(values: dict) -> list[dict]:
    from redspot.compute.kuberay import RayClusterSpec, network_policies
    from redspot.spawner.profiles import BUILTIN_CATALOG

    docs = [d for d in render(values) if d["kind"] == "NetworkPolicy"]
    for doc in docs:
        doc["metadata"].setdefault("namespace", "jhub")  # as helm install -n jhub puts it
    for user in ("ana@example.com", "bob"):  # what the spawner makes with each cluster
        docs += network_policies(RayClusterSpec(user=user, namespace="jhub", image="i",
                                                head=BUILTIN_CATALOG["m5.xlarge"]))
    for doc in docs:
        for version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
            kubernetes_validate.validate(doc, version, strict=True)
    return docs


def test_users_pods_reach_their_own_and_nothing_of_anyone_elses():
    from tests.netpol import allowed

    policies, pods = _policies({"redspot": {"services": {"models": {"enabled": True}}}}), \
        _scene()

    def may(a, b, port, protocol="TCP"):
        return allowed(policies, pods[a], pods[b], port, protocol)

    # the platform's own paths
    assert may("internet", "proxy", 8000) and not may("internet", "proxy", 8001)
    assert may("proxy", "hub", 8081) and may("hub", "proxy", 8001)
    assert may("proxy", "alice", 8888) and may("hub", "alice", 8888)
    assert may("alice", "hub", 8081) and may("alice", "dns", 53, "UDP")
    assert may("hub", "database", 5432) and may("hub", "internet", 443)
    assert not may("internet", "hub", 8081) and not may("internet", "alice", 8888)
    # the registry: servers, the hub and the proxy reach it; it reaches the hub and its
    # stores, not the metadata service
    for pod in ("alice", "hub", "proxy"):
        assert may(pod, "models", 8080) and not may(pod, "models", 22)
    assert not may("internet", "models", 8080) and not may("alice-head", "models", 8080)
    assert may("models", "hub", 8081) and may("models", "database", 5432)
    assert not may("models", "metadata", 80) and not may("models", "alice", 8888)
    # a user's server and their own Ray cluster
    for port in (6379, 8265, 10001):
        assert may("alice", "alice-head", port)
    assert may("alice-worker", "alice-head", 6379) and may("alice-head", "alice-worker", 12345)
    # never another user's server or Ray cluster, from a server or from Ray
    for a, b in (("alice", "bob"), ("bob", "alice"), ("alice", "bob-head"),
                 ("bob", "alice-head"), ("bob-head", "alice-head"),
                 ("alice-worker", "bob"), ("alice-head", "alice")):
        for port in (8888, 6379, 8265, 10001, 22):
            assert not may(a, b, port), (a, b, port)
    # nor the hub's database, the metadata service or the hub's inside
    for pod in ("alice", "alice-head", "alice-worker"):
        assert not may(pod, "database", 5432) and not may(pod, "metadata", 80)
        assert not may(pod, "proxy", 8001) and not may(pod, "hub", 22)
        assert may(pod, "internet", 443) and may(pod, "dns", 53, "UDP")


def test_the_internet_and_private_destinations_are_the_operators_choice():
    from tests.netpol import allowed

    pods = _scene()
    closed = _policies({"networkPolicy": {"internet": False, "userEgress": [
        {"cidr": "10.20.0.0/16", "ports": [5432]}]}})
    assert not allowed(closed, pods["alice"], pods["internet"], 443)
    assert allowed(closed, pods["alice"], pods["warehouse"], 5432)
    assert not allowed(closed, pods["alice"], pods["warehouse"], 22)
    assert allowed(closed, pods["alice"], pods["hub"], 8081)
    assert not [d for d in render({"networkPolicy": {"enabled": False}})
                if d["kind"] == "NetworkPolicy"]


def test_helm_test_reaches_the_hub_through_the_proxy_as_a_browser_does():
    from tests.netpol import Endpoint, allowed

    docs = render({})
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "--hub-url=http://redspot-proxy-public:80" in pod["spec"]["containers"][0]["args"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for doc in policies:
        doc["metadata"].setdefault("namespace", "jhub")
    scene = _scene()
    tester = Endpoint("helm test", "10.0.9.9", "jhub", pod["metadata"]["labels"])
    assert allowed(policies, tester, scene["proxy"], 8000)
