"""Environment service: cache-hit latency, and a venv build against plain uv.

    python bench/environments.py [--lookups 50] [--builds 3]

1. Cache hit: asking for an environment whose build exists (a new name for the same
   packages) and reading one back, through the hub's proxy with a user's token; the
   median of ``--lookups`` requests. Target: < 50 ms.
2. Build: the venv builder through the service (request to ready), against
   ``uv venv`` + ``uv pip install`` of exactly the same packages, in the same run, with
   the same warm uv cache; the median of ``--builds``. Target: ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redspot.environments import runtime  # noqa: E402
from redspot.environments.builders import merge_requirements  # noqa: E402
from tests.helpers import Hub, redspot, wait_for  # noqa: E402

PACKAGES = ["six==1.16.0", "idna==3.10"]


def api(hub, token, method, path, **kwargs):
    return requests.request(method, f"{hub.url}/services/environments/api/{path}",
                            headers={"Authorization": f"token {token}"}, timeout=120, **kwargs)


def wait_ready(hub, token, env_id):
    def ready():
        status = api(hub, token, "GET", f"environments/{env_id}").json()["status"]
        if status == "failed":
            raise RuntimeError(api(hub, token, "GET", f"environments/{env_id}/log").text)
        return status == "ready"

    wait_for(ready, 600, env_id, interval=0.1)


def bench_lookups(hub, token, n):
    r = api(hub, token, "POST", "environments", json={"name": "warm", "python": PACKAGES})
    wait_ready(hub, token, "bench/warm")
    creates, reads = [], []
    for i in range(n):
        start = time.perf_counter()
        r = api(hub, token, "POST", "environments", json={"name": f"hit-{i}",
                                                           "python": PACKAGES})
        creates.append(time.perf_counter() - start)
        assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        start = time.perf_counter()
        assert api(hub, token, "GET", f"environments/bench/hit-{i}").status_code == 200
        reads.append(time.perf_counter() - start)
    return creates, reads


def bench_builds(hub, token, n, scratch: Path):
    service, plain = [], []
    base = runtime.base_requirements()
    for i in range(n):
        # a variable makes a new tag: the service builds the same packages again
        spec = {"name": f"build-{i}", "python": PACKAGES, "env": {"BENCH_ROUND": str(i)}}
        start = time.perf_counter()
        r = api(hub, token, "POST", "environments", json=spec)
        assert r.status_code == 202, r.text
        wait_ready(hub, token, f"bench/build-{i}")
        service.append(time.perf_counter() - start)

        dest = scratch / f"plain-{i}"
        reqs = scratch / f"plain-{i}.txt"
        reqs.write_text("\n".join(merge_requirements(base, tuple(PACKAGES))) + "\n")
        start = time.perf_counter()
        for cmd in runtime.server_venv_commands(dest, reqs):
            subprocess.run(cmd, check=True, env=runtime.uv_env(), capture_output=True)
        plain.append(time.perf_counter() - start)
        shutil.rmtree(dest)
        print(f"  build {i + 1}/{n}: service {service[-1]:.2f} s, plain uv {plain[-1]:.2f} s",
              flush=True)
    return service, plain


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=50)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="redspot-bench-env-", dir="/tmp"))
    root.chmod(0o711)
    hub = Hub(data_dir=root / "hub", settings={
        "services": {"environments": {"enabled": True}},
        "spawner": {"account_prefix": f"rb{os.getpid() % 100000}-"}})
    try:
        hub.data_dir.mkdir(parents=True)
        redspot("users", "add", "bench", "--password-stdin", "--data-dir", str(hub.data_dir),
                stdin="bench-password\n")
        hub.start()
        token = hub.user_token("bench")
        wait_for(lambda: api(hub, token, "GET", "bases").status_code == 200, 60, "service")
        print("cache hits...", flush=True)
        creates, reads = bench_lookups(hub, token, args.lookups)
        print("builds...", flush=True)
        service, plain = bench_builds(hub, token, args.builds, root)
    finally:
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)

    ms = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    print()
    print(f"Environment service ({os.cpu_count()} cores; packages: {', '.join(PACKAGES)} "
          "on the servers' base)")
    print()
    print("| metric | value | baseline | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| cache hit: create (median of {args.lookups}) | {ms(creates):.1f} ms | - | - "
          f"| < 50 ms: {'met' if ms(creates) < 50 else 'NOT met'} |")
    print(f"| cache hit: read (median of {args.lookups}) | {ms(reads):.1f} ms | - | - "
          f"| < 50 ms: {'met' if ms(reads) < 50 else 'NOT met'} |")
    ratio = statistics.median(service) / statistics.median(plain)
    print(f"| venv build, request to ready (median of {args.builds}) | "
          f"{statistics.median(service):.2f} s | {statistics.median(plain):.2f} s (plain uv) "
          f"| {ratio:.2f} | <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'} |")


if __name__ == "__main__":
    main()
