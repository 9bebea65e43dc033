"""``redspot smoke``: what an operator runs to see that a Redspot works end to end.

It does what a data scientist's first minutes do, as a user of its own
(``redspot-smoke``), through the hub's REST API and the proxy, and says each step with
its time as it goes:

1. the hub's API answers;
2. the smoke user exists (made on the first run and kept: a removed user's name is
   retired, never given again);
3. its server starts (the hub's progress messages shown: a GPU node may take minutes);
4. a kernel starts in it, connects to the user's Ray cluster (``%ray_connect``: a local
   head, or a KubeRay cluster), and runs a Ray task there;
5. the Ray cluster and the server are stopped.

Any step that fails ends the run with the step named and what the hub or the kernel
said (exit 1), after the cleanup. On one machine it finds the hub and a token in the data
folder (the ``redspot users`` commands' access); in a cluster the chart's ``helm test``
pod runs it with ``--hub-url`` and the ``redspot-smoke`` service's token
(``REDSPOT_SMOKE_TOKEN``), whose scopes reach that one user only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from tornado import httpclient
from tornado.websocket import websocket_connect

#: The user the smoke test runs as (scopes of its token are filtered to it).
SMOKE_USER = "redspot-smoke"

#: The cell that runs a Ray task in the user's cluster and says where it ran.
RAY_CELL = """\
import ray as _ray

@_ray.remote
def _redspot_smoke():
    import socket
    return socket.gethostname()

