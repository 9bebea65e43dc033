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


class EnvironmentsClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30):
        self.url = (url or os.environ.get("REDSPOT_ENVIRONMENTS_URL", "")).rstrip("/")
        self.token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.timeout = timeout

    def _get(self, path: str) -> dict:
        if not self.url:
            raise EnvironmentLookupError(
                "environments are not available here: this server was not started by a "
                "Redspot hub with the environments service (REDSPOT_ENVIRONMENTS_URL is unset)")
        request = urllib.request.Request(f"{self.url}/api/{path}",
                                         headers={"Authorization": f"token {self.token}"})
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
            raise EnvironmentLookupError(
                f"the environment service answered {e.code}: {message or e.reason}") from None
        except OSError as e:
            raise EnvironmentLookupError(f"cannot reach the environment service: {e}") from None

    def ready(self) -> list[str]:
        return sorted(e["id"] for e in self._get("environments")["environments"]
                      if e.get("status") == "ready")

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
