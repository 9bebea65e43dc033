"""Checkpoints of training runs: found, and consolidated into one state dict.

A DeepSpeed ZeRO checkpoint holds each rank's partition of the parameters and the
optimizer state; ``consolidate`` gathers them into a plain fp32 ``state_dict`` (with
DeepSpeed's own ``zero_to_fp32``), ready for ``model.load_state_dict`` and the model
registration widget. A plain-DDP checkpoint (``model.pt``) is read as it is.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import storage


def consolidate(url: str):
    """The checkpoint at ``url`` (``…/<run>/<tag>``) as one fp32 state dict."""
    import torch

    base, _, tag = url.rstrip("/").rpartition("/")
    with tempfile.TemporaryDirectory(prefix="redspot-ckpt-") as tmp:
        folder = storage.download(storage.join(base, tag), Path(tmp) / tag)
        plain = folder / "model.pt"
        if plain.exists():  # plain DDP
            return torch.load(plain, map_location="cpu", weights_only=False)["module"]
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(tmp, tag=tag)


def latest(run_url: str) -> str | None:
    """The newest checkpoint of a run (DeepSpeed's ``latest`` pointer), or None."""
    try:
        tag = storage.read_text(storage.join(run_url, "latest")).strip()
    except FileNotFoundError:
        return None
    return storage.join(run_url, tag) if tag else None
