"""``fit``: a training loop run by Ray Train workers with DeepSpeed, from the notebook.

The options are checked (``config.py``) against the connected cluster before anything
starts; the loop and its config go to the workers through Ray Train's ``TorchTrainer``
(gloo on CPU, NCCL on GPUs); rank 0's ``ctx.report`` calls come back live through the
kernel's output channel (``redspot.compute``) to a progress display; the result holds
the last metrics, the history and the last checkpoint's URL.

Interrupting the kernel aborts the run through Ray Train's controller and frees the
workers. Ray Train registers a SIGINT handler of its own when ``fit`` runs in the main
thread; a kernel must keep its own, so ``_Trainer`` takes the controller instead of
that handler.
"""

from __future__ import annotations

import collections
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle

from .config import Cluster, TrainSpec, check, deepspeed_config
from .display import _fmt, live_display

#: How many lines of a failed worker's log the error shows.
LOG_TAIL = 30


class TrainingFailed(RuntimeError):
    """A worker failed; the message names it and shows its log's tail."""


@dataclass
class TrainResult:
    run_id: str
    metrics: dict
    history: list[dict] = field(default_factory=list)
    checkpoint: str | None = None
    checkpoint_dir: str | None = None
    seconds: float = 0.0
    #: what the run cost, and how that was counted (empty: not on Redspot's nodes)
    cost: str = ""

    def state_dict(self):
        """The last checkpoint as one plain state dict (ZeRO partitions gathered)."""
        from .checkpoints import consolidate

        if not self.checkpoint:
            raise RuntimeError("this run saved no checkpoint (report(..., checkpoint=True))")
        return consolidate(self.checkpoint)

    def _repr_html_(self):
        from html import escape

        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items()
                            if k != "checkpoint")
        checkpoint = f"<br>checkpoint: <code>{escape(self.checkpoint)}</code>" \
            if self.checkpoint else ""
        cost = f"<br>{escape(self.cost)}" if self.cost else ""
        return (f"Training run <code>{escape(self.run_id)}</code> finished in "
                f"{self.seconds:.1f} s: {escape(metrics)}{checkpoint}{cost}")


def training_cost(nodes: dict[int, dict], spec, seconds: float) -> str:
    """What a run cost: each worker's share of its node (its CPUs and GPUs) x the
    node's price x the run's time (:mod:`redspot.cost`)."""
    from ..cost import Node, Use, cost_sentence

    uses = [Use(node, cpus=spec.cpus_per_worker, gpus=spec.gpus_per_worker)
            for node in (Node.from_dict(n) for _, n in sorted(nodes.items()))
            if node is not None]
    return cost_sentence(uses, seconds)


def default_checkpoint_dir() -> str:
    """``$REDSPOT_CHECKPOINT_DIR``, else ``~/checkpoints`` (the home is on the shared
    storage)."""
    return os.environ.get("REDSPOT_CHECKPOINT_DIR") or str(Path.home() / "checkpoints")


