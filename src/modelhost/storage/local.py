"""The default object store: ``s3://bucket/key`` is the file ``<root>/bucket/key``.

Writes go to ``<root>/.tmp/`` first and are renamed into place, so a reader never sees a
half-written object. Keys that could escape the root (``..``, absolute parts) are refused.
A write creates its bucket when missing (as SeaweedFS does for admin identities).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from modelhost.storage import InvalidKey, NoSuchBucket, NoSuchKey, ObjectInfo, StorageError

_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_CHUNK = 1024 * 1024


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- reads ---------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        path = self._path(bucket, key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return ObjectInfo(key, st.st_size, _token(st))

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        path = self._existing(bucket, key)
        try:
            return path.open("rb")
        except OSError as exc:
            raise StorageError(f"cannot read s3://{bucket}/{key}: {exc}") from exc

    def download(self, bucket: str, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open_read(bucket, key) as src:
            _write_atomically(src, dest, dest.parent)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._bucket_dir(bucket)
        if not base.is_dir():
            raise NoSuchBucket(f"the bucket {bucket!r} does not exist")
        folder = prefix.rpartition("/")[0]
        start = base.joinpath(*_key_parts(folder)) if folder else base
        found = [info for info in _walk(base, start) if info.key.startswith(prefix)]
        found.sort(key=lambda info: info.key.encode())
        yield from found

    # --- writes --------------------------------------------------------------------------

    def upload_file(self, src: Path, bucket: str, key: str) -> None:
        with Path(src).open("rb") as fh:
            self._put(bucket, key, fh)

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._put(bucket, key, io.BytesIO(data))

    def delete(self, bucket: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._path(bucket, key).unlink()

    def ensure_bucket(self, bucket: str) -> None:
        self._bucket_dir(bucket).mkdir(parents=True, exist_ok=True)

    # --- helpers -------------------------------------------------------------------------

    def _put(self, bucket: str, key: str, src: BinaryIO) -> None:
        path = self._path(bucket, key)
        tmp_dir = self.root / ".tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(src, path, tmp_dir)
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise InvalidKey(f"s3://{bucket}/{key} collides with another object: {exc}") from exc

    def _existing(self, bucket: str, key: str) -> Path:
        path = self._path(bucket, key)
        if path.is_file():
            return path
        if not self._bucket_dir(bucket).is_dir():
            raise NoSuchBucket(f"the bucket {bucket!r} does not exist")
        raise NoSuchKey(f"the object s3://{bucket}/{key} does not exist")

    def _bucket_dir(self, bucket: str) -> Path:
        if not _BUCKET.fullmatch(bucket):
            raise InvalidKey(f"invalid bucket name {bucket!r}")
        return self.root / bucket

    def _path(self, bucket: str, key: str) -> Path:
        return self._bucket_dir(bucket).joinpath(*_key_parts(key))


def _key_parts(key: str) -> list[str]:
    """The path components of ``key``; refuses anything that is not a plain relative path."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\0" in key:
        raise InvalidKey(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidKey(f"invalid object key {key!r}: empty, '.' or '..' path component")
    return parts


def _token(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


def _walk(base: Path, start: Path) -> Iterator[ObjectInfo]:
    for dirpath, _dirs, files in os.walk(start):
        for name in files:
            path = Path(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                yield ObjectInfo(path.relative_to(base).as_posix(), st.st_size, _token(st))


def _write_atomically(src: BinaryIO, dest: Path, tmp_dir: Path) -> None:
    """Copy ``src`` into a temp file in ``tmp_dir``, fsync it, then rename it to ``dest``."""
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
