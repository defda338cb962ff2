"""A TargetModel as a local model directory: ``<prefix>/<target>`` downloaded and extracted
through the artifact cache (artifacts/), and the extracted directories this endpoint kind made
kept on disk up to a size limit, least recently used first out."""

from __future__ import annotations

import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelhost.artifacts import ArtifactCache, ArtifactError
from modelhost.artifacts.files import tree_size
from modelhost.errors import ValidationError
from modelhost.storage import StorageError, parse_s3_url


class UnknownModel(ValidationError):
    """No object at ``<prefix>/<target>`` (SageMaker's answer, a ValidationError)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    path: Path
    size: int
    seconds: float  # downloading and extracting (0 when the cache had it)


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
        where = f"from {url}"
    return UnknownModel(
        f"Failed to download model data{where}. Please ensure that there is an object located "
        "at the URL and that the role passed to CreateModel has permissions to download the "
        "model."
    )


class Archives:
    """Extracted TargetModels on disk. ``fetch`` blocks (run it in a thread); ``in_use`` tells
    whether a directory is loaded on some instance (those are never removed)."""

    def __init__(self, cache: ArtifactCache, limit_bytes: int) -> None:
        self.cache = cache
        self.limit = limit_bytes
        self._lock = threading.Lock()
        self._mine: OrderedDict[Path, int] = OrderedDict()  # made here: size, LRU order
        self.removed = 0

    def fetch(self, url: str, in_use: Callable[[Path], bool] = lambda _p: False) -> Fetched:
        started = time.perf_counter()
        try:
            known = self._cached(url)
            path = self.cache.materialize(url)
        except ArtifactError as exc:
            if not self._exists(url):
                raise unknown(url) from exc
            raise
        seconds = 0.0 if known else time.perf_counter() - started
        with self._lock:
            size = self._mine.pop(path, None)
            if size is None and not known:
                size = tree_size(path)
            if size is not None:
                self._mine[path] = size
        self._trim(in_use)
        return Fetched(path, size or 0, seconds)

    def _cached(self, url: str) -> bool:
        """Whether the cache has ``url`` extracted already (no download needed)."""
        try:
            return self.cache.lookup(url) is not None
        except (ArtifactError, OSError):
            return False

    def _exists(self, url: str) -> bool:
        if not url.startswith("s3://"):
            return Path(url.removeprefix("file://")).exists()
        bucket, key = parse_s3_url(url)
        try:
            return self.cache.store.head(bucket, key) is not None
        except StorageError:
            return True  # the store failed: not "no such model"

    def _trim(self, in_use: Callable[[Path], bool]) -> None:
        with self._lock:
            total = sum(self._mine.values())
            doomed = []
            for path, size in self._mine.items():
                if total <= self.limit:
                    break
                if not in_use(path):
                    doomed.append(path)
                    total -= size
            for path in doomed:
                del self._mine[path]
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)
            self.removed += 1

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return sum(self._mine.values())
