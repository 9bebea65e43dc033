"""Building environment images on Kubernetes with kaniko: pure manifest builders.

An environment build on EKS is a ConfigMap holding the build context (the Dockerfile and
``requirements.txt`` that ``render.build_context`` makes) and a Job that runs kaniko's
executor on it and pushes to ECR, authenticating with the ECR credential helper through
the Job's service account (IAM Roles for Service Accounts). Nothing here talks to a
cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .render import build_context
from .spec import EnvironmentSpec

#: kaniko's executor, pinned (it carries the ECR credential helper).
KANIKO_IMAGE = "gcr.io/kaniko-project/executor:v1.23.2"


@dataclass(frozen=True)
class KanikoSettings:
    namespace: str = "redspot-builds"
    #: ``<account>.dkr.ecr.<region>.amazonaws.com/redspot-env``: tags are ``:<tag>``
    repository: str = ""
    service_account: str = "redspot-builder"
    image: str = KANIKO_IMAGE
    cpu: str = "2"
    memory: str = "8Gi"
    deadline_seconds: int = 3600
    ttl_seconds: int = 3600

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]


def destination(settings: KanikoSettings, tag: str) -> str:
    return f"{settings.repository}:{tag}"


def kaniko_manifests(spec: EnvironmentSpec, tag: str, base_image: str,
                     settings: KanikoSettings) -> list[dict]:
    """The ConfigMap (context and registry login) and the Job that builds ``tag``."""
    if not settings.repository:
        raise ValueError("kaniko: set the ECR repository to push environments to")
    name = f"redspot-build-{tag}"
    labels = {"app.kubernetes.io/name": "redspot", "app.kubernetes.io/component": "build",
              "redspot.io/environment-tag": tag}
    context = build_context(spec, base_image, tag)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "data": {
            **context,
            "config.json": json.dumps({"credHelpers": {settings.registry: "ecr-login"}}),
        },
    }
    items = [{"key": key, "path": key} for key in context]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "containers": [{
                        "name": "kaniko",
                        "image": settings.image,
                        "args": [
                            "--context=dir:///workspace",
                            "--dockerfile=/workspace/Dockerfile",
                            f"--destination={destination(settings, tag)}",
                            "--cache=true",
                            f"--cache-repo={settings.repository}-cache",
                            "--snapshot-mode=redo",
                            "--digest-file=/dev/termination-log",
                        ],
                        "resources": {
                            "requests": {"cpu": settings.cpu, "memory": settings.memory},
                            "limits": {"memory": settings.memory},
                        },
                        "volumeMounts": [
                            {"name": "context", "mountPath": "/workspace"},
                            {"name": "docker-config", "mountPath": "/kaniko/.docker"},
                        ],
                    }],
                    "volumes": [
                        {"name": "context", "configMap": {"name": name, "items": items}},
                        {"name": "docker-config", "configMap": {
                            "name": name, "items": [{"key": "config.json",
                                                     "path": "config.json"}]}},
                    ],
                },
            },
        },
    }
    return [configmap, job]
