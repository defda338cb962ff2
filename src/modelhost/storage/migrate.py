"""Moving the objects of the old local directory store (``<data-dir>/objects/<bucket>/<key>``)
into the object store a server now uses, so data directories from before the embedded S3
server keep every object.

Each file is uploaded, checked (its size read back) and only then removed; what cannot be moved
(a directory name S3 refuses as a bucket, a failed upload) stays where it is and is named in
the log. Running it again moves whatever is left, so it also picks up files written there by
an older client while no server ran.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from modelhost.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)


@dataclass
class Moved:
    objects: int = 0
    bytes: int = 0
    left: list[str] = field(default_factory=list)


def move_local_objects(objects_dir: Path, store: ObjectStore) -> Moved:
    moved = Moved()
    if not objects_dir.is_dir():
        return moved
    for bucket_dir in sorted(objects_dir.iterdir()):
        if bucket_dir.is_dir() and not bucket_dir.name.startswith("."):
            _move_bucket(bucket_dir, store, moved)
    _remove_empty_dirs(objects_dir)
    if moved.objects:
        log.warning(
            "moved %d objects (%.1f MB) from the old local store %s into the object store",
            moved.objects,
            moved.bytes / 1e6,
            objects_dir,
        )
    if moved.left:
        log.error(
            "could not move %d objects from %s (they stay there): %s",
            len(moved.left),
            objects_dir,
            "; ".join(moved.left[:10]),
        )
    return moved


def _move_bucket(bucket_dir: Path, store: ObjectStore, moved: Moved) -> None:
    bucket = bucket_dir.name
    files = sorted(p for p in bucket_dir.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        return
    try:
        store.ensure_bucket(bucket)
    except StorageError as exc:
        moved.left.append(f"s3://{bucket}/ ({len(files)} objects): {exc}")
        return
    for path in files:
        key = path.relative_to(bucket_dir).as_posix()
        size = path.stat().st_size
        try:
            store.upload_file(path, bucket, key)
            info = store.head(bucket, key)
        except StorageError as exc:
            moved.left.append(f"s3://{bucket}/{key}: {exc}")
            continue
        if info is None or info.size != size:
            moved.left.append(f"s3://{bucket}/{key}: not found with its size after the upload")
            continue
        path.unlink()
        moved.objects += 1
        moved.bytes += size


def _remove_empty_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if Path(dirpath) != root:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only succeeds when empty
