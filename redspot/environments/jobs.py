"""Building environment images on Kubernetes: a Job that runs buildah in an unprivileged
pod (pure manifest builders; ``redspot.kubernetes.BuildJobs`` submits and follows them).

Why buildah: kaniko's upstream repository was archived in 2025. buildah is maintained
(the containers project), builds the same Dockerfile with the same flags as the local
``buildah`` builder (``chroot`` isolation on the ``vfs`` driver), and needs no privilege:
the pod has a user namespace of its own (``hostUsers: false``, Kubernetes' user
namespaces, on by default from 1.33), so the build's root is nobody on the node. The pod
gets no service-account token and no hub token; it pushes with the registry credentials
of one Secret (``registry_secret``, a ``kubernetes.io/dockerconfigjson``), and writes
the pushed digest as its termination message, where the service reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .render import build_context
from .spec import EnvironmentSpec

#: buildah's own image (the containers project's), pinned.
BUILDAH_IMAGE = "quay.io/buildah/stable:v1.41.5"

#: What the build container runs: build, push, and say the digest where Kubernetes
#: keeps it (the container's termination message).
SCRIPT = """\
buildah build --isolation chroot --storage-driver vfs --layers=false \\
  -f /context/Dockerfile -t "$DESTINATION" /context
buildah push --storage-driver vfs --digestfile /dev/termination-log \\
  "$DESTINATION" "docker://$DESTINATION"
echo "pushed $DESTINATION@$(cat /dev/termination-log)"
"""


@dataclass(frozen=True)
class BuildJobSettings:
    namespace: str = "redspot-builds"
    #: ``<account>.dkr.ecr.<region>.amazonaws.com/redspot-env``: tags are ``:<tag>``
    repository: str = ""
    #: a ``kubernetes.io/dockerconfigjson`` Secret in ``namespace`` to push with
    registry_secret: str = ""
    image: str = BUILDAH_IMAGE
    cpu: str = "2"
    memory: str = "8Gi"
    #: room for the image's layers while it builds (vfs copies each layer)
    scratch: str = "50Gi"
    deadline_seconds: int = 3600
    ttl_seconds: int = 600


def job_name(tag: str) -> str:
    return f"redspot-build-{tag}"[:63].rstrip("-")


def destination(settings: BuildJobSettings, tag: str) -> str:
    return f"{settings.repository}:{tag}"


def build_manifests(spec: EnvironmentSpec, tag: str, base_image: str,
                    settings: BuildJobSettings) -> list[dict]:
    """The ConfigMap with the build context and the Job that builds and pushes ``tag``."""
    if not settings.repository:
        raise ValueError("kubernetes builds: set the repository to push environments to "
                         "(e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/redspot-env)")
    name = job_name(tag)
    labels = {"app.kubernetes.io/name": "redspot", "app.kubernetes.io/component": "build",
              "redspot.io/environment-tag": tag}
    context = build_context(spec, base_image, tag)
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "data": context,
    }
    volumes = [
        {"name": "context", "configMap": {
            "name": name, "items": [{"key": k, "path": k} for k in sorted(context)]}},
        {"name": "storage", "emptyDir": {"sizeLimit": settings.scratch}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [{"name": "context", "mountPath": "/context", "readOnly": True},
              {"name": "storage", "mountPath": "/var/lib/containers"},
              {"name": "tmp", "mountPath": "/tmp"}]
    env = [{"name": "DESTINATION", "value": destination(settings, tag)},
           {"name": "HOME", "value": "/tmp"},
           {"name": "BUILDAH_ISOLATION", "value": "chroot"}]
    if settings.registry_secret:
        volumes.append({"name": "registry", "secret": {
            "secretName": settings.registry_secret,
            "items": [{"key": ".dockerconfigjson", "path": "auth.json"}]}})
        mounts.append({"name": "registry", "mountPath": "/registry", "readOnly": True})
        env.append({"name": "REGISTRY_AUTH_FILE", "value": "/registry/auth.json"})
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.deadline_seconds,
            "ttlSecondsAfterFinished": settings.ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # root in the pod's own user namespace: nobody on the node
                    "hostUsers": False,
                    "containers": [{
                        "name": "buildah",
                        "image": settings.image,
                        "command": ["/bin/sh", "-ec", SCRIPT],
                        "env": env,
                        "terminationMessagePolicy": "File",
                        "resources": {
                            "requests": {"cpu": settings.cpu, "memory": settings.memory},
                            "limits": {"memory": settings.memory},
                        },
                        "securityContext": {"allowPrivilegeEscalation": False,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }
    return [configmap, job]
