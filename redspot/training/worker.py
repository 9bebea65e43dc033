"""Inside a training worker: what a training loop is given (``ctx``).

``run_worker`` is the function every Ray Train worker runs: it makes the worker's
:class:`TrainContext` and calls the user's loop with it. The loop (a function, or the
``%%ray_train`` cell) uses::

    engine = ctx.engine(model)              # deepspeed.initialize with the run's config
    loader = ctx.loader(dataset)            # this rank's shard, micro-batches
    ctx.report({"loss": loss}, checkpoint=True)

``report`` sends rank 0's metrics live to the notebook (the output channel of
``redspot.compute``) and to Ray Train; with ``checkpoint=True`` every rank saves its
part of the DeepSpeed checkpoint and copies it to the run's checkpoint URL (fsspec:
a path on shared storage, ``s3://`` through s3fs).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from ..compute.channel import RemoteOutput
from . import storage

_current: TrainContext | None = None


class TrainContext:
    def __init__(self, settings: dict, user_config: dict):
        import ray.train

        self.settings = settings
        self.config = user_config
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()
        self.run_id = settings["run_id"]
        self.deepspeed_config = settings["deepspeed_config"]
        self.checkpoint_url = settings.get("checkpoint_url")
        self.step = 0
        self._engine = None
        # every rank's prints reach the notebook, prefixed; rank 0 also sends the reports
        self._output = RemoteOutput(settings.get("channel"))

    # -- the helpers ---------------------------------------------------------------
    def engine(self, model, optimizer=None, lr_scheduler=None, **kwargs):
        """``deepspeed.initialize`` with the run's config: the engine (call it, then
        ``engine.backward(loss)`` and ``engine.step()``)."""
        if self.deepspeed_config is None:  # plain DDP
            import torch

            self._engine = _DdpEngine(model, optimizer, self.settings, torch)
            self.status("training (plain DDP)")
            return self._engine
        stage = self.deepspeed_config.get("zero_optimization", {}).get("stage", 0)
        self.status(f"setting up DeepSpeed ZeRO-{stage}")
        deepspeed = import_deepspeed()
        no_compiled_comm_op()
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=lr_scheduler,
            model_parameters=None if optimizer is not None else
            [p for p in model.parameters() if p.requires_grad],
            config=self.deepspeed_config, **kwargs)
        self._engine = engine
        self.status(f"training (DeepSpeed ZeRO-{stage})")
        return engine

    def status(self, text: str) -> None:
        """What the run does now, shown beside its progress bar (rank 0's)."""
        if self.rank == 0:
            self._output.emit(("status", text))

    def shard(self, data):
        """This rank's part of ``data`` (a sequence, an array or tensor, a Dataset)."""
        import torch

        if isinstance(data, torch.utils.data.Dataset) and not hasattr(data, "__getitem__"):
            raise TypeError("shard() needs an indexable dataset")
        if isinstance(data, torch.Tensor) or hasattr(data, "shape"):
            return data[self.rank::self.world_size]
        indices = range(self.rank, len(data), self.world_size)
        if isinstance(data, torch.utils.data.Dataset):
            return torch.utils.data.Subset(data, list(indices))
        return [data[i] for i in indices]

    def loader(self, dataset, batch_size: int | None = None, shuffle: bool = True,
               seed: int = 0, **kwargs):
        """A DataLoader over this rank's shard of ``dataset``, in micro-batches."""
        import torch
        from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

        if isinstance(dataset, tuple | list) and all(isinstance(t, torch.Tensor)
                                                     for t in dataset):
            dataset = TensorDataset(*dataset)
        sampler = DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=shuffle, seed=seed)
        micro = batch_size or (self.deepspeed_config or {}).get(
            "train_micro_batch_size_per_gpu", self.settings.get("micro_batch_size", 8))
        return DataLoader(dataset, batch_size=micro, sampler=sampler, **kwargs)

    def report(self, metrics: dict, checkpoint: bool = False) -> str | None:
        """Metrics (rank 0's go to the notebook live), and a checkpoint when asked: every
        rank must call it alike. Returns the checkpoint's URL when one was saved."""
        import ray.train

        self.step += 1
        metrics = {k: _plain(v) for k, v in metrics.items()}
        metrics.setdefault("step", self.step)
        saved = None
        if checkpoint:
            saved = self._save_checkpoint(f"step-{self.step}")
            metrics["checkpoint"] = saved
        if self.rank == 0:
            self._output.emit(("report", metrics))
        ray.train.report(metrics)
        return saved

    def print(self, *args, **kwargs):
        """``print`` on rank 0 only (into the notebook)."""
        if self.rank == 0:
            print(*args, **kwargs)

    # -- checkpoints -----------------------------------------------------------------
    def _save_checkpoint(self, tag: str) -> str:
        if self._engine is None:
            raise RuntimeError("report(checkpoint=True) needs ctx.engine(model) first")
        if not self.checkpoint_url:
            raise RuntimeError("this run has no checkpoint_dir")
        local = Path(tempfile.mkdtemp(prefix="redspot-ckpt-"))
        try:
            self._engine.save_checkpoint(str(local), tag=tag)
            url = storage.join(self.checkpoint_url, self.run_id)
            # each rank copies the files it wrote (their names carry the rank); rank 0
            # also the "latest" pointer, last, once the others' files are there
            files = [p for p in local.rglob("*") if p.is_file() and p.name != "latest"]
            storage.upload(files, local, url)
            _barrier()
            if self.rank == 0 and (local / "latest").exists():
                storage.upload([local / "latest"], local, url)
            _barrier()
            return storage.join(url, tag)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def close(self) -> bool:
        return self._output.close()


