"""The S3 store and the artifact cache against a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from modelhost.artifacts import ArtifactCache, ArtifactError
from modelhost.storage import NoSuchKey, StorageError, object_store
from modelhost.storage.s3 import S3ObjectStore
from tests.fixtures.seaweed import S3Server

pytestmark = pytest.mark.e2e


@pytest.fixture
def store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3ObjectStore:
    """An S3ObjectStore whose credentials come from the environment, as in production."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    made = object_store(Path("/unused"), s3_server.endpoint_url, s3_server.region)
    assert isinstance(made, S3ObjectStore)
    return made


def test_upload_list_download(store: S3ObjectStore, s3_bucket: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))  # over the multipart threshold
    store.upload_file(big, s3_bucket, "m/big.bin")
    store.put_bytes(s3_bucket, "m/a.txt", b"hello")
    store.put_bytes(s3_bucket, "other", b"x")
    assert [(o.key, o.size) for o in store.list(s3_bucket, "m/")] == [
        ("m/a.txt", 5),
        ("m/big.bin", big.stat().st_size),
    ]
    dest = tmp_path / "out" / "big.bin"
    store.download(s3_bucket, "m/big.bin", dest)
    assert dest.read_bytes() == big.read_bytes()
    with store.open_read(s3_bucket, "m/a.txt") as fh:
        assert fh.read() == b"hello"
    head = store.head(s3_bucket, "m/a.txt")
    assert head is not None and head.size == 5 and head.token
    store.delete(s3_bucket, "m/a.txt")
    assert store.head(s3_bucket, "m/a.txt") is None


def test_missing_objects(store: S3ObjectStore, s3_bucket: str, tmp_path: Path) -> None:
    assert store.head(s3_bucket, "absent") is None
    with pytest.raises(NoSuchKey):
        store.download(s3_bucket, "absent", tmp_path / "x")
    with pytest.raises(NoSuchKey):
        store.open_read(s3_bucket, "absent")
    assert not (tmp_path / "x").exists()


def test_ensure_bucket_is_idempotent(store: S3ObjectStore, s3_server: S3Server) -> None:
    store.ensure_bucket("ensure-me")
    store.ensure_bucket("ensure-me")
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert "ensure-me" in names


def test_materialize_targz_from_s3(store: S3ObjectStore, s3_bucket: str, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {"model.joblib": b"weights", "code/inference.py": b"x = 1\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    store.put_bytes(s3_bucket, "models/model.tar.gz", buf.getvalue())
    cache = ArtifactCache(tmp_path / "cache", store, max_bytes=10 * 1024 * 1024)
    model = cache.materialize(f"s3://{s3_bucket}/models/model.tar.gz", None)
    assert (model / "model.joblib").read_bytes() == b"weights"
    assert (model / "code" / "inference.py").read_text() == "x = 1\n"
    assert cache.materialize(f"s3://{s3_bucket}/models/model.tar.gz", None) == model


def test_materialize_prefix_from_s3(store: S3ObjectStore, s3_bucket: str, tmp_path: Path) -> None:
    store.put_bytes(s3_bucket, "p/a.bin", b"a")
    store.put_bytes(s3_bucket, "p/sub/b.bin", b"b")
    cache = ArtifactCache(tmp_path / "cache", store, max_bytes=1024)
    source = {
        "S3DataSource": {
            "S3Uri": f"s3://{s3_bucket}/p/",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }
    model = cache.materialize(None, source)
    assert (model / "a.bin").read_bytes() == b"a" and (model / "sub" / "b.bin").read_bytes() == b"b"


def test_missing_key_is_a_clear_error(store: S3ObjectStore, s3_bucket: str, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", store, max_bytes=1024)
    url = f"s3://{s3_bucket}/nope/model.tar.gz"
    with pytest.raises(ArtifactError) as err:
        cache.materialize(url, None)
    assert str(err.value).startswith(f"Failed to download model data from {url}: NoSuchKey")


def test_server_checks_signatures(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bad = S3ObjectStore(s3_server.endpoint_url, s3_server.region)
    with pytest.raises(StorageError, match=r"SignatureDoesNotMatch|AccessDenied"):
        bad.put_bytes("any-bucket", "k", b"x")
