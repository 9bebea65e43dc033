"""%%ray_remote in a real IPython shell, against a real token-protected Ray head."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from redspot.compute.local import LocalRayHead, auth_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    head = LocalRayHead(state_dir=tmp_path_factory.mktemp("ray-state"), private_dir=temp)
    info = head.start(cpus=2)
    yield head, info
    head.stop(timeout=5)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def shell(ray_head):
    from IPython.core.interactiveshell import InteractiveShell

    head, info = ray_head
    saved = {k: os.environ.get(k) for k in auth_env(head.token_path)}
    os.environ.update(auth_env(head.token_path))
    ip = InteractiveShell.instance()
    ip.extension_manager.load_extension("redspot.magics")
    ip.run_line_magic("ray_connect", info.address)
    yield ip
    ip.run_line_magic("ray_disconnect", "")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(shell, cell, line=""):
    return shell.run_cell(f"%%ray_remote {line}\n{cell}")


def test_names_go_in_and_come_back(shell, capsys):
    import numpy as np

    shell.user_ns.update(x=20, weights=np.arange(6.0), scale=lambda v: v * 2)
    result = run(shell, "y = scale(x) + 2\nbig = weights * 10\nprint('on', 'ray')\ny + 1")
    assert result.success, result.error_in_exec
    assert shell.user_ns["y"] == 42
    big = shell.user_ns["big"]
    assert big.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    big[0] = 1.0  # arrays come back writable
    assert result.result == 43
    assert "on ray" in capsys.readouterr().out


def test_functions_and_classes_defined_remotely_come_back(shell):
    result = run(shell, "class Point:\n    def __init__(self, x):\n        self.x = x\n"
                        "def double(p):\n    return Point(p.x * 2)\nq = double(Point(4))")
    assert result.success, result.error_in_exec
    assert shell.user_ns["q"].x == 8
    assert shell.user_ns["double"](shell.user_ns["Point"](1)).x == 2


def test_a_remote_error_shows_the_cells_traceback(shell, capsys):
    result = run(shell, "a = 1\nb = 0\nc = a / b")
    assert not result.success
    err = capsys.readouterr().err
    assert "Cell line 3" in err and "c = a / b" in err
    assert "ZeroDivisionError: division by zero" in err
    assert "redspot/magics" not in err  # none of the magic's own frames


def test_unpicklable_names_are_reported_and_the_cell_still_runs(shell, capsys):
    import threading

    shell.user_ns.update(lock=threading.Lock(), n=5)
    result = run(shell, "m = n + 1\nif False:\n    lock.acquire()")
    assert result.success, result.error_in_exec
    assert shell.user_ns["m"] == 6
    assert "lock (lock:" in capsys.readouterr().err


def test_an_impossible_request_fails_at_once_with_the_clusters_resources(shell, capsys):
    result = run(shell, "x = 1", "--gpus 4")
    assert not result.success
    message = str(result.error_in_exec)
    assert message.startswith("no node of the cluster has CPU 1, GPU 4; the cluster has: ")
    assert ": CPU 2, memory " in message


def test_ipython_syntax_is_refused_clearly(shell):
    result = run(shell, "files = !ls\nprint(files)")
    assert not result.success
    assert "cannot run IPython syntax" in str(result.error_in_exec)


def test_return_and_no_return(shell):
    shell.user_ns.pop("kept", None)
    shell.user_ns.pop("dropped", None)
    assert run(shell, "kept = 1\ndropped = 2", "--return kept").success
    assert shell.user_ns["kept"] == 1 and "dropped" not in shell.user_ns
    assert run(shell, "nothing = 3", "--no-return").success
    assert "nothing" not in shell.user_ns


def test_a_cell_past_its_timeout_is_cancelled(shell):
    result = run(shell, "import time\ntime.sleep(30)", "--timeout 2")
    assert not result.success
    assert "did not finish in 2.0 s; it was cancelled" in str(result.error_in_exec)


def test_output_streams_into_the_cell_while_it_runs(shell, monkeypatch):
    import sys
    import time

    arrivals = []

    class Recorder:
        def write(self, text):
            arrivals.append((time.monotonic(), text))

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    start = time.monotonic()
    result = run(shell, "import time\nprint('first', flush=True)\ntime.sleep(2)\n"
                        "print('second')")
    end = time.monotonic()
    monkeypatch.undo()
    assert result.success, result.error_in_exec
    first = next(t for t, text in arrivals if "first" in text)
    assert first - start < end - start - 1.5  # seen while the cell still ran
    assert any("second" in text for _, text in arrivals)


def test_ray_status_shows_the_cluster(shell, capsys):
    status = shell.run_line_magic("ray_status", "")
    assert status["resources"]["CPU"] == 2
    assert "1 node(s), 2 CPU" in capsys.readouterr().out