def extensions_dir() -> str:
    """Where DeepSpeed's compiled ops are kept between runs (they take ~85 s to build)."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(
        Path.home() / ".cache" / "redspot" / "torch_extensions")


def cluster_of(ray) -> Cluster:
    resources = ray.cluster_resources()
    autoscaling = bool(os.environ.get("REDSPOT_RAY_CLUSTER"))  # KubeRay scales up
    return Cluster(cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0),
                   autoscaling=autoscaling)


def fit(train_loop, workers: int = 2, gpus_per_worker: int = 0, cpus_per_worker: int = 1,
        zero: int | None = 0, offload: str | None = None, precision: str = "fp32",
        deepspeed_config: dict | None = None, environment: str | None = None,
        checkpoint_dir: str | None = None, config: dict | None = None,
        micro_batch_size: int = 8, gradient_accumulation: int = 1,
        learning_rate: float = 1e-3, steps: int | None = None, display=None,
        run_id: str | None = None, session=None) -> TrainResult:
    """Run ``train_loop(ctx)`` on ``workers`` Ray Train workers (see the module's
    docstring and ``worker.TrainContext`` for ``ctx``). ``zero=None`` is plain DDP;
    ``steps`` (how many reports to expect) sizes the progress bar; ``session`` is the
    kernel's ``RaySession`` (``%%ray_train`` passes it; its output channel is used)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("not connected to a Ray cluster: %ray_connect first "
                           "(or ray.init())")
    spec = TrainSpec(workers=workers, gpus_per_worker=gpus_per_worker,
                     cpus_per_worker=cpus_per_worker, zero=zero, offload=offload,
                     precision=precision, micro_batch_size=micro_batch_size,
                     gradient_accumulation=gradient_accumulation,
                     learning_rate=learning_rate, deepspeed_config=deepspeed_config,
                     config=dict(config or {}))
    ds_config = _config_for(spec, cluster_of(ray))
    run_id = run_id or new_run_id()
    checkpoint_url = checkpoint_dir or default_checkpoint_dir()

    live = display if display is not None else live_display(run_id, steps)
    history: list[dict] = []
    printed: dict[int, collections.deque] = {}
    nodes: dict[int, dict] = {}  # rank -> the node it ran on

    def sink(event):
        if event[0] == "report":
            history.append(event[1])
            live.report(event[1])
        elif event[0] == "stream":
            live.stream(event[1], event[2])
            _keep_lines(printed, event[2])
        elif event[0] == "status":
            live.status(event[1])
        elif event[0] == "node":
            nodes[event[1]] = event[2]

    outlet, own_outlet = (session.outlet, False) if session is not None else (None, True)
    if outlet is None:
        outlet = _outlet()
    channel = outlet.open(sink)
    pumping = _Pump(outlet, tick=getattr(live, "tick", None))
    settings = {"run_id": run_id, "deepspeed_config": ds_config, "channel": channel,
                "checkpoint_url": checkpoint_url, "extensions_dir": extensions_dir(),
                "learning_rate": learning_rate, "micro_batch_size": micro_batch_size}
    trainer = _trainer(spec, settings, train_loop, environment, run_id)
    live.status(f"starting {workers} worker{'s' if workers > 1 else ''} on the cluster "
                "(Ray Train: usually 10-30 s)")
    start = time.perf_counter()

    def drain():
        pumping.stop()
        outlet.finish(channel, streamed=True, timeout=5)
        if own_outlet:
            outlet.close()

    try:
        result = _run(trainer)
    except KeyboardInterrupt:
        drain()
        live.finish(None, "interrupted: the workers were stopped")
        raise
    except Exception as e:
        drain()  # the workers' last prints first: they tell what happened
        failure = _failure(e, printed)
        live.finish(None, str(failure))
        raise failure from e
    drain()
    final = history[-1] if history else dict(result.metrics or {})
    checkpoints = [h["checkpoint"] for h in history if h.get("checkpoint")]
    outcome = TrainResult(run_id=run_id, metrics=final, history=history,
                          checkpoint=checkpoints[-1] if checkpoints else None,
                          checkpoint_dir=checkpoint_url,
                          seconds=time.perf_counter() - start)
    outcome.cost = training_cost(nodes, spec, outcome.seconds)
    live.finish(outcome, None)
    return outcome


def new_run_id() -> str:
    return f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


SPEC_OPTIONS = ("workers", "gpus_per_worker", "cpus_per_worker", "zero", "offload",
                "precision", "micro_batch_size", "gradient_accumulation", "learning_rate",
                "deepspeed_config")


def validate(options: dict, cluster: Cluster) -> None:
    """Refuse ``fit``'s options as ``fit`` would, without starting anything."""
    spec = TrainSpec(**{k: options[k] for k in SPEC_OPTIONS if k in options})
    _config_for(spec, cluster)


def _outlet():
    """An output channel for a run started without ``%ray_connect``'s session."""
    import ray
    import ray.util

    from ..compute.channel import OutputChannel, Relay

    if ray.util.client.ray.is_connected():  # Ray Client: workers cannot reach us
        return Relay()
    return OutputChannel(ray.util.get_node_ip_address())


class _Pump:
    """While the run goes on: drains a Ray Client relay (the channel needs no help), and
    ticks the display once a second (its clock while the workers start)."""

    def __init__(self, outlet, tick=None):
        import threading

        self.done = threading.Event()
        drain = getattr(outlet, "drain", None)

        def pump():
            last_tick = 0.0
            while not self.done.wait(0.2):
                try:
                    if drain is not None:
                        drain()
                    if tick is not None and time.monotonic() - last_tick >= 1:
                        last_tick = time.monotonic()
                        tick()
                except Exception:  # noqa: BLE001 - the run's end reports it
                    return

        self.thread = None
        if drain is not None or tick is not None:
            self.thread = threading.Thread(target=pump, name="redspot-train-pump",
                                           daemon=True)
            self.thread.start()

    def stop(self):
        self.done.set()
        if self.thread is not None:
            self.thread.join(5)


def _config_for(spec: TrainSpec, cluster: Cluster) -> dict | None:
    if spec.zero is None:  # plain DDP: the same checks, no DeepSpeed
        check(spec, cluster)
        return None
    return deepspeed_config(spec, cluster)


