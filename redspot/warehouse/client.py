"""The kernel's client of the warehouse service: which connections this user may use,
and short-lived credentials for one, asked for with the server's own hub token
(``$JUPYTERHUB_API_TOKEN``). Credentials are kept in this process's memory only."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from .connections import Connection, ConnectionError
from .engines.base import Credential

#: a credential is renewed when it has less than this many seconds left
RENEW_BEFORE = 60


class ServiceError(RuntimeError):
    """The warehouse service refused or could not be reached; the message says which."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class WarehouseService:
    def __init__(self, url: str, token: str, timeout: float = 30):
        self.url = url.rstrip("/") + "/"
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> WarehouseService | None:
        url = os.environ.get("REDSPOT_WAREHOUSE_URL")
        token = os.environ.get("JUPYTERHUB_API_TOKEN")
        return cls(url, token) if url and token else None

    def _call(self, method: str, path: str) -> dict:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"{}" if method == "POST" else None,
            headers={"Authorization": f"token {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message", e.reason)
            except ValueError:
                message = e.reason
            raise ServiceError(f"the warehouse service answered {e.code}: {message}",
                               e.code) from None
        except OSError as e:
            raise ServiceError(f"the warehouse service cannot be reached ({self.url}): "
                               f"{e}") from None

    def connections(self) -> dict[str, Connection]:
        data = self._call("GET", "api/connections")
        return {c["name"]: Connection.from_public(c) for c in data["connections"]}

    def credential(self, name: str) -> Credential:
        data = self._call("POST", f"api/connections/{name}/credentials")
        return Credential(user=data.get("user", ""), password=data.get("password", ""),
                          token=data.get("token", ""), s3=data.get("s3"),
                          expires=float(data.get("expires", 0)))


class Credentials:
    """Credentials by connection, in memory: from the service (renewed before they
    expire), asked for (``getpass``) or read from the user's variable."""

    def __init__(self, service: WarehouseService | None, ask=None):
        self.service = service
        self._ask = ask
        self._held: dict[str, Credential] = {}

    def get(self, connection: Connection, fresh: bool = False) -> Credential | None:
        kind = connection.credentials.kind
        if kind == "none":
            return Credential(user=connection.user) if connection.user else None
        held = self._held.get(connection.name)
        if held and not fresh and held.fresh(RENEW_BEFORE):
            return held
        if kind == "env":
            variable = connection.credentials.settings["variable"]
            if variable not in os.environ:
                raise ConnectionError(
                    f"connection {connection.name!r} reads its password from ${variable}, "
                    "which is not set in this kernel's environment")
            credential = Credential(user=connection.user, password=os.environ[variable])
        elif kind == "prompt":
            ask = self._ask
            if ask is None:
                import getpass

                ask = getpass.getpass
            credential = Credential(user=connection.user, password=ask(
                f"Password for {connection.user or 'you'} on {connection.name}: "))
        else:
            if self.service is None:
                raise ConnectionError(
                    f"connection {connection.name!r} gets its credentials from the hub's "
                    "warehouse service, which this server cannot reach "
                    "($REDSPOT_WAREHOUSE_URL is not set)")
            credential = self.service.credential(connection.name)
        self._held[connection.name] = credential
        return credential
