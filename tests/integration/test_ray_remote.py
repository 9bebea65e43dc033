"""%%ray_remote in a real IPython shell, against a real token-protected Ray head."""

from __future__ import annotations

import os

import pytest

from redspot.compute.local import auth_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shell(ray_head):
    from tests.kernels import ipython_shell

    head, info = ray_head
    saved = {k: os.environ.get(k) for k in auth_env(head.token_path)}
    os.environ.update(auth_env(head.token_path))
    ip = ipython_shell()
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
    assert "did not finish in 2 s; it was cancelled" in str(result.error_in_exec)


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
    # shown, not returned: no dict of internals as the cell's result
    assert shell.run_line_magic("ray_status", "") is None
    assert "1 node(s), 2 CPU" in capsys.readouterr().out


def test_a_connected_kernels_ray_job_is_part_of_a_models_lineage(shell):
    import ray

    from redspot.models.lineage import current_ray_job, lineage

    job = current_ray_job()
    assert job == ray.get_runtime_context().get_job_id() and len(job) >= 8
    assert lineage({}, ray_job_id=job)["redspot.ray_job_id"] == job


def test_pandas_frames_go_in_and_come_back_writable(shell):
    import pandas as pd

    shell.user_ns["frame"] = pd.DataFrame({"x": range(1000), "label": ["a", "b"] * 500})
    result = run(shell, "summary = frame.groupby('label').x.sum()\n"
                        "doubled = frame.assign(x=frame.x * 2)")
    assert result.success, result.error_in_exec
    assert shell.user_ns["summary"].to_dict() == {"a": 249500, "b": 250000}
    doubled = shell.user_ns["doubled"]
    assert doubled.x.iloc[-1] == 1998
    doubled.loc[0, "x"] = -1  # changed in place: not the object store's read-only memory
    assert doubled.x.iloc[0] == -1


def test_large_values_go_once_and_again_only_when_they_change(shell):
    import numpy as np

    magics = shell.magics_manager.registry["RayMagics"]
    big = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    shell.user_ns["big"] = big
    assert run(shell, "total = float(big.sum())").success
    cache = magics.session.cache
    assert "big" in cache
    first = cache._refs["big"]
    assert run(shell, "total = float(big.sum())").success
    assert cache._refs["big"] is first  # unchanged: the same reference went again
    big[0] = 1e9  # changed in place: noticed, sent again
    assert run(shell, "total = float(big.sum())").success
    assert cache._refs["big"] is not first
    assert shell.user_ns["total"] == float(big.sum())
    del shell.user_ns["big"]
    assert run(shell, "pass").success
    assert "big" not in cache  # gone from the notebook: let go


def test_a_large_input_changed_in_place_on_the_cluster_explains_itself(shell, capsys):
    import numpy as np

    shell.user_ns["grid"] = np.zeros(1_000_000)
    result = run(shell, "grid[0] = 1")
    assert not result.success
    err = capsys.readouterr().err
    assert "read-only" in err and "x = x.copy()" in err


def test_rich_output_and_figures_are_displayed_in_the_cell(shell):
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        result = run(shell, "from IPython.display import HTML, display\n"
                            "display(HTML('<b>bold</b>'))\n"
                            "import matplotlib.pyplot as plt\n"
                            "plt.plot([1, 3, 2])\n"
                            "plt.show()\n"
                            "print('after the plot')")
    assert result.success, result.error_in_exec
    bundles = [o.data for o in captured.outputs]
    assert any(b.get("text/html") == "<b>bold</b>" for b in bundles)
    png = next(b["image/png"] for b in bundles if "image/png" in b)
    import base64

    assert base64.b64decode(png).startswith(b"\x89PNG")
    assert "after the plot" in captured.stdout


def test_names_that_cannot_come_back_are_named_and_the_rest_comes_back(shell, capsys):
    shell.user_ns.pop("ok", None)
    result = run(shell, "import threading\nguard = threading.Lock()\nok = 7")
    assert result.success, result.error_in_exec
    assert shell.user_ns["ok"] == 7 and "guard" not in shell.user_ns
    assert "stay on the cluster" in capsys.readouterr().err


def test_an_async_run_returns_at_once_and_is_collected_later(shell, capsys):
    import time

    shell.user_ns["seed"] = 3
    start = time.monotonic()
    result = run(shell, "import time\ntime.sleep(3)\nprint('slept')\nlater = seed * 2\nlater + 1",
                 "--async -o job")
    assert result.success, result.error_in_exec
    assert time.monotonic() - start < 2.5
    job = shell.user_ns["job"]
    assert not job.done()
    value = shell.run_line_magic("ray_result", "job")
    assert value == 7 and shell.user_ns["later"] == 6 and job.done()
    assert "slept" in capsys.readouterr().out
    assert shell.run_line_magic("ray_result", "job") == 7  # collected once, kept


