"""The keys file and a running server's view of it (KeyRing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelhost.auth.keys import KeyFileError, KeyRing, add_key, read_keys, revoke_key
from modelhost.auth.policy import Policy


def test_create_list_revoke(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = os.umask(0o022)
    try:
        a = add_key(path, "alice", Policy.parse("admin"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert a.access_key_id.startswith("MHK") and len(a.access_key_id) == 20
    assert len(a.secret) == 40
    assert a.secret not in repr(a)  # never in logs or tracebacks
    b = add_key(path, "ci", Policy.parse("invoke", ("prod-*",)))
    assert [(k.name, k.policy) for k in read_keys(path)] == [
        ("alice", Policy("admin")),
        ("ci", Policy("invoke", ("prod-*",))),
    ]
    with pytest.raises(KeyFileError, match="exists"):
        add_key(path, "alice", Policy.parse("read-only"))
    assert revoke_key(path, b.access_key_id).name == "ci"  # by id too
    with pytest.raises(KeyFileError, match="no key named ci"):
        revoke_key(path, "ci")
    assert [k.name for k in read_keys(path)] == ["alice"]


def test_keyring_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path, check_s=0.0)  # look at every call
    assert not ring.any()
    key = add_key(path, "alice", Policy.parse("admin"))
    assert ring.lookup(key.access_key_id) == key
    revoke_key(path, "alice")
    assert ring.lookup(key.access_key_id) is None
    assert not ring.any()


def test_keyring_looks_at_the_file_only_every_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = KeyRing(path, check_s=3600.0)
    key = add_key(path, "alice", Policy.parse("admin"))
    assert ring.lookup(key.access_key_id) is None  # not looked at yet: no I/O per request
    ring.refresh(force=True)
    assert ring.lookup(key.access_key_id) == key


def test_a_broken_keys_file_refuses_everyone(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    ring = KeyRing(path, check_s=0.0)
    assert ring.any()  # auth stays required
    assert ring.lookup("anything") is None