def _trainer(spec: TrainSpec, settings: dict, train_loop, environment, run_id):
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .worker import run_worker

    class _Trainer(TorchTrainer):
        controller = None

        def _register_sigint_handler(self, controller):
            self.controller = controller  # the kernel keeps its own SIGINT handler

    resources = {"CPU": spec.cpus_per_worker}
    if spec.gpus_per_worker:
        resources["GPU"] = spec.gpus_per_worker
    runtime_env = {}
    if environment:  # the workers run in a Redspot environment (its Ray runtime_env)
        from ..environments.client import EnvironmentsClient

        runtime_env = dict(EnvironmentsClient().runtime_env(environment))
    # the checkpoint store's settings follow the run to its workers; their prints go to
    # their stdout (Ray Train would keep them in a file of its own, away from the
    # notebook and from the log a failure shows)
    env_vars = {**storage_environment(os.environ), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if not spec.gpus_per_worker:
        # CPU workers: said, not guessed (DeepSpeed warns in every worker when it guesses)
        env_vars["DS_ACCELERATOR"] = "cpu"
    runtime_env["env_vars"] = {**env_vars, **runtime_env.get("env_vars", {})}
    loop_config = {"loop": cloudpickle.dumps(train_loop), "settings": settings,
                   "user_config": spec.config}
    trainer = _Trainer(
        run_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=spec.workers,
                                     use_gpu=spec.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_id, storage_path=_ray_storage(),
                             failure_config=FailureConfig(max_failures=0),
                             worker_runtime_env=runtime_env or None),
    )
    return trainer


#: Settings of checkpoint stores that workers need as the kernel has them (s3fs reads
#: AWS_*; an S3-compatible endpoint is AWS_ENDPOINT_URL).
STORAGE_ENV_PREFIXES = ("AWS_", "FSSPEC_")


def storage_environment(environ) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k.startswith(STORAGE_ENV_PREFIXES)}


def _ray_storage() -> str:
    """Ray Train's own run folder (its results; checkpoints are ours)."""
    path = Path(os.environ.get("REDSPOT_RAY_TRAIN_DIR")
                or Path.home() / ".cache" / "redspot" / "ray_train")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _run(trainer):
    try:
        return trainer.fit()
    except KeyboardInterrupt:
        _abort(trainer)
        raise


def _abort(trainer) -> None:
    import ray

    controller = getattr(trainer, "controller", None)
    if controller is None:
        return
    try:
        ray.get(controller.abort.remote(), timeout=30)
    except Exception:  # noqa: BLE001 - then by force
        ray.kill(controller)


def _keep_lines(printed: dict[int, collections.deque], text: str) -> None:
    """The last lines each worker printed, by rank (its lines are ``[worker N] ...``)."""
    for line in text.splitlines():
        match = re.match(r"\[worker (\d+)\] (.*)", line)
        if match:
            printed.setdefault(int(match[1]), collections.deque(maxlen=LOG_TAIL)).append(
                match[2])


def _failure(error: BaseException,
             printed: dict[int, collections.deque] | None = None) -> BaseException:
    """A worker's failure as an error naming the worker, with its log's tail: from Ray's
    log of its process, or else what it printed to the notebook."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        return error
    lines = []
    for rank, failure in sorted(failures.items()):
        text = str(failure).strip()
        cause = _cause(text)
        if not cause.startswith(type(failure).__name__):
            cause = f"{type(failure).__name__}: {cause}"
        lines.append(f"worker {rank} failed: {cause}")
        tail = (_log_tail(text) or list((printed or {}).get(rank, ()))
                or text.splitlines()[-LOG_TAIL:])
        lines.append(f"--- the last lines of worker {rank}'s log ---")
        lines.extend(tail)
    return TrainingFailed("\n".join(lines))


def _cause(text: str) -> str:
    """The line of a worker's error that says what happened."""
    for line in reversed(text.splitlines()):
        if re.match(r"^\w+(Error|Exception|Interrupt)\b", line.strip()) or \
                "worker process has died" in line:
            return line.strip()[:500]
    return (text.splitlines() or [""])[0][:500]


def _log_tail(text: str) -> list[str]:
    """The end of the worker's own output (stdout, then stderr), from Ray's logs: the
    error names its process."""
    pid = re.search(r"\bpid[=:]\s*(\d+)", text)
    if not pid:
        return []
    node_ip = re.search(r"node_ip='([^']+)'", text) or re.search(r"\bip: (\S+)", text)
    try:
        from ray.util.state import get_log
    except ImportError:
        return []
    lines: list[str] = []
    for suffix in ("out", "err"):
        try:
            chunks = get_log(pid=int(pid[1]), node_ip=node_ip[1] if node_ip else None,
                             suffix=suffix, tail=LOG_TAIL, timeout=10)
            lines += "".join(chunks).splitlines()
        except Exception:  # noqa: BLE001 - the log is a help, the error stands alone
            continue
    return [x for x in lines if x.strip()][-LOG_TAIL:]

