"""Reading inputs and writing results for asynchronous inference, on the platform's object
store (``s3://``) or, as modelhost's extension, local files (``file:///abs`` or ``/abs``).

Writes never expose a partial object: the object store's writes are atomic, and a local file
is written beside its place and renamed into it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from modelhost.storage import ObjectStore, StorageError, parse_s3_url


class ObjectIOError(Exception):
    """An input could not be read or a result could not be written; ``str()`` says why."""


def _local(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if url.startswith("/"):
        return Path(url)
    return None


def _s3(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ObjectIOError(f"unsupported location {url}: use s3://bucket/key or a local path")
    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        raise ObjectIOError(str(exc)) from exc
    if not key:
        raise ObjectIOError(f"{url} names a bucket, not an object")
    return bucket, key


def read_input(store: ObjectStore, url: str, limit: int) -> bytes:
    """The whole input object, at most ``limit`` bytes."""
    path = _local(url)
    try:
        if path is not None:
            with path.open("rb") as f:
                data = f.read(limit + 1)
        else:
            bucket, key = _s3(url)
            with store.open_read(bucket, key) as f:
                data = f.read(limit + 1)
    except FileNotFoundError:
        raise ObjectIOError(f"The input {url} does not exist.") from None
    except (OSError, StorageError) as exc:
        raise ObjectIOError(f"The input {url} could not be read: {exc}") from None
    if len(data) > limit:
        raise ObjectIOError(f"The input {url} is larger than the limit of {limit} bytes.")
    return data


def exists(store: ObjectStore, url: str) -> bool:
    path = _local(url)
    try:
        if path is not None:
            return path.is_file()
        bucket, key = _s3(url)
        return store.head(bucket, key) is not None
    except (OSError, StorageError, ObjectIOError):
        return False


def write_object(store: ObjectStore, url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole: the object is absent until it is complete."""
    path = _local(url)
    try:
        if path is None:
            bucket, key = _s3(url)
            store.put_bytes(bucket, key, data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, StorageError) as exc:
        raise ObjectIOError(f"{url} could not be written: {exc}") from None
