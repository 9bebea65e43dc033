"""%%ray_train against a real token-protected Ray head: DeepSpeed ZeRO on 2 CPU workers.

Each scenario runs in a Python process of its own (a notebook's kernel: an IPython
shell with Redspot's extension), because Ray reads its token settings once per process
and other tests of this run use another head. Checkpoints go to a real S3 API server
(moto's) through s3fs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from redspot.compute.local import auth_env
from tests.helpers import free_port
from tests.kernels import RAY_KERNEL as KERNEL

pytestmark = pytest.mark.integration
pytest.importorskip("deepspeed")

BUCKET = "checkpoints"


@pytest.fixture(scope="module")
def s3():
    server_module = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing"
                 ).create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


DATA = textwrap.dedent("""
    import torch
    g = torch.Generator().manual_seed(1)
    X = torch.randn(512, 32, generator=g)
    Y = X[:, :1] * 2 - X[:, 1:2]
""")

LOOP = textwrap.dedent("""
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    engine = ctx.engine(model)
    full = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel()
                for p in engine.module.parameters())
    for epoch in range(4):
        total = 0.0
        for xb, yb in loader((X, Y)):
            loss = torch.nn.functional.mse_loss(engine(xb), yb)
            engine.backward(loss)
            engine.step()
            total += loss.item()
        report({"loss": total, "full": full, "local": local}, checkpoint=epoch == 3)
