"""A user's local Ray head: started on demand, token-protected, stopped by its group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from redspot.compute.local import LocalRayHead, auth_env, group_alive

pytestmark = pytest.mark.integration

DRIVER = textwrap.dedent("""
    import sys, ray
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    @ray.remote
    def square(x):
        return x * x
    print("result", ray.get(square.remote(7)))
""")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    state = tmp_path_factory.mktemp("ray-state")
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    head = LocalRayHead(state_dir=state, private_dir=temp)
    info = head.start(cpus=2)
    yield head, info
    head.stop(timeout=5)
    shutil.rmtree(temp, ignore_errors=True)


def run_driver(address, env, timeout=120):
    return subprocess.run([sys.executable, "-c", DRIVER, address], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


def test_a_driver_with_the_token_runs_tasks(head):
    head, info = head
    assert info.address.startswith("127.0.0.1:")
    assert (head.token_path.stat().st_mode & 0o777) == 0o600
    result = run_driver(info.address, {**auth_env(head.token_path), "HOME": str(head.state_dir)})
    assert "result 49" in result.stdout, result.stderr[-2000:]


def test_a_driver_without_the_token_is_refused(head, tmp_path):
    head, info = head
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    result = run_driver(info.address, {**auth_env(wrong), "HOME": str(tmp_path)})
    assert "result 49" not in result.stdout
    assert result.returncode != 0
    assert "auth" in (result.stderr + result.stdout).lower()


def test_start_is_idempotent_and_stop_ends_every_process(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    head = LocalRayHead(state_dir=tmp_path / "state", private_dir=temp)
    try:
        tmp_mode = os.stat("/tmp").st_mode
        info = head.start(cpus=1)
        assert head.start() == info  # already running: the same head
        assert os.stat(temp).st_mode & 0o777 == 0o700  # Ray's folder sits in a private one
        assert os.stat("/tmp").st_mode == tmp_mode  # and nothing else was touched
        assert head.stop(timeout=5) is True
        assert not group_alive(info.pgid)
        assert head.info() is None and head.stop() is False
    finally:
        head.stop(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)
