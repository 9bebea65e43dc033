"""The Python environment single-user servers run in, when they run as per-user accounts.

A server started as ``redspot-alice`` must be able to read and run its Python and
packages. The hub's own environment often sits where other accounts cannot enter (a
checkout under ``/root``, a private temp folder); then ``redspot up`` prepares a copy,
``<data>/runtime``: a virtualenv on the system's Python with the same packages, built
with uv (hard links from uv's cache, so it is quick and small), and rebuilt only when
the hub's packages or Redspot's source change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import redspot

#: Interpreters every account can run, in order of preference.
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
_RUN = stat.S_IROTH | stat.S_IXOTH


class RuntimePreparationError(RuntimeError):
    """The server runtime could not be prepared; the message says why."""


def blocking_path(path: str | os.PathLike, need: int | None = None) -> Path | None:
    """The first component of ``path`` that keeps other accounts out, else None.

    Every parent must let others through (``o+x``); ``path`` itself must grant others
    the ``need`` bits (default: read, and pass through for a folder).
    """
    path = Path(os.path.realpath(path))
    for parent in reversed(path.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path
    if need is None:
        need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return path if mode & need != need else None


def environment_blocker(python: str) -> Path | None:
    """What keeps other accounts from running servers with the environment of ``python``."""
    return blocking_path(python, _RUN) or blocking_path(Path(redspot.__file__).parent)


def hub_environment_blocker() -> Path | None:
    return environment_blocker(sys.executable) or blocking_path(sysconfig.get_paths()["purelib"])


def _uv() -> str:
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise RuntimePreparationError(
                "uv is needed to prepare the server runtime: pip install uv"
            ) from None
        return found


def _redspot_source() -> str | None:
    """Where Redspot was installed from (a source folder or a wheel), if known."""
    try:
        text = metadata.distribution("redspot").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    url = json.loads(text).get("url", "")
    return url.removeprefix("file://") if url.startswith("file://") else None


def _frozen_requirements(uv: str) -> list[str]:
    out = subprocess.run(
        [uv, "pip", "freeze", "--python", sys.executable, "--exclude-editable"],
        check=True, capture_output=True, text=True,
    ).stdout
    return [
        line for line in out.splitlines()
        if line and not line.lower().startswith(("redspot ", "redspot=", "redspot @"))
    ]


def _source_digest(source: str | None) -> str:
    h = hashlib.sha256(redspot.__version__.encode())
    root = Path(redspot.__file__).parent
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    h.update((source or "").encode())
    return h.hexdigest()


def system_python() -> str:
    for candidate in SYSTEM_PYTHONS:
        if os.path.exists(candidate) and blocking_path(candidate, _RUN) is None:
            return candidate
    raise RuntimePreparationError(
        f"no Python that every account can run was found (looked at {', '.join(SYSTEM_PYTHONS)})"
    )


def uv_env() -> dict[str, str]:
    """The environment uv runs in: pip's local find-links, where the machine has them;
    DeepSpeed built without its C++ ops (they compile on first use, and are cached)."""
    env = dict(os.environ)
    env.setdefault("DS_BUILD_OPS", "0")
    if os.environ.get("PIP_FIND_LINKS") and not os.environ.get("UV_FIND_LINKS"):
        env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
    return env


#: What every install of Redspot's overrides: dependencies it leaves out (the file says
#: which and why); the Makefile passes it too.
OVERRIDES = Path(__file__).with_name("overrides.txt")

#: Packages built from source against the venv's own torch: without build isolation
#: (which would fetch another torch, gigabytes of CUDA), after everything else.
BUILT_AGAINST_TORCH = ("deepspeed",)


def _project(requirement: str) -> str:
    return re.split(r"[=<>!~\[; @]", requirement.strip(), maxsplit=1)[0].lower()


def server_venv_commands(dest: Path, requirements: Path, uv: str | None = None,
                         redspot_from: str | None = None,
                         create: bool = True) -> list[list[str]]:
    """How to build a virtualenv servers can run from: the system's Python, the packages
    in ``requirements`` (resolved together; DeepSpeed after them, built against their
    torch), and Redspot itself (from ``redspot_from``, a wheel or source folder; default:
    where this Redspot was installed from). ``create=False``: ``dest`` is already a
    virtualenv (a copy of the runtime), and only what differs is installed."""
    uv = uv or _uv()
    python = str(dest / "bin" / "python")
    lines = [x for x in requirements.read_text().splitlines() if x.strip()]
    later = [x for x in lines if _project(x) in BUILT_AGAINST_TORCH]
    first = requirements
    if later:
        first = requirements.with_name(requirements.stem + ".first.txt")
        first.write_text("\n".join(x for x in lines if x not in later) + "\n")
    # beside the requirements, where the account that builds can read it (Redspot's own
    # folder may be closed to it)
    overrides = requirements.with_name("overrides.txt")
    overrides.write_text(OVERRIDES.read_text())
    commands = [[uv, "venv", "--python", system_python(), str(dest)]] if create else []
    override = ["--override", str(overrides)]
    commands.append([uv, "pip", "install", "--python", python, *override, "-r", str(first)])
    if later:
        commands += [
            [uv, "pip", "install", "--python", python, "setuptools", "wheel"],
            [uv, "pip", "install", "--python", python, *override, "--no-build-isolation",
             *later],
        ]
    commands.append([uv, "pip", "install", "--no-deps", "--python", python,
                     redspot_from or redspot_source()])
    return commands


def redspot_source() -> str:
    """Where this Redspot can be installed from: its source folder or wheel."""
    return _redspot_source() or str(Path(redspot.__file__).parent.parent)


def base_requirements() -> list[str]:
    """The packages of the hub's environment (without Redspot): what every server has."""
    return _frozen_requirements(_uv())