""")


def kernel(ray_head, cells: list[str], env: dict | None = None, timeout: float = 420,
           interrupt_after: str | None = None):
    """Run ``cells`` in a kernel process; with ``interrupt_after``, SIGINT it (as
    JupyterLab's stop button does) once that text shows in its output."""
    head, info = ray_head
    environ = {**os.environ, **auth_env(head.token_path), **(env or {}),
               "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KERNEL, info.address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)
    try:
        if not interrupt_after:
            stdout, stderr = proc.communicate(json.dumps(cells), timeout=timeout)
        else:
            proc.stdin.write(json.dumps(cells))
            proc.stdin.close()
            seen = []

            def watch():
                for line in proc.stderr:
                    seen.append(line)
                    if interrupt_after in line:
                        proc.send_signal(signal.SIGINT)
                        break
                seen.extend(proc.stderr)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            stdout = proc.stdout.read()
            proc.wait(timeout=timeout)
            watcher.join(30)
            stderr = "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    lines = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):]), result.stderr + result.stdout


def test_zero3_partitions_the_model_learns_and_checkpoints_to_s3(ray_head, s3):
    """Done-when: `%%ray_train --workers 2 --zero 3` trains, each rank holds half the
    parameters, the loss falls, and the checkpoint on S3 consolidates into a state dict
    the notebook's model loads."""
    train = (f"%%ray_train --workers 2 --zero 3 --lr 0.01 --steps 4 "
             f"--checkpoint-dir s3://{BUCKET}/runs -o run\n{LOOP}")
    check = textwrap.dedent("""
        import torch
        state = run.state_dict()
        model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                    torch.nn.Linear(64, 1))
        model.load_state_dict(state)
        with torch.no_grad():
            out["consolidated_loss"] = torch.nn.functional.mse_loss(model(X), Y).item()
        out["history"] = run.history
        out["checkpoint"] = run.checkpoint
        out["keys"] = sorted(state)
    """)
    out, log = kernel(ray_head, [DATA, train, check], env=s3)
    assert "error" not in out, out["error"] + log[-4000:]
    history = out["history"]
    losses = [h["loss"] for h in history]
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert losses[-1] < losses[0] / 5, losses
    # ZeRO-3: each of the 2 ranks holds half of the 2177 parameters (rounded up)
    assert history[0]["full"] == 2177 and history[0]["local"] == 1089
    assert out["checkpoint"].startswith(f"s3://{BUCKET}/runs/train-")
    assert out["keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    # the consolidated weights are the trained ones: per example about the last epoch's
    assert out["consolidated_loss"] < losses[0] / 5 / 32
    assert "step 4/4" in log  # progress, as a script shows it


def test_the_same_loop_under_zero2_plain_ddp_and_zero3_offloaded(ray_head, tmp_path):
    cells = [DATA]
    for zero, name in (("2", "zero2"), ("none", "ddp"), ("3 --offload cpu", "offload")):
        cells.append(f"%%ray_train --workers 2 --zero {zero} --lr 0.01 "
                     f"--checkpoint-dir {tmp_path} -o {name}\n{LOOP}")
        cells.append(f"out['{name}'] = [h['loss'] for h in {name}.history]\n"
                     f"out['{name}_local'] = {name}.history[0]['local']\n"
                     f"out['{name}_keys'] = sorted({name}.state_dict())")
    out, log = kernel(ray_head, cells)
    assert "error" not in out, out["error"] + log[-4000:]
    for name in ("zero2", "ddp", "offload"):
        assert out[name][-1] < out[name][0] / 5, (name, out[name])
        assert out[f"{name}_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    for name in ("zero2", "ddp"):
        assert out[f"{name}_local"] == 2177  # parameters are not partitioned
    # stage 3 with its parameters and optimizer state offloaded: still partitioned
    assert abs(out["offload_local"] - 2177 / 2) <= 2177 * 0.02, out["offload_local"]


def test_impossible_runs_are_refused_before_anything_starts(ray_head):
    cells = [f"%%ray_train --workers 2 {flags}\npass" for flags in (
        "--offload cpu", "--precision bf16", "--gpus 1", "--workers 8")]
    messages = []
    for cell in cells:
        out, _ = kernel(ray_head, [cell], timeout=120)
        messages.append(out.get("error", ""))
    assert "offload needs ZeRO" in messages[0]
    assert "bf16 needs GPUs" in messages[1]
    assert "need 2 GPUs; the cluster has 0" in messages[2]
    assert "need 8 CPUs; the cluster has 2" in messages[3]
    assert all(m.startswith("UsageError: refused before starting") for m in messages)


def test_a_worker_killed_mid_run_names_the_worker(ray_head, tmp_path):
    cell = textwrap.dedent(f"""
        %%ray_train --workers 2 --zero 3 --checkpoint-dir {tmp_path}
        import os, signal, torch
        model = torch.nn.Linear(4, 1)
        engine = ctx.engine(model)
        report({{"loss": 1.0}})
        print("worker", rank, "about to stop")
        if rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        report({{"loss": 0.5}})
    """)
    out, log = kernel(ray_head, [cell])
    error = out["error"]
    assert error.startswith("TrainingFailed: worker 1 failed"), error
    assert "worker process has died" in error.splitlines()[0]
    # the end of the worker's own log: what it printed before it stopped
    assert "--- the last lines of worker 1's log ---" in error
    assert "worker 1 about to stop" in error
    # and every worker's prints came to the notebook as they were made
    assert "[worker 0] worker 0 about to stop" in log
    assert "[worker 1] worker 1 about to stop" in log


def test_interrupting_the_kernel_stops_the_run_and_frees_the_workers(ray_head, tmp_path):
    cell = textwrap.dedent(f"""
        %%ray_train --workers 2 --zero 2 --checkpoint-dir {tmp_path}
        import time, torch
        engine = ctx.engine(torch.nn.Linear(4, 1))
        for step in range(600):
            report({{"loss": 1.0 / (step + 1)}})
            time.sleep(0.5)
    """)
    after = textwrap.dedent("""
        import time, ray
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ray.available_resources().get("CPU", 0) < 2:
            time.sleep(1)
        out["free_cpus"] = ray.available_resources().get("CPU", 0)
    """)
    out, log = kernel(ray_head, [cell, after], interrupt_after="step 3 ",
                      timeout=300)
    assert out.get("error", "").startswith("KeyboardInterrupt"), (out, log[-3000:])
    # the kernel's next cell finds the cluster's CPUs free again
    assert out["free_cpus"] == 2, (out, log[-3000:])


def test_a_submitted_run_outlives_its_kernel_and_is_attached_again(ray_head, tmp_path):
    submit = (f"%%ray_train --workers 2 --zero 2 --lr 0.01 --submit -o run "
              f"--checkpoint-dir {tmp_path}\n{LOOP}")
    out, log = kernel(ray_head, [DATA, submit, "out['run'] = run"])
    assert "error" not in out, out["error"] + log[-3000:]
    run_id = out["run"]
    assert run_id.startswith("train-")
    # that kernel is gone; another one follows the run to its end and gets its result
    attach = f"%ray_train --attach {run_id} --checkpoint-dir {tmp_path} -o back"
    out, log = kernel(ray_head, [attach, "out['losses'] = [h['loss'] for h in back.history]"
                                         "\nout['checkpoint'] = back.checkpoint"])
    assert "error" not in out, out["error"] + log[-3000:]
    assert len(out["losses"]) == 4 and out["losses"][-1] < out["losses"][0]
    assert out["checkpoint"].startswith(f"{tmp_path}/{run_id}/step-4")
