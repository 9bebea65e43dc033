"""Tokens/s and model FLOPs utilisation of a ~1B-parameter decoder on one GPU: DeepSpeed
ZeRO-3 with the config Redspot generates, against plain PyTorch.

    python bench/gpu_decoder.py [--steps 30] [--warmup 5] [--micro-batch 8] [--seq 2048]
                                [--deepspeed-config JSON] [--out bench/results]
    python bench/gpu_decoder.py --tiny      # the same code on CPU, a toy model (a check)

A GPT-style decoder (d_model 2048, 18 layers, 16 heads, vocabulary 32,000, learned
positions; about 1.04 B parameters) trained on random tokens, the same steps twice:

- plain PyTorch: fp32 weights, ``torch.autocast`` to bf16, fused ``AdamW``, gradient
  clipping at 1.0: the usual mixed-precision loop;
- DeepSpeed ZeRO-3: ``deepspeed.initialize`` with the config ``%%ray_train --gpus 1
  --zero 3 --precision bf16`` makes for a worker (``redspot.training.config``), a user's
  ``--deepspeed-config`` merged over it as ``fit()`` does, one rank.

The loop is what a Ray Train worker runs; Ray itself is not in the measurement (its
overhead per run is ``bench/training.py``'s figure). Model FLOPs per token are
6 N + 12 L d T (PaLM, appendix B: N the parameters that take part in matrix products,
i.e. all but the token and position embeddings); MFU is achieved FLOP/s over the
GPU's dense bf16 peak from its data sheet. Target: >= 40 % MFU under ZeRO-3. The
figures, with the machine they came from, are written to ``--out`` as Markdown and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redspot.training.config import TrainSpec, deepspeed_config  # noqa: E402
from redspot.training.worker import readable_arch_list  # noqa: E402

# dense bf16 tensor-core peaks, from the vendors' data sheets (FLOP/s)
PEAKS = {"H200": 989.4e12, "H100 PCIe": 756.5e12, "H100": 989.4e12, "A100": 312e12,
         "L40S": 362e12, "A10G": 70e12}

SIZES = {
    "1b": dict(d_model=2048, layers=18, heads=16, vocab=32000, seq=2048),
    "tiny": dict(d_model=64, layers=2, heads=4, vocab=256, seq=64),
}


def make_model(d_model, layers, heads, vocab, seq):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d_model)
            self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
            self.proj = nn.Linear(d_model, d_model, bias=False)
            self.ln2 = nn.LayerNorm(d_model)
            self.up = nn.Linear(d_model, 4 * d_model, bias=False)
            self.down = nn.Linear(4 * d_model, d_model, bias=False)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = (self.qkv(self.ln1(x)).view(b, t, 3, heads, d // heads)
                       .permute(2, 0, 3, 1, 4))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.position = nn.Embedding(seq, d_model)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab, bias=False)
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.normal_(p, std=0.02)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            x = self.embed(tokens) + self.position(positions)
            for block in self.blocks:
                x = block(x)
            return self.head(self.ln(x))

    return Decoder()


def loss_of(model, tokens):
    from torch.nn import functional as F

    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           tokens[:, 1:].reshape(-1))


def flops_per_token(model, size) -> tuple[int, int]:
    """(all parameters, model FLOPs per trained token)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.embed.weight.numel() + model.position.weight.numel()
    matmul = total - embeddings
    return total, 6 * matmul + 12 * size["layers"] * size["d_model"] * size["seq"]


def batches(n, micro, size, device):
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    # seq + 1 tokens: the model sees seq, the targets are shifted by one
    return [torch.randint(0, size["vocab"], (micro, size["seq"] + 1), generator=g).to(device)
            for _ in range(n)]


