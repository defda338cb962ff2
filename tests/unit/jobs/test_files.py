"""Transform inputs and outputs: prefixes and manifests over the local store and local paths,
whole publication of outputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from modelhost.jobs.files import NoInputs, Outputs, check_inputs, list_inputs
from modelhost.storage.local import LocalObjectStore


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    s = LocalObjectStore(tmp_path / "objects")
    s.ensure_bucket("b")
    s.put_bytes("b", "in/d1/x.csv", b"1\n")
    s.put_bytes("b", "in/y.csv", b"2\n")
    s.put_bytes("b", "other/z.csv", b"3\n")
    return s


def test_s3_prefix_names_keys_relative_to_the_prefix(store: LocalObjectStore) -> None:
    files = list_inputs(store, "s3://b/in/", manifest=False)
    assert [(f.rel, f.uri) for f in files] == [
        ("d1/x.csv", "s3://b/in/d1/x.csv"),
        ("y.csv", "s3://b/in/y.csv"),
    ]
    assert files[0].open(False).read() == b"1\n"
    assert [f.rel for f in list_inputs(store, "s3://b/in/y", manifest=False)] == ["y.csv"]


def test_no_objects_is_sagemakers_message(store: LocalObjectStore, tmp_path: Path) -> None:
    with pytest.raises(NoInputs, match='No S3 objects found under S3 URL "s3://b/nothing/"'):
        list_inputs(store, "s3://b/nothing/", manifest=False)
    with pytest.raises(NoInputs, match='No S3 objects found under S3 URL "s3://b/nothing/"'):
        check_inputs(store, "s3://b/nothing/", manifest=False)
    check_inputs(store, "s3://b/in/", manifest=False)
    with pytest.raises(NoInputs, match='No S3 objects found under S3 URL "s3://missing/in/"'):
        check_inputs(store, "s3://missing/in/", manifest=False)
    with pytest.raises(NoInputs, match="No S3 objects found"):
        list_inputs(store, str(tmp_path / "missing") + "/", manifest=False)


def test_local_directory_file_and_gzip(tmp_path: Path) -> None:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.csv").write_bytes(b"a\n")
    (d / "sub" / "b.csv.gz").write_bytes(gzip.compress(b"b\n"))
    store = LocalObjectStore(tmp_path / "objects")
    files = list_inputs(store, f"file://{d}", manifest=False)
    assert [f.rel for f in files] == ["a.csv", "sub/b.csv.gz"]
    assert files[1].open(True).read() == b"b\n"
    assert [f.rel for f in list_inputs(store, str(d / "a.csv"), manifest=False)] == ["a.csv"]


def test_manifest_lists_keys_under_its_prefix(store: LocalObjectStore, tmp_path: Path) -> None:
    manifest = [{"prefix": "s3://b/"}, "in/y.csv", "other/z.csv"]
    store.put_bytes("b", "m.json", json.dumps(manifest).encode())
    files = list_inputs(store, "s3://b/m.json", manifest=True)
    assert [f.rel for f in files] == ["in/y.csv", "other/z.csv"]
    store.put_bytes("b", "bad.json", json.dumps([{"prefix": "s3://b/"}, "gone"]).encode())
    with pytest.raises(NoInputs, match="does not exist"):
        list_inputs(store, "s3://b/bad.json", manifest=True)


def test_outputs_are_published_whole_and_can_be_deleted(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    for path in ("s3://b/out", str(tmp_path / "out")):
        outputs = Outputs(store, path, tmp_path / "work")
        temp = outputs.temp("d1/x.csv")
        temp.write_bytes(b"result")
        assert not Path(outputs.url("d1/x.csv")).exists()
        outputs.publish("d1/x.csv", temp)
        assert not temp.exists()
        if path.startswith("s3://"):
            assert outputs.url("d1/x.csv") == "s3://b/out/d1/x.csv.out"
            assert store.open_read("b", "out/d1/x.csv.out").read() == b"result"
        else:
            assert Path(outputs.url("d1/x.csv")).read_bytes() == b"result"
        outputs.delete("d1/x.csv")
        assert store.head("b", "out/d1/x.csv.out") is None
        assert not (tmp_path / "out" / "d1" / "x.csv.out").exists()


def test_a_jobs_stale_temporary_outputs_are_removed(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mine = Outputs(store, str(out), tmp_path / "work" / "job-a")
    other = Outputs(store, str(out), tmp_path / "work" / "job-b")
    stale, theirs = mine.temp("d/x.csv"), other.temp("d/x.csv")
    stale.write_bytes(b"partial")
    theirs.write_bytes(b"in progress")
    mine.clean_temps()
    assert not stale.exists()
    assert theirs.exists()
