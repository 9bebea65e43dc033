"""From a notebook in a real Redspot server to a registered model: %%ray_train on the
user's own Ray head, in an environment the environments service built, then the
registration widget with the run in the model's lineage (issue 7's done-when)."""

from __future__ import annotations

import json
import os
import pwd
import textwrap
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for
from tests.integration.test_training import DATA, LOOP

pytestmark = pytest.mark.integration
pytest.importorskip("deepspeed")

USERS = {"alice": "alice-password-1"}


@pytest.fixture(scope="module")
def train_hub(test_root, account_prefix):
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "train")
    try:
        hub = pool({"services": {"models": {"enabled": True}, "environments": {"enabled": True}}},
                   users=USERS)
        hub.tokens = {name: hub.user_token(name) for name in USERS}
        wait_for(lambda: service(hub, "environments/api/bases").status_code == 200, 60,
                 "the environments service")
        wait_for(lambda: service(hub, "models/api/2.0/mlflow/registered-models/search"
                                 ).status_code == 200, 180, "the model registry")
        yield hub
    finally:
        pool.close()


def service(hub, path, method="GET", **kwargs):
    return requests.request(method, f"{hub.url}/services/{path}", timeout=60,
                            headers={"Authorization": f"token {hub.tokens['alice']}"},
                            **kwargs)


# the loop of the CPU tests, in an environment: each worker says whose Python it runs
TRAIN = ("%%ray_train --workers 2 --zero 3 --env alice/train-extras --lr 0.01 --steps 4 -o run\n"
         "import os, sys\n"
         "import six  # only in the environment\n"
         "print('python', sys.executable, 'flag', os.environ.get('TRAIN_EXTRAS'))\n" + LOOP)

REGISTER = textwrap.dedent("""
    import json, torch
    from redspot.widgets import register_model
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    state = run.state_dict()
    net.load_state_dict(state)
    fit_loss = torch.nn.functional.mse_loss(net(X), Y).item()
    form = register_model(net, training_run_id=run.run_id)
    form.name.value = "trained-net"
    form.metric_variables.value = ("fit_loss",)
    form.register_button.click()
    print("RESULT " + json.dumps({
        "run": run.run_id, "checkpoint": run.checkpoint, "metrics": run.metrics,
        "losses": [h["loss"] for h in run.history], "keys": sorted(state),
        "fit_loss": fit_loss, "version": form.registered.version,
        "tags": form.registered.tags}))
""")


def test_a_notebook_trains_with_zero3_and_registers_the_checkpoint(train_hub, account_prefix):
    from tests.kernels import run_cell, start_kernel

    hub, token = train_hub, train_hub.tokens["alice"]
    r = service(hub, "environments/api/environments", "POST", json={
        "name": "train-extras", "python": ["six==1.16.0"], "env": {"TRAIN_EXTRAS": "on"}})
    assert r.status_code == 202, r.text

    def built():
        model = service(hub, "environments/api/environments/alice/train-extras").json()
        return model if model["status"] in ("ready", "failed") else None

    environment = wait_for(built, 600, "the environment to build", interval=2)
    assert environment["status"] == "ready", service(
        hub, "environments/api/environments/alice/train-extras/log").text

    assert hub.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    try:
        hub.wait_ready("alice")
        kernel = start_kernel(hub.url, "alice", token)

        def cell(code, timeout=120, messages=None):
            return run_cell(hub.url, "alice", token, code, kernel=kernel, timeout=timeout,
                            messages=messages)

        out = cell("%ray_connect", timeout=180)
        assert "Connected to your Ray cluster" in out, out
        cell(DATA)

        messages: list = []
        out = cell(TRAIN, timeout=600, messages=messages)
        assert "Error" not in out, out
        assert "Reporting training result" not in out, out  # Ray Train's own log lines
        # every worker ran in the environment's Python, with its variables
        for rank in (0, 1):
            assert (f"[worker {rank}] python {environment['location']} flag on"
                    in out), out
        # the progress bar and the metrics moved while it ran, step by step
        updates = [m["content"]["data"]["state"] for m in messages
                   if m["msg_type"] == "comm_msg"
                   and m["content"]["data"].get("method") == "update"]
        labels = [u["value"] for u in updates if str(u.get("value", "")).startswith("step ")]
        assert [label.split(":")[0] for label in labels[:4]] == [
            "step 1/4", "step 2/4", "step 3/4", "step 4/4"], labels
        assert any(u.get("bar_style") == "success" for u in updates), updates
        # before the first step, it said what it was doing, and for how long
        waiting = [u["value"] for u in updates if "…" in str(u.get("value", ""))]
        assert any("setting up DeepSpeed ZeRO-3" in w for w in waiting), waiting
        assert any("starting 2 workers" in w or "running your cell" in w
                   for w in waiting), waiting
        # CPU workers are told they are: no DeepSpeed guess, no warning per worker
        assert "Setting accelerator to CPU" not in out, out
        # it says what it cost: each worker's share of the server's machine, priced
        cost = cell("print(run.cost)")
        assert cost.startswith("Cost: about $"), cost
        assert "of 2 workers, each 25% of the machine on m5.xlarge at $0.192 an hour" \
            in cost, cost

        out = cell(REGISTER, timeout=300)
        assert "RESULT " in out, out
        got = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    finally:
        hub.stop_server("alice")

    # ZeRO-3: each of the 2 ranks held about half the parameters; the loss fell
    full, local = got["metrics"]["full"], got["metrics"]["local"]
    assert full == 32 * 64 + 64 + 64 + 1 and abs(local - full / 2) <= full * 0.02, got
    assert got["losses"][-1] < got["losses"][0] / 5, got["losses"]
    # the checkpoint is on alice's storage (her home), hers, and it loaded into the
    # notebook's model as one plain state dict
    home = hub.data_dir / "home" / "alice"
    checkpoint = Path(got["checkpoint"])
    assert checkpoint.is_relative_to(home / "checkpoints" / got["run"]), got["checkpoint"]
    assert checkpoint.name == "step-4" and any(checkpoint.rglob("*model_states.pt"))
    if os.geteuid() == 0:
        assert checkpoint.stat().st_uid == pwd.getpwnam(f"{account_prefix}alice").pw_uid
    assert got["keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]
    # (a loss reported is the sum of an epoch's 32 batch means on rank 0)
    assert got["fit_loss"] < got["losses"][0] / 5 / 32, got

    # registered, with the training run in its lineage
    assert got["version"] == "1"
    version = service(hub, "models/api/2.0/mlflow/model-versions/get",
                      params={"name": "trained-net", "version": "1"}).json()["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["redspot.training_run_id"] == got["run"], tags
    assert tags["redspot.user"] == "alice" and tags["redspot.flavor"] == "pytorch"
