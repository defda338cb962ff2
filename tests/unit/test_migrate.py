"""Objects of the old local store move into the platform's store once, verified, and what
cannot move stays where it is."""

from __future__ import annotations

from pathlib import Path

from modelhost.storage.local import LocalObjectStore
from modelhost.storage.migrate import move_local_objects


def test_objects_move_and_the_old_tree_empties(tmp_path: Path) -> None:
    old = tmp_path / "objects"
    (old / "b1" / "a" / "b").mkdir(parents=True)
    (old / "b1" / "a" / "b" / "model.tar.gz").write_bytes(b"m")
    (old / "b2").mkdir()
    (old / "b2" / "data.csv").write_bytes(b"1,2\n")
    (old / ".tmp").mkdir()
    (old / ".tmp" / ".part-x").write_bytes(b"half")
    target = LocalObjectStore(tmp_path / "new")
    moved = move_local_objects(old, target)
    assert (moved.objects, moved.bytes, moved.left) == (2, 5, [])
    assert target.open_read("b1", "a/b/model.tar.gz").read() == b"m"
    assert target.open_read("b2", "data.csv").read() == b"1,2\n"
    assert not (old / "b1").exists() and not (old / "b2").exists()
    assert move_local_objects(old, target).objects == 0  # a second run finds nothing


def test_what_cannot_move_stays(tmp_path: Path) -> None:
    old = tmp_path / "objects"
    (old / "bad bucket").mkdir(parents=True)  # no valid bucket name
    (old / "bad bucket" / "k").write_bytes(b"x")
    moved = move_local_objects(old, LocalObjectStore(tmp_path / "new"))
    assert moved.objects == 0 and len(moved.left) == 1
    assert (old / "bad bucket" / "k").read_bytes() == b"x"
