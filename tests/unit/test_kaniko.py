"""The kaniko build Job and its context, validated against the Kubernetes schemas."""

import kubernetes_validate
import pytest

from redspot.environments.kaniko import KanikoSettings, kaniko_manifests
from redspot.environments.spec import parse_spec

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env"
BASE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-singleuser@sha256:" + "b" * 64


def manifests(**spec):
    s = parse_spec({"name": "e", **spec}, {"singleuser": ""})
    tag = s.tag("sha256:" + "b" * 64)
    return tag, kaniko_manifests(s, tag, BASE, KanikoSettings(repository=ECR))


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_kaniko_manifests_validate(version):
    _, objects = manifests(python=["torch==2.13.0"], debian=["graphviz"], env={"A": "1"})
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_job_builds_the_rendered_context_and_pushes_to_ecr():
    tag, (configmap, job) = manifests(python=["six==1.16.0"])
    assert configmap["data"]["requirements.txt"] == "six==1.16.0\n"
    assert configmap["data"]["Dockerfile"].startswith(f"FROM {BASE}\n")
    assert configmap["data"]["config.json"] == (
        '{"credHelpers": {"123456789012.dkr.ecr.us-east-1.amazonaws.com": "ecr-login"}}')
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert f"--destination={ECR}:{tag}" in container["args"]
    assert f"--cache-repo={ECR}-cache" in container["args"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert pod["serviceAccountName"] == "redspot-builder"
    context = next(v for v in pod["volumes"] if v["name"] == "context")
    assert [i["key"] for i in context["configMap"]["items"]] == ["Dockerfile",
                                                                 "requirements.txt"]
    assert job["metadata"]["name"] == f"redspot-build-{tag}"


def test_a_spec_without_python_packages_has_no_requirements_file():
    _, (configmap, job) = manifests(env={"A": "1"})
    assert "requirements.txt" not in configmap["data"]


def test_kaniko_needs_a_repository():
    s = parse_spec({"name": "e"}, {"singleuser": ""})
    with pytest.raises(ValueError, match="set the ECR repository"):
        kaniko_manifests(s, "env-1", BASE, KanikoSettings())
