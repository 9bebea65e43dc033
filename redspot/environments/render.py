"""Pure renderings of a spec: a Dockerfile on its base image, and a Ray ``runtime_env``.

Python requirements never appear in a shell command: they go into ``requirements.txt``
beside the Dockerfile (``build_context``), which pip reads. Debian package names, checked
against Debian's grammar by ``spec.py``, are the only spec values in a ``RUN`` line.
"""

from __future__ import annotations

import json

from .spec import EnvironmentSpec

#: The uid/gid of the notebook user in Redspot's images.
NB_UID, NB_GID = 1000, 100


def requirements_txt(spec: EnvironmentSpec) -> str:
    return "".join(f"{r}\n" for r in spec.python)


def dockerfile(spec: EnvironmentSpec, base_image: str, tag: str) -> str:
    """A Dockerfile that adds ``spec`` to ``base_image`` (pinned by digest: ``name@sha256:``).

    Layers go from what changes least (Debian packages) to what changes most (variables),
    so that rebuilds reuse the cache; the image ends as the non-root notebook user.
    """
    lines = [
        f"FROM {base_image}",
        f'LABEL io.redspot.environment.tag="{tag}"',
    ]
    if spec.debian:
        unpinned = any("=" not in p for p in spec.debian)
        lines += [
            "USER 0",
            "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]",
            *(["# hadolint ignore=DL3008"] if unpinned else []),
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends \\",
            *(f"      {p} \\" for p in spec.debian),
            " && rm -rf /var/lib/apt/lists/*",
        ]
    lines.append(f"USER {NB_UID}:{NB_GID}")
    if spec.python:
        lines += [
            f"COPY --chown={NB_UID}:{NB_GID} requirements.txt /tmp/redspot/requirements.txt",
            "RUN python -m pip install --no-cache-dir -r /tmp/redspot/requirements.txt",
        ]
    for key, value in spec.env:
        lines.append(f"ENV {key}={json.dumps(value)}")
    return "\n".join(lines) + "\n"


def build_context(spec: EnvironmentSpec, base_image: str, tag: str) -> dict[str, str]:
    """The files of the build context, by name."""
    files = {"Dockerfile": dockerfile(spec, base_image, tag)}
    if spec.python:
        files["requirements.txt"] = requirements_txt(spec)
    return files


def runtime_env(spec: EnvironmentSpec, *, python: str | None = None,
                image: str | None = None) -> dict:
    """The Ray ``runtime_env`` that runs tasks in this environment.

    Locally the environment is a virtualenv: workers start its ``python``. On Kubernetes
    the user's RayCluster runs the environment's ``image``. Either way the spec's
    variables come along, and nothing is installed again at task time.
    """
    env = {}
    if python:
        env["py_executable"] = python
    if image:
        env["image_uri"] = image
    if spec.env:
        env["env_vars"] = dict(spec.env)
    return env
