"""A content-addressed cache of model directories.

Layout under ``cache_dir``::

    models/<sha256>/      a finished model directory (what SageMaker mounts at /opt/ml/model)
    index/<sha256>.json   source fingerprint (url + size + etag/mtime) -> content sha256
    tmp/                  downloads and extractions in progress

A model directory is built in ``tmp/`` and renamed into ``models/`` in one step, so a crash
never leaves a half-extracted entry. The sha256 is that of the archive bytes for archives and
of the file tree otherwise. An unchanged source is found through the index without a download.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelhost.artifacts.errors import ArtifactError, Budget
from modelhost.artifacts.files import extract_archive, file_digest, tree_digest
from modelhost.artifacts.sources import ArchiveSource, Source, TreeSource, resolve
from modelhost.storage import ObjectStore

DEFAULT_MAX_MEMBERS = 100_000
_STALE_TMP_S = 24 * 3600


class ArtifactCache:
    def __init__(
        self,
        cache_dir: Path,
        store: ObjectStore,
        max_bytes: int,
        max_members: int = DEFAULT_MAX_MEMBERS,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.store = store
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.models_dir = self.cache_dir / "models"
        self.index_dir = self.cache_dir / "index"
        self.tmp_dir = self.cache_dir / "tmp"
        for folder in (self.models_dir, self.index_dir, self.tmp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        _remove_stale(self.tmp_dir)

    def materialize(
        self, model_data_url: str | None = None, model_data_source: Mapping[str, Any] | None = None
    ) -> Path:
        """The directory holding the model; downloads and extracts only on a cache miss."""
        source = resolve(self.store, model_data_url, model_data_source)
        fingerprint = source.fingerprint()
        with self._lock_for(fingerprint):
            cached = self._lookup(fingerprint)
            if cached is not None:
                return cached
            sha = self._build(source)
            self._remember(fingerprint, sha)
            return self.models_dir / sha

    # --- building ------------------------------------------------------------------------

    def _build(self, source: Source) -> str:
        work = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="build-"))
        try:
            return self._build_in(source, work)
        except OSError as exc:
            raise ArtifactError(f"Failed to prepare model data {source.url}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _build_in(self, source: Source, work: Path) -> str:
        budget = Budget(source.url, self.max_bytes, self.max_members)
        staged = work / "model"
        if isinstance(source, ArchiveSource):
            archive = source.fetch(work)
            sha = file_digest(archive)
            if (self.models_dir / sha).is_dir():
                return sha
            extract_archive(archive, staged, source.url, budget)
        else:
            assert isinstance(source, TreeSource)
            staged.mkdir()
            source.populate(staged, budget)
            sha = tree_digest(staged)
        self._publish(staged, sha)
        return sha

    def _publish(self, staged: Path, sha: str) -> None:
        target = self.models_dir / sha
        staged.chmod(0o755)
        try:
            os.rename(staged, target)
        except OSError:
            if not target.is_dir():  # not "another builder got there first"
                raise

    # --- index ---------------------------------------------------------------------------

    def _lookup(self, fingerprint: str) -> Path | None:
        try:
            entry = json.loads(self._index_path(fingerprint).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint:
            return None
        model_dir = self.models_dir / str(entry.get("sha", ""))
        return model_dir if entry.get("sha") and model_dir.is_dir() else None

    def _remember(self, fingerprint: str, sha: str) -> None:
        entry = {"fingerprint": fingerprint, "sha": sha, "created": time.time()}
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="index-")
        with os.fdopen(fd, "w") as fh:
            json.dump(entry, fh)
        os.replace(tmp, self._index_path(fingerprint))

    def _index_path(self, fingerprint: str) -> Path:
        return self.index_dir / f"{hashlib.sha256(fingerprint.encode()).hexdigest()}.json"

    def _lock_for(self, fingerprint: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(fingerprint, threading.Lock())


def _remove_stale(tmp_dir: Path) -> None:
    """Leftovers of builds that crashed more than a day ago."""
    cutoff = time.time() - _STALE_TMP_S
    for entry in tmp_dir.iterdir():
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < cutoff:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()
