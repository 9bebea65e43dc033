"""Builders: how an environment spec becomes something a server (and Ray) can run.

One interface, ``Builder``; each builder says which bases it builds on, what their
digests are (part of every tag), and builds a spec into a *location*: the Python of a
virtualenv, or an image reference. Output lines go to a ``log`` callable as they come.

- ``VenvBuilder`` (the local default): uv builds a virtualenv on the system's Python
  with the servers' packages and the spec's, resolved together. The build itself is the
  privileged helper's (``redspot.privileged``): it runs as the owner's build account,
  never as the service, with no token in reach.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .. import __version__
from . import runtime
from .spec import EnvironmentSpec

Log = Callable[[str], None]


class BuildFailed(Exception):
    """A build did not produce its environment; the log says why."""


class Builder:
    kind = ""

    def bases(self) -> dict[str, str]:
        """The bases this builder builds on: name -> what it holds."""
        raise NotImplementedError

    def base_digest(self, base: str) -> str:
        raise NotImplementedError

    def check(self, spec: EnvironmentSpec) -> None:
        """Raise ValueError if this builder cannot build ``spec`` (before anything starts)."""

    async def build(self, spec: EnvironmentSpec, tag: str, log: Log,
                    owner: str = "team") -> str:
        """Build ``spec`` as ``tag`` for ``owner`` (a user, or ``team``); return where it
        is. Raise BuildFailed, leaving nothing."""
        raise NotImplementedError

    def runtime_env(self, spec: EnvironmentSpec, location: str) -> dict:
        raise NotImplementedError


def merge_requirements(base: list[str], wanted: tuple[str, ...]) -> list[str]:
    """The base's pins, except for the packages the spec names: the user's choice wins
    (and the resolver says so when it cannot satisfy both)."""
    named = {canonicalize_name(Requirement(r).name) for r in wanted}
    kept = [r for r in base if canonicalize_name(Requirement(r).name) not in named]
    return [*kept, *wanted]


class VenvBuilder(Builder):
    """Virtualenvs in ``<data>/environments/venvs/<tag>``, each with everything a Redspot
    server needs, built by the privileged helper (``helper.call("build_venv", ...)``)."""

    kind = "venv"
    BASE = "default"

    def __init__(self, helper):
        self.helper = helper
        self._base_requirements: list[str] | None = None

    @property
    def base_requirements(self) -> list[str]:
        if self._base_requirements is None:
            self._base_requirements = runtime.base_requirements()
        return self._base_requirements

    def bases(self) -> dict[str, str]:
        return {self.BASE: "JupyterLab, Redspot and the hub's packages, in a virtualenv"}

    def base_digest(self, base: str) -> str:
        text = "\n".join([__version__, *self.base_requirements])
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def check(self, spec: EnvironmentSpec) -> None:
        if spec.debian:
            raise ValueError(
                "debian: the venv builder cannot install Debian packages; leave them out, "
                "or run Redspot with the buildah (or Kubernetes) builder"
            )

    async def build(self, spec: EnvironmentSpec, tag: str, log: Log,
                    owner: str = "team") -> str:
        from ..privileged.ops import HelperError

        loop = asyncio.get_running_loop()
        requirements = merge_requirements(self.base_requirements, spec.python)
        try:
            return await asyncio.to_thread(
                self.helper.call, "build_venv", owner=owner, tag=tag,
                requirements=requirements,
                output=lambda line: loop.call_soon_threadsafe(log, line))
        except HelperError as e:
            raise BuildFailed(str(e)) from None
        finally:
            await asyncio.sleep(0)  # the last lines reach the log first

    def runtime_env(self, spec: EnvironmentSpec, location: str) -> dict:
        from .render import runtime_env

        return runtime_env(spec, python=location)


class ImageBuilder(Builder):
    """A builder of OCI images on bases pinned by digest; a build's location is the
    pushed image by digest, which servers and Ray run."""

    def __init__(self, bases: dict[str, str]):
        for name, ref in bases.items():
            if "@sha256:" not in ref:
                raise ValueError(f"base {name!r}: pin the image by digest (name@sha256:…), "
                                 f"got {ref!r}")
        self._bases = dict(bases)

    def bases(self) -> dict[str, str]:
        return dict(self._bases)

    def base_digest(self, base: str) -> str:
        return self._bases[base].split("@", 1)[1]

    def runtime_env(self, spec: EnvironmentSpec, location: str) -> dict:
        from .render import runtime_env

        return runtime_env(spec, image=location)


class BuildahBuilder(ImageBuilder):
    """OCI images built with buildah from the rendered Dockerfile, pushed to a registry.

    ``bases`` maps base names to image references pinned by digest
    (``registry/redspot-singleuser@sha256:…``). The build is the privileged helper's: it
    runs buildah rootless as the owner's build account (``chroot`` isolation on the
    ``vfs`` storage driver, in a user namespace: a ``RUN`` step is root in there, never
    on the machine), and pushes ``<registry>/<repository>:<tag>``. Its location is the
    pushed image by digest.
    """

    kind = "buildah"

    def __init__(self, helper, registry: str, bases: dict[str, str],
                 repository: str = "redspot-env", tls_verify: bool = True):
        super().__init__(bases)
        self.helper = helper
        self.registry = registry
        self.repository = repository
        self.tls_verify = tls_verify

    async def build(self, spec: EnvironmentSpec, tag: str, log: Log,
                    owner: str = "team") -> str:
        from ..privileged.ops import HelperError
        from .render import build_context

        loop = asyncio.get_running_loop()
        image = f"{self.registry}/{self.repository}:{tag}"
        try:
            digest = await asyncio.to_thread(
                self.helper.call, "build_image", owner=owner, tag=tag,
                files=build_context(spec, self._bases[spec.base], tag), image=image,
                tls_verify=self.tls_verify,
                output=lambda line: loop.call_soon_threadsafe(log, line))
        except HelperError as e:
            raise BuildFailed(str(e)) from None
        finally:
            await asyncio.sleep(0)  # the last lines reach the log first
        return f"{self.registry}/{self.repository}@{digest}"


class KubernetesBuilder(ImageBuilder):
    """OCI images built by a Job in the cluster (buildah in an unprivileged pod:
    ``environments.jobs``), pushed to ``settings.repository``; its location is the
    pushed image by digest. ``redspot.kubernetes.BuildJobs`` runs the Job."""

    kind = "kubernetes"

    def __init__(self, settings, bases: dict[str, str], api_client=None):
        super().__init__(bases)
        self.settings = settings
        self._api_client = api_client

    async def _client(self):
        if self._api_client is None:
            from kubernetes_asyncio import client, config

            config.load_incluster_config()  # the service's pod and its service account
            self._api_client = client.ApiClient()
        return self._api_client

    async def build(self, spec: EnvironmentSpec, tag: str, log: Log,
                    owner: str = "team") -> str:
        from ..kubernetes import BuildJobFailed, BuildJobs
        from .jobs import build_manifests

        manifests = build_manifests(spec, tag, self._bases[spec.base], self.settings)
        jobs = BuildJobs(await self._client())
        try:
            digest = await jobs.run(manifests, log,
                                    timeout=self.settings.deadline_seconds + 120)
        except BuildJobFailed as e:
            raise BuildFailed(str(e)) from None
        return f"{self.settings.repository}@{digest}"