def prepare_runtime(root: Path, log=print) -> str:
    """Build (or reuse) the server runtime under ``root``; return its Python.

    Runtimes are content-addressed (``root/<digest>``): a rebuild never touches the one
    that running servers use.
    """
    requirements = base_requirements()
    digest = hashlib.sha256(
        ("\n".join(requirements) + _source_digest(_redspot_source())).encode()
    ).hexdigest()[:16]
    dest = root / digest
    python = dest / "bin" / "python"
    marker = dest / ".redspot-runtime-ready"
    if marker.exists():
        return str(python)
    with readable_by_all():
        root.mkdir(parents=True, exist_ok=True)
    # one builder at a time (two hubs starting at once): the second one waits and finds
    # the runtime ready
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return str(python)
        return _build_runtime(root, dest, digest, requirements, python, marker, log)


@contextlib.contextmanager
def readable_by_all():
    """What is made meanwhile is readable by every account (umask 022)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _build_runtime(root: Path, dest: Path, digest: str, requirements: list[str],
                   python: Path, marker: Path, log) -> str:
    log(f"Preparing the server runtime in {dest} ({len(requirements)} packages)...")
    try:
        with readable_by_all():
            shutil.rmtree(dest, ignore_errors=True)
            reqs = root / f"{digest}.requirements.txt"
            reqs.write_text("\n".join(requirements) + "\n")
            for cmd in server_venv_commands(dest, reqs):
                subprocess.run(cmd, check=True, env=uv_env())
    except subprocess.CalledProcessError as e:
        raise RuntimePreparationError(f"preparing the server runtime failed: {e}") from None
    blocker = environment_blocker_for(python)
    if blocker:
        raise RuntimePreparationError(
            f"the server runtime {dest} is still not usable by other accounts: {blocker}"
        )
    marker.write_text(digest + "\n")
    log("Server runtime ready.")
    return str(python)


def environment_blocker_for(python: Path) -> Path | None:
    """Like ``environment_blocker``, for an environment other than the hub's."""
    site = subprocess.run(
        [str(python), "-I", "-c", "import redspot, os; print(os.path.dirname(redspot.__file__))"],
        capture_output=True, text=True, cwd="/",
    )
    if site.returncode:
        return python
    return blocking_path(python, _RUN) or blocking_path(site.stdout.strip())
