"""Sharing's pure parts: ACLs in their binary form, user input, the share store, the
recipient's links, the Kubernetes mounts (validated against every Kubernetes version the
validator knows), and the config layer's roles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import kubernetes_validate
import pytest
from traitlets.config import Config

from redspot.config.layers import Context, layer_services
from redspot.config.loader import validate_settings
from redspot.config.paths import DataPaths
from redspot.privileged import acl
from redspot.sharing.client import SharingError, copy_to_home, sync_links
from redspot.sharing.shares import (
    Grantee,
    ShareError,
    ShareStore,
    check_path,
    parse_grantee,
)
from redspot.spawner.storage import KubeStorage, share_mounts

# --- ACLs ----------------------------------------------------------------------------------

def test_an_acl_round_trips_through_the_kernels_binary_form():
    entries = acl.with_entry(acl.from_mode(0o640), acl.USER, 1001, acl.READ)
    blob = acl.encode(entries)
    # version 2, then (tag, perm, id) little-endian, sorted by tag then id
    assert blob[:4] == b"\x02\x00\x00\x00" and len(blob) == 4 + 8 * 5
    assert sorted(acl.decode(blob)) == sorted(entries)
    assert acl.named(entries, acl.USER, 1001) == acl.READ
    # the mask is the union of the group class: the owning group's r and bob's r
    assert next(e.perm for e in entries if e.tag == acl.MASK) == acl.READ
    with pytest.raises(ValueError):
        acl.decode(b"\x01\x00\x00\x00")


def test_the_mask_is_made_again_and_a_chmod_narrowing_it_is_undone():
    entries = acl.with_entry(acl.from_mode(0o700), acl.USER, 7, acl.EXECUTE)
    narrowed = [e if e.tag != acl.MASK else acl.Entry(acl.MASK, e.id, 0) for e in entries]
    assert acl.effective(narrowed, acl.USER, 7) == 0
    again = acl.with_entry(narrowed, acl.USER, 7, acl.EXECUTE)
    assert acl.effective(again, acl.USER, 7) == acl.EXECUTE
    # a wider mask (chmod 666) widens nothing: the entry stays what it was
    wide = [e if e.tag != acl.MASK else acl.Entry(acl.MASK, e.id, 7) for e in entries]
    assert acl.effective(wide, acl.USER, 7) == acl.EXECUTE


def test_taking_the_last_named_entry_leaves_the_mode_alone():
    entries = acl.with_entry(acl.from_mode(0o600), acl.GROUP, 5000, acl.READ)
    assert sorted(acl.without_entry(entries, acl.GROUP, 5000)) == sorted(acl.from_mode(0o600))
    default = acl.with_entry([], acl.USER, 9, acl.READ | acl.EXECUTE, base_mode=0o700)
    assert acl.without_entry(default, acl.USER, 9, default=True) == []


def test_the_acl_of_a_real_file(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    path.chmod(0o600)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sorted(acl.read(fd)) == sorted(acl.from_mode(0o600))
        acl.write(fd, acl.with_entry(acl.read(fd), acl.USER, 4242, acl.READ))
        assert acl.named(acl.read(fd), acl.USER, 4242) == acl.READ
        # the group mode bits show the mask now
        assert os.fstat(fd).st_mode & 0o777 == 0o640
        acl.write(fd, acl.without_entry(acl.read(fd), acl.USER, 4242))
        assert os.fstat(fd).st_mode & 0o777 == 0o600
        assert acl.named(acl.read(fd), acl.USER, 4242) is None
    finally:
        os.close(fd)


# --- what users send -------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "normal"), [
    ("notebooks/plan.ipynb", "notebooks/plan.ipynb"),
    ("a//b/./c", "a/b/c"),
    ("data/", "data"),
])
def test_paths_in_the_home(path, normal):
    assert check_path(path) == normal


@pytest.mark.parametrize(("path", "words"), [
    ("", "expected a file or folder"),
    (None, "expected a file or folder"),
    ("/etc/passwd", "relative"),
    ("~/x", "relative"),
    ("../bob/x", "climbs out"),
    ("a/../../b", "climbs out"),
    (".", "whole home"),
    (".redspot/ray/token", "hidden"),
    ("proj/.env", "hidden"),
    ("shared-with-me/alice/x", "only its owner"),
    ("a" * 2000, "longer than"),
])
def test_paths_that_are_refused(path, words):
    with pytest.raises(ShareError, match=words):
        check_path(path)


def test_grantees():
    assert parse_grantee("bob") == Grantee("user", "bob")
    assert parse_grantee(" group:vision ") == Grantee("group", "vision")
    assert str(parse_grantee("group:vision")) == "group:vision"
    for bad in ("", "group:", "a b", "x/y", 3, None):
        with pytest.raises(ShareError, match="hub user name"):
            parse_grantee(bad)


def test_the_store_keeps_one_active_share_and_the_history(tmp_path):
    store = ShareStore(str(tmp_path / "shares.sqlite"))
    bob, vision = Grantee("user", "bob"), Grantee("group", "vision")
    first = store.add("alice", "notes.ipynb", bob, "file", "alice")
    assert store.add("alice", "notes.ipynb", bob, "file", "alice") == first
    folder = store.add("alice", "proj", vision, "folder", "admin")
    assert [s.id for s in store.reaching("bob", ["vision"])] == [first.id, folder.id]
    assert [s.id for s in store.reaching("carol", ["vision"])] == [folder.id]
    assert store.reaching("alice", ["vision"]) == []  # never one's own
    revoked = store.revoke(first, "alice")
    assert not revoked.active and revoked.revoked_by == "alice"
    assert store.reaching("bob", []) == []
    again = store.add("alice", "notes.ipynb", bob, "file", "alice")
    assert again.id != first.id
    assert len(store.owned_by("alice", include_revoked=True)) == 3
    model = again.model()
    assert model["with"] == "bob" and model["shared_as"] == "shared-with-me/alice/notes.ipynb"


# --- the recipient's links -------------------------------------------------------------------

def test_links_follow_the_shares_and_leave_the_users_own_files(tmp_path):
    homes = tmp_path / "home"
    alice, bob = homes / "alice", homes / "bob"
    (alice / "proj").mkdir(parents=True)
    (alice / "notes.ipynb").write_text("{}")
    bob.mkdir()
    shares = [{"owner": "alice", "path": "notes.ipynb", "source": str(alice / "notes.ipynb")},
              {"owner": "alice", "path": "proj", "source": str(alice / "proj")},
              {"owner": "carol", "path": "x", "source": None}]  # Kubernetes: mounted
    done = sync_links(bob, shares)
    assert done == {"linked": ["shared-with-me/alice/notes.ipynb",
                               "shared-with-me/alice/proj"], "removed": []}
    assert os.readlink(bob / "shared-with-me/alice/notes.ipynb") == str(alice / "notes.ipynb")
    (bob / "shared-with-me" / "mine.txt").write_text("bob's own")
    os.symlink("/tmp", bob / "shared-with-me" / "my-link")
    done = sync_links(bob, shares[1:])
    assert done == {"linked": [], "removed": ["shared-with-me/alice/notes.ipynb"]}
    done = sync_links(bob, [])
    assert done["removed"] == ["shared-with-me/alice/proj"]
    assert not (bob / "shared-with-me" / "alice").exists()
    assert (bob / "shared-with-me" / "mine.txt").read_text() == "bob's own"
    assert os.readlink(bob / "shared-with-me" / "my-link") == "/tmp"


def test_copy_to_home(tmp_path):
    homes = tmp_path / "home"
    alice, bob = homes / "alice", homes / "bob"
    (alice / "proj").mkdir(parents=True)
    (alice / "proj" / "a.txt").write_text("a")
    (bob / "shared-with-me" / "alice").mkdir(parents=True)
    os.symlink(alice / "proj", bob / "shared-with-me" / "alice" / "proj")
    copied = copy_to_home(bob, "shared-with-me/alice/proj")
    assert copied == bob / "proj" and not copied.is_symlink()
    assert (copied / "a.txt").read_text() == "a"
    with pytest.raises(SharingError, match="exists already"):
        copy_to_home(bob, "shared-with-me/alice/proj")
    with pytest.raises(SharingError, match="copy only what was shared"):
        copy_to_home(bob, "proj/a.txt")
    with pytest.raises(SharingError, match="revoked"):
        copy_to_home(bob, "shared-with-me/alice/gone.txt")


def test_home_relative_paths_for_the_magics(tmp_path):
    from IPython.core.error import UsageError

    from redspot.magics.sharing import home_relative

    home = tmp_path / "bob"
    assert home_relative("plan.ipynb", home, cwd=str(home / "notebooks")) == \
        "notebooks/plan.ipynb"
    assert home_relative(str(home / "data"), home, cwd="/") == "data"
    for bad in ("..", "/etc/passwd", "."):
        with pytest.raises(UsageError, match="not a file or folder inside your home"):
            home_relative(bad, home, cwd=str(home))


# --- Kubernetes ------------------------------------------------------------------------------

SHARES = [{"owner": "alice", "path": "notebooks/plan.ipynb"},
          {"owner": "alice", "path": "data"},
          {"owner": "alice", "path": "data/raw"},  # inside data: mounted with it
          {"owner": "alice", "path": "data"},  # with bob, and with his group
          {"owner": "Carol.Smith", "path": "report.txt"}]


def test_share_mounts_from_the_shared_volume():
    volumes, mounts = share_mounts(SHARES, KubeStorage(mode="shared-pvc"))
    assert volumes == []
    assert mounts == [
        {"name": "redspot-shared", "subPath": "home/alice/data",
         "mountPath": "/home/jovyan/shared-with-me/alice/data", "readOnly": True},
        {"name": "redspot-shared", "subPath": "home/alice/notebooks/plan.ipynb",
         "mountPath": "/home/jovyan/shared-with-me/alice/notebooks/plan.ipynb",
         "readOnly": True},
        {"name": "redspot-shared", "subPath": "home/carol-smith-21649a19/report.txt",
         "mountPath": "/home/jovyan/shared-with-me/carol-smith-21649a19/report.txt",
         "readOnly": True},
    ]


def test_share_mounts_from_the_owners_access_point_claims():
    volumes, mounts = share_mounts(SHARES, KubeStorage(mode="access-points"))
    assert volumes == [
        {"name": "redspot-shared-by-0", "persistentVolumeClaim": {
            "claimName": "redspot-home-alice", "readOnly": True}},
        {"name": "redspot-shared-by-1", "persistentVolumeClaim": {
            "claimName": "redspot-home-carol-smith-21649a19", "readOnly": True}},
    ]
    assert [(m["name"], m["subPath"], m["readOnly"]) for m in mounts] == [
        ("redspot-shared-by-0", "data", True),
        ("redspot-shared-by-0", "notebooks/plan.ipynb", True),
        ("redspot-shared-by-1", "report.txt", True)]


def test_a_share_path_that_climbs_out_is_refused():
    with pytest.raises(ValueError, match="without '..'"):
        share_mounts([{"owner": "alice", "path": "../bob"}], KubeStorage())


@pytest.mark.parametrize("mode", ["shared-pvc", "access-points"])
def test_a_pod_with_share_mounts_is_valid_for_every_kubernetes_version(mode):
    from redspot.spawner.storage import Layout, kube_volumes

    storage = KubeStorage(mode=mode)
    volumes, mounts = kube_volumes(Layout("bob", groups=("vision",)), storage)
    more_volumes, more_mounts = share_mounts(SHARES, storage)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-bob"},
           "spec": {"containers": [{"name": "notebook", "image": "redspot/singleuser:1",
                                    "volumeMounts": [*mounts, *more_mounts]}],
                    "volumes": [*volumes, *more_volumes]}}
    versions = kubernetes_validate.utils.all_versions()
    assert len(versions) >= 10
    for version in versions:
        kubernetes_validate.validate(pod, version, strict=True)
    paths = [m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]]
    assert len(paths) == len(set(paths))


# --- the config layer ------------------------------------------------------------------------

def _services(settings, **ctx):
    context = Context(paths=DataPaths(Path("/data")), python="/py",
                      service_ports={"sharing": 9300}, **ctx)
    c = Config()
    layer_services(c, validate_settings(settings), context)
    return c


def test_the_sharing_service_its_account_roles_and_the_servers_token_cache():
    c = _services({"services": {"sharing": {"enabled": True, "invite_groups": ["vision"]}}},
                  helper_socket="/data/run/helper.sock", isolated=True,
                  service_accounts={"sharing": "redspot-svc_sharing"}, cli_token="t")
    service = next(s for s in c.JupyterHub.services if s["name"] == "sharing")
    assert service["command"] == ["/py", "-m", "redspot.sharing.service",
                                  "--data-dir=/data/sharing", "--check-interval=60",
                                  "--storage-root=/data"]
    assert service["user"] == "redspot-svc_sharing"
    assert service["environment"]["REDSPOT_HELPER_SOCKET"] == "/data/run/helper.sock"
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["redspot-sharing-service"]["scopes"] == [
        "list:users", "read:users:name", "read:users:groups", "list:groups",
        "read:groups:name"]
    assert "custom:redspot:shares:use" in roles["user"]["scopes"]
    assert "custom:redspot:shares:admin" in roles["redspot-admin"]["scopes"]
    assert "custom:redspot:shares:admin" in roles["redspot-cli"]["scopes"]
    # inviting into one's server: vision's members; a server's token where its owner may
    assert roles["redspot-server-sharing"]["groups"] == ["vision"]
    assert "shares!user" not in roles["user"]["scopes"]
    assert "shares!user" in roles["server"]["scopes"]
    assert c.RedspotSpawnerMixin.server_token_cache_seconds == 30
    assert "redspot-spawner" not in roles  # one machine: no mounts to ask about


def test_everyone_may_invite_with_a_star_and_kubernetes_mounts_shares():
    c = _services({"spawner": {"kind": "kubernetes"},
                   "services": {"sharing": {"enabled": True, "invite_groups": ["*"],
                                            "server_token_cache": 10}}},
                  spawner_token="s")
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert "shares!user" in roles["user"]["scopes"]
    assert "redspot-server-sharing" not in roles
    service = next(s for s in c.JupyterHub.services if s["name"] == "sharing")
    assert "--deployment=kubernetes" in service["command"]
    assert {"servers", "read:groups"} <= set(roles["redspot-sharing-service"]["scopes"])
    assert roles["redspot-spawner"]["scopes"] == ["access:services!service=sharing",
                                                  "custom:redspot:shares:admin"]
    assert c.RedspotSpawnerMixin.services_token == "s"
    assert c.RedspotSpawnerMixin.server_token_cache_seconds == 10
    json.dumps(c.JupyterHub.services)


def test_the_server_trusts_a_token_only_as_long_as_configured_and_collaborates_if_invitable():
    from redspot.spawner.local import RedspotLocalSpawner
    from tests.helpers import hub_user, stand_in_hub

    c = Config()
    c.RedspotSpawnerMixin.server_token_cache_seconds = 30
    c.RedspotSpawnerMixin.collaboration_groups = ["vision"]
    alice = RedspotLocalSpawner(user=hub_user("alice", groups=("vision",)),
                                hub=stand_in_hub(), config=c)
    assert "--HubOAuth.cache_max_age=30" in alice.get_args()
    # real-time collaboration where guests may come (vision may invite), off elsewhere
    assert "--YDocExtension.disable_rtc=True" not in alice.get_args()
    carol = RedspotLocalSpawner(user=hub_user("carol", groups=("nlp",)), hub=stand_in_hub(),
                                config=c)
    assert "--YDocExtension.disable_rtc=True" in carol.get_args()
    plain = RedspotLocalSpawner(user=hub_user("alice"), hub=stand_in_hub(), config=Config())
    assert not any("cache_max_age" in a for a in plain.get_args())
    assert "--YDocExtension.disable_rtc=True" in plain.get_args()
