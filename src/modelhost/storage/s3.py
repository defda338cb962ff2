"""Objects on an S3-compatible server (AWS S3, SeaweedFS, MinIO ...) through boto3.

Credentials are the ones given, else the normal AWS chain's (environment, shared config,
instance role).
Uploads and downloads go through boto3's transfer manager: multipart above 8 MiB, and a
download lands in a temp file that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from modelhost.storage import NoSuchBucket, NoSuchKey, ObjectInfo, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
_MISSING_KEY = {"404", "NoSuchKey", "NotFound"}
_TRANSFER = TransferConfig(multipart_threshold=8 * 1024 * 1024, max_concurrency=8)


class S3ObjectStore:
    def __init__(
        self, endpoint_url: str | None, region: str, credentials: tuple[str, str] | None = None
    ) -> None:
        config = Config(
            region_name=region,
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        key_id, secret = credentials if credentials is not None else (None, None)
        self.client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=config,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        self.region = region

    # --- reads ---------------------------------------------------------------------------

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING_KEY | {"NoSuchBucket"}:
                return None
            raise _storage_error(exc, bucket, key) from exc
        except BotoCoreError as exc:
            raise _storage_error(exc, bucket, key) from exc
        return ObjectInfo(key, resp["ContentLength"], resp.get("ETag", "").strip('"'))

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        resp = _call(lambda: self.client.get_object(Bucket=bucket, Key=key), bucket, key)
        return io.BufferedReader(_BodyReader(resp["Body"]), buffer_size=1024 * 1024)

    def download(self, bucket: str, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
        os.close(fd)
        try:
            _call(
                lambda: self.client.download_file(bucket, key, tmp, Config=_TRANSFER), bucket, key
            )
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], obj["Size"], obj.get("ETag", "").strip('"'))
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error(exc, bucket, prefix) from exc

    # --- writes --------------------------------------------------------------------------

    def upload_file(self, src: Path, bucket: str, key: str) -> None:
        try:
            _call(
                lambda: self.client.upload_file(str(src), bucket, key, Config=_TRANSFER),
                bucket,
                key,
            )
        except S3UploadFailedError as exc:  # the transfer manager's wrapper of a ClientError
            cause = exc.__context__
            if isinstance(cause, ClientError):
                raise _storage_error(cause, bucket, key) from exc
            raise StorageError(str(exc), code="S3UploadFailedError") from exc

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        _call(lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data), bucket, key)

    def delete(self, bucket: str, key: str) -> None:
        _call(lambda: self.client.delete_object(Bucket=bucket, Key=key), bucket, key)

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise _storage_error(exc, bucket, "") from exc
        except BotoCoreError as exc:
            raise _storage_error(exc, bucket, "") from exc
        self._create_bucket(bucket)

    def _create_bucket(self, bucket: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
        except ClientError as exc:
            if _code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise _storage_error(exc, bucket, "") from exc


class _BodyReader(io.RawIOBase):
    """Adapts botocore's StreamingBody to the io stack, so callers get a real BinaryIO."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data: bytes = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _call(fn: Callable[[], T], bucket: str, key: str) -> T:
    try:
        return fn()
    except (ClientError, BotoCoreError) as exc:
        raise _storage_error(exc, bucket, key) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _storage_error(exc: Exception, bucket: str, key: str) -> StorageError:
    url = f"s3://{bucket}/{key}"
    if not isinstance(exc, ClientError):
        return StorageError(f"{url}: {exc}", code=type(exc).__name__)
    code = _code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    if code in _MISSING_KEY:
        return NoSuchKey(f"the object {url} does not exist")
    if code == "NoSuchBucket":
        return NoSuchBucket(f"the bucket {bucket!r} does not exist")
    return StorageError(f"{url}: {message}", code=code or "ClientError")
