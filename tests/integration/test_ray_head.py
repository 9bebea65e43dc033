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


@pytest.fixture
def head(ray_head):
    """The test process's Ray head (tests/conftest.py): a head's start is some 25 s of
    CPU, and these tests only use it."""
    return ray_head


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


IDLE_KERNEL = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from redspot.compute.local import LocalRayHead
    from redspot.compute.session import RaySession

    head = LocalRayHead(state_dir=Path(sys.argv[1]), private_dir=Path(sys.argv[2]))
    session = RaySession(head=head)
    session.connect()
    busy = [True]
    session.watch_idle(busy=lambda: busy[0], timeout=2)
    time.sleep(4)  # running a cell: in use
    print("busy", session.connected, head.stop_if_idle(2), flush=True)
    busy[0] = False
    time.sleep(4)  # idle: the kernel lets go of the head, which may then stop
    print("idle", session.connected, session.idle_disconnected, flush=True)
    print("stopped", head.stop_if_idle(2), head.info() is None, flush=True)
    session.connect()  # the next use starts it again
    print("again", session.connected, flush=True)
    session.disconnect(stop_head=True)
""")


def test_an_idle_head_is_let_go_by_kernels_then_stopped_and_restarts_on_use(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    state = tmp_path / "state"
    try:
        result = subprocess.run(
            [sys.executable, "-c", IDLE_KERNEL, str(state), str(temp)], capture_output=True,
            text=True, timeout=240, env={**os.environ, "HOME": str(tmp_path)})
        lines = result.stdout.splitlines()
        assert lines == ["busy True False", "idle False True", "stopped True True",
                         "again True"], result.stdout + result.stderr[-3000:]
    finally:
        LocalRayHead(state_dir=state, private_dir=temp).stop(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)


def test_one_users_token_does_not_open_another_users_cluster(head, tmp_path):
    """Two users' heads on one machine: bob's kernel, with bob's token, cannot use
    alice's cluster."""
    alice, alice_info = head
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    bob = LocalRayHead(state_dir=tmp_path / "bob", private_dir=temp)
    try:
        bob_info = bob.start(cpus=1)
        assert bob.token() != alice.token()
        mine = run_driver(bob_info.address, {**auth_env(bob.token_path), "HOME": str(tmp_path)})
        assert "result 49" in mine.stdout, mine.stderr[-2000:]
        theirs = run_driver(alice_info.address,
                            {**auth_env(bob.token_path), "HOME": str(tmp_path)})
        assert "result 49" not in theirs.stdout and theirs.returncode != 0
        # each head has its own job agent (Ray's default port is one per machine: the
        # second head's agent could not listen, and its Jobs API had no agent)
        jobs = subprocess.run([sys.executable, "-c", JOBS_CLIENT, bob_info.dashboard,
                               bob.token()], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "HOME": str(tmp_path)})
        assert "status SUCCEEDED" in jobs.stdout, jobs.stdout + jobs.stderr[-3000:]
        # stopping bob's head ends every process of it, and alice's runs on
        assert bob.stop(timeout=5) is True
        assert not group_alive(bob_info.pgid) and group_alive(alice_info.pgid)
        assert bob.info() is None and bob.stop() is False
    finally:
        bob.stop(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)


JOBS_CLIENT = textwrap.dedent("""
    import sys, time
    from redspot.compute.transport import Jobs

    jobs = Jobs(sys.argv[1], sys.argv[2])
    job = jobs.submit("python -c \\"print('from a job', 6 * 7)\\"",
                      metadata={"redspot.io/user": "alice"})
    deadline = time.monotonic() + 120
    while jobs.status(job) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, jobs.logs(job)
        time.sleep(0.5)
    print("status", jobs.status(job))
    print(jobs.logs(job))
    try:
        Jobs(sys.argv[1], "0" * 64).submit("python -c 'print(1)'")
    except Exception as e:
        print("refused", e)
""")


def test_the_jobs_api_runs_a_job_with_the_token_and_refuses_one_without(head, tmp_path):
    """transport.Jobs (in a process of its own, as every Ray client here: Ray keeps its
    auth settings per process)."""
    head, info = head
    result = subprocess.run([sys.executable, "-c", JOBS_CLIENT, info.dashboard, head.token()],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HOME": str(tmp_path)})
    out = result.stdout
    assert "status SUCCEEDED" in out and "from a job 42" in out, out + result.stderr[-3000:]
    refused = out.split("refused", 1)[1] if "refused" in out else ""
    assert "403" in refused or "401" in refused or "auth" in refused.lower(), out


def test_a_head_starts_once_and_the_users_server_stops_it_when_idle(tmp_path):
    """A second start finds the running head; the server extension's idle check, in a
    real jupyter server (no kernel uses the head), then stops it."""
    import time

    home = tmp_path / "home"
    home.mkdir()
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    head = LocalRayHead(state_dir=home / ".redspot" / "ray", private_dir=temp)
    tmp_mode = os.stat("/tmp").st_mode
    info = head.start(cpus=1)
    assert head.start() == info  # already running: the same head
    assert os.stat(temp).st_mode & 0o777 == 0o700  # Ray's folder sits in a private one
    assert os.stat("/tmp").st_mode == tmp_mode  # and nothing else was touched
    env = {**os.environ, "HOME": str(home), "REDSPOT_RAY_IDLE_TIMEOUT": "4"}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root",
             "--ServerApp.port=0", "--ServerApp.token=t", f"--ServerApp.root_dir={home}",
             "--ServerApp.jpserver_extensions={'redspot.serverextension': True}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while "Stopped this user's Ray head: unused for 4 s" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert head.info() is None and not group_alive(info.pgid)
    finally:
        server.terminate()
        server.wait(15)
        head.stop(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)
