"""The safe-extraction rules (artifacts/files.py) under fuzzed tar/gzip input: whatever the bytes,
``extract_archive`` either raises ArtifactError (a FailureReason fit to show) or leaves only
regular files and directories inside the destination, within the budget; nothing is ever
written outside it. One test per class of attack besides: truncation, extended-header bombs,
path tricks, links, device files (tests/unit/test_artifacts.py has the plain size bomb)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from modelhost.artifacts.errors import ArtifactError, Budget
from modelhost.artifacts.files import MAX_EXTENDED_HEADER, extract_archive

MAX_BYTES = 64 * 1024
MAX_MEMBERS = 50
URL = "s3://b/fuzz.tar.gz"

TRICKY_NAMES = [
    "ok.txt",
    "dir/ok.bin",
    "../escape",
    "a/../../escape",
    "/abs",
    "C:/win",
    "\\\\server\\share",
    "a\\..\\..\\x",
    "./.",
    "dir/./x",
    "é/ü.txt",
    "x" * 300,  # GNU long name or pax path
    ".",
    "",
]
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE]  # fmt: skip


def build(members: list[tuple[str, bytes, bytes, str]], fmt: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            if kind in (tarfile.REGTYPE, tarfile.CONTTYPE):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return gzip.compress(raw.getvalue(), compresslevel=1)


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    members = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(TRICKY_NAMES), st.text(min_size=1, max_size=40)),
                st.sampled_from(KINDS),
                st.binary(max_size=2048) | st.just(b"\0" * (MAX_BYTES + 1)),
                st.sampled_from(["", "/etc/passwd", "../x", "ok.txt"]),
            ),
            max_size=6,
        )
    )
    fmt = draw(st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT]))
    try:
        data = build(members, fmt)
    except (ValueError, UnicodeError):  # ustar cannot hold some names: use GNU
        data = build(members, tarfile.GNU_FORMAT)
    how = draw(st.sampled_from(["as-is", "truncate", "flip", "raw-tar", "garbage-tail"]))
    if how == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    elif how == "raw-tar":
        data = gzip.decompress(data)
    elif how == "garbage-tail":
        data += draw(st.binary(min_size=1, max_size=256))
    return data


def check_tree(dest: Path) -> None:
    total = 0
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            assert stat.S_ISREG(mode) or stat.S_ISDIR(mode), path
            assert path.resolve().is_relative_to(dest.resolve()), path
            if stat.S_ISREG(mode):
                total += path.stat().st_size
    assert total <= MAX_BYTES


@seed(14)
@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=archives())
def test_fuzzed_archives_extract_safely_or_fail_clearly(tmp_path: Path, data: bytes) -> None:
    work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    archive = work / "a.tar.gz"
    archive.write_bytes(data)
    dest = work / "out"
    try:
        extract_archive(archive, dest, URL, Budget(URL, MAX_BYTES, MAX_MEMBERS))
    except ArtifactError as err:
        assert URL in str(err)
    check_tree(dest)
    assert sorted(p.name for p in work.iterdir()) == ["a.tar.gz", "out"]  # nothing beside it


def extract(tmp_path: Path, data: bytes) -> str:
    (tmp_path / "a.tar.gz").write_bytes(data)
    with pytest.raises(ArtifactError) as err:
        extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", URL, Budget(URL, 10**9, 100))
    return str(err.value)


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE])
def test_extended_header_bomb_is_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    """tarfile reads a long-name or pax header whole into memory: 2 MB of gzip declaring a
    400 MB header made extraction allocate 800 MB. It is refused from its declared size now."""
    size = 64 * MAX_EXTENDED_HEADER
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = kind, size
    if kind == tarfile.GNUTYPE_LONGNAME:
        head = info.tobuf(format=tarfile.GNU_FORMAT)
    else:
        head = info.tobuf(format=tarfile.PAX_FORMAT)
    raw = head + b"\0" * (size + 1024)
    message = extract(tmp_path, gzip.compress(raw, compresslevel=1))
    assert f"an extended header of {size} bytes" in message


def test_truncated_archive_is_invalid(tmp_path: Path) -> None:
    whole = build([("model.bin", tarfile.REGTYPE, b"x" * 5000, "")], tarfile.GNU_FORMAT)
    assert "is not a valid tar.gz archive" in extract(tmp_path, whole[: len(whole) // 2])


@pytest.mark.parametrize(
    ("name", "kind", "link", "reason"),
    [
        ("/etc/x", tarfile.REGTYPE, "", "absolute paths are not allowed"),
        ("C:/x", tarfile.REGTYPE, "", "absolute paths are not allowed"),
        ("a/../../x", tarfile.REGTYPE, "", "path escapes the model directory"),
        ("a\\..\\x", tarfile.REGTYPE, "", "path escapes the model directory"),
        ("up", tarfile.SYMTYPE, "../../..", "symbolic links are not allowed"),
        ("hard", tarfile.LNKTYPE, "/etc/passwd", "hard links are not allowed"),
        ("null", tarfile.CHRTYPE, "", "device files are not allowed"),
    ],
)
def test_each_path_trick_is_refused_by_name(
    tmp_path: Path, name: str, kind: bytes, link: str, reason: str
) -> None:
    data = build([("ok.txt", tarfile.REGTYPE, b"ok", ""), (name, kind, b"", link)],
                 tarfile.GNU_FORMAT)  # fmt: skip
    assert f"Refused unsafe archive member '{name}': {reason}" in extract(tmp_path, data)


def test_symlink_then_file_through_it_never_writes_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = build([("link", tarfile.SYMTYPE, b"", str(outside)),
                  ("link/pwned", tarfile.REGTYPE, b"x", "")], tarfile.GNU_FORMAT)  # fmt: skip
    assert "symbolic links are not allowed" in extract(tmp_path, data)
    assert list(outside.iterdir()) == []
