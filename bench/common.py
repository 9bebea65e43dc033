"""What the benchmarks share: a token-protected local Ray head for one run."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redspot.compute.local import LocalRayHead, auth_env  # noqa: E402


@contextlib.contextmanager
def local_ray_head(cpus: int = 2):
    """A Ray head with token auth on, this process told how to join it; yields
    ``(head, info, scratch folder)`` and stops the head (and Ray here) afterwards."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    scratch = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
    head = LocalRayHead(state_dir=scratch / "state", private_dir=scratch / "ray")
    print("Starting a Ray head (token auth on)...", file=sys.stderr)
    info = head.start(cpus=cpus)
    os.environ.update(auth_env(head.token_path))
    try:
        yield head, info, scratch
    finally:
        ray = sys.modules.get("ray")
        if ray is not None:
            with contextlib.suppress(Exception):
                ray.shutdown()
        head.stop(timeout=5)
        shutil.rmtree(scratch, ignore_errors=True)
