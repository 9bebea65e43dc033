"""Fixtures for Redspot's tests.

- ``test_root`` (session): a temp folder other accounts may pass through (mode 0711),
  for data folders whose homes belong to per-user system accounts; removed in the
  background after the run.
- ``account_prefix`` (session): a prefix for the system accounts this run creates
  (``rt<pid>-``); every account and group with it is deleted at the end.
- ``hub_factory``: starts real hubs with ``redspot up`` (``tests.helpers.Hub``) in fresh
  data folders, and stops them (and every server they started) afterwards.
- ``team_hub`` (module): one running hub shared by a module's tests, with users
  ``alice`` and ``carol`` (group ``gpu-team``) and ``bob``, passwords in ``PASSWORDS``.
- ``offline_kubeconfig``: ``KUBECONFIG`` pointing at a cluster that is not there, which
  is all KubeSpawner needs to build manifests.
- ``ray_head``: a real token-protected local Ray head with 2 CPUs, as
  ``(LocalRayHead, HeadInfo)``, shared by the modules a test process runs one after
  the other; stopped after the last test that uses it before a module that does not.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import FAKE_KUBECONFIG, Hub, processes_of, redspot, stop_pids

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22",
             "carol": "carol-password-3"}

TEAM_SETTINGS = {
    "profiles": {"default": "m5.xlarge", "everyone": ["m5.xlarge"]},
    "groups": {
        "gpu-team": {"users": ["alice", "carol"], "profiles": ["g5.xlarge", "p3.2xlarge"],
                     "caps": {"servers": {"p3.2xlarge": 1}}},
    },
}

# Seconds each slow module took in CI (2 cores; junit times of a whole run, the attack
# suite's package on one worker): `make test` hands modules to its workers longest
# first, so that no long module starts last and keeps one worker busy while the other
# waits (pytest-xdist's own order is by number of tests, which put the browser modules
# last). Unlisted modules take a few seconds.
MODULE_SECONDS = {
    "integration/test_hub.py": 760, "integration/test_training.py": 590,
    "browser/test_first_hour.py": 382, "integration/test_notebook_training.py": 336,
    "browser/test_labextension.py": 308, "integration/test_environments.py": 281,
    "browser/test_culling.py": 236, "integration/test_warehouse.py": 216,
    "integration/test_ray_head.py": 200, "integration/test_models.py": 198,
    "security/test_routes.py": 160, "browser/test_collaboration.py": 115,
    "browser/test_subdomains.py": 68, "integration/test_sharing.py": 62,
    "browser/test_model_registry_ui.py": 59, "security/test_fuzz.py": 58,
    "integration/test_models_stores.py": 53, "security/test_metrics.py": 51,
    "integration/test_operations.py": 44, "integration/test_ray_remote.py": 42,
    "browser/test_login_to_lab.py": 39, "security/test_lifecycle.py": 31,
    "unit/test_chart.py": 30, "unit/test_images.py": 19,
}


#: Folders whose modules share a package-scoped fixture (the attack suite's one
#: ``redspot up`` with every service, and alice's environment): one worker runs them all,
#: so that it starts once, not once per worker that gets one of its modules.
SHARED_PACKAGES = ("tests/security/",)


def work_unit(nodeid: str) -> str:
    """What one worker runs together: a module, or a package of ``SHARED_PACKAGES``."""
    path = nodeid.split("::", 1)[0]
    return next((p for p in SHARED_PACKAGES if path.startswith(p)), path)


def _seconds(unit: str) -> int:
    return sum(s for module, s in MODULE_SECONDS.items()
               if work_unit(f"tests/{module}") == unit)


def _module(item) -> str:
    return item.nodeid.split("::", 1)[0]


#: The last test of each module that uses ``ray_head``.
_LAST_RAY_HEAD_USER: dict[str, str] = {}


def pytest_collection_modifyitems(config, items):
    """Longest work units first (a stable sort: tests keep their order in a unit)."""
    items.sort(key=lambda item: (-_seconds(work_unit(item.nodeid)), work_unit(item.nodeid)))
    for item in items:
        if "ray_head" in getattr(item, "fixturenames", ()):
            _LAST_RAY_HEAD_USER[_module(item)] = item.nodeid


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (make test), with the packages of ``SHARED_PACKAGES`` each
    handed out whole."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return work_unit(nodeid)

    return Units(config, log)


IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: creates system accounts")


@pytest.fixture
def offline_kubeconfig(tmp_path, monkeypatch):
    kube_config = pytest.importorskip("kubernetes_asyncio.config.kube_config")
    path = tmp_path / "kubeconfig"
    path.write_text(FAKE_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes_asyncio read $KUBECONFIG when it was imported
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


@pytest.fixture(scope="session")
def test_root():
    root = Path(tempfile.mkdtemp(prefix="redspot-tests-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    # hundreds of thousands of files (environments, image layers, Ray's spill): removed
    # by a process of their own, which ends by itself, so that the run's result does not
    # wait minutes for the deletion (what made the last test of a worker take 3 minutes)
    subprocess.Popen(["rm", "-rf", "--one-file-system", str(root)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def account_prefix():
    prefix = f"rt{os.getpid() % 100000}-"
    yield prefix
    if IS_ROOT:
        for entry in pwd.getpwall():
            if entry.pw_name.startswith(prefix):
                # what a test's account still runs (a Ray head a server left behind while
                # it stopped) would keep userdel from removing the account
                stop_pids(processes_of(entry.pw_uid), grace=2)
                subprocess.run(["userdel", entry.pw_name], check=False, capture_output=True)
        for entry in grp.getgrall():
            if entry.gr_name.startswith(prefix):
                subprocess.run(["groupdel", entry.gr_name], check=False, capture_output=True)


def runtime_dir(root: Path) -> Path:
    """The server runtime (when the hub's Python is private): one for every hub of every
    run and pytest-xdist worker, kept between runs as a cache (``redspot up`` builds it
    under a lock, in a folder named by what it holds)."""
    shared = Path(tempfile.gettempdir()) / "redspot-tests-runtime"
    shared.mkdir(mode=0o755, exist_ok=True)
    return shared


class HubPool:
    """Starts hubs and, at the end, stops them and every server they started."""

    def __init__(self, root: Path, prefix: str, name: str):
        self.root = root
        self.prefix = prefix
        self.name = name
        self.hubs: list[Hub] = []

    def __call__(self, settings: dict | None = None, users: dict | None = None,
                 start: bool = True, **kwargs) -> Hub:
        data_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=self.root))
        data_dir.chmod(0o711)
        settings = dict(settings or {})
        spawner = settings.setdefault("spawner", {})
        spawner.setdefault("account_prefix", self.prefix)
        # one server runtime for every hub of the run, when the hub's Python is private
        spawner.setdefault("runtime_dir", str(runtime_dir(self.root)))
        hub = Hub(data_dir=data_dir, settings=settings, **kwargs)
        for name, password in (users or {}).items():
            redspot("users", "add", name, "--password-stdin", "--data-dir", str(data_dir),
                    stdin=password + "\n")
        self.hubs.append(hub)
        return hub.start() if start else hub

    def close(self) -> None:
        for hub in self.hubs:
            if hub.keep_servers and hub.proc is not None:
                # come back without --keep-servers, so that stopping cleans servers up
                hub.stop()
                hub.keep_servers = False
                try:
                    hub.start()
                except Exception:
                    pass
            hub.stop()


@pytest.fixture
def hub_factory(test_root, account_prefix, request):
    pool = HubPool(test_root, account_prefix, request.node.name[:20].replace("[", "-"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def team_hub(test_root, account_prefix):
    pool = HubPool(test_root, account_prefix, "team")
    try:
        hub = pool(TEAM_SETTINGS, users=PASSWORDS, config_d={
            "50-poll.py": "c.Spawner.poll_interval = 2\n",
        })
        yield hub
    finally:
        pool.close()


class SharedRayHead:
    """A token-protected Ray head (2 CPUs) for the modules of a test process that need
    one: a head's start is some 25 s of CPU, so modules that run one after the other
    share one; and an idle head still takes about 5 s of CPU a minute, so it is stopped
    after the last test that uses it when the next module does not
    (``pytest_runtest_teardown``), and started again if a later module needs one."""

    def __init__(self, root: Path):
        self.root = root
        self.head = None
        self.info = None
        self.temp: Path | None = None
        self.state: Path | None = None

    def get(self):
        from redspot.compute.local import LocalRayHead

        if self.head is None:
            # one state folder, so one token, for every head it starts: Ray reads its
            # token settings once per process
            self.state = self.state or Path(tempfile.mkdtemp(prefix="ray-state-",
                                                             dir=self.root))
            self.temp = Path(tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp"))
            head = LocalRayHead(state_dir=self.state, private_dir=self.temp)
            self.info = head.start(cpus=2)
            self.head = head
        return self.head, self.info

    def stop(self) -> None:
        if self.head is not None:
            head, self.head, self.info = self.head, None, None
            head.stop(timeout=5)
            shutil.rmtree(self.temp, ignore_errors=True)


_shared_ray_head: SharedRayHead | None = None


@pytest.fixture(scope="session")
def _ray_head_holder(test_root):
    global _shared_ray_head
    _shared_ray_head = SharedRayHead(test_root)
    try:
        yield _shared_ray_head
    finally:
        _shared_ray_head.stop()
        _shared_ray_head = None


@pytest.fixture(scope="module")
def ray_head(_ray_head_holder):
    return _ray_head_holder.get()


@pytest.hookimpl(trylast=True)  # after the module's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """Stop the shared Ray head after the last test of a module that uses it, unless the
    next test is in another module that does."""
    if _shared_ray_head is None or _LAST_RAY_HEAD_USER.get(_module(item)) != item.nodeid:
        return
    if nextitem is not None and _module(nextitem) != _module(item) \
            and _module(nextitem) in _LAST_RAY_HEAD_USER:
        return
    _shared_ray_head.stop()