class _DdpEngine:
    """``ctx.engine`` without DeepSpeed (``zero=None``): torch's DDP and an AdamW,
    with the same calls as DeepSpeed's engine."""

    def __init__(self, model, optimizer, settings, torch):
        from ray.train.torch import prepare_model

        self.module = prepare_model(model)
        self.optimizer = optimizer or torch.optim.AdamW(
            self.module.parameters(), lr=settings.get("learning_rate", 1e-3))
        self.torch = torch

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, loss):
        self.optimizer.zero_grad()
        loss.backward()

    def step(self):
        self.optimizer.step()

    def save_checkpoint(self, folder: str, tag: str):
        import torch.distributed as dist

        if not dist.is_initialized() or dist.get_rank() == 0:
            path = Path(folder) / tag
            path.mkdir(parents=True, exist_ok=True)
            module = getattr(self.module, "module", self.module)
            self.torch.save({"module": module.state_dict(),
                             "optimizer": self.optimizer.state_dict()}, path / "model.pt")
            (Path(folder) / "latest").write_text(tag)


def _quiet_ray_train_logs() -> None:
    """Ray Train logs every report of every worker at INFO, and the notebook shows rank
    0's already: its loggers to WARNING, those named by module (``ray.train``) and those
    named by file path (``.../ray/train/...``, as Ray Train v2's execution context's)."""
    in_ray_train = f"{os.sep}ray{os.sep}train{os.sep}"
    for name in ["ray.train", *[n for n in list(logging.root.manager.loggerDict)
                                if in_ray_train in n]]:
        logging.getLogger(name).setLevel(logging.WARNING)


def arch_list_for_deepspeed(value: str) -> str:
    """``TORCH_CUDA_ARCH_LIST`` as DeepSpeed's op builder can read it: architecture-
    specific names (``9.0a``, ``10.0f``) as their plain family (``9.0``), whose code runs
    on the same GPUs; ``+PTX`` and the separators kept. CUDA images set ``9.0a``, on
    which DeepSpeed's first compile fails (``invalid literal for int() ... '0a'``)."""
    def plain(entry: str) -> str:
        arch, plus, ptx = entry.partition("+")
        specific = re.fullmatch(r"(\d+\.\d+)[a-z]+", arch)
        return (specific.group(1) if specific else arch) + plus + ptx

    entries = [plain(e) for e in value.replace(";", " ").split()]
    separator = ";" if ";" in value else " "
    return separator.join(dict.fromkeys(entries))  # 9.0a and 9.0 once