print("a Ray task ran on", _ray.get(_redspot_smoke.remote(), timeout=600))
"""


class SmokeFailed(Exception):
    """A step failed; the message names it and says what was answered."""


def smoke_scopes(user: str = SMOKE_USER) -> list[str]:
    """What the smoke test needs, for its own user alone."""
    return [f"admin:users!user={user}", f"admin:servers!user={user}",
            f"access:servers!user={user}"]


@dataclass
class Smoke:
    #: the hub's REST API, ``http://hub:8081/hub/api``
    api_url: str
    #: where the proxy answers, ``http://proxy:8000/`` (the server is reached there)
    public_url: str
    token: str
    user: str = SMOKE_USER
    profile: str | None = None
    timeout: float = 900
    say: Callable[[str], None] = print

    def __post_init__(self):
        self._start = time.monotonic()
        self._client = httpclient.AsyncHTTPClient()

    def step(self, what: str) -> None:
        self.say(f"[{time.monotonic() - self._start:6.1f}s] {what}")

    async def _api(self, method: str, path: str, body=None, ok=(200, 201, 202, 204),
                   timeout: float = 60):
        """The hub's REST API."""
        return await self._call(f"{self.api_url.rstrip('/')}/{path}", f"{method} {path}",
                                "the hub", method, body, ok, timeout)

    async def _server_api(self, method: str, path: str, body=None, ok=(200, 201, 204)):
        """The smoke user's server's REST API, through the proxy."""
        return await self._call(self._server_url(path), f"server: {method} {path}",
                                "the server", method, body, ok, 60)

    async def _call(self, url, what, who, method, body, ok, timeout):
        """``method url`` with the token; its JSON answer (None for a 404 that is
        ``ok``), or SmokeFailed saying ``what`` was answered."""
        response = await self._client.fetch(
            url, method=method, raise_error=False, request_timeout=timeout,
            headers={"Authorization": f"token {self.token}"},
            body=json.dumps(body) if body is not None else None,
            allow_nonstandard_methods=True, follow_redirects=False)
        if response.code == 599:
            raise SmokeFailed(f"{what}: {who} did not answer ({response.error})")
        if response.code not in ok:
            raise SmokeFailed(f"{what}: {response.code} "
                              f"{(response.body or b'').decode(errors='replace')[:500]}")
        if response.code == 404:
            return None  # asked for, and not there
        return json.loads(response.body) if response.body else None

    # --- the steps ------------------------------------------------------------------

    async def run(self) -> None:
        info = await self._api("GET", "")
        self.step(f"hub: JupyterHub {info.get('version', '?')} answers at {self.api_url}")
        name = quote(self.user, safe="")
        await self._ensure_user(name)
        try:
            await self._start_server(name)
            kernel = await self._server_api("POST", "api/kernels", {})
            self.step(f"kernel: {kernel['id']} started")
            try:
                out = await self.execute(kernel["id"], "%ray_connect", timeout=600)
                self.step(f"ray: {_last_line(out)}")
                out = await self.execute(kernel["id"], RAY_CELL, timeout=600)
                if "a Ray task ran on" not in out:
                    raise SmokeFailed(f"ray: the task did not say where it ran: {out[-800:]}")
                self.step(f"ray: {_last_line(out)}")
                out = await self.execute(kernel["id"], "%ray_disconnect --stop", timeout=300)
                self.step(f"ray: {_last_line(out)}")
            finally:
                await self._server_api("DELETE", f"api/kernels/{kernel['id']}", ok=(204, 404))
        finally:
            await self._cleanup(name)

    async def _ensure_user(self, name: str) -> None:
        if await self._api("GET", f"users/{name}", ok=(200, 404)):
            self.step(f"user: {self.user} exists")
            return
        await self._api("POST", f"users/{name}", {})
        self.step(f"user: {self.user} made (kept for the next runs)")

    async def _start_server(self, name: str) -> None:
        options = {"profile": self.profile} if self.profile else {}
        await self._api("POST", f"users/{name}/server", options, timeout=120)
        self.step("server: asked to start" + (f" ({self.profile})" if self.profile else ""))
        deadline = time.monotonic() + self.timeout
        said = set()
        while time.monotonic() < deadline:
            model = await self._api("GET", f"users/{name}")
            server = (model.get("servers") or {}).get("", {})
            if server.get("ready"):
                self.step(f"server: ready at {server.get('url')}")
                return
            if not server.get("pending") and not server.get("ready"):
                raise SmokeFailed("server: it stopped before it was ready (the hub's log "
                                  "says why)")
            for message in await self._progress(name):
                if message not in said:
                    said.add(message)
                    self.step(f"server: {message}")
            await asyncio.sleep(2)
        raise SmokeFailed(f"server: not ready after {self.timeout:.0f} s")

    async def _progress(self, name: str) -> list[str]:
        """The spawn's progress messages so far (the hub's event stream, read briefly)."""
        messages: list[str] = []

        def line(chunk: bytes) -> None:
            for raw in chunk.decode(errors="replace").splitlines():
                if raw.startswith("data:"):
                    with contextlib.suppress(Exception):
                        event = json.loads(raw[5:])
                        if event.get("message"):
                            messages.append(event["message"])

        with contextlib.suppress(Exception):
            await self._client.fetch(
                f"{self.api_url.rstrip('/')}/users/{name}/server/progress",
                headers={"Authorization": f"token {self.token}"}, request_timeout=3,
                streaming_callback=line, raise_error=False)
        return messages

    def _server_url(self, path: str) -> str:
        return f"{self.public_url.rstrip('/')}/user/{quote(self.user, safe='')}/{path}"

    async def execute(self, kernel: str, code: str, timeout: float) -> str:
        """Run ``code`` in the kernel (its websocket, as JupyterLab does); its output.
        An error in the cell fails the step with the error and the output before it."""
        request = httpclient.HTTPRequest(
            self._server_url(f"api/kernels/{kernel}/channels").replace("http", "ws", 1),
            headers={"Authorization": f"token {self.token}"})
        conn = await websocket_connect(request)
        msg_id = uuid.uuid4().hex
        conn.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request",
                       "username": self.user, "session": uuid.uuid4().hex,
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False,
                        "stop_on_error": True}}))
        output: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await conn.read_message()
                    if raw is None:
                        raise SmokeFailed(f"kernel: its websocket closed while running "
                                          f"{code.splitlines()[0]!r}")
                    if isinstance(raw, bytes):
                        continue
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind, content = msg["msg_type"], msg["content"]
                    if kind == "stream":
                        output.append(content["text"])
                    elif kind in ("execute_result", "display_data"):
                        output.append(content["data"].get("text/plain", ""))
                    elif kind == "error":
                        raise SmokeFailed(
                            f"kernel: {code.splitlines()[0]!r} failed: {content['ename']}: "
                            f"{content['evalue']}\n{''.join(output)[-800:]}")
                    elif kind == "status" and content["execution_state"] == "idle":
                        return "".join(output)
        except TimeoutError:
            raise SmokeFailed(f"kernel: {code.splitlines()[0]!r} did not finish in "
                              f"{timeout:.0f} s: {''.join(output)[-800:]}") from None
        finally:
            conn.close()

    async def _cleanup(self, name: str) -> None:
        try:
            await self._api("DELETE", f"users/{name}/server", ok=(202, 204, 400, 404),
                            timeout=120)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                model = await self._api("GET", f"users/{name}", ok=(200, 404))
                if not model or not (model.get("servers") or {}).get(""):
                    break
                await asyncio.sleep(1)
            self.step("cleanup: server stopped")
        except SmokeFailed as e:
            self.step(f"cleanup: {e}")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def run(smoke: Smoke) -> int:
    """Run the smoke test; 0 when every step passed, else 1 (the failure said)."""
    try:
        asyncio.run(smoke.run())
    except SmokeFailed as e:
        smoke.say(f"Smoke test FAILED: {e}")
        return 1
    smoke.say(f"Smoke test passed in {time.monotonic() - smoke._start:.0f} s.")
    return 0
