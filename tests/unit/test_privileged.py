"""The privileged helper's rules, without root: names, arguments, paths, who may ask."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from redspot.config.loader import ConfigError, validate_settings
from redspot.hub.userstore import UserStore, UserStoreError
from redspot.privileged import safefs
from redspot.privileged.accounts import (
    build_account_name,
    name_problem,
    service_account_name,
)
from redspot.privileged.ops import (
    Helper,
    HelperError,
    _clone_venv,
    _give_folders,
    build_env,
    file_ids,
    tree_size,
)
from redspot.privileged.server import OPERATIONS, Refused, dispatch


def _account(name, uid):
    return pwd.struct_passwd((name, "x", uid, uid, "", "/", "/bin/sh"))


ACCOUNTS = {"postgres": _account("postgres", 105), "alice": _account("alice", 1001)}


@pytest.mark.parametrize("name, problem", [
    ("team", "reserved by Redspot (it names the team's shared environments)"),
    ("root", "reserved by Redspot"),
    ("postgres", "is a system account of this machine (uid 105)"),
    ("gone", "belonged to a user who was removed"),
    ("alice", None),  # an ordinary account of that name: PAM's own user
    ("bob", None),
])
def test_reserved_system_and_retired_names_are_refused(name, problem):
    found = name_problem(name, retired=lambda n: n == "gone", lookup=ACCOUNTS.get,
                         first_uid=1000)
    assert (found is None) if problem is None else (problem in found), found


def test_redspots_own_accounts_cannot_be_any_users_account():
    # user accounts are <prefix><safe name>, and safe names never hold "_"
    assert service_account_name("models") == "redspot-svc_models"
    assert build_account_name("alice") == "redspot-bld_alice"
    assert build_account_name("team", "rt1-") == "rt1-bld_team"
    assert len(build_account_name("a" * 60)) <= 32
    with pytest.raises(ValueError, match="unknown service"):
        service_account_name("ssh")


@pytest.mark.parametrize("settings, message", [
    ({"groups": {"vision": {"users": ["alice", "team"]}}},
     "groups.vision.users: the name 'team' is reserved"),
    ({"auth": {"admin_users": ["root"]}}, "auth.admin_users: the name 'root' is reserved"),
    # names the hub could never sign in: a clear error, not a traceback at start
    ({"auth": {"admin_users": ["Alice Smith"]}},
     "auth.admin_users: user name 'Alice Smith' is not allowed: use 1 to 64 lower-case"),
    ({"auth": {"admin_users": ["a/b"]}}, "auth.admin_users: user name 'a/b' is not allowed"),
    ({"auth": {"type": "oauth", "admin_users": ["Ana@Example.com"],
               "oauth": {"provider": "github", "config": {"client_id": "x"}}}},
     "auth.admin_users: 'Ana@Example.com' has upper-case letters: the hub lower-cases "
     "names at sign-in, so it would never match; write 'ana@example.com'"),
    ({"spawner": {"account_prefix": ""}},
     "spawner.account_prefix: an empty prefix runs servers as the machine's own accounts"),
])
def test_the_settings_name_no_reserved_user_and_empty_prefixes_need_pam(settings, message):
    with pytest.raises(ConfigError) as e:
        validate_settings(settings)
    assert message in str(e.value)


def test_an_empty_prefix_is_fine_with_pam():
    validate_settings({"auth": {"type": "pam"}, "spawner": {"account_prefix": ""}})


def test_a_removed_user_keeps_the_name_until_restored(tmp_path):
    store = UserStore(tmp_path / "users.sqlite")
    store.add("carol", "carol-password")
    store.retire("carol", {"user": "carol", "home": "carol.2026"})
    assert store.get("carol") is None and store.is_retired("carol")
    # nobody signs up as carol, not even with another password
    with pytest.raises(UserStoreError, match="belonged to a user who was removed"):
        store.add("carol", "another-password")
    assert store.restore("carol") == {"user": "carol", "home": "carol.2026"}
    # back with her own password
    assert store.verify("carol", "carol-password") is not None
    with pytest.raises(UserStoreError, match="not a removed user"):
        store.restore("carol")
    with pytest.raises(UserStoreError, match="reserved"):
        store.add("team", "team-password")


# --- the helper's arguments --------------------------------------------------------------


@pytest.fixture
def helper(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    return Helper(data, isolated=False)


@pytest.mark.parametrize("args, message", [
    ({"owner": "team", "tag": "../../etc", "requirements": []}, "not an environment tag"),
    ({"owner": "team", "tag": "env-0123456789abcdef", "requirements": ["-e /home/alice"]},
     "not a package requirement"),
    ({"owner": "team", "tag": "env-0123456789abcdef",
      "requirements": ["evil @ file:///home/alice/x"]}, "direct URLs are not built"),
    ({"owner": "team", "tag": "env-0123456789abcdef", "requirements": ["six\nrequests"]},
     "not a package requirement"),
    ({"owner": "root", "tag": "env-0123456789abcdef", "requirements": []}, "reserved"),
])
def test_builds_refuse_bad_arguments_before_anything_runs(helper, args, message):
    with pytest.raises(HelperError, match=message):
        helper.build_venv(**args)
    assert not (helper.data_dir / "environments").exists()


def test_a_builds_environment_holds_no_token(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-token")
    monkeypatch.setenv("CONFIGPROXY_AUTH_TOKEN", "secret-proxy")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    env = build_env(tmp_path / "work", tmp_path / "cache")
    assert "secret" not in " ".join(env.values())
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path / "work")
    assert env["PIP_INDEX_URL"] == "https://pypi.example/simple"


def test_a_build_looks_for_wheels_only_where_every_account_can_read(tmp_path, monkeypatch):
    public = Path(tempfile.mkdtemp(dir="/tmp"))  # pytest's own tmp_path is private
    public.chmod(0o755)
    private = tmp_path / "private"
    private.mkdir()
    monkeypatch.setenv("UV_FIND_LINKS", f"{private},{public},https://wheels.example/")
    env = build_env(tmp_path / "work", tmp_path / "cache")
    assert env["UV_FIND_LINKS"] == f"{public},https://wheels.example/"
    monkeypatch.setenv("UV_FIND_LINKS", str(private))
    assert "UV_FIND_LINKS" not in build_env(tmp_path / "work", tmp_path / "cache")
    public.rmdir()


def test_a_build_starts_from_links_to_the_runtime_and_changes_none_of_its_files(tmp_path):
    base = tmp_path / "runtime"
    (base / "bin").mkdir(parents=True)
    (base / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (base / "bin" / "python").symlink_to("/usr/bin/python3")
    script = base / "bin" / "jupyter"
    script.write_text(f"#!{base}/bin/python\nimport sys\n")
    script.chmod(0o755)
    site = base / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "six.py").write_text("x = 1\n")
    (base / "share").mkdir()
    (base / "share" / "source").symlink_to(tmp_path)  # an editable install's link out
    (base / "lib64").symlink_to("lib")
    dest = tmp_path / "venvs" / "env-1"
    dest.mkdir(parents=True)
    said = []

    assert _clone_venv(base, dest, said.append)

    assert (dest / "lib" / "python3.11" / "site-packages" / "six.py").stat().st_ino == \
        (site / "six.py").stat().st_ino
    assert (dest / "bin" / "jupyter").read_text().startswith(f"#!{dest}/bin/python\n")
    assert os.access(dest / "bin" / "jupyter", os.X_OK)
    assert script.read_text().startswith(f"#!{base}/bin/python\n")  # the runtime's own
    assert os.readlink(dest / "bin" / "python") == "/usr/bin/python3"
    assert os.readlink(dest / "lib64") == "lib"
    assert not os.path.lexists(dest / "share" / "source")
    assert any("share/source: it links to" in line for line in said), said
    # what the build writes counts against its size limit; the runtime's files do not
    linked = file_ids(dest)
    assert tree_size(dest, linked) == 0
    (dest / "lib" / "python3.11" / "site-packages" / "new.py").write_bytes(b"y" * 8192)
    assert tree_size(dest, linked) >= 8192


def test_a_clone_that_cannot_link_is_left_empty_for_a_whole_build(tmp_path):
    dest = tmp_path / "env"
    dest.mkdir()
    said = []
    assert not _clone_venv(tmp_path / "no-such-runtime", dest, said.append)
    assert list(dest.iterdir()) == []
    assert "installing every package instead" in said[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gives folders to another uid")
def test_only_the_folders_of_a_clone_are_given_to_the_build_account(tmp_path):
    (tmp_path / "env" / "lib").mkdir(parents=True)
    (tmp_path / "env" / "lib" / "torch.py").write_text("")
    fd = os.open(tmp_path / "env", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _give_folders(fd, 4242, 4242)
    finally:
        os.close(fd)
    assert (tmp_path / "env" / "lib").stat().st_uid == 4242
    assert (tmp_path / "env" / "lib" / "torch.py").stat().st_uid == 0


def test_who_may_ask_for_what():
    # deny by default: every operation names its callers; services build, the hub does
    # the rest
    assert OPERATIONS["build_venv"] == OPERATIONS["build_image"] == {"environments"}
    assert "environments" not in OPERATIONS["ensure_user"]
    assert OPERATIONS["stop_user_processes"] == {"hub"}
    for service in ("environments", "sharing", None):
        with pytest.raises(Refused, match="may not ask for stop_user_processes"):
            dispatch(None, service, "stop_user_processes", {"user": "alice"}, print)
    assert "models" not in OPERATIONS["build_venv"]
    with pytest.raises(Refused, match="may not ask for ensure_user"):
        dispatch(None, "environments", "ensure_user", {"user": "alice"}, print)
    with pytest.raises(Refused, match="may not ask for build_venv"):
        dispatch(None, None, "build_venv", {}, print)
    with pytest.raises(Refused, match="may not ask for build_image"):
        dispatch(None, "models", "build_image", {}, print)
    with pytest.raises(Refused, match="unknown operation 'rm'"):
        dispatch(None, "hub", "rm", {}, print)


def test_users_homes_and_links_are_made_through_descriptors(helper):
    info = helper.ensure_user("alice", ["vision"])
    home = helper.data_dir / "home" / "alice"
    assert info["home"] == str(home)
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    assert os.readlink(home / "shared" / "vision") == str(helper.data_dir / "shared" / "vision")
    # alice makes ~/shared a link to a folder she wants root to take over
    (home / "shared" / "vision").unlink()
    (home / "shared" / "public").unlink()
    (home / "shared").rmdir()
    target = helper.data_dir / "hub"
    target.mkdir(mode=0o700)
    (home / "shared").symlink_to(target)
    helper.ensure_user("alice", ["vision"])
    assert list(target.iterdir()) == []  # nothing was linked or changed there


# --- paths --------------------------------------------------------------------------------


def test_paths_through_links_or_out_of_the_folder_are_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for relative in ("link", "link/x", "file", "../etc", "/etc"):
            with pytest.raises((safefs.UnsafePath, FileNotFoundError)):
                safefs.open_dir(fd, relative, create=0o700)
        assert not (tmp_path / "real" / "x").exists()
        with safefs.opened(fd, "real/new", create=0o700) as sub:
            assert os.fstat(sub).st_ino == (tmp_path / "real" / "new").stat().st_ino
    finally:
        os.close(fd)


def test_chown_tree_follows_no_link_and_touches_only_the_given_owners(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("x")
    outside.chmod(0o644)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_text("y")
    (tree / "link").symlink_to(outside)
    me = os.geteuid(), os.getegid()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # nothing here belongs to uid 4242: nothing changes
        assert safefs.chown_tree(fd, *me, only_from={4242}) == 0
        changed = safefs.chmod_tree(fd, lambda st: 0o700 if st.st_mode & 0o040000 else 0o600)
    finally:
        os.close(fd)
    assert changed >= 2
    assert oct(outside.stat().st_mode & 0o777) == "0o644"  # the link was not followed
    assert oct((tree / "sub" / "file").stat().st_mode & 0o777) == "0o600"
