"""Helpers for tests that run a real Redspot: the hub process and a browser-like client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _started(pid: int) -> str | None:
    """When ``pid`` started (field 22 of /proc/PID/stat), or None if it is gone: with
    the pid, it names one process even after the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid`` now, as (pid, start time)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        for child in parents.get(frontier.pop(), []):
            started = _started(child)
            if started is not None:
                found.append((child, started))
            frontier.append(child)
    return found


def stop_pids(processes: list[tuple[int, str]], grace: float = 10) -> None:
    """SIGTERM to those ``processes`` (pid, start time) still alive, SIGKILL to what is
    left after ``grace``; a pid now used by another process is left alone."""
    def alive():
        return [pid for pid, started in processes
                if _started(pid) == started and pid_alive(pid)]

    for pid in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive():
        time.sleep(0.2)
    for pid in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def artifacts_folder(name: str) -> Path:
    """Where a browser test keeps its screenshots: ``$REDSPOT_TEST_ARTIFACTS/<name>``
    (default: the repository's ``.test-artifacts``, ignored by git)."""
    root = os.environ.get("REDSPOT_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] \
        / ".test-artifacts"
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def processes_of(uid: int) -> list[tuple[int, str]]:
    """Every process of an account now, as (pid, start time)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
            except OSError:
                continue
            started = _started(int(entry.name))
            if started is not None:
                found.append((int(entry.name), started))
    return found


def sign_in_to_lab(context, hub_url: str, user: str, password: str):
    """A new page of the browser ``context``, signed in as ``user`` through the hub's
    login form and landed in their JupyterLab (its launcher shown)."""
    page = context.new_page()
    page.goto(f"{hub_url}/hub/login?next=/user/{user}/lab")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(rf".*/user/{user}/lab.*"), timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=120_000)
    return page


def run_as(account: str, *argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as a system ``account`` (its groups too), as its processes would."""
    import pwd

    user = pwd.getpwnam(account)
    return subprocess.run(list(argv), user=user.pw_uid, group=user.pw_gid,
                          extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
                          capture_output=True, text=True, timeout=60, cwd="/")


def wait_for(predicate, timeout: float, message: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def redspot(*args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``redspot`` command line (the real one) and return its result."""
    result = subprocess.run(
        [sys.executable, "-m", "redspot", *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )
    if check and result.returncode:
        raise AssertionError(f"redspot {' '.join(args)} failed:\n{result.stderr}")
    return result


@dataclass
class Hub:
    """A ``redspot up`` process on free ports, with its data folder and config."""

    data_dir: Path
    settings: dict = field(default_factory=dict)
    config_d: dict[str, str] = field(default_factory=dict)
    keep_servers: bool = False
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    service_token: str = field(default_factory=lambda: os.urandom(16).hex())
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redspot.yaml"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write(yaml.safe_dump(self.settings))
        config_d = self.data_dir / "jupyterhub_config.d"
        config_d.mkdir(exist_ok=True)
        # the tests' own admin service: how the tests create tokens and inspect state
        (config_d / "00-tests.py").write_text(
            "c.JupyterHub.services.append({'name': 'tests', 'api_token': "
            f"{self.service_token!r}}})\n"
            "c.JupyterHub.load_roles.append({'name': 'admin', 'services': ['tests']})\n"
        )
        for name, text in self.config_d.items():
            (config_d / name).write_text(text)

    def start(self, timeout: float = 300, wait: bool = True) -> Hub:
        """Run ``redspot up``; with ``wait``, until it says it is ready."""
        self.write_config()
        self.log_path = self.data_dir / f"hub-{int(time.time() * 1000)}.log"
        args = [
            sys.executable, "-m", "redspot", "up",
            "--data-dir", str(self.data_dir), "--config", str(self.config_file),
            "--port", str(self.port), "--api-port", str(self.api_port),
            "--proxy-api-port", str(self.proxy_api_port),
        ]
        if self.keep_servers:
            args.append("--keep-servers")
        # the log may show tokens the tests made: only root reads it
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            wait_for(self._ready, timeout, f"the hub at {self.url} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redspot up exited with {self.proc.returncode}:\n{self.log()}")
        # the hub answers before its services are up: ready is when it says so
        if "Redspot is ready on" not in self.log_path.read_text(errors="replace"):
            return False
        return requests.get(f"{self.url}/hub/api", timeout=2).status_code == 200

    def log(self, tail: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-tail:])

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int | None:
        """Send ``sig`` to the hub and wait for it to exit; return its exit code. A hub
        that had to be killed leaves its services behind: they are stopped too, by pid
        (not with ``keep_servers``, whose servers are meant to outlive it)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        children = [] if self.keep_servers else descendants(self.proc.pid)
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)
        finally:
            stop_pids(children)

    def proxy_pid(self) -> int | None:
        path = self.data_dir / "hub" / "jupyterhub-proxy.pid"
        return int(path.read_text()) if path.exists() else None

    # --- the REST API as the tests' admin service ---------------------------------------

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"token {token or self.service_token}"}
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers=headers, timeout=30, **kwargs
        )

    def metrics(self, path: str = "/hub/metrics") -> dict:
        """The metrics at ``path`` (the hub's, or ``/services/<name>/metrics``), read with
        Prometheus' token: ``{(name, (("label", "value"), ...)): value}``; each metric's
        family name (its HELP line) maps to None even without samples."""
        from prometheus_client.parser import text_string_to_metric_families

        token = (self.data_dir / "hub" / "metrics-token").read_text().strip()
        r = requests.get(f"{self.url}{path}", headers={"Authorization": f"token {token}"},
                         timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        found: dict = {}
        for family in text_string_to_metric_families(r.text):
            found[family.name + ("_total" if family.type == "counter" else "")] = None
            for sample in family.samples:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    def user_token(self, name: str) -> str:
        """A token of ``name`` (added to the hub first, as a first sign-in would)."""
        r = self.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        r = self.api("POST", f"/users/{name}/tokens", json={"note": "tests"})
        assert r.status_code in (200, 201), r.text
        return r.json()["token"]

    def server_model(self, name: str) -> dict | None:
        r = self.api("GET", f"/users/{name}")
        assert r.status_code == 200, r.text
        return r.json()["servers"].get("")

    def wait_ready(self, name: str, timeout: float = 90) -> dict:
        def ready():
            model = self.server_model(name)
            if model is None:
                raise AssertionError(f"{name}'s server is gone:\n{self.log()}")
            return model if model["ready"] else None

        return wait_for(ready, timeout, f"{name}'s server", interval=0.5)

    def spawn(self, name: str, token: str, options: dict | None = None) -> requests.Response:
        return self.api("POST", f"/users/{name}/server", token=token, json=options or {})

    def stop_server(self, name: str) -> None:
        r = self.api("DELETE", f"/users/{name}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: self.server_model(name) is None, 60, f"{name}'s server to stop")


def hub_user(name: str, groups=(), admin: bool = False):
    """A stand-in for the hub's User, for spawners built without a hub (tier-1 tests)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        name=name, id=1, admin=admin, url=f"/user/{name}/", escaped_name=name,
        groups=[SimpleNamespace(name=g) for g in groups],
    )


def stand_in_hub():
    from types import SimpleNamespace

    return SimpleNamespace(public_host="", url="http://hub:8081/hub/", base_url="/hub/",
                           api_url="http://hub:8081/hub/api")


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: offline, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: offline, user: {token: offline}}]
contexts: [{name: offline, context: {cluster: offline, user: offline, namespace: redspot}}]
current-context: offline
"""


class Browser:
    """A requests session that signs in and spawns through the HTML pages, with XSRF."""

    def __init__(self, hub: Hub):
        self.hub = hub
        self.session = requests.Session()
        # the hub's pages are UTF-8 but do not always say so in the header
        self.session.hooks["response"].append(lambda r, *a, **k: setattr(r, "encoding", "utf-8"))

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(f"{self.hub.url}{path}", timeout=30, **kwargs)

    def _xsrf(self, html: str) -> str:
        match = re.search(r'name="_xsrf" value="([^"]+)"', html) or re.search(
            r"_xsrf=([^\"&]+)", html
        )
        assert match, "no XSRF token in the page"
        return unquote(match.group(1))

    def login(self, username: str, password: str) -> requests.Response:
        page = self.get("/hub/login")
        data = {"username": username, "password": password, "_xsrf": self._xsrf(page.text)}
        return self.session.post(f"{self.hub.url}/hub/login", data=data, timeout=30)

    def spawn_form(self) -> requests.Response:
        return self.get("/hub/spawn")

    def submit_spawn(self, profile: str, **fields: str) -> requests.Response:
        page = self.spawn_form()
        data = {"profile": profile, "_xsrf": self._xsrf(page.text), **fields}
        return self.session.post(f"{self.hub.url}/hub/spawn", data=data, timeout=60)


class ReadyService:
    """A stand-in for the environments service's ``api/ready/<user>`` (the edge of this
    unit test; tests/integration/test_environments.py asks the real one)."""

    def __init__(self, ready: dict[str, list[dict]], token: str):
        from tornado import httpserver, ioloop, netutil, web

        service = self
        self.asked: list[str] = []

        class Ready(web.RequestHandler):
            def get(self, user):
                service.asked.append(user)
                if self.request.headers.get("Authorization") != f"token {token}":
                    raise web.HTTPError(403)
                self.finish(json.dumps({"environments": ready.get(user, [])}))

        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/services/environments/"
        started = threading.Event()

        def run():
            asyncio.set_event_loop(asyncio.new_event_loop())
            self.loop = ioloop.IOLoop.current()
            server = httpserver.HTTPServer(web.Application(
                [(r"/services/environments/api/ready/([^/]+)", Ready)]))
            server.add_sockets(sockets)
            started.set()
            self.loop.start()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.loop.add_callback(self.loop.stop)
        self.thread.join(5)
