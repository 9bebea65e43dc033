"""The environment service seen from a user's server: what ``%%ray_remote --env`` asks.

The server's own hub token (``$JUPYTERHUB_API_TOKEN``) may read environments; the
service's URL comes from the spawner (``$REDSPOT_ENVIRONMENTS_URL``).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class EnvironmentLookupError(LookupError):
    """The environment cannot be used; the message says why and what can."""


class EnvironmentRequestError(ValueError):
    """The service refused to make an environment; the message says why."""


class EnvironmentsClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = (url or os.environ.get("REDSPOT_ENVIRONMENTS_URL", "")).rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout

    def _get(self, path: str) -> dict:
        return self._call("GET", path)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        if not self.url:
            raise EnvironmentLookupError(
                "environments are not available here: this server was not started by a "
                "Redspot hub with the environments service (REDSPOT_ENVIRONMENTS_URL is unset)")
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                message = json.load(e).get("message", "")
            except ValueError:
                message = ""
            if e.code == 404:
                raise KeyError(message) from None
            if e.code in (400, 409, 429):
                raise EnvironmentRequestError(message or e.reason) from None
            raise EnvironmentLookupError(
                f"the environment service answered {e.code}: {message or e.reason}") from None
        except OSError as e:
            raise EnvironmentLookupError(f"cannot reach the environment service: {e}") from None

    def environments(self) -> list[dict]:
        """The environments this token's user may use, with their build state."""
        return self._get("environments")["environments"]

    def ready(self) -> list[str]:
        return sorted(e["id"] for e in self.environments() if e.get("status") == "ready")

    def runtime_env(self, environment: str) -> dict:
        """The Ray ``runtime_env`` of a ready environment, by ``owner/name``."""
        if not _ID.match(environment):
            raise EnvironmentLookupError(
                f"--env: {environment!r} is not an environment id; use owner/name, e.g. "
                "team/pytorch or alice/my-env")
        try:
            model = self._get(f"environments/{environment}")
        except KeyError:
            model = None
        if model is None or model.get("status") != "ready":
            state = "does not exist" if model is None else f"is {model.get('status')}"
            ready = self.ready()
            raise EnvironmentLookupError(
                f"environment {environment} {state}; ready environments: "
                f"{', '.join(ready) if ready else 'none'}")
        return model["runtime_env"]

    def create(self, name: str, python: list[str] = (), *, env: dict | None = None,
               description: str = "", base: str | None = None, wait: bool = True,
               progress=print, timeout: float = 3600) -> dict:
        """Make an environment of one's own (the same spec is built once) and, with
        ``wait``, follow its build to the end, its log lines passed to ``progress``.
        Returns the environment (``status`` ``ready`` or ``failed``)."""
        spec = {"name": name, "python": list(python), "env": dict(env or {})}
        if description:
            spec["description"] = description
        if base:
            spec["base"] = base
        model = self._call("POST", "environments", spec)
        if not wait or model["status"] == "ready":
            if progress and model["status"] == "ready":
                progress(f"{model['id']} is ready (built before)")
            return model
        return self.wait(model["id"], progress=progress, timeout=timeout)

    def wait(self, environment: str, progress=print, timeout: float = 3600) -> dict:
        """Follow a build's log until it ends; the environment as it ended."""
        request = urllib.request.Request(
            f"{self.url}/api/environments/{environment}/log?follow=1",
            headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                for line in response:
                    if progress:
                        progress(line.decode("utf-8", "replace").rstrip("\n"))
        except OSError as e:
            raise EnvironmentLookupError(f"following the build of {environment} failed: "
                                         f"{e}") from None
        return self._get(f"environments/{environment}")
