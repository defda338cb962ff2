from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.storage import (
    InvalidKey,
    NoSuchBucket,
    NoSuchKey,
    object_store,
    parse_s3_url,
)
from modelhost.storage.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b.tar.gz") == ("bucket", "a/b.tar.gz")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")


@pytest.mark.parametrize("url", ["https://bucket/key", "/abs/path", "s3:/bucket/k", "s3:///k"])
def test_parse_s3_url_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="s3"):
        parse_s3_url(url)


def test_factory_picks_local_without_endpoint(tmp_path: Path) -> None:
    assert isinstance(object_store(tmp_path, None, "us-east-1"), LocalObjectStore)


def test_object_maps_to_file_under_root(store: LocalObjectStore) -> None:
    store.put_bytes("bucket", "a/b/c.txt", b"hello")
    assert (store.root / "bucket" / "a" / "b" / "c.txt").read_bytes() == b"hello"


def test_head_reports_size_and_a_token_that_changes(store: LocalObjectStore) -> None:
    assert store.head("bucket", "k") is None
    store.put_bytes("bucket", "k", b"one")
    first = store.head("bucket", "k")
    store.put_bytes("bucket", "k", b"two!")
    second = store.head("bucket", "k")
    assert first is not None and second is not None
    assert (first.key, first.size, second.size) == ("k", 3, 4)
    assert first.token != second.token


def test_upload_download_and_open_read(store: LocalObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    store.upload_file(src, "bucket", "big/obj.bin")
    dest = tmp_path / "out" / "copy.bin"
    store.download("bucket", "big/obj.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    with store.open_read("bucket", "big/obj.bin") as fh:
        assert fh.read(5) == b"xxxxx"
    assert not list((store.root / ".tmp").iterdir()), "no temp files left behind"


def test_missing_objects_and_buckets(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NoSuchBucket):
        store.open_read("nobucket", "k")
    store.ensure_bucket("bucket")
    with pytest.raises(NoSuchKey, match=r"s3://bucket/missing"):
        store.download("bucket", "missing", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(NoSuchBucket):
        list(store.list("nobucket", ""))


def test_list_is_sorted_by_key_and_filtered_by_prefix(store: LocalObjectStore) -> None:
    for key in ["m/b", "m/a/x", "m-c", "m/a/y", "n/z", "m/ab"]:
        store.put_bytes("bucket", key, key.encode())
    assert [o.key for o in store.list("bucket", "")] == [
        "m-c",
        "m/a/x",
        "m/a/y",
        "m/ab",
        "m/b",
        "n/z",
    ]
    assert [o.key for o in store.list("bucket", "m/a")] == ["m/a/x", "m/a/y", "m/ab"]
    assert [o.key for o in store.list("bucket", "m/a/")] == ["m/a/x", "m/a/y"]
    assert [o.size for o in store.list("bucket", "n/")] == [3]
    assert list(store.list("bucket", "nothing/")) == []


def test_delete_is_idempotent(store: LocalObjectStore) -> None:
    store.put_bytes("bucket", "k", b"1")
    store.delete("bucket", "k")
    store.delete("bucket", "k")
    assert store.head("bucket", "k") is None


@pytest.mark.parametrize(
    "key", ["../escape", "a/../../escape", "/abs", "a//b", "./a", "", "dir/", "a/./b"]
)
def test_keys_that_could_escape_are_refused(store: LocalObjectStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes("bucket", key, b"x")
    with pytest.raises(InvalidKey):
        store.head("bucket", key)


@pytest.mark.parametrize("bucket", ["..", ".tmp", "a/b", "", "/etc"])
def test_bad_bucket_names_are_refused(store: LocalObjectStore, bucket: str) -> None:
    with pytest.raises(InvalidKey):
        store.put_bytes(bucket, "k", b"x")


def test_list_refuses_prefix_escaping_root(store: LocalObjectStore) -> None:
    store.ensure_bucket("bucket")
    with pytest.raises(InvalidKey):
        list(store.list("bucket", "../other/"))


def test_a_failed_write_leaves_no_object(store: LocalObjectStore, tmp_path: Path) -> None:
    class Boom(Exception):
        pass

    class Exploding:
        def read(self, n: int = -1) -> bytes:
            raise Boom

    store.put_bytes("bucket", "k", b"old")
    with pytest.raises(Boom):
        store._put("bucket", "k", Exploding())  # type: ignore[arg-type]
    with store.open_read("bucket", "k") as fh:
        assert fh.read() == b"old"
    assert not list((store.root / ".tmp").iterdir())


def test_a_key_colliding_with_a_folder_is_refused(store: LocalObjectStore) -> None:
    store.put_bytes("bucket", "a/b", b"1")
    with pytest.raises(InvalidKey, match="collides"):
        store.put_bytes("bucket", "a", b"2")
    with pytest.raises(InvalidKey, match="collides"):
        store.put_bytes("bucket", "a/b/c", b"3")
