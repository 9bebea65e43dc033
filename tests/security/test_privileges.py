"""Least privilege, as ``ps`` and ``ls -l`` show it: which account runs each process of a
running Redspot, no secret on any command line, and the owner and mode of every path
under the data folder that another account could reach."""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from tests.helpers import descendants, run_as

pytestmark = pytest.mark.integration


def _process(pid: int) -> tuple[str, str] | None:
    try:
        argv = (Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        uid = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None
    return pwd.getpwuid(uid).pw_name, " ".join(a.decode(errors="replace") for a in argv if a)


#: What each kind of process is (by a piece of its command line), and the account it
#: must run as (``{p}`` is the run's account prefix).
PROCESSES = [
    ("redspot.privileged", "root"),
    ("configurable-http-proxy", "{p}svc_proxy"),
    ("redspot.environments.service", "{p}svc_environments"),
    ("mlflow", "{p}svc_models"),
    ("uvicorn", "{p}svc_models"),
    ("redspot.models", "{p}svc_models"),
    ("redspot.warehouse.service", "{p}svc_warehouse"),
    ("redspot.sharing.service", "{p}svc_sharing"),
    ("jupyterhub.singleuser", "{p}alice"),
    ("ipykernel", "{p}alice"),
]


@pytest.fixture(scope="module")
def alice_running(realm):
    token = realm.tokens["alice"]
    assert realm.spawn("alice", token, {"profile": "m5.xlarge"}).status_code in (201, 202)
    realm.wait_ready("alice")
    yield realm
    realm.stop_server("alice")


def test_each_process_runs_as_its_own_account_and_only_hub_and_helper_as_root(alice_running):
    hub = alice_running
    table = {pid: _process(pid) for pid, _ in descendants(hub.proc.pid)}
    table = {pid: row for pid, row in table.items() if row}
    seen = set()
    rows = []
    for pid, (account, cmd) in sorted(table.items()):
        kind = next((k for k, _ in PROCESSES if k in cmd), None)
        expected = dict(PROCESSES).get(kind)
        rows.append(f"{pid:>7} {account:<24} {cmd[:90]}")
        if kind is None:
            continue
        seen.add(kind)
        assert account == expected.format(p=hub.prefix), "\n".join(rows)
    listing = "\n".join(rows)
    assert {"redspot.privileged", "configurable-http-proxy", "redspot.environments.service",
            "mlflow", "jupyterhub.singleuser"} <= seen, listing
    # nothing else the hub started runs as root
    roots = [r for r in rows if " root " in r and "redspot.privileged" not in r]
    assert roots == [], listing


def test_no_secret_is_on_a_command_line(alice_running):
    hub = alice_running
    pids = [hub.proc.pid, *(pid for pid, _ in descendants(hub.proc.pid))]
    secrets = set(hub.tokens.values()) | {hub.service_token}
    for pid in pids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            key, _, value = item.decode(errors="replace").partition("=")
            if key in ("JUPYTERHUB_API_TOKEN", "CONFIGPROXY_AUTH_TOKEN",
                       "MLFLOW_TRACKING_TOKEN", "JPY_API_TOKEN") and value:
                secrets.add(value)
    assert len(secrets) > len(hub.tokens)  # the services' and the proxy's were found
    for pid in pids:
        row = _process(pid)
        if row:
            assert not [s for s in secrets if s in row[1]], row
    log = hub.log_path.read_text(errors="replace")
    leaked = [s for s in secrets - set(hub.tokens.values()) - {hub.service_token} if s in log]
    assert leaked == []


# --- the data folder ----------------------------------------------------------------------

#: (path pattern, owner, group or None, mode): the first pattern that matches a path is
#: what it must be. ``{p}`` is the account prefix.
LAYOUT = [
    (".", "root", None, 0o711),
    ("redspot.yaml", "root", None, 0o600),
    ("jupyterhub_config.d", "root", None, 0o700),
    ("hub", "root", None, 0o700),
    ("run", "root", None, 0o711),
    ("run/helper.sock", "root", None, 0o666),  # anyone connects; the helper asks who
    ("retired", "root", None, 0o700),
    ("proxy", "{p}svc_proxy", None, 0o700),
    ("models", "{p}svc_models", None, 0o700),
    ("warehouse", "{p}svc_warehouse", None, 0o700),
    ("sharing", "{p}svc_sharing", None, 0o700),
    ("demo", "root", None, 0o755),  # the demo connection's data: every user reads it
    ("demo/listings.duckdb", "root", None, 0o644),
    ("environments", "{p}svc_environments", None, 0o711),
    ("environments/venvs", "root", None, 0o711),
    ("environments/venvs/env-*", "{p}bld_*", "*", 0o750),  # its owner's group only
    ("environments/cache", "root", None, 0o711),
    ("environments/cache/*", "{p}bld_*", None, 0o700),
    ("environments/work", "root", None, 0o711),
    ("environments/buildah", "root", None, 0o711),
    ("environments/buildah/*", "{p}bld_*", None, 0o700),
    ("environments/wheels", "root", None, 0o755),  # Redspot's own wheel
    ("environments/wheels/*", "root", None, 0o755),
    ("environments/wheels/*/redspot-*.whl", "root", None, 0o644),
    ("environments/*", "{p}svc_environments", None, None),  # unreachable: 0600/0700
    ("home", "root", None, 0o711),
    ("home/*", "{p}*", None, 0o700),
    ("shared", "root", None, 0o711),
    ("shared/public", "root", "{p}grp_public", 0o3770),
    ("shared/*", "root", "{p}grp_*", 0o2770),
    ("runtime", "root", None, 0o755),  # the servers' Python, when the hub's is private
    ("runtime/*", "root", None, None),
    ("hub-*.log", "root", None, 0o600),  # the tests' own logs of redspot up
]


def _layout_rows(root: Path, prefix: str):
    """Every path under ``root`` another account could reach (through folders that let
    others pass), with its owner and mode; folders only their owner may enter, and the
    insides of environments and runtimes, are listed but not entered."""
    rows = []
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            relative = os.path.normpath(os.path.join(rel, name))
            rows.append((relative, pwd.getpwuid(st.st_uid).pw_name,
                         grp.getgrgid(st.st_gid).gr_name, st.st_mode))
        closed = [d for d in dirs if not (Path(folder) / d).lstat().st_mode & stat.S_IXOTH
                  or fnmatch.fnmatch(os.path.normpath(os.path.join(rel, d)),
                                     "environments/venvs/*")
                  or os.path.normpath(os.path.join(rel, d)).startswith("runtime")
                  or os.path.normpath(os.path.join(rel, d)).startswith("environments/wheels")]
        dirs[:] = [d for d in dirs if d not in closed]
    st = root.stat()
    rows.insert(0, (".", pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
                    st.st_mode))
    return rows


def test_every_reachable_path_under_the_data_folder_has_its_owner_and_mode(alice_running,
                                                                           alice_env):
    hub = alice_running
    rows = _layout_rows(hub.data_dir, hub.prefix)
    table = "\n".join(f"{stat.filemode(m)} {oct(stat.S_IMODE(m)):>7} {o:<26} {g:<26} {p}"
                      for p, o, g, m in rows)
    print(table)
    for path, owner, group, mode in rows:
        rule = next((r for r in LAYOUT if fnmatch.fnmatch(path, r[0])), None)
        assert rule is not None, f"{path} is not in the expected layout:\n{table}"
        pattern, want_owner, want_group, want_mode = rule
        assert fnmatch.fnmatch(owner, want_owner.format(p=hub.prefix)), f"{path}\n{table}"
        if want_group:
            assert fnmatch.fnmatch(group, want_group.format(p=hub.prefix)), f"{path}\n{table}"
        if want_mode is not None:
            assert stat.S_IMODE(mode) == want_mode, f"{path}\n{table}"
        elif stat.S_ISDIR(mode) or stat.S_ISREG(mode):
            assert not stat.S_IMODE(mode) & 0o077, f"{path} is open to others\n{table}"
    # a personal build: its owner's build account's, readable by its owner's group only
    venvs = [r for r in rows if fnmatch.fnmatch(r[0], "environments/venvs/env-*")]
    assert venvs, table
    for _, owner, group, _ in venvs:
        assert group == owner.replace("bld_", "", 1), table


def test_a_personal_environment_is_readable_by_its_owner_only(alice_env, realm):
    python = Path(alice_env["location"])
    venv = python.parent.parent
    alice = pwd.getpwnam(f"{realm.prefix}alice")
    assert run_as(alice.pw_name, "cat", str(venv / "pyvenv.cfg")).returncode == 0
    # any other account: another tenant's, a service's, another owner's builds
    others = [pwd.getpwnam("nobody"), pwd.getpwnam(f"{realm.prefix}svc_environments")]
    for other in others:
        assert run_as(other.pw_name, "cat", str(venv / "pyvenv.cfg")).returncode != 0, \
            other.pw_name