def readable_arch_list(environ=os.environ) -> None:
    """This process's ``TORCH_CUDA_ARCH_LIST``, if set, as DeepSpeed can read it."""
    if environ.get("TORCH_CUDA_ARCH_LIST"):
        environ["TORCH_CUDA_ARCH_LIST"] = arch_list_for_deepspeed(
            environ["TORCH_CUDA_ARCH_LIST"])


def _barrier():
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _plain(value):
    """A metric as JSON can carry it (numpy and torch scalars to floats)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    item = getattr(value, "item", None)
    if item is not None:
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def import_deepspeed():
    """``import deepspeed`` without the ``import mlflow`` of DeepSpeed's autotuner.

    DeepSpeed imports MLflow when it is installed (as it is beside Redspot's registry
    client), for its autotuner alone (``deepspeed --autotuning``, which a Ray Train worker
    does not run): about 5 s of CPU in every worker (MLflow imports pandas and more).
    MLflow is kept out while DeepSpeed imports and back in after, so that the user's own
    ``import mlflow`` imports it as usual.
    """
    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed

        return deepspeed
    sys.modules["mlflow"] = None  # an ImportError for whoever imports it meanwhile
    try:
        import deepspeed
    finally:
        if "mlflow" in sys.modules and sys.modules["mlflow"] is None:
            del sys.modules["mlflow"]
    return deepspeed


def no_compiled_comm_op() -> bool:
    """On CPUs, DeepSpeed's process group uses its shared-memory all-reduce op only where
    DeepSpeed was installed with it built (``DS_BUILD_SHM_COMM=1``, as Redspot's CPU image
    is), and gloo's otherwise: DeepSpeed would compile the op when a run starts, once per
    ``TORCH_EXTENSIONS_DIR`` (each user's), which took 1.5 to 3 minutes of both cores of
    a small machine and fails where the environment has no C++ compiler. True when it
    was turned off."""
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return False
    import deepspeed.ops
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get("deepspeed_shm_comm"):
        return False
    # DeepSpeed keeps this dict for the process, edits included (deepspeed/ops/__init__)
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return True


def run_worker(config: dict) -> None:
    """What each Ray Train worker runs: the context, then the user's loop."""
    import cloudpickle

    global _current
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    _quiet_ray_train_logs()
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", config["settings"]["extensions_dir"])
    readable_arch_list()
    loop = cloudpickle.loads(config["loop"])
    ctx = TrainContext(config["settings"], config["user_config"])
    _current = ctx
    from ..cost import Node

    node = Node.from_env(os.environ)  # where this worker runs: the run's cost
    if node is not None:
        ctx._output.emit(("node", ctx.rank, node.to_dict()))
    ctx.status(f"{ctx.world_size} worker{'s' if ctx.world_size > 1 else ''} running "
               "your cell")
    saved = sys.stdout, sys.stderr
    sys.stdout = _Tee("stdout", sys.stdout, ctx._output.emit, f"[worker {ctx.rank}] ")
    sys.stderr = _Tee("stderr", sys.stderr, ctx._output.emit, f"[worker {ctx.rank}] ")
    try:
        loop(ctx)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved
        _current = None
        ctx.close()


class _Tee(io.TextIOBase):
    """A worker's stream: written to its log as ever, and each whole line to the
    notebook through the output channel, prefixed with the worker's rank."""

    def __init__(self, name: str, original, emit, prefix: str):
        self.name, self.original, self.emit, self.prefix = name, original, emit, prefix
        self.pending = ""

    def writable(self):
        return True

    def write(self, text):
        self.original.write(text)
        self.pending += text
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            self.emit(("stream", self.name,
                       "".join(f"{self.prefix}{line}\n" for line in lines)))
        return len(text)

    def flush(self):
        self.original.flush()
        if self.pending:
            self.emit(("stream", self.name, f"{self.prefix}{self.pending}\n"))
            self.pending = ""


def current() -> TrainContext:
    """The running worker's context (inside a training loop)."""
    if _current is None:
        raise RuntimeError("not inside a training loop: use redspot.train.fit or %%ray_train")
    return _current
