"""Safe names and the storage layout: no username can climb out of its folder."""

import re

import pytest

from redspot.spawner.storage import Layout, safe_name, system_account_name


@pytest.mark.parametrize("name", ["alice", "bob2", "a-b"])
def test_plain_names_stay_as_they_are(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("name", [
    "Alice", "alice.smith@corp.com", "../../etc", "..", ".", "a/b", "名前", "x" * 200, "-a-",
    "public",
])
def test_odd_names_become_safe_and_unique(name):
    safe = safe_name(name, reserved=("public",))
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", safe), safe
    assert len(safe) <= 63
    assert "/" not in safe and ".." not in safe
    assert safe != name


def test_different_names_never_share_a_safe_name():
    names = ["alice.smith", "alice-smith", "alice_smith", "Alice.Smith", "alice smith"]
    assert len({safe_name(n) for n in names}) == len(names)


def test_account_names_fit_useradd():
    for name in ["alice", "a" * 100, "Zoë@x", "1st"]:
        account = system_account_name(name)
        assert re.fullmatch(r"[a-z][-a-z0-9_]*", account) and len(account) <= 32
    assert system_account_name("alice") == "redspot-alice"
    with pytest.raises(ValueError, match="must start with a letter"):
        system_account_name("alice", prefix="1-")
    assert system_account_name("alice", prefix="") == "alice"
    with pytest.raises(ValueError, match="set spawner.account_prefix"):
        system_account_name("1st", prefix="")


def test_layout():
    layout = Layout("Alice.S", groups=("gpu-team", "public"))
    assert str(layout.home).startswith("home/alice-s-")
    assert str(layout.public) == "shared/public"
    dirs = {g: str(p) for g, p in layout.group_dirs().items()}
    assert dirs["gpu-team"] == "shared/gpu-team"
    assert dirs["public"] != "shared/public"  # a group cannot take the public folder
