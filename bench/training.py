"""%%ray_train against a direct Ray Train ``TorchTrainer`` run, in the same process.

    python bench/training.py [--rounds 3] [--epochs 6] [--zero 3]

The same DeepSpeed ZeRO training loop (an MLP on 2 CPU workers, gloo) through the
``%%ray_train`` magic in a real IPython shell, and as a ``TorchTrainer`` whose loop calls
``deepspeed.initialize`` and ``ray.train.report`` itself, on the same token-protected
local Ray head, rounds interleaved. Wall time from the cell (or ``fit()``) to its
result. Target: ratio <= 1.05 at the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import local_ray_head  # noqa: E402
from redspot.training.config import TrainSpec, deepspeed_config  # noqa: E402

LOOP = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                            torch.nn.Linear(512, 512), torch.nn.ReLU(),
                            torch.nn.Linear(512, 1))
engine = ctx.engine(model)
for epoch in range(EPOCHS):
    for xb, yb in loader((X, Y)):
        loss = torch.nn.functional.mse_loss(engine(xb), yb)
        engine.backward(loss)
        engine.step()
    report({"loss": loss.item()})
"""


def direct_loop(config):
    """The same loop, written against Ray Train and DeepSpeed directly."""
    import deepspeed
    import ray.train
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    context = ray.train.get_context()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 1))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=config["ds"])
    data = TensorDataset(config["X"], config["Y"])
    sampler = DistributedSampler(data, num_replicas=context.get_world_size(),
                                 rank=context.get_world_rank())
    for _ in range(config["epochs"]):
        for xb, yb in DataLoader(data, batch_size=config["ds"]
                                 ["train_micro_batch_size_per_gpu"], sampler=sampler):
            loss = torch.nn.functional.mse_loss(engine(xb), yb)
            engine.backward(loss)
            engine.step()
        ray.train.report({"loss": loss.item()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--zero", type=int, default=3)
    args = parser.parse_args(argv)

    with local_ray_head() as (_, info, scratch):
        os.environ["REDSPOT_CHECKPOINT_DIR"] = str(scratch / "checkpoints")
        import torch
        from IPython.core.interactiveshell import InteractiveShell
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        shell = InteractiveShell.instance()
        shell.extension_manager.load_extension("redspot.magics")
        shell.run_line_magic("ray_connect", info.address)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(4096, 256, generator=g)
        Y = X[:, :1] * 2 - X[:, 1:2]
        shell.user_ns.update(X=X, Y=Y, EPOCHS=args.epochs)
        ds = deepspeed_config(TrainSpec(workers=2, zero=args.zero, micro_batch_size=64))
        cell = f"%%ray_train --workers 2 --zero {args.zero} --micro-batch 64\n{LOOP}"

        def magic():
            result = shell.run_cell(cell, silent=True)
            result.raise_error()

        def direct():
            TorchTrainer(direct_loop,
                         train_loop_config={"ds": ds, "X": X, "Y": Y, "epochs": args.epochs},
                         scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
                         run_config=RunConfig(storage_path=str(scratch / "direct"))).fit()

        print("Warming up (DeepSpeed's op build, Ray Train's first start)...",
              file=sys.stderr)
        magic()
        ours, theirs = [], []
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}...", file=sys.stderr)
            for fn, kept in ((direct, theirs), (magic, ours)):
                start = time.perf_counter()
                fn()
                kept.append(time.perf_counter() - start)
        shell.run_line_magic("ray_disconnect", "")
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f"\nTraining, ZeRO-{args.zero}, 2 CPU workers, {args.epochs} epochs, median of "
              f"{args.rounds} ({os.cpu_count()} cores)\n")
        print("| metric | %%ray_train | TorchTrainer | ratio | target |")
        print("| --- | --- | --- | --- | --- |")
        print(f"| wall time, cell to result | {a:.1f} s | {b:.1f} s | {a / b:.3f} | "
              f"<= 1.05: {'met' if a / b <= 1.05 else 'NOT met'} |")
        print(f"\nrounds: %%ray_train {[round(x, 1) for x in ours]}, "
              f"TorchTrainer {[round(x, 1) for x in theirs]}")


if __name__ == "__main__":
    main()
