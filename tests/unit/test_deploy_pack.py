from __future__ import annotations

import tarfile
from pathlib import Path

from modelhost.cli.deploy import pack


def test_pack_follows_symlinks_and_skips_pycache(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "weights.bin").write_bytes(b"w")
    model = tmp_path / "model"
    (model / "code" / "__pycache__").mkdir(parents=True)
    (model / "code" / "inference.py").write_text("x = 1\n")
    (model / "code" / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"")
    (model / "model.joblib").symlink_to(shared / "weights.bin")
    (model / "assets").symlink_to(shared, target_is_directory=True)
    with tarfile.open(pack(model, tmp_path / "model.tar.gz")) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {
        "code",
        "code/inference.py",
        "model.joblib",
        "assets",
        "assets/weights.bin",
    }
    assert all(not (m.issym() or m.islnk()) for m in members.values())
