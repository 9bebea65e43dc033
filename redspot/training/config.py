"""A training run's settings, checked, and the DeepSpeed config made from them (pure).

``TrainSpec`` holds what ``redspot.train.fit`` and ``%%ray_train`` take as options;
``check`` refuses a combination that cannot run, with the reason and what is allowed,
before anything starts; ``deepspeed_config`` makes DeepSpeed's JSON config from the
options, with a user's own config merged over it and checked the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

PRECISIONS = ("fp32", "bf16", "fp16")
OFFLOADS = (None, "cpu")
STAGES = (0, 1, 2, 3)


class InvalidTraining(ValueError):
    """A training run that cannot run as asked; the message says why."""


@dataclass(frozen=True)
class TrainSpec:
    workers: int = 2
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    zero: int = 0
    offload: str | None = None
    precision: str = "fp32"
    micro_batch_size: int = 8
    gradient_accumulation: int = 1
    learning_rate: float = 1e-3
    gradient_clipping: float | None = 1.0
    deepspeed_config: dict | None = None
    config: dict = field(default_factory=dict)

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def world_size(self) -> int:
        return self.workers


@dataclass(frozen=True)
class Cluster:
    """What the Ray cluster has (``ray.cluster_resources()``), for the checks."""

    cpus: float = 0
    gpus: float = 0
    autoscaling: bool = False  # KubeRay: nodes come when asked for


def check(spec: TrainSpec, cluster: Cluster | None = None) -> None:
    """Raise ``InvalidTraining`` for the first thing that cannot run."""
    for name, value, least in (("workers", spec.workers, 1),
                               ("cpus_per_worker", spec.cpus_per_worker, 1),
                               ("gpus_per_worker", spec.gpus_per_worker, 0),
                               ("micro_batch_size", spec.micro_batch_size, 1),
                               ("gradient_accumulation", spec.gradient_accumulation, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InvalidTraining(f"{name} must be a whole number >= {least}, got {value!r}")
    if spec.zero not in (*STAGES, None):
        raise InvalidTraining(f"zero must be one of 0, 1, 2, 3 (ZeRO stages) or None "
                              f"(plain DDP), got {spec.zero!r}")
    if spec.offload not in OFFLOADS:
        raise InvalidTraining(f"offload must be None or 'cpu', got {spec.offload!r}")
    if spec.offload and not spec.zero:
        raise InvalidTraining("offload needs ZeRO: offloading moves ZeRO's partitioned "
                              "optimizer state (stage 1-3) and parameters (stage 3) to "
                              "the CPU; use zero=1, 2 or 3")
    if spec.precision not in PRECISIONS:
        raise InvalidTraining(f"precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{spec.precision!r}")
    if spec.precision != "fp32" and not spec.on_gpu:
        raise InvalidTraining(f"{spec.precision} needs GPUs (gpus_per_worker >= 1): on CPU "
                              "the workers train in fp32")
    if not (isinstance(spec.learning_rate, int | float) and spec.learning_rate > 0):
        raise InvalidTraining(f"learning_rate must be a positive number, got "
                              f"{spec.learning_rate!r}")
    if cluster is not None and not cluster.autoscaling:
        gpus = spec.workers * spec.gpus_per_worker
        if gpus > cluster.gpus:
            raise InvalidTraining(
                f"{spec.workers} workers × {spec.gpus_per_worker} GPU need {gpus} GPUs; the "
                f"cluster has {cluster.gpus:g}")
        cpus = spec.workers * spec.cpus_per_worker
        if cpus > cluster.cpus:
            raise InvalidTraining(
                f"{spec.workers} workers × {spec.cpus_per_worker} CPU need {cpus} CPUs; the "
                f"cluster has {cluster.cpus:g}")


def generated(spec: TrainSpec) -> dict:
    """DeepSpeed's config for ``spec``, from its options alone."""
    config: dict = {
        "train_micro_batch_size_per_gpu": spec.micro_batch_size,
        "gradient_accumulation_steps": spec.gradient_accumulation,
        "train_batch_size": spec.micro_batch_size * spec.gradient_accumulation
        * spec.world_size,
        "optimizer": {"type": "AdamW", "params": {"lr": spec.learning_rate}},
        "zero_optimization": {"stage": spec.zero},
        "steps_per_print": 10 ** 9,  # progress is reported by Redspot, not printed
        "wall_clock_breakdown": False,
    }
    if spec.gradient_clipping is not None:
        config["gradient_clipping"] = spec.gradient_clipping
    if not spec.on_gpu:
        # torch's Adam instead of DeepSpeed's fused CPU Adam: nothing to compile
        config["optimizer"]["params"]["torch_adam"] = True
    if spec.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif spec.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if spec.zero == 3:
        config["zero_optimization"].update({
            "overlap_comm": spec.on_gpu,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": spec.precision != "fp32",
        })
    if spec.offload == "cpu":
        offload = {"device": "cpu", "pin_memory": spec.on_gpu}
        config["zero_optimization"]["offload_optimizer"] = dict(offload)
        if spec.zero == 3:
            config["zero_optimization"]["offload_param"] = dict(offload)
    return config


def merged(base: dict, override: dict) -> dict:
    """``override`` deep-merged over ``base`` (new dicts; lists and values replaced)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def deepspeed_config(spec: TrainSpec, cluster: Cluster | None = None) -> dict:
    """The checked DeepSpeed config: generated from ``spec``, the user's config over it."""
    check(spec, cluster)
    user = spec.deepspeed_config or {}
    if not isinstance(user, dict):
        raise InvalidTraining("deepspeed_config must be a dict (DeepSpeed's JSON config)")
    config = merged(generated(spec), user)
    check_config(config, spec)
    return config


def check_config(config: dict, spec: TrainSpec) -> None:
    """A merged config must still agree with the run: the same checks as the options."""
    zero = config.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    if stage not in STAGES:
        raise InvalidTraining(f"zero_optimization.stage must be 0-3, got {stage!r}")
    offloaded = [k for k in ("offload_optimizer", "offload_param")
                 if (zero.get(k) or {}).get("device", "none") not in ("none", None)]
    if offloaded and stage == 0:
        verb = "need" if len(offloaded) > 1 else "needs"
        raise InvalidTraining(f"{' and '.join(offloaded)} {verb} ZeRO (zero_optimization."
                              "stage 1-3); the config has stage 0")
    if "offload_param" in offloaded and stage != 3:
        raise InvalidTraining(f"offload_param needs ZeRO stage 3; the config has {stage}")
    for half in ("fp16", "bf16"):
        if (config.get(half) or {}).get("enabled") and not spec.on_gpu:
            raise InvalidTraining(f"the config enables {half}, which needs GPUs "
                                  "(gpus_per_worker >= 1)")
    if (config.get("fp16") or {}).get("enabled") and (config.get("bf16") or {}).get("enabled"):
        raise InvalidTraining("the config enables both fp16 and bf16: choose one")
    micro = config.get("train_micro_batch_size_per_gpu")
    accumulation = config.get("gradient_accumulation_steps", 1)
    total = config.get("train_batch_size")
    if None not in (micro, total) and micro * accumulation * spec.world_size != total:
        raise InvalidTraining(
            f"train_batch_size {total} must be train_micro_batch_size_per_gpu {micro} × "
            f"gradient_accumulation_steps {accumulation} × {spec.world_size} workers "
            f"= {micro * accumulation * spec.world_size}")
