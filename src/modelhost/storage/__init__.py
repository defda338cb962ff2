"""Object store: ``s3://bucket/key`` objects in a local directory or on an S3-compatible server.

Both stores offer the same small interface (:class:`ObjectStore`): streaming reads, writes that
never expose a half-written object, listing sorted by key. Failures raise :class:`StorageError`
(``NoSuchKey``, ``NoSuchBucket``, ...) whose ``str()`` reads ``"Code: message"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    """One object. ``token`` changes whenever the content may have changed: the ETag on S3,
    an mtime/size/inode token in the local store."""

    key: str
    size: int
    token: str


class StorageError(Exception):
    code = "StorageError"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class NoSuchKey(StorageError):
    code = "NoSuchKey"


class NoSuchBucket(StorageError):
    code = "NoSuchBucket"


class InvalidKey(StorageError):
    code = "InvalidKey"


class ObjectStore(Protocol):
    def head(self, bucket: str, key: str) -> ObjectInfo | None: ...

    def download(self, bucket: str, key: str, dest: Path) -> None: ...

    def open_read(self, bucket: str, key: str) -> BinaryIO: ...

    def upload_file(self, src: Path, bucket: str, key: str) -> None: ...

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, bucket: str, key: str) -> None: ...

    def ensure_bucket(self, bucket: str) -> None: ...


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "s3":
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"s3 URL has no bucket: {url!r}")
    return bucket, key


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def object_store(
    objects_dir: Path,
    endpoint_url: str | None,
    region: str,
    credentials: tuple[str, str] | None = None,
) -> ObjectStore:
    """The local directory store, or an S3-compatible server when ``endpoint_url`` is set
    (signing with ``credentials``, an access key id and secret, else the AWS chain's)."""
    if endpoint_url:
        from modelhost.storage.s3 import S3ObjectStore

        return S3ObjectStore(endpoint_url, region, credentials)
    from modelhost.storage.local import LocalObjectStore

    return LocalObjectStore(objects_dir)


__all__ = [
    "InvalidKey",
    "NoSuchBucket",
    "NoSuchKey",
    "ObjectInfo",
    "ObjectStore",
    "StorageError",
    "object_store",
    "parse_s3_url",
    "s3_url",
]
