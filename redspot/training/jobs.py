"""Training runs that outlive the kernel: submitted as Ray Jobs, followed again later.

``submit`` packs the loop and its options (cloudpickle) into a folder that Ray's Jobs
API uploads with the job (``working_dir``); the job's entrypoint is this module, which
runs ``fit`` on the cluster and writes the result next to the run's checkpoints
(``<checkpoint dir>/<run id>/result.json``). ``follow`` streams a job's log into the
notebook until it ends (``%ray_train --attach RUN``) and reads that result back.

    python -m redspot.training.jobs run.pkl      (the job's entrypoint)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cloudpickle

from . import storage

PAYLOAD = "run.pkl"
RESULT = "result.json"


def jobs_client(dashboard: str | None):
    """Ray's Jobs API on the connected cluster's dashboard, with the user's Ray token."""
    from ..compute.transport import Jobs

    if not dashboard:
        raise RuntimeError("the connected cluster has no dashboard: Ray Jobs need one")
    token_path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    token = Path(token_path).read_text().strip() if token_path else \
        os.environ.get("RAY_AUTH_TOKEN", "")
    url = dashboard if dashboard.startswith("http") else f"http://{dashboard}"
    return Jobs(url, token)


def submit(jobs, loop, options: dict, run_id: str, env_vars: dict[str, str]) -> str:
    """Submit the run as a Ray job named ``run_id``; its id."""
    # on the user's own head (this machine) the job runs with the kernel's Python; a
    # cluster's head runs the image's
    local = jobs.client.get_address().split("//")[-1].startswith(("127.", "localhost"))
    python = sys.executable if local else "python"
    folder = Path(tempfile.mkdtemp(prefix="redspot-job-"))
    try:
        (folder / PAYLOAD).write_bytes(cloudpickle.dumps(
            {"loop": loop, "options": options, "run_id": run_id}))
        # the folder is uploaded to the cluster when the job is submitted
        return jobs.submit(f"{python} -m redspot.training.jobs {PAYLOAD}",
                           submission_id=run_id,
                           runtime_env={"working_dir": str(folder), "env_vars": env_vars},
                           metadata={"redspot": "ray_train"})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def follow(jobs, run_id: str, write=print) -> str:
    """Stream the job's log to ``write`` until it ends; its final status."""
    async def tail():
        async for lines in jobs.follow(run_id):
            write(lines.rstrip("\n"))

    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if running:  # inside a kernel's event loop: tail from a thread of our own
        import threading

        thread = threading.Thread(target=lambda: asyncio.run(tail()), daemon=True)
        thread.start()
        thread.join()
    else:
        asyncio.run(tail())
    return jobs.status(run_id)


def read_result(checkpoint_dir: str, run_id: str) -> dict | None:
    try:
        return json.loads(storage.read_text(storage.join(checkpoint_dir, run_id, RESULT)))
    except (FileNotFoundError, ValueError):
        return None


def main(argv=None):
    """The job's entrypoint: run the packed training and record its result."""
    import ray

    from .fit import fit

    argv = sys.argv[1:] if argv is None else argv
    payload = cloudpickle.loads(Path(argv[0]).read_bytes())
    ray.init()
    result = fit(payload["loop"], run_id=payload["run_id"], **payload["options"])
    fs, base = storage.filesystem(storage.join(result.checkpoint_dir, result.run_id))
    fs.makedirs(base, exist_ok=True)
    with fs.open(storage.join(base, RESULT), "w") as f:
        json.dump({"run_id": result.run_id, "metrics": result.metrics,
                   "history": result.history, "checkpoint": result.checkpoint,
                   "checkpoint_dir": result.checkpoint_dir, "seconds": result.seconds}, f)
    print(f"Training run {result.run_id} finished: {result.metrics}")


if __name__ == "__main__":
    main()