def test_async_needs_a_name_and_ray_result_a_handle(shell):
    result = run(shell, "x = 1", "--async")
    assert "--async needs -o NAME" in str(result.error_in_exec)
    shell.user_ns["not_a_run"] = 5
    result = shell.run_cell("%ray_result not_a_run")
    assert "is not the handle of a %%ray_remote --async run" in str(result.error_in_exec)


def test_interrupting_the_kernel_cancels_the_remote_cell(shell, tmp_path):
    import signal
    import threading
    import time

    beat = tmp_path / "beat"
    shell.user_ns["beat_path"] = str(beat)
    threading.Timer(4, os.kill, (os.getpid(), signal.SIGINT)).start()
    start = time.monotonic()
    result = run(shell, "import time\nfor i in range(600):\n"
                        "    open(beat_path, 'w').write(str(i))\n    time.sleep(0.1)")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert time.monotonic() - start < 15
    stopped_at = beat.read_text()
    time.sleep(1.5)
    assert beat.read_text() == stopped_at  # the remote cell stopped too
    assert run(shell, "after = 1").success  # and the kernel goes on


def test_env_runs_the_cell_with_the_environments_runtime_env(shell, monkeypatch):
    from redspot.environments.client import EnvironmentsClient

    asked = []

    def runtime_env(self, environment):
        asked.append(environment)
        return {"env_vars": {"REDSPOT_TEST_FLAVOUR": "vanilla"}}

    monkeypatch.setattr(EnvironmentsClient, "runtime_env", runtime_env)
    result = run(shell, "import os\nflavour = os.environ.get('REDSPOT_TEST_FLAVOUR')",
                 "--env team/vanilla")
    assert result.success, result.error_in_exec
    assert asked == ["team/vanilla"] and shell.user_ns["flavour"] == "vanilla"


def test_env_without_an_environment_service_is_a_clear_error(shell, monkeypatch):
    monkeypatch.delenv("REDSPOT_ENVIRONMENTS_URL", raising=False)
    result = run(shell, "x = 1", "--env team/vanilla")
    assert "environments are not available here" in str(result.error_in_exec)


CLIENT_KERNEL = """
import os, sys
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
ip.extension_manager.load_extension("redspot.magics")
ip.run_line_magic("ray_connect", sys.argv[1])
ip.user_ns["base"] = 20
result = ip.run_cell("%%ray_remote\\nprint('through the client')\\nanswer = base + 22\\nanswer")
print("result", result.success, result.result, ip.user_ns.get("answer"), flush=True)
ip.run_line_magic("ray_disconnect", "")
"""


def test_a_ray_client_address_runs_cells_with_streamed_output(ray_head, tmp_path):
    """``ray://``: the Ray Client transport, where output comes as a streaming generator."""
    import subprocess
    import sys

    head, info = ray_head
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_KERNEL, info.client], capture_output=True, text=True,
        timeout=300, env={**os.environ, **auth_env(head.token_path), "HOME": str(tmp_path)})
    assert "Connected to the Ray cluster at ray://" in result.stdout, result.stderr[-3000:]
    assert "through the client" in result.stdout
    assert "result True 42 42" in result.stdout, result.stdout + result.stderr[-3000:]


EARLY_IMPORT_KERNEL = """
import json, os, sys
import ray  # before the token settings: Ray reads them once, now
from IPython.core.interactiveshell import InteractiveShell
os.environ.update(json.loads(sys.argv[2]))
ip = InteractiveShell.instance()
ip.extension_manager.load_extension("redspot.magics")
try:
    ip.run_line_magic("ray_connect", sys.argv[1])
except Exception as e:
    print("refused:", e, flush=True)
"""


def test_a_kernel_that_imported_ray_too_early_is_told_at_once(ray_head, tmp_path):
    import json
    import subprocess
    import sys

    head, info = ray_head
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    result = subprocess.run(
        [sys.executable, "-c", EARLY_IMPORT_KERNEL, info.address,
         json.dumps(auth_env(head.token_path))], capture_output=True, text=True,
        timeout=120, env={**env, "HOME": str(tmp_path)})
    assert "refused: Ray was imported in this process before its token settings" in (
        result.stdout), result.stdout + result.stderr[-3000:]
    assert "run %ray_connect before importing Ray" in result.stdout
