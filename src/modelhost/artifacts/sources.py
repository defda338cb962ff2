"""Where model data comes from: ``ModelDataUrl`` / ``ModelDataSource`` resolved to a source.

A source has a cheap ``fingerprint()`` (url + size + etag/mtime, no download) and either
``fetch()`` (an archive to extract) or ``populate()`` (files placed straight into the model
directory). Every failure is an :class:`ArtifactError` fit to show as a FailureReason.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from modelhost.artifacts.errors import ArtifactError, Budget
from modelhost.artifacts.files import copy_file, copy_tree, member_path
from modelhost.storage import ObjectInfo, ObjectStore, StorageError, parse_s3_url


class Source(ABC):
    url: str

    @abstractmethod
    def fingerprint(self) -> str: ...


class ArchiveSource(Source):
    @abstractmethod
    def fetch(self, work: Path) -> Path:
        """The archive as a local file (downloaded into ``work`` when remote)."""


class TreeSource(Source):
    @abstractmethod
    def populate(self, dest: Path, budget: Budget) -> None:
        """Place the model files into the existing directory ``dest``."""


# --- S3 ----------------------------------------------------------------------------------


class _S3Object:
    def __init__(self, store: ObjectStore, url: str) -> None:
        self.store = store
        self.url = url
        self.bucket, self.key = _s3_object(url)

    def fingerprint(self) -> str:
        try:
            info = self.store.head(self.bucket, self.key)
        except StorageError as exc:
            raise download_failed(self.url, exc) from exc
        if info is None:
            raise ArtifactError(
                f"Failed to download model data from {self.url}: NoSuchKey: the object does "
                "not exist"
            )
        return f"s3-object|{self.url}|{info.size}|{info.token}"

    def _download(self, dest: Path) -> None:
        try:
            self.store.download(self.bucket, self.key, dest)
        except StorageError as exc:
            raise download_failed(self.url, exc) from exc


class S3Archive(_S3Object, ArchiveSource):
    def fetch(self, work: Path) -> Path:
        self._download(work / "archive")
        return work / "archive"


class S3File(_S3Object, TreeSource):
    def populate(self, dest: Path, budget: Budget) -> None:
        budget.add_member()
        target = dest / PurePosixPath(self.key).name
        self._download(target)
        budget.add_bytes(target.stat().st_size)


class S3Prefix(TreeSource):
    def __init__(self, store: ObjectStore, url: str) -> None:
        self.store = store
        self.url = url
        self.bucket, prefix = parse_s3_url(url)
        # A key name prefix names a folder: "s3://b/models/m1" means "models/m1/".
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._objects: list[ObjectInfo] | None = None

    def fingerprint(self) -> str:
        listing = hashlib.sha256()
        for obj in self._list():
            listing.update(f"{obj.key}\0{obj.size}\0{obj.token}\n".encode())
        return f"s3-prefix|{self.url}|{listing.hexdigest()}"

    def populate(self, dest: Path, budget: Budget) -> None:
        for obj in self._list():
            rel = member_path(obj.key[len(self.prefix) :], self.url)
            if rel is None:
                continue
            budget.add_member()
            budget.add_bytes(obj.size)
            try:
                self.store.download(self.bucket, obj.key, dest.joinpath(*rel.parts))
            except StorageError as exc:
                raise download_failed(f"s3://{self.bucket}/{obj.key}", exc) from exc

    def _list(self) -> list[ObjectInfo]:
        if self._objects is None:
            try:
                found = self.store.list(self.bucket, self.prefix)
                self._objects = [obj for obj in found if not obj.key.endswith("/")]
            except StorageError as exc:
                raise download_failed(self.url, exc) from exc
            if not self._objects:
                raise ArtifactError(f"No S3 objects found under S3 URL {self.url}")
        return self._objects


# --- local paths (an extension: file:///abs/path or /abs/path) ---------------------------


class _LocalPath:
    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path

    def fingerprint(self) -> str:
        st = _stat(self.url, self.path)
        return f"local-file|{self.path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


class LocalArchive(_LocalPath, ArchiveSource):
    def fetch(self, work: Path) -> Path:
        return self.path


class LocalFile(_LocalPath, TreeSource):
    def populate(self, dest: Path, budget: Budget) -> None:
        _local_io(self.url, lambda: copy_file(self.path, dest / self.path.name, budget))


class LocalDir(_LocalPath, TreeSource):
    def fingerprint(self) -> str:
        if not self.path.is_dir():
            _stat(self.url, self.path)
            raise ArtifactError(f"Failed to read model data from {self.url}: not a directory")
        listing = hashlib.sha256()
        walk = os.walk(self.path, onerror=self._raise, followlinks=True)
        for dirpath, dirnames, filenames in walk:
            dirnames.sort()
            for name in sorted(filenames):
                st = _stat(self.url, Path(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), self.path)
                listing.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n".encode())
        return f"local-dir|{self.path}|{listing.hexdigest()}"

    def _raise(self, exc: OSError) -> None:
        raise ArtifactError(f"Failed to read model data from {self.url}: {exc}") from exc

    def populate(self, dest: Path, budget: Budget) -> None:
        _local_io(self.url, lambda: copy_tree(self.path, dest, budget))


class Empty(TreeSource):
    url = "(none)"

    def fingerprint(self) -> str:
        return "empty"

    def populate(self, dest: Path, budget: Budget) -> None:
        return None


# --- resolution --------------------------------------------------------------------------


def resolve(store: ObjectStore, url: str | None, data_source: Mapping[str, Any] | None) -> Source:
    if url and data_source is not None:
        raise ArtifactError("Specify either ModelDataUrl or ModelDataSource, not both")
    if data_source is not None:
        return _from_data_source(store, data_source)
    if url:
        return _from_url(store, url)
    return Empty()


def _from_url(store: ObjectStore, url: str) -> Source:
    if url.startswith("s3://"):
        return S3Archive(store, url)
    path = _local_path(url)
    if path.is_dir():
        return LocalDir(url, path)
    _stat(url, path)
    return LocalArchive(url, path)


def _from_data_source(store: ObjectStore, data_source: Mapping[str, Any]) -> Source:
    s3 = data_source.get("S3DataSource")
    if not isinstance(s3, Mapping) or not isinstance(s3.get("S3Uri"), str):
        raise ArtifactError("ModelDataSource needs S3DataSource with an S3Uri")
    uri, data_type = s3["S3Uri"], s3.get("S3DataType")
    compression = s3.get("CompressionType", "None")
    if (data_type, compression) == ("S3Object", "Gzip"):
        return _from_url(store, uri)
    if (data_type, compression) == ("S3Object", "None"):
        return S3File(store, uri) if uri.startswith("s3://") else LocalFile(uri, _local_path(uri))
    if (data_type, compression) == ("S3Prefix", "None"):
        return S3Prefix(store, uri) if uri.startswith("s3://") else LocalDir(uri, _local_path(uri))
    raise ArtifactError(
        f"Unsupported ModelDataSource: S3DataType {data_type!r} with CompressionType "
        f"{compression!r} (use S3Object with Gzip or None, or S3Prefix with None)"
    )


def _local_path(url: str) -> Path:
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ArtifactError(f"Unsupported model data URL {url}: file URLs must be local")
        path = unquote(parsed.path)
    else:
        path = url
    if not os.path.isabs(path):
        raise ArtifactError(
            f"Unsupported model data URL {url!r}: expected s3://bucket/key, file:///abs/path "
            "or an absolute path"
        )
    return Path(path)


def _s3_object(url: str) -> tuple[str, str]:
    bucket, key = parse_s3_url(url)
    if not key or key.endswith("/"):
        raise ArtifactError(f"Model data URL {url} names a prefix, not an object")
    return bucket, key


def _stat(url: str, path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise ArtifactError(f"Failed to read model data from {url}: {exc.strerror}") from exc


def _local_io(url: str, action: Callable[[], None]) -> None:
    try:
        action()
    except OSError as exc:
        raise ArtifactError(f"Failed to read model data from {url}: {exc}") from exc


def download_failed(url: str, exc: StorageError) -> ArtifactError:
    return ArtifactError(f"Failed to download model data from {url}: {exc}")
