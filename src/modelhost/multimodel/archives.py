"""A TargetModel as a local model directory: ``<prefix>/<target>`` streamed from the object
store (or read from a local file) and extracted as it arrives, with no copy of the archive and
no fsync: a multi-model miss is on a caller's path. The directories live under
``<cache_dir>/multimodel/`` (emptied when the server starts: a cache, never the truth), keyed
by the object's fingerprint (URL, size, ETag or mtime), so a changed object is fetched again;
past ``limit_bytes`` the least recently used ones not loaded anywhere are removed."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from modelhost.artifacts.errors import ArtifactError, Budget
from modelhost.artifacts.files import extract_stream, tree_size
from modelhost.errors import ValidationError
from modelhost.storage import ObjectStore, StorageError, parse_s3_url

MAX_MEMBERS = 100_000


def archives_root(cache_dir: Path) -> Path:
    """Where the extracted TargetModels live (mounted into multi-model containers)."""
    return cache_dir / "multimodel"


class UnknownModel(ValidationError):
    """No object at ``<prefix>/<target>`` (SageMaker's answer, a ValidationError)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    size: int
    seconds: float  # downloading and extracting (0 when it was on disk already)


def model_url(prefix: str, target: str) -> str:
    """``<prefix>/<target>``; ValidationError for a target that would leave the prefix."""
    parts = PurePosixPath(target).parts
    if not target or target.startswith("/") or ".." in parts or "\\" in target:
        raise ValidationError(
            f"TargetModel {target!r} must be a path relative to the endpoint's model prefix."
        )
    return f"{prefix.rstrip('/')}/{target}"


def unknown(url: str) -> UnknownModel:
    if url.startswith("s3://"):
        bucket, key = parse_s3_url(url)
        where = f"(bucket: {bucket}, key: {key})"
    else:
        where = f" from {url}"
    return UnknownModel(
        f"Failed to download model data{where}. Please ensure that there is an object located "
        "at the URL and that the role passed to CreateModel has permissions to download the "
        "model."
    )


class Archives:
    """Extracted TargetModels on disk. ``fetch`` blocks (run it in a thread); ``in_use`` tells
    whether a directory is loaded on some instance (those are never removed)."""

    def __init__(
        self, store: ObjectStore, cache_dir: Path, limit_bytes: int, max_bytes: int
    ) -> None:
        self.store = store
        self.root = archives_root(cache_dir)
        shutil.rmtree(self.root, ignore_errors=True)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True)
        self.limit = limit_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._dirs: OrderedDict[Path, int] = OrderedDict()  # size, least recently used first
        self.removed = 0

    def fetch(self, url: str, in_use: Callable[[Path], bool] = lambda _p: False) -> Fetched:
        started = time.perf_counter()
        local = None if url.startswith("s3://") else Path(url.removeprefix("file://"))
        if local is not None and local.is_dir():  # an extracted model directory already
            return Fetched(local, tree_size(local), 0.0)
        fingerprint = self._fingerprint(url, local)
        path = self.root / hashlib.sha256(fingerprint.encode()).hexdigest()
        built = False
        if not path.is_dir():
            with self._open(url, local) as src:
                work = Path(tempfile.mkdtemp(dir=self.tmp))
                try:
                    budget = Budget(url, self.max_bytes, MAX_MEMBERS)
                    extract_stream(src, work / "model", url, budget)
                    with contextlib.suppress(OSError):  # another fetch got there first
                        os.rename(work / "model", path)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            built = True
        with self._lock:
            size = self._dirs.pop(path, None)
            if size is None:
                size = tree_size(path)
            self._dirs[path] = size
        self._trim(in_use)
        return Fetched(path, size, time.perf_counter() - started if built else 0.0)

    def _fingerprint(self, url: str, local: Path | None) -> str:
        if local is not None:
            try:
                st = local.stat()
            except FileNotFoundError:
                raise unknown(url) from None
            except OSError as exc:
                raise ArtifactError(f"Failed to read model data from {url}: {exc}") from exc
            return f"file|{local}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        bucket, key = parse_s3_url(url)
        try:
            info = self.store.head(bucket, key)
        except StorageError as exc:
            raise ArtifactError(f"Failed to download model data from {url}: {exc}") from exc
        if info is None:
            raise unknown(url)
        return f"s3|{url}|{info.size}|{info.token}"

    @contextlib.contextmanager
    def _open(self, url: str, local: Path | None) -> Iterator[IO[bytes]]:
        try:
            if local is not None:
                src: IO[bytes] = local.open("rb")
            else:
                src = self.store.open_read(*parse_s3_url(url))
        except (StorageError, OSError) as exc:
            raise ArtifactError(f"Failed to download model data from {url}: {exc}") from exc
        with src:
            yield src

    def _trim(self, in_use: Callable[[Path], bool]) -> None:
        with self._lock:
            total = sum(self._dirs.values())
            doomed = []
            for path, size in self._dirs.items():
                if total <= self.limit:
                    break
                if not in_use(path):
                    doomed.append(path)
                    total -= size
            for path in doomed:
                del self._dirs[path]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
            self.removed += 1

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return sum(self._dirs.values())