def timed(step, data, warmup):
    import torch

    for tokens in data[:warmup]:
        step(tokens)
    sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    losses = []
    start = time.perf_counter()
    for tokens in data[warmup:]:
        losses.append(step(tokens))
    sync()
    elapsed = time.perf_counter() - start
    return elapsed, [float(x) for x in losses]


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_plain(size, data, warmup, device, on_gpu):
    import torch

    torch.manual_seed(0)
    model = make_model(**size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=on_gpu)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu
                else contextlib.nullcontext())

    def step(tokens):
        with autocast:
            loss = loss_of(model, tokens)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    elapsed, losses = timed(step, data, warmup)
    params, fpt = flops_per_token(model, size)
    return elapsed, losses, params, fpt


def run_zero3(size, data, warmup, device, on_gpu, micro, override):
    import deepspeed
    import torch

    spec = TrainSpec(workers=1, gpus_per_worker=1 if on_gpu else 0, zero=3,
                     precision="bf16" if on_gpu else "fp32", micro_batch_size=micro,
                     learning_rate=1e-4, deepspeed_config=override)
    config = deepspeed_config(spec)
    torch.manual_seed(0)
    model = make_model(**size).to(device)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=config)

    def step(tokens):
        loss = loss_of(engine, tokens)
        engine.backward(loss)
        engine.step()
        return loss.detach()

    elapsed, losses = timed(step, data, warmup)
    # the partitioned parameters this rank holds: with one rank, all of them
    held = sum(p.ds_tensor.numel() for p in engine.module.parameters())
    engine.destroy()
    return elapsed, losses, config, held


def machine() -> dict:
    import torch

    info = {"host_cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}
    with contextlib.suppress(Exception):
        import deepspeed
        info["deepspeed"] = deepspeed.__version__
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda)
        with contextlib.suppress(Exception):
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=30).stdout.strip()
    return info


def peak_flops(name: str | None, given: float | None) -> float | None:
    if given:
        return given * 1e12
    for key, value in PEAKS.items():  # longest names first where they overlap
        if name and key in name:
            return value
    return None


