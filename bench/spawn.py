"""Spawn latency: Redspot against plain JupyterHub, started the same way in the same run.

For each hub: the seconds from the spawn request (REST API) to a JupyterLab page served
by the new server, for ROUNDS spawns one after the other (median), and for CONCURRENT
users spawning at once (median and slowest). The baseline is plain JupyterHub with
SimpleLocalProcessSpawner and the same JupyterLab, on the same Python.

    python bench/spawn.py [--rounds 5] [--concurrent 5]

Target: Redspot / plain <= 1.10 (median, one at a time).
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Hub, wait_for  # noqa: E402

ACCOUNT_PREFIX = f"rb{os.getpid() % 100000}-"


class PlainHub(Hub):
    """Plain JupyterHub + SimpleLocalProcessSpawner, with the same admin service as Hub."""

    def start(self, timeout: float = 60) -> PlainHub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "jupyterhub_config.py"
        config.write_text(textwrap.dedent(f"""
            import sys
            c.JupyterHub.port = {self.port}
            c.JupyterHub.hub_port = {self.api_port}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
            c.ConfigurableHTTPProxy.command = [{str(Path(sys.executable).parent /
                                               "configurable-http-proxy")!r}]
            c.JupyterHub.db_url = "sqlite:///{self.data_dir}/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = "{self.data_dir}/cookie_secret"
            c.ConfigurableHTTPProxy.pid_file = "{self.data_dir}/proxy.pid"
            c.JupyterHub.spawner_class = "simple"
            c.SimpleLocalProcessSpawner.home_dir_template = "{self.data_dir}/home/{{username}}"
            c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
            c.Spawner.default_url = "/lab"
            c.Spawner.args = {["--allow-root"] if os.geteuid() == 0 else []!r}
            c.JupyterHub.authenticator_class = "dummy"
            c.Authenticator.allow_all = True
            c.JupyterHub.services = [{{"name": "tests", "api_token": "{self.service_token}"}}]
            c.JupyterHub.load_roles = [{{"name": "admin", "services": ["tests"]}}]
        """))
        self.log_path = self.data_dir / "hub.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.data_dir,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(self._ready, timeout, f"plain JupyterHub at {self.url}")
        return self


def lab_ready(hub: Hub, name: str) -> bool:
    try:
        r = requests.get(f"{hub.url}/user/{name}/lab", allow_redirects=False, timeout=10,
                         headers={"Authorization": f"token {hub.service_token}"})
    except requests.ConnectionError:
        return False
    return r.status_code == 200 and "JupyterLab" in r.text


def spawn_once(hub: Hub, name: str, timeout: float = 180) -> float:
    hub.api("POST", f"/users/{name}")
    start = time.perf_counter()
    r = hub.api("POST", f"/users/{name}/server", json={})
    if r.status_code not in (201, 202):
        raise RuntimeError(f"spawn of {name} failed: {r.status_code} {r.text}\n{hub.log()}")
    wait_for(lambda: lab_ready(hub, name), timeout, f"{name}'s JupyterLab", interval=0.05)
    return time.perf_counter() - start


def measure(hub: Hub, label: str, rounds: int, concurrent: int) -> dict:
    # one warm-up spawn, so that both hubs start from warm file caches
    spawn_once(hub, f"{label}-warm")
    hub.stop_server(f"{label}-warm")
    sequential = []
    for i in range(rounds):
        name = f"{label}-{i}"
        sequential.append(spawn_once(hub, name))
        hub.stop_server(name)
        print(f"  {label} spawn {i + 1}/{rounds}: {sequential[-1]:.2f} s", flush=True)
    names = [f"{label}-c{i}" for i in range(concurrent)]
    with ThreadPoolExecutor(concurrent) as pool:
        together = list(pool.map(lambda n: spawn_once(hub, n), names))
    print(f"  {label} {concurrent} at once: slowest {max(together):.2f} s", flush=True)
    for name in names:
        hub.stop_server(name)
    return {"sequential": sequential, "concurrent": together}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    root = Path(tempfile.mkdtemp(prefix="redspot-bench-", dir="/tmp"))
    root.chmod(0o711)
    results = {}
    try:
        for label, hub in (
            ("plain", PlainHub(data_dir=root / "plain")),
            ("redspot", Hub(data_dir=root / "redspot",
                            settings={"spawner": {"account_prefix": ACCOUNT_PREFIX}})),
        ):
            print(f"{label}: starting the hub on port {hub.port}", flush=True)
            hub.start()
            try:
                results[label] = measure(hub, label, args.rounds, args.concurrent)
            finally:
                hub.stop()
    finally:
        if os.geteuid() == 0:
            for entry in pwd.getpwall():
                if entry.pw_name.startswith(ACCOUNT_PREFIX):
                    subprocess.run(["userdel", entry.pw_name], check=False)
            for entry in grp.getgrall():
                if entry.gr_name.startswith(ACCOUNT_PREFIX):
                    subprocess.run(["groupdel", entry.gr_name], check=False)
        subprocess.run(["rm", "-rf", str(root)], check=False)
    print_table(results, args)


def print_table(results: dict, args) -> None:
    def row(metric, fn):
        plain, ours = fn(results["plain"]), fn(results["redspot"])
        return f"| {metric} | {plain:.2f} | {ours:.2f} | {ours / plain:.2f} |"

    isolation = "per-user accounts" if os.geteuid() == 0 else "one account"
    print()
    print(f"Spawn to ready JupyterLab, seconds ({os.cpu_count()} cores; Redspot servers: "
          f"{isolation}; plain: SimpleLocalProcessSpawner)")
    print()
    print("| metric | plain JupyterHub | Redspot | Redspot / plain |")
    print("| --- | --- | --- | --- |")
    print(row(f"median of {args.rounds}, one at a time",
              lambda r: statistics.median(r["sequential"])))
    print(row(f"median, {args.concurrent} at once", lambda r: statistics.median(r["concurrent"])))
    print(row(f"slowest, {args.concurrent} at once", lambda r: max(r["concurrent"])))
    ratio = statistics.median(results["redspot"]["sequential"]) / statistics.median(
        results["plain"]["sequential"])
    print()
    print(f"target: Redspot / plain <= 1.10 (one at a time): "
          f"{'met' if ratio <= 1.10 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
