"""`SAGEMAKER_SUBMIT_DIRECTORY`: where the user's code (inference.py, requirements.txt, lib/) is.

- unset or empty: `<model_dir>/code`;
- `/opt/ml/model/...` (what the SageMaker SDK writes after repacking): that path under the model
  dir, wherever the platform put it;
- a local directory (`/path` or `file:///path`), used as it is; a local `*.tar.gz`, extracted;
- `s3://bucket/.../sourcedir.tar.gz`: downloaded from the platform's object store
  (`MODELHOST_OBJECTS_DIR`, or the S3-compatible server at `MODELHOST_S3_ENDPOINT_URL`, signing
  with `MODELHOST_S3_ACCESS_KEY_ID`/`MODELHOST_S3_SECRET_ACCESS_KEY` when set) and
  extracted safely (modelhost.artifacts' checks: no links, no absolute or escaping paths).

Archives are extracted once into `<cache>/sourcedir-<sha256 of the archive>` (renamed into place
when complete), so instances of the same code share one copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from modelhost.artifacts.errors import ArtifactError, Budget
from modelhost.artifacts.files import extract_archive, file_digest
from modelhost.storage import StorageError, object_store, parse_s3_url

SUBMIT_ENV = "SAGEMAKER_SUBMIT_DIRECTORY"
OBJECTS_ENV = "MODELHOST_OBJECTS_DIR"
S3_ENDPOINT_ENV = "MODELHOST_S3_ENDPOINT_URL"
S3_KEY_ENVS = ("MODELHOST_S3_ACCESS_KEY_ID", "MODELHOST_S3_SECRET_ACCESS_KEY")
CONTAINER_MODEL_DIR = "/opt/ml/model"
MAX_BYTES = 2 * 1024**3
MAX_MEMBERS = 100_000
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class SourceDirError(Exception):
    """The code directory cannot be made available; the message says why."""


def region(env: Mapping[str, str]) -> str:
    for name in ("SAGEMAKER_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        if env.get(name):
            return env[name]
    return "us-east-1"


def resolve_code_dir(env: Mapping[str, str], model_dir: Path, cache: Path) -> Path:
    """The code directory `SAGEMAKER_SUBMIT_DIRECTORY` names (it may not exist: no code)."""
    value = (env.get(SUBMIT_ENV) or "").strip()
    if not value:
        return model_dir / "code"
    if value.startswith("s3://"):
        return _from_s3(value, env, cache)
    local = Path(value.removeprefix("file://"))
    if local.is_relative_to(CONTAINER_MODEL_DIR):
        local = model_dir / local.relative_to(CONTAINER_MODEL_DIR)
    elif not local.is_absolute():
        local = model_dir / local
    if local.is_dir():
        return local
    if local.is_file() and local.name.endswith(ARCHIVE_SUFFIXES):
        return _extracted(local, value, cache)
    if local.is_relative_to(model_dir):
        return local  # like <model_dir>/code: no user code there
    raise SourceDirError(f"{SUBMIT_ENV}={value}: no such directory or archive")


def _from_s3(url: str, env: Mapping[str, str], cache: Path) -> Path:
    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        raise SourceDirError(f"{SUBMIT_ENV}={url}: {exc}") from None
    if not key.endswith(ARCHIVE_SUFFIXES):
        raise SourceDirError(
            f"{SUBMIT_ENV}={url}: expected a sourcedir.tar.gz archive (what the SageMaker SDK "
            "uploads), not a prefix"
        )
    objects, endpoint = env.get(OBJECTS_ENV), env.get(S3_ENDPOINT_ENV)
    if not objects and not endpoint:
        raise SourceDirError(
            f"{SUBMIT_ENV}={url} is in S3 but the model server has no object store configured "
            f"({OBJECTS_ENV} or {S3_ENDPOINT_ENV})"
        )
    key_id, secret = (env.get(name) for name in S3_KEY_ENVS)
    credentials = (key_id, secret) if key_id and secret else None
    store = object_store(Path(objects or "."), endpoint or None, region(env), credentials)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        archive = Path(tmp) / "sourcedir.tar.gz"
        try:
            store.download(bucket, key, archive)
        except StorageError as exc:
            raise SourceDirError(f"cannot download {SUBMIT_ENV}={url}: {exc}") from exc
        return _extracted(archive, url, cache)


def _extracted(archive: Path, url: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"sourcedir-{file_digest(archive)}"
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".sourcedir-"))
    staged = tmp / "code"
    try:
        extract_archive(archive, staged, url, Budget(url, MAX_BYTES, MAX_MEMBERS))
        try:
            os.rename(staged, final)
        except OSError:
            if not final.is_dir():  # not "another instance got there first"
                raise
    except ArtifactError as exc:
        raise SourceDirError(f"{SUBMIT_ENV}={url}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
