"""The model registry with a large model: register and load through the hub against raw
writes and reads of the same bytes in the artifact store, in the same run.

    python bench/models.py [--mb 500] [--rounds 3]

A PyTorch module of ``--mb`` MB of parameters is

1. registered through the hub (``redspot.models.client.register``, what the widget
   calls: saved, uploaded through the hub's proxy to the registry, checked, versioned),
   against ``torch.save`` of the same module (what the PyTorch flavor writes) straight
   into the registry's artifact folder. Target: ratio <= 1.25.
2. loaded back (``redspot.models.client.load``, what the model browser calls:
   downloaded through the hub, unpickled), against ``torch.load`` of that raw file.
   Target: ratio <= 1.25.

The registry service's memory (all of its processes, sampled every 20 ms during each
transfer) must not grow with the artifact's size: its peak is shown against its resting
size, with a model of 1/10 of the size for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Hub, redspot, wait_for  # noqa: E402


class Peak:
    """The largest total RSS of a process tree while the block runs."""

    def __init__(self, root: psutil.Process):
        self.root = root

    def rss(self) -> int:
        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def __enter__(self):
        self.peak, self.done = self.rss(), threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def service_process(hub: Hub) -> psutil.Process:
    """The registry service: the hub's child running ``redspot.models.service``/mlflow."""
    for proc in psutil.Process(hub.proc.pid).children(recursive=True):
        try:
            if "mlflow" in " ".join(proc.cmdline()) and proc.parent().pid != proc.pid:
                parent = proc.parent()
                if "mlflow" not in " ".join(parent.cmdline()):
                    return proc
        except psutil.NoSuchProcess:
            continue
    raise RuntimeError("the registry service's process was not found")


def module(mb: int):
    import torch

    class Big(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(mb * (1 << 20) // 4))

        def forward(self, x):
            return x * self.weight[: x.shape[-1]]

    return Big()


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="redspot-bench-models-", dir="/tmp"))
    scratch.chmod(0o711)
    hub = Hub(data_dir=scratch / "hub", settings={"services": {"models": {"enabled": True}}})
    print("Starting a hub with the model registry...", file=sys.stderr)
    hub.write_config()
    redspot("users", "add", "bench", "--password-stdin", "--data-dir", str(hub.data_dir),
            stdin="bench-password-1\n")
    hub.start()
    try:
        token = hub.user_token("bench")
        os.environ["MLFLOW_TRACKING_URI"] = f"{hub.url}/services/models"
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
        from mlflow import MlflowClient

        wait_for(lambda: _answers(MlflowClient()), 180, "the model registry")
        service = Peak(service_process(hub))
        store = hub.data_dir / "models" / "artifacts"
        rows, memory = [], []
        for mb in (max(1, args.mb // 10), args.mb):
            registered, raw_write, loaded, raw_read, peaks = [], [], [], [], []
            resting = service.rss()
            big = module(mb)
            for i in range(args.rounds):
                print(f"{mb} MB, round {i + 1}/{args.rounds}...", file=sys.stderr)
                times = one_round(big, f"big-{mb}", store / "bench-raw" / f"{mb}-{i}.pth",
                                  service, peaks)
                for kept, seconds in zip((raw_write, registered, raw_read, loaded), times,
                                         strict=True):
                    kept.append(seconds)
            rows.append((f"register {mb} MB vs torch.save into the store",
                         statistics.median(registered), statistics.median(raw_write)))
            rows.append((f"load {mb} MB vs torch.load from the store",
                         statistics.median(loaded), statistics.median(raw_read)))
            memory.append((mb, resting, max(peaks)))
            del big

        print(f"\nModel registry through the hub, median of {args.rounds} "
              f"({os.cpu_count()} cores)\n")
        print("| metric | registry | raw | ratio | target |")
        print("| --- | --- | --- | --- | --- |")
        for what, ours, raw in rows:
            target = "<= 1.25" if f"{args.mb} MB" in what else "(for scale)"
            if target != "(for scale)":
                target += ": met" if ours / raw <= 1.25 else ": NOT met"
            print(f"| {what} | {ours:.2f} s | {raw:.2f} s | {ours / raw:.2f} | {target} |")
        print("\n| model | service at rest | service peak during transfers | growth |")
        print("| --- | --- | --- | --- |")
        for mb, resting, peak in memory:
            print(f"| {mb} MB | {resting / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | "
                  f"+{(peak - resting) / 2**20:.0f} MiB |")
        (small, small_rest, small_peak), (_, big_rest, big_peak) = memory
        growth = (big_peak - big_rest) - (small_peak - small_rest)
        print(f"\nGrowth with a {args.mb // small}x larger artifact: {growth / 2**20:+.0f} MiB "
              f"({'flat: met' if growth < 64 * 2**20 else 'grows: NOT met'}, "
              "target: within 64 MiB)")
    finally:
        hub.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def one_round(model, name: str, raw: Path, service: Peak, peaks: list) -> list[float]:
    """Seconds: raw write, register, raw read, load."""
    import torch

    from redspot.models import client as registry

    raw.parent.mkdir(parents=True, exist_ok=True)
    raw_write, _ = timed(lambda: torch.save(model, raw, pickle_module=_pickle()))
    with service as watch:
        registered, result = timed(lambda: registry.register(model, name, lineage={}))
    peaks.append(watch.peak)
    raw_read, _ = timed(lambda: torch.load(raw, weights_only=False))
    with service as watch:
        loaded, back = timed(lambda: registry.load(result.name, result.version))
    peaks.append(watch.peak)
    assert back.weight.shape == model.weight.shape
    raw.unlink()
    return [raw_write, registered, raw_read, loaded]


def _answers(client) -> bool:
    try:
        client.search_registered_models()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _pickle():
    import mlflow.pytorch.pickle_module

    return mlflow.pytorch.pickle_module


if __name__ == "__main__":
    main()
