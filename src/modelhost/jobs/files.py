"""Where a transform job's files come from and where its outputs go.

Inputs: an S3Prefix (every object under it) or a ManifestFile, over ``s3://`` (the platform's
object store) or, as modelhost's extension, ``file://`` URLs and absolute paths. Each input
file has a relative name: its key relative to the prefix (up to the prefix's last ``/``), or
its manifest entry; its output is ``<S3OutputPath>/<relative name>.out``.

Outputs are written to a temporary file and published whole (an atomic rename on a local
path, one upload to the object store), so no partial output is ever visible.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from modelhost.storage import NoSuchBucket, ObjectStore, StorageError, parse_s3_url


class NoInputs(Exception):
    """The input names no objects; the message is SageMaker's."""


@dataclass(frozen=True, slots=True)
class InputFile:
    rel: str  # relative name: the output is <output path>/<rel>.out
    uri: str  # for messages
    opener: Callable[[], BinaryIO]

    def open(self, gzipped: bool) -> BinaryIO:
        raw = self.opener()
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw


def is_local(uri: str) -> bool:
    return uri.startswith(("file://", "/"))


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def no_objects(uri: str) -> NoInputs:
    return NoInputs(
        f'No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure '
        "that the bucket exists in the selected region, and that objects exist under that "
        "S3 prefix."
    )


def list_inputs(store: ObjectStore, uri: str, manifest: bool) -> list[InputFile]:
    """Every input file, in key order; NoInputs when there is none."""
    try:
        files = _manifest(store, uri) if manifest else _prefix(store, uri)
    except NoSuchBucket:
        raise no_objects(uri) from None
    except (StorageError, OSError, ValueError) as exc:
        raise NoInputs(f'Could not read the input "{uri}": {exc}') from exc
    if not files:
        raise no_objects(uri)
    return files


def check_inputs(store: ObjectStore, uri: str, manifest: bool) -> None:
    """NoInputs unless the input names at least one object (CreateTransformJob's check: a
    large S3 prefix is not listed to its end)."""
    if manifest or is_local(uri):
        list_inputs(store, uri, manifest)
        return
    try:
        bucket, prefix = parse_s3_url(uri)
        found = any(not info.key.endswith("/") for info in store.list(bucket, prefix))
    except NoSuchBucket:
        found = False
    except (StorageError, ValueError) as exc:
        raise NoInputs(f'Could not read the input "{uri}": {exc}') from exc
    if not found:
        raise no_objects(uri)


def _prefix(store: ObjectStore, uri: str) -> list[InputFile]:
    if is_local(uri):
        return _local_prefix(uri)
    bucket, prefix = parse_s3_url(uri)
    base = prefix[: prefix.rfind("/") + 1]
    return [
        _s3_file(store, bucket, info.key, info.key[len(base) :])
        for info in store.list(bucket, prefix)
        if not info.key.endswith("/")
    ]


def _local_prefix(uri: str) -> list[InputFile]:
    text = str(local_path(uri))
    path = Path(text)
    if path.is_file():
        return [_local_file(path, path.name)]
    found: Iterable[Path]
    if path.is_dir():
        base, found = path, path.rglob("*")
    else:
        base = path.parent
        found = (p for p in base.rglob("*") if str(p).startswith(text)) if base.is_dir() else ()
    files = sorted(p for p in found if p.is_file() and not p.name.startswith(".mh-tmp-"))
    return [_local_file(p, p.relative_to(base).as_posix()) for p in files]


def _manifest(store: ObjectStore, uri: str) -> list[InputFile]:
    with _open(store, uri) as f:
        entries = json.loads(f.read())
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ValueError('a manifest is a JSON list: [{"prefix": "s3://bucket/prefix/"}, ...]')
    prefix = str(entries[0].get("prefix", ""))
    out = []
    for entry in entries[1:]:
        if not isinstance(entry, str):
            raise ValueError(f"manifest entries after the prefix are keys; got {entry!r}")
        full = prefix + entry
        if is_local(full):
            out.append(_local_file(local_path(full), entry))
        else:
            bucket, key = parse_s3_url(full)
            if store.head(bucket, key) is None:
                raise ValueError(f"the manifest names {full}, which does not exist")
            out.append(_s3_file(store, bucket, key, entry))
    return out


def _open(store: ObjectStore, uri: str) -> BinaryIO:
    if is_local(uri):
        return local_path(uri).open("rb")
    bucket, key = parse_s3_url(uri)
    return store.open_read(bucket, key)


def _s3_file(store: ObjectStore, bucket: str, key: str, rel: str) -> InputFile:
    return InputFile(rel, f"s3://{bucket}/{key}", lambda: store.open_read(bucket, key))


def _local_file(path: Path, rel: str) -> InputFile:
    return InputFile(rel, str(path), lambda: path.open("rb"))


class Outputs:
    """The job's output location: temporary files, whole publication, deletion."""

    def __init__(self, store: ObjectStore, output_path: str, work_dir: Path) -> None:
        self.store = store
        self.output_path = output_path
        self.work_dir = work_dir  # the job's own: its name is the job's
        self._temp_prefix = f".mh-tmp-{work_dir.name}-"

    def clean_temps(self) -> None:
        """Remove temporary outputs a killed server left in a local output directory (only
        this job's: another job may be writing beside it)."""
        if not is_local(self.output_path):
            return
        root = local_path(self.output_path)
        if root.is_dir():
            for stale in root.rglob(f"{self._temp_prefix}*"):
                stale.unlink(missing_ok=True)

    def _local_dest(self, rel: str) -> Path:
        return local_path(self.output_path) / f"{rel}.out"

    def _s3_dest(self, rel: str) -> tuple[str, str]:
        bucket, prefix = parse_s3_url(self.output_path)
        base = prefix.rstrip("/")
        return bucket, f"{base}/{rel}.out" if base else f"{rel}.out"

    def url(self, rel: str) -> str:
        if is_local(self.output_path):
            return str(self._local_dest(rel))
        bucket, key = self._s3_dest(rel)
        return f"s3://{bucket}/{key}"

    def temp(self, rel: str) -> Path:
        """Where the output of ``rel`` is written until it is published."""
        if is_local(self.output_path):
            dest = self._local_dest(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            return dest.parent / f"{self._temp_prefix}{uuid.uuid4().hex}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / f"out-{uuid.uuid4().hex}"

    def publish(self, rel: str, temp: Path) -> None:
        if is_local(self.output_path):
            os.replace(temp, self._local_dest(rel))
            return
        bucket, key = self._s3_dest(rel)
        try:
            self.store.ensure_bucket(bucket)
            self.store.upload_file(temp, bucket, key)
        finally:
            temp.unlink(missing_ok=True)

    def delete(self, rel: str) -> None:
        if is_local(self.output_path):
            self._local_dest(rel).unlink(missing_ok=True)
            return
        bucket, key = self._s3_dest(rel)
        self.store.delete(bucket, key)
