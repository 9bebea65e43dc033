"""Redspot's own accounts: hashing, approval, and the file's privacy."""

import stat

import pytest

from redspot.hub.userstore import UserStore, UserStoreError, check_password, hash_password


def test_hashes_are_salted_and_verify():
    a, b = hash_password("correct horse"), hash_password("correct horse")
    assert a != b and a.startswith("scrypt$")
    assert check_password("correct horse", a) and not check_password("wrong horse", a)
    assert not check_password("x", "garbage")


def test_store_adds_verifies_and_approves(tmp_path):
    store = UserStore(tmp_path / "hub" / "users.sqlite")
    store.add("alice", "alice-password")
    store.add("bob", "bob-password", approved=False)
    assert stat.S_IMODE((tmp_path / "hub" / "users.sqlite").stat().st_mode) == 0o600
    assert store.verify("alice", "alice-password").approved
    assert store.verify("alice", "bob-password") is None
    assert store.verify("nobody", "alice-password") is None
    assert not store.verify("bob", "bob-password").approved
    store.approve("bob")
    assert store.verify("bob", "bob-password").approved
    store.set_password("bob", "new-password")
    assert store.verify("bob", "new-password") and not store.verify("bob", "bob-password")
    assert [a.name for a in store.list()] == ["alice", "bob"]
    store.remove("bob")
    assert store.get("bob") is None


@pytest.mark.parametrize("name, password, message", [
    ("alice", "short", "8 to 1024 characters"),
    ("../etc", "long-enough", "is not allowed"),
    ("Alice", "long-enough", "is not allowed"),
    ("", "long-enough", "is not allowed"),
])
def test_store_refuses_bad_names_and_passwords(tmp_path, name, password, message):
    with pytest.raises(UserStoreError, match=message):
        UserStore(tmp_path / "u.sqlite").add(name, password)


def test_store_refuses_duplicates_and_unknown_users(tmp_path):
    store = UserStore(tmp_path / "u.sqlite")
    store.add("alice", "alice-password")
    with pytest.raises(UserStoreError, match="exists already"):
        store.add("alice", "other-password")
    for call in (store.approve, store.remove):
        with pytest.raises(UserStoreError, match="no such user"):
            call("nobody")


def test_an_account_without_a_password_signs_in_once_one_is_set(tmp_path):
    store = UserStore(tmp_path / "users.sqlite")
    store.add("gina", None)  # added on the hub's admin page
    assert store.get("gina").has_password is False
    assert [a.has_password for a in store.list()] == [False]
    for attempt in ("", "anything-at-all"):
        assert store.verify("gina", attempt) is None
    store.set_password("gina", "gina-password-1")
    assert store.get("gina").has_password is True
    assert store.verify("gina", "gina-password-1").name == "gina"
