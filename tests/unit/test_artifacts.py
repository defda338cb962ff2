from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from modelhost.artifacts import ArtifactCache, ArtifactError
from modelhost.artifacts.files import tree_size, working_copy
from modelhost.storage import ObjectInfo
from modelhost.storage.local import LocalObjectStore

MAX_BYTES = 1024 * 1024


class CountingStore(LocalObjectStore):
    """The local store, counting downloads (the expensive call a cache hit must avoid)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads = 0
        self.extra_keys: list[str] = []
        self._lock = threading.Lock()

    def download(self, bucket: str, key: str, dest: Path) -> None:
        with self._lock:
            self.downloads += 1
        super().download(bucket, key, dest)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        yield from super().list(bucket, prefix)
        yield from (ObjectInfo(key, 1, "t") for key in self.extra_keys)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


@pytest.fixture
def cache(tmp_path: Path, store: CountingStore) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache", store, max_bytes=MAX_BYTES)


def targz(files: dict[str, bytes], mode: str = "w:gz", exec_names: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name in exec_names else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def special_targz(name: str, kind: bytes, linkname: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.addfile(_info("ok.txt", 2), io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def assert_nothing_cached(cache: ArtifactCache) -> None:
    assert list(cache.models_dir.iterdir()) == []
    assert list(cache.tmp_dir.iterdir()) == []


# --- sources ---------------------------------------------------------------------------------


def test_s3_targz_is_extracted(cache: ArtifactCache, store: CountingStore) -> None:
    data = targz(
        {"./model.joblib": b"weights", "code/inference.py": b"x=1", "run.sh": b"#!"},
        exec_names=("run.sh",),
    )
    store.put_bytes("b", "m/model.tar.gz", data)
    model = cache.materialize("s3://b/m/model.tar.gz", None)
    assert model.parent == cache.models_dir
    assert (model / "model.joblib").read_bytes() == b"weights"
    assert (model / "code" / "inference.py").read_bytes() == b"x=1"
    assert os.access(model / "run.sh", os.X_OK)
    assert not os.access(model / "model.joblib", os.X_OK)


def test_second_materialize_of_unchanged_source_does_not_download(
    cache: ArtifactCache, store: CountingStore
) -> None:
    store.put_bytes("b", "model.tar.gz", targz({"a": b"1"}))
    first = cache.materialize("s3://b/model.tar.gz", None)
    second = cache.materialize("s3://b/model.tar.gz", None)
    assert first == second and store.downloads == 1
    store.put_bytes("b", "model.tar.gz", targz({"a": b"2"}))
    third = cache.materialize("s3://b/model.tar.gz", None)
    assert store.downloads == 2 and third != first
    assert (third / "a").read_bytes() == b"2" and (first / "a").read_bytes() == b"1"


def test_index_survives_a_new_cache_object(tmp_path: Path, store: CountingStore) -> None:
    store.put_bytes("b", "model.tar.gz", targz({"a": b"1"}))
    first = ArtifactCache(tmp_path / "cache", store, MAX_BYTES).materialize("s3://b/model.tar.gz")
    again = ArtifactCache(tmp_path / "cache", store, MAX_BYTES).materialize("s3://b/model.tar.gz")
    assert first == again and store.downloads == 1


def test_same_content_at_two_urls_shares_one_directory(
    cache: ArtifactCache, store: CountingStore
) -> None:
    data = targz({"a": b"1"})
    store.put_bytes("b", "one.tar.gz", data)
    store.put_bytes("b", "two.tar.gz", data)
    assert cache.materialize("s3://b/one.tar.gz", None) == cache.materialize(
        "s3://b/two.tar.gz", None
    )
    assert len(list(cache.models_dir.iterdir())) == 1


def test_evicted_directory_is_rebuilt(cache: ArtifactCache, store: CountingStore) -> None:
    import shutil

    store.put_bytes("b", "model.tar.gz", targz({"a": b"1"}))
    model = cache.materialize("s3://b/model.tar.gz", None)
    shutil.rmtree(model)
    assert cache.materialize("s3://b/model.tar.gz", None) == model
    assert (model / "a").exists() and store.downloads == 2


@pytest.mark.parametrize("mode,suffix", [("w:gz", "model.tar.gz"), ("w", "model.tar")])
def test_local_archive_by_file_url_and_path(
    cache: ArtifactCache, tmp_path: Path, mode: str, suffix: str
) -> None:
    archive = tmp_path / suffix
    archive.write_bytes(targz({"w.bin": b"w"}, mode=mode))
    by_url = cache.materialize(f"file://{archive}", None)
    by_path = cache.materialize(str(archive), None)
    assert by_url == by_path and (by_url / "w.bin").read_bytes() == b"w"


def test_local_directory_is_copied_not_linked(cache: ArtifactCache, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "code").mkdir(parents=True)
    (src / "model.pkl").write_bytes(b"v1")
    (src / "code" / "inference.py").write_text("pass")
    model = cache.materialize(str(src), None)
    assert (model / "model.pkl").read_bytes() == b"v1"
    assert (model / "code" / "inference.py").read_text() == "pass"
    (src / "model.pkl").write_bytes(b"v2-longer")
    assert (model / "model.pkl").read_bytes() == b"v1", "a running endpoint must not change"
    updated = cache.materialize(f"file://{src}", None)
    assert updated != model and (updated / "model.pkl").read_bytes() == b"v2-longer"


def test_s3_prefix_copies_every_object_with_its_relative_key(
    cache: ArtifactCache, store: CountingStore
) -> None:
    for key in ["models/m1/a.bin", "models/m1/sub/b.bin", "models/m1x/other", "models/m2/c"]:
        store.put_bytes("b", key, key.encode())
    source = {
        "S3DataSource": {
            "S3Uri": "s3://b/models/m1",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }
    model = cache.materialize(None, source)
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "a.bin",
        "sub/b.bin",
    ]
    assert (model / "sub" / "b.bin").read_bytes() == b"models/m1/sub/b.bin"
    assert cache.materialize(None, source) == model and store.downloads == 2


def test_s3_prefix_without_objects_fails_clearly(
    cache: ArtifactCache, store: CountingStore
) -> None:
    store.ensure_bucket("b")
    source = {
        "S3DataSource": {
            "S3Uri": "s3://b/none/",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }
    with pytest.raises(ArtifactError, match=r"No S3 objects found under S3 URL s3://b/none/"):
        cache.materialize(None, source)


def test_s3_prefix_refuses_keys_escaping_the_model_dir(
    cache: ArtifactCache, store: CountingStore
) -> None:
    store.put_bytes("b", "p/ok", b"1")
    store.extra_keys = ["p/../../etc/passwd"]
    source = {
        "S3DataSource": {"S3Uri": "s3://b/p/", "S3DataType": "S3Prefix", "CompressionType": "None"}
    }
    with pytest.raises(
        ArtifactError, match=r"'\.\./\.\./etc/passwd': path escapes the model directory"
    ):
        cache.materialize(None, source)
    assert_nothing_cached(cache)


def test_s3_object_without_compression_is_placed_in_the_model_dir(
    cache: ArtifactCache, store: CountingStore
) -> None:
    store.put_bytes("b", "weights/model.onnx", b"onnx")
    source = {
        "S3DataSource": {
            "S3Uri": "s3://b/weights/model.onnx",
            "S3DataType": "S3Object",
            "CompressionType": "None",
        }
    }
    model = cache.materialize(None, source)
    assert [p.name for p in model.iterdir()] == ["model.onnx"]


def test_s3_object_gzip_source_is_extracted(cache: ArtifactCache, store: CountingStore) -> None:
    store.put_bytes("b", "model.tar.gz", targz({"a": b"1"}))
    source = {
        "S3DataSource": {
            "S3Uri": "s3://b/model.tar.gz",
            "S3DataType": "S3Object",
            "CompressionType": "Gzip",
        }
    }
    assert (cache.materialize(None, source) / "a").read_bytes() == b"1"


def test_no_model_data_gives_an_empty_directory(cache: ArtifactCache) -> None:
    model = cache.materialize(None, None)
    assert model.is_dir() and list(model.iterdir()) == []
    assert cache.materialize(None, None) == model


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kind,linkname,reason",
    [
        ("link", tarfile.SYMTYPE, "/etc/passwd", "symbolic links are not allowed"),
        ("hard", tarfile.LNKTYPE, "ok.txt", "hard links are not allowed"),
        ("/etc/cron.d/evil", tarfile.REGTYPE, "", "absolute paths are not allowed"),
        ("../x", tarfile.REGTYPE, "", "path escapes the model directory"),
        ("a/../../x", tarfile.REGTYPE, "", "path escapes the model directory"),
        ("dev", tarfile.CHRTYPE, "", "device files are not allowed"),
        ("blk", tarfile.BLKTYPE, "", "device files are not allowed"),
        ("fifo", tarfile.FIFOTYPE, "", "FIFOs are not allowed"),
    ],
)
def test_unsafe_members_are_refused(
    cache: ArtifactCache, store: CountingStore, name: str, kind: bytes, linkname: str, reason: str
) -> None:
    store.put_bytes("b", "evil.tar.gz", special_targz(name, kind, linkname))
    with pytest.raises(ArtifactError) as err:
        cache.materialize("s3://b/evil.tar.gz", None)
    assert str(err.value).startswith(f"Refused unsafe archive member '{name}': {reason}")
    assert "s3://b/evil.tar.gz" in str(err.value)
    assert_nothing_cached(cache)


def test_archive_bomb_is_stopped_by_the_size_cap(
    cache: ArtifactCache, store: CountingStore
) -> None:
    store.put_bytes(
        "b", "bomb.tar.gz", targz({"a": b"\0" * (MAX_BYTES // 2), "b": b"\0" * MAX_BYTES})
    )
    assert store.head("b", "bomb.tar.gz").size < MAX_BYTES // 100  # type: ignore[union-attr]
    with pytest.raises(ArtifactError, match=rf"is too large: more than {MAX_BYTES} bytes"):
        cache.materialize("s3://b/bomb.tar.gz", None)
    assert_nothing_cached(cache)


def test_member_count_is_capped(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store, MAX_BYTES, max_members=10)
    store.put_bytes("b", "many.tar.gz", targz({f"f{i}": b"" for i in range(11)}))
    with pytest.raises(ArtifactError, match="too many entries: more than 10"):
        cache.materialize("s3://b/many.tar.gz", None)
    assert_nothing_cached(cache)


def test_directory_source_is_capped(tmp_path: Path, store: CountingStore) -> None:
    src = tmp_path / "big"
    src.mkdir()
    (src / "huge").write_bytes(b"x" * 2000)
    cache = ArtifactCache(tmp_path / "cache", store, max_bytes=1000)
    with pytest.raises(ArtifactError, match="too large"):
        cache.materialize(str(src), None)


@pytest.mark.parametrize(
    "data",
    [
        b"this is not an archive at all" * 40,
        b"",
        targz({"a": b"x" * 5000})[:-40],
        b"\x1f\x8b" + b"\0" * 64,
    ],
    ids=["text", "empty", "truncated", "bad-gzip"],
)
def test_corrupt_archive_is_reported(
    cache: ArtifactCache, store: CountingStore, data: bytes
) -> None:
    store.put_bytes("b", "bad.tar.gz", data)
    with pytest.raises(
        ArtifactError,
        match=r"^Model data archive s3://b/bad.tar.gz is not a valid tar.gz archive: ",
    ):
        cache.materialize("s3://b/bad.tar.gz", None)
    assert_nothing_cached(cache)


# --- errors ----------------------------------------------------------------------------------


def test_missing_key_names_the_url(cache: ArtifactCache, store: CountingStore) -> None:
    store.ensure_bucket("b")
    with pytest.raises(
        ArtifactError, match=r"^Failed to download model data from s3://b/nope.tar.gz: NoSuchKey"
    ):
        cache.materialize("s3://b/nope.tar.gz", None)


def test_missing_local_path(cache: ArtifactCache, tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError, match=r"Failed to read model data from .*: No such file or directory"
    ):
        cache.materialize(f"file://{tmp_path}/absent.tar.gz", None)


@pytest.mark.parametrize(
    "url", ["https://example.com/m.tar.gz", "relative/model.tar.gz", "file://host/x"]
)
def test_unsupported_urls(cache: ArtifactCache, url: str) -> None:
    with pytest.raises(ArtifactError, match="Unsupported model data URL"):
        cache.materialize(url, None)


@pytest.mark.parametrize(
    "source,match",
    [
        ({}, "needs S3DataSource"),
        (
            {
                "S3DataSource": {
                    "S3Uri": "s3://b/p/",
                    "S3DataType": "S3Prefix",
                    "CompressionType": "Gzip",
                }
            },
            "Unsupported ModelDataSource",
        ),
        (
            {
                "S3DataSource": {
                    "S3Uri": "s3://b/p/",
                    "S3DataType": "S3Object",
                    "CompressionType": "None",
                }
            },
            "names a prefix",
        ),
    ],
)
def test_invalid_data_sources(cache: ArtifactCache, source: dict[str, object], match: str) -> None:
    with pytest.raises(ArtifactError, match=match):
        cache.materialize(None, source)


def test_url_and_source_together_are_refused(cache: ArtifactCache) -> None:
    source = {
        "S3DataSource": {"S3Uri": "s3://b/k", "S3DataType": "S3Object", "CompressionType": "Gzip"}
    }
    with pytest.raises(ArtifactError, match="not both"):
        cache.materialize("s3://b/k", source)


# --- concurrency and crash safety ------------------------------------------------------------


def test_concurrent_materialize_downloads_once(cache: ArtifactCache, store: CountingStore) -> None:
    store.put_bytes("b", "model.tar.gz", targz({f"f{i}": os.urandom(2000) for i in range(50)}))
    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(lambda _: cache.materialize("s3://b/model.tar.gz", None), range(16)))
    assert len(paths) == 1 and store.downloads == 1
    assert len(list(next(iter(paths)).iterdir())) == 50


def test_two_caches_racing_on_one_dir_agree(tmp_path: Path, store: CountingStore) -> None:
    store.put_bytes("b", "model.tar.gz", targz({"a": b"1"}))
    caches = [ArtifactCache(tmp_path / "cache", store, MAX_BYTES) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda c: c.materialize("s3://b/model.tar.gz", None), caches))
    assert len(paths) == 1 and (next(iter(paths)) / "a").read_bytes() == b"1"
    assert list(caches[0].tmp_dir.iterdir()) == []


def test_stale_temp_dirs_are_removed_on_start(tmp_path: Path, store: CountingStore) -> None:
    stale = tmp_path / "cache" / "tmp" / "build-crashed"
    stale.mkdir(parents=True)
    (stale / "half").write_bytes(b"x")
    os.utime(stale, (0, 0))
    ArtifactCache(tmp_path / "cache", store, MAX_BYTES)
    assert not stale.exists()


def test_working_copy_copies_small_trees_and_leaves_big_ones(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "code").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 1000)
    (src / "code" / "inference.py").write_text("x = 1\n")
    assert tree_size(src) == 1006
    copy = tmp_path / "instances" / "i-1" / "model"
    assert working_copy(src, copy, max_bytes=1006)
    assert (copy / "weights.bin").read_bytes() == b"w" * 1000
    assert (copy / "code" / "inference.py").read_text() == "x = 1\n"
    (copy / "weights.bin").write_bytes(b"changed")  # the copy is the instance's own
    assert (src / "weights.bin").read_bytes() == b"w" * 1000
    big = tmp_path / "instances" / "i-2" / "model"
    assert not working_copy(src, big, max_bytes=1005)
    assert not big.exists()
    inside = src / "instances" / "i-3" / "model"  # would copy itself forever
    assert not working_copy(src, inside, max_bytes=10**6)
    assert not inside.exists()


def test_a_failed_working_copy_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    (src / "a.txt").write_text("a")
    os.mkfifo(src / "fifo")  # copytree cannot copy a FIFO (it would block reading it)
    dest = tmp_path / "copy"
    with pytest.raises(shutil.Error):
        working_copy(src, dest, max_bytes=10**6)
    assert not dest.exists()