def measured_matmul_flops() -> float:
    """bf16 8192³ matrix products, the mean of ten after three warm-ups (FLOP/s)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 10 * 2 * 8192 ** 3 / (time.perf_counter() - start)


def single_rank_env():
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29517"),
                       ("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=None, help="tokens per sequence")
    parser.add_argument("--deepspeed-config", default=None,
                        help="JSON merged over the generated config, as fit() does")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak, where its name is not known here")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--tiny", action="store_true",
                        help="a toy model on CPU: checks the code, measures nothing")
    args = parser.parse_args(argv)

    import torch

    on_gpu = torch.cuda.is_available() and not args.tiny
    if not on_gpu and not args.tiny:
        print("No CUDA GPU here: this benchmark needs one (--tiny runs its code on CPU).",
              file=sys.stderr)
        return 0
    size = dict(SIZES["tiny" if args.tiny else "1b"])
    if args.seq:
        size["seq"] = args.seq
    override = json.loads(args.deepspeed_config) if args.deepspeed_config else None
    device = "cuda" if on_gpu else "cpu"
    single_rank_env()
    readable_arch_list()  # as a training worker does
    os.environ.setdefault("TORCH_EXTENSIONS_DIR",
                          str(Path.home() / ".cache" / "redspot" / "torch_extensions"))
    info = machine()
    peak = peak_flops(info.get("gpu"), args.peak_tflops)
    n = args.warmup + args.steps
    data = batches(n, args.micro_batch, size, device)
    tokens = args.steps * args.micro_batch * size["seq"]

    rows = []
    print(f"plain PyTorch: {n} steps...", file=sys.stderr, flush=True)
    elapsed, losses, params, fpt = run_plain(size, data, args.warmup, device, on_gpu)
    memory = torch.cuda.max_memory_allocated() / 2 ** 30 if on_gpu else None
    rows.append(("plain PyTorch (autocast bf16, fused AdamW)" if on_gpu
                 else "plain PyTorch (fp32)", elapsed, losses, memory))
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    print(f"DeepSpeed ZeRO-3: {n} steps (the first run builds DeepSpeed's fused Adam)...",
          file=sys.stderr, flush=True)
    elapsed, losses, config, held = run_zero3(size, data, args.warmup, device, on_gpu,
                                              args.micro_batch, override)
    memory = torch.cuda.max_memory_allocated() / 2 ** 30 if on_gpu else None
    rows.append(("DeepSpeed ZeRO-3 (Redspot's config, bf16)" if on_gpu
                 else "DeepSpeed ZeRO-3 (fp32)", elapsed, losses, memory))
    matmul = measured_matmul_flops() if on_gpu else None

    results = []
    for name, seconds, run_losses, mem in rows:
        rate = tokens / seconds
        achieved = rate * fpt
        results.append({"run": name, "seconds": round(seconds, 3),
                        "tokens_per_s": round(rate, 1),
                        "tflops": round(achieved / 1e12, 1),
                        "mfu": round(achieved / peak, 4) if peak else None,
                        "peak_memory_gib": round(mem, 1) if mem is not None else None,
                        "first_loss": round(run_losses[0], 4),
                        "last_loss": round(run_losses[-1], 4)})
    plain, zero3 = results
    ratio = zero3["tokens_per_s"] / plain["tokens_per_s"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# ~1B decoder, one GPU: DeepSpeed ZeRO-3 against plain PyTorch ({when})",
        "",
        f"Machine: {info.get('gpu', 'CPU')}"
        + (f" ({info['gpu_memory_gib']} GiB, {info['multiprocessors']} SMs, driver "
           f"{info.get('driver', '?')}, CUDA {info['cuda']})" if on_gpu else "")
        + f", {info['host_cpus']} CPU cores; Python {info['python']}, torch {info['torch']}, "
        f"DeepSpeed {info.get('deepspeed', '?')}.",
        f"Model: {params / 1e9:.2f} B parameters (d_model {size['d_model']}, "
        f"{size['layers']} layers, {size['heads']} heads, vocabulary {size['vocab']}), "
        f"sequences of {size['seq']} tokens, micro-batch {args.micro_batch}; "
        f"{args.steps} timed steps after {args.warmup}; {fpt / 1e9:.2f} GFLOP per token.",
        "MFU against the data sheet's dense bf16 peak, "
        + (f"{peak / 1e12:.1f} TFLOP/s" if peak else "unknown here")
        + (f"; an 8192³ bf16 matrix product ran at {matmul / 1e12:.0f} TFLOP/s on this GPU"
           if matmul else "") + ".",
        "",
        "| run | tokens/s | TFLOP/s | MFU | peak memory | loss first → last |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        mfu = f"{r['mfu'] * 100:.1f} %" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_memory_gib']} GiB" if r["peak_memory_gib"] is not None else "n/a"
        lines.append(f"| {r['run']} | {r['tokens_per_s']:,.0f} | {r['tflops']} | {mfu} | "
                     f"{mem} | {r['first_loss']} → {r['last_loss']} |")
    target = ("n/a (no GPU)" if zero3["mfu"] is None else
              f"{'met' if zero3['mfu'] >= 0.40 else 'NOT met'}")
    lines += ["", f"ZeRO-3 against plain PyTorch, tokens/s: **{ratio:.3f}**. "
              f"Target >= 40 % MFU under ZeRO-3: **{target}**.",
              f"ZeRO-3 partitions held by the one rank: {held:,} of {params:,} parameters.",
              "", "DeepSpeed config used:", "", "```json", json.dumps(config, indent=1),
              "```"]
    report = "\n".join(lines)
    print(report)
    if on_gpu:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
        (out / f"gpu-decoder-{slug}.md").write_text(report + "\n")
        (out / f"gpu-decoder-{slug}.json").write_text(json.dumps(
            {"when": when, "machine": info, "size": size, "micro_batch": args.micro_batch,
             "steps": args.steps, "warmup": args.warmup, "flops_per_token": fpt,
             "parameters": params, "peak_flops": peak, "matmul_flops": matmul,
             "results": results, "zero3_over_plain": round(ratio, 3),
             "deepspeed_config": config}, indent=1) + "\n")
        print(f"\nwritten to {out}/gpu-decoder-{slug}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
