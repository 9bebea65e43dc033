"""%%ray_remote against raw Ray, in the same run, on a token-protected local Ray head.

    python bench/ray_remote.py [--rounds 300] [--big-mb 100]

1. An empty cell (``pass``) through the magic in a real IPython shell, against a cell
   ``ray.get(f.remote())`` of an empty task on the same cluster, both run as notebook
   cells (``shell.run_cell``), rounds interleaved. Targets at the median: ratio <= 1.3
   and at most +1.5 ms. The same without IPython's cell machinery (the magic called
   directly against the bare call) is shown too.
2. Re-running a cell whose ``--big-mb`` MB numpy input did not change (``x = big[0]``),
   against the empty cell. Target: within 10 ms of the empty cell at the median.
   For scale, the first run of that cell (the input goes to the object store) is shown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import local_ray_head  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--big-mb", type=int, default=100)
    args = parser.parse_args(argv)

    with local_ray_head() as (_, info, _):
        import numpy as np
        import ray
        from IPython.core.interactiveshell import InteractiveShell

        shell = InteractiveShell.instance()
        shell.extension_manager.load_extension("redspot.magics")
        shell.run_line_magic("ray_connect", info.address)

        @ray.remote
        def empty():
            return None

        shell.user_ns.update(ray=ray, empty=empty)

        def raw():
            ray.get(empty.remote())

        def raw_cell():
            if not shell.run_cell("ray.get(empty.remote())", silent=True).success:
                raise RuntimeError("the benchmark's baseline cell failed")

        def magic_call():
            shell.run_cell_magic("ray_remote", "", "pass")

        def magic(cell):
            def go():
                if not shell.run_cell(f"%%ray_remote\n{cell}", silent=True).success:
                    raise RuntimeError(f"the benchmark's cell failed: {cell}")
            return go

        for _ in range(20):  # warm both paths: workers started, functions exported
            raw_cell()
            magic("pass")()
        raws, empties, bare, calls = [], [], [], []
        for _ in range(args.rounds):
            raws.append(timed(raw_cell))
            empties.append(timed(magic("pass")))
            bare.append(timed(raw))
            calls.append(timed(magic_call))

        shell.user_ns["big"] = np.random.default_rng(0).random(args.big_mb * 2**20 // 8)
        first = timed(magic("x = big[0]"))
        rounds = max(20, args.rounds // 5)
        reruns, empties2 = [], []
        for _ in range(rounds):
            reruns.append(timed(magic("x = big[0]")))
            empties2.append(timed(magic("pass")))

    raw_ms, empty_ms = statistics.median(raws), statistics.median(empties)
    rerun_ms, empty2_ms = statistics.median(reruns), statistics.median(empties2)
    ratio, extra = empty_ms / raw_ms, empty_ms - raw_ms
    bare_ms, call_ms = statistics.median(bare), statistics.median(calls)
    print(f"\n%%ray_remote on a local Ray head, medians of {args.rounds} rounds "
          f"({rounds} for the {args.big_mb} MB input)\n")
    print("| metric | %%ray_remote | baseline | ratio | difference | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    ok = "met" if ratio <= 1.3 and extra <= 1.5 else "MISSED"
    print(f"| empty cell vs a cell ray.get(f.remote()) | {empty_ms:.2f} ms | {raw_ms:.2f} ms | "
          f"{ratio:.2f} | {extra:+.2f} ms | <= 1.3x and <= +1.5 ms: {ok} |")
    print(f"| the magic alone vs the bare call (no cell machinery) | {call_ms:.2f} ms | "
          f"{bare_ms:.2f} ms | {call_ms / bare_ms:.2f} | {call_ms - bare_ms:+.2f} ms | - |")
    ok = "met" if rerun_ms - empty2_ms <= 10 else "MISSED"
    print(f"| rerun, unchanged {args.big_mb} MB input vs empty cell | {rerun_ms:.2f} ms | "
          f"{empty2_ms:.2f} ms | {rerun_ms / empty2_ms:.2f} | {rerun_ms - empty2_ms:+.2f} ms "
          f"| <= +10 ms: {ok} |")
    print(f"| first run, {args.big_mb} MB input sent (for scale) | {first:.2f} ms | - | - | - "
          "| - |")


if __name__ == "__main__":
    main()
