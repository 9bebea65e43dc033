"""A training run's options, checked, and the DeepSpeed configs made from them."""

from __future__ import annotations

import os

import pytest

from redspot.training.config import (
    Cluster,
    InvalidTraining,
    TrainSpec,
    deepspeed_config,
    merged,
)
from redspot.training.worker import arch_list_for_deepspeed


def test_zero3_on_cpu_workers():
    config = deepspeed_config(TrainSpec(workers=2, zero=3, micro_batch_size=4,
                                        gradient_accumulation=2, learning_rate=0.01))
    assert config == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "train_batch_size": 16,
        "optimizer": {"type": "AdamW", "params": {"lr": 0.01, "torch_adam": True}},
        "zero_optimization": {"stage": 3, "overlap_comm": False,
                              "contiguous_gradients": True,
                              "stage3_gather_16bit_weights_on_model_save": False},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
        "gradient_clipping": 1.0,
    }


def test_zero3_bf16_with_cpu_offload_on_gpus():
    config = deepspeed_config(TrainSpec(workers=4, gpus_per_worker=1, zero=3,
                                        offload="cpu", precision="bf16"),
                              Cluster(cpus=32, gpus=4))
    zero = config["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert zero["overlap_comm"] is True
    assert config["bf16"] == {"enabled": True} and "fp16" not in config
    assert "torch_adam" not in config["optimizer"]["params"]
    assert config["train_batch_size"] == 32


def test_zero2_offloads_the_optimizer_only():
    zero = deepspeed_config(TrainSpec(zero=2, offload="cpu"))["zero_optimization"]
    assert zero == {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": False}}


@pytest.mark.parametrize("options, cluster, reason", [
    ({"offload": "cpu"}, None, "offload needs ZeRO"),
    ({"precision": "fp16"}, None, "fp16 needs GPUs"),
    ({"precision": "bf16"}, None, "bf16 needs GPUs"),
    ({"precision": "fp8", "gpus_per_worker": 1}, None, "precision must be one of"),
    ({"zero": 4}, None, "zero must be one of 0, 1, 2, 3"),
    ({"offload": "nvme", "zero": 3}, None, "offload must be None or 'cpu'"),
    ({"workers": 0}, None, "workers must be a whole number >= 1"),
    ({"micro_batch_size": 2.5}, None, "micro_batch_size must be a whole number"),
    ({"learning_rate": 0}, None, "learning_rate must be a positive number"),
    ({"workers": 4, "gpus_per_worker": 2}, Cluster(cpus=64, gpus=4),
     "need 8 GPUs; the cluster has 4"),
    ({"workers": 3, "cpus_per_worker": 1}, Cluster(cpus=2), "need 3 CPUs; the cluster has 2"),
])
def test_impossible_runs_are_refused_with_the_reason(options, cluster, reason):
    with pytest.raises(InvalidTraining, match=reason):
        deepspeed_config(TrainSpec(**options), cluster)


def test_an_autoscaling_cluster_is_not_held_to_its_current_size():
    deepspeed_config(TrainSpec(workers=4, gpus_per_worker=1),
                     Cluster(cpus=2, gpus=0, autoscaling=True))


def test_a_users_config_is_merged_over_and_checked_the_same_way():
    config = deepspeed_config(TrainSpec(zero=3, deepspeed_config={
        "optimizer": {"params": {"lr": 0.5, "betas": [0.8, 0.9]}},
        "zero_optimization": {"stage3_max_live_parameters": 1000}}))
    assert config["optimizer"] == {"type": "AdamW", "params": {
        "lr": 0.5, "torch_adam": True, "betas": [0.8, 0.9]}}
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["stage3_max_live_parameters"] == 1000
    for user, reason in [
        ({"zero_optimization": {"stage": 0, "offload_optimizer": {"device": "cpu"}}},
         "offload_optimizer needs ZeRO"),
        ({"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}},
         "offload_param needs ZeRO stage 3"),
        ({"fp16": {"enabled": True}}, "enables fp16, which needs GPUs"),
        ({"train_batch_size": 100}, "must be train_micro_batch_size_per_gpu 8"),
        ("not a dict", "must be a dict"),
    ]:
        with pytest.raises(InvalidTraining, match=reason):
            deepspeed_config(TrainSpec(deepspeed_config=user))


def test_merging_leaves_both_sides_alone():
    base = {"a": {"b": 1, "c": [1]}}
    override = {"a": {"c": [2]}, "d": 3}
    assert merged(base, override) == {"a": {"b": 1, "c": [2]}, "d": 3}
    assert base == {"a": {"b": 1, "c": [1]}} and override == {"a": {"c": [2]}, "d": 3}


def test_server_runtimes_build_deepspeed_against_their_own_torch(tmp_path, monkeypatch):
    from redspot.environments import runtime

    monkeypatch.setattr(runtime, "_uv", lambda: "uv")
    monkeypatch.setattr(runtime, "system_python", lambda: "/usr/bin/python3")
    monkeypatch.setattr(runtime, "_redspot_source", lambda: "/src/redspot")
    requirements = tmp_path / "r.txt"
    requirements.write_text("torch==2.13.0+cpu\ndeepspeed==0.19.8\nray[train]==2.60.0\n")
    commands = runtime.server_venv_commands(tmp_path / "venv", requirements)
    python = str(tmp_path / "venv" / "bin" / "python")
    override = ["--override", str(tmp_path / "overrides.txt")]
    assert (tmp_path / "overrides.txt").read_text() == runtime.OVERRIDES.read_text()
    assert commands[1] == ["uv", "pip", "install", "--python", python, *override, "-r",
                           str(tmp_path / "r.first.txt")]
    assert (tmp_path / "r.first.txt").read_text() == "torch==2.13.0+cpu\nray[train]==2.60.0\n"
    assert commands[3] == ["uv", "pip", "install", "--python", python, *override,
                           "--no-build-isolation", "deepspeed==0.19.8"]
    assert commands[-1][-1] == "/src/redspot"
    assert runtime.uv_env()["DS_BUILD_OPS"] == "0"
    # a copy of the runtime: the same steps, on the venv that is there
    assert runtime.server_venv_commands(tmp_path / "venv", requirements,
                                        create=False) == commands[1:]


def test_a_failed_worker_is_named_with_what_happened():
    from redspot.training.fit import TrainingFailed, _failure

    class WorkerGroupError(Exception):
        worker_failures = {1: ValueError(
            "Traceback (most recent call last):\n  File \"<ray_train cell>\", line 3\n"
            "ValueError: the batch has 3 columns, the model wants 4")}

    failure = _failure(WorkerGroupError("training failed"))
    assert isinstance(failure, TrainingFailed)
    lines = str(failure).splitlines()
    assert lines[0] == "worker 1 failed: ValueError: the batch has 3 columns, the model wants 4"
    assert lines[1] == "--- the last lines of worker 1's log ---"
    assert 'File "<ray_train cell>", line 3' in str(failure)  # no pid: the error's own end
    plain = RuntimeError("not a worker's")
    assert _failure(plain) is plain


def test_a_dead_workers_tail_is_what_it_printed_when_rays_log_cannot_be_read():
    import collections

    from redspot.training.fit import _failure, _keep_lines

    class WorkerGroupError(Exception):
        # a pid, but no Ray here to read its log from
        worker_failures = {1: RuntimeError(
            "The actor is dead because its worker process has died. pid=999999")}

    printed: dict[int, collections.deque] = {}
    _keep_lines(printed, "[worker 0] step 1\n[worker 1] step 1\n")
    _keep_lines(printed, "[worker 1] about to stop\nnot a worker's line\n")
    failure = str(_failure(WorkerGroupError("training failed"), printed)).splitlines()
    assert failure[0].startswith("worker 1 failed: RuntimeError: The actor is dead")
    assert failure[1:] == ["--- the last lines of worker 1's log ---", "step 1",
                           "about to stop"]


def test_a_job_submission_is_retried_while_the_head_has_no_agent(monkeypatch):
    from redspot.compute.transport import Jobs

    class Client:
        calls, known = 0, set()

        def submit_job(self, submission_id, **_):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("Request failed with status code 500: No available "
                                   "agent to submit job, please try again later..")
            if self.calls == 2:  # the agent took it but answered late
                self.known.add(submission_id)
                raise RuntimeError("Request failed with status code 500: No available "
                                   "agent to submit job, please try again later..")
            raise AssertionError("submitted twice")

        def get_job_info(self, job_id):
            if job_id not in self.known:
                raise RuntimeError("Request failed with status code 404: not found")

    monkeypatch.setattr("time.sleep", lambda s: None)
    jobs = Jobs.__new__(Jobs)
    jobs.client = Client()
    assert jobs.submit("python x.py", submission_id="train-1") == "train-1"
    assert jobs.client.calls == 2

    class Refusing(Client):
        def submit_job(self, submission_id, **_):
            raise RuntimeError("Request failed with status code 400: bad runtime_env")

    jobs.client = Refusing()
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        jobs.submit("python x.py", submission_id="train-2")


@pytest.mark.parametrize("given, expected", [
    ("9.0a", "9.0"),
    ("8.0;8.6;9.0a;10.0f+PTX", "8.0;8.6;9.0;10.0+PTX"),
    ("8.0 9.0 9.0a", "8.0 9.0"),
    ("7.5+PTX", "7.5+PTX"),
])
def test_cuda_arch_lists_are_made_readable_for_deepspeeds_op_builder(given, expected):
    assert arch_list_for_deepspeed(given) == expected
    # what DeepSpeed's builder does with each entry (op_builder/builder.py)
    for cc in arch_list_for_deepspeed(given).replace(";", " ").split():
        tuple(int(part.split("+")[0]) for part in cc.split("."))


def test_named_cuda_architectures_are_left_as_they_are():
    assert arch_list_for_deepspeed("Ampere;Hopper+PTX") == "Ampere;Hopper+PTX"


def test_the_overrides_leave_out_what_slows_every_import_of_jsonschema(tmp_path):
    """rfc3987-syntax (jupyter-events' jsonschema[format-nongpl]) builds parsers at
    import: the overrides leave it out, and uv reads them as such."""
    import subprocess
    import sys

    from redspot.environments import runtime

    lines = [x for x in runtime.OVERRIDES.read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert lines == ['rfc3987-syntax ; sys_platform == "never"']
    # what uv resolves for jupyter-events with them, offline, from this environment's
    # own packages: jsonschema's other format checkers, not rfc3987-syntax
    requirements = tmp_path / "r.txt"
    requirements.write_text("jsonschema[format-nongpl]\n")
    out = subprocess.run(
        [runtime._uv(), "pip", "compile", "--offline", "--no-header", "--python",
         sys.executable, "--override", str(runtime.OVERRIDES), str(requirements)],
        capture_output=True, text=True, env=runtime.uv_env())
    assert out.returncode == 0, out.stderr
    assert "rfc3986-validator" in out.stdout and "rfc3987-syntax" not in out.stdout


def test_cpu_workers_use_gloo_rather_than_compile_deepspeeds_comm_op():
    """Where DeepSpeed was installed without its shared-memory op (make deps' build), a
    CPU worker's process group does without it: nothing is compiled at a run's start."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    code = ("from redspot.training.worker import no_compiled_comm_op\n"
            "from deepspeed.git_version_info import installed_ops\n"
            "from deepspeed.comm.torch import build_shm_op\n"
            "print(installed_ops['deepspeed_shm_comm'], no_compiled_comm_op(), build_shm_op())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["False", "True", "None"], out.stdout


def test_deepspeed_is_imported_without_mlflow_and_mlflow_can_still_be_imported():
    """DeepSpeed's autotuner imports MLflow (about 5 s of CPU per worker): a worker keeps
    it out while DeepSpeed imports, and the user's own ``import mlflow`` still works."""
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    pytest.importorskip("mlflow")
    code = ("import sys\n"
            "from redspot.training.worker import import_deepspeed\n"
            "deepspeed = import_deepspeed()\n"
            "print('mlflow' in sys.modules, deepspeed.__name__)\n"
            "import mlflow\n"
            "print(mlflow.__name__, type(sys.modules['mlflow']).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-2:] == ["False deepspeed", "mlflow module"], out.stdout
