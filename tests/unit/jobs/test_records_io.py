"""Splitting inputs into request bodies: every SplitType, both strategies, the payload limit."""

from __future__ import annotations

import gzip
import io

import pytest

from modelhost.jobs.records_io import (
    BadRecord,
    RecordTooLarge,
    batches,
    recordio_record,
    tfrecord_record,
)


def split(data: bytes, split: str, multi: bool, limit: int | None) -> list[tuple[bytes, int]]:
    return [(bytes(b.body), b.records) for b in batches(io.BytesIO(data), split, multi, limit)]


def test_none_is_the_whole_object() -> None:
    assert split(b"a\nb\n", "None", False, 100) == [(b"a\nb\n", 1)]
    assert split(b"x" * 1000, "None", True, None) == [(b"x" * 1000, 1)]


def test_none_larger_than_the_limit_fails() -> None:
    with pytest.raises(RecordTooLarge, match="larger than MaxPayloadInMB"):
        split(b"x" * 11, "None", False, 10)


def test_line_single_record_sends_each_line_without_its_end() -> None:
    out = split(b"1,2\n3,4\r\n\n5,6", "Line", False, 100)
    assert out == [(b"1,2", 1), (b"3,4", 1), (b"5,6", 1)]


def test_line_multi_record_packs_whole_lines_up_to_the_limit() -> None:
    data = b"".join(b"%03d\n" % i for i in range(10))  # 4 bytes a line
    out = split(data, "Line", True, 10)
    assert [n for _, n in out] == [2, 2, 2, 2, 2]
    assert b"".join(body for body, _ in out) == data
    assert all(body.endswith(b"\n") for body, _ in out)


def test_line_multi_record_without_a_final_newline() -> None:
    out = split(b"aa\nbb\ncc", "Line", True, 6)
    assert out == [(b"aa\nbb\n", 2), (b"cc", 1)]


class _ReadOnly:
    """A file object with read only (no readinto), as some storage readers are."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(min(n, 7) if n >= 0 else n)  # short reads too


def test_large_line_blocks_are_read_in_place_whole_lines_and_all() -> None:
    line = b"%08d,0.5,1.5\n"
    data = b"".join(line % i for i in range(40_003))  # 4 blocks of 170,000 bytes and 51
    limit = 170_000
    for f in (
        io.BytesIO(data),
        _ReadOnly(data),
        gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(data))),
    ):
        out = list(batches(f, "Line", True, limit))  # type: ignore[arg-type]
        assert b"".join(bytes(b.body) for b in out) == data
        assert sum(b.records for b in out) == 40_003
        assert all(b.body.endswith(b"\n") and len(b.body) <= limit for b in out)
        # the large blocks are the buffers they were read into (no copy); the small last one bytes
        assert all(type(b.body) is bytearray for b in out[:-1])
        assert type(out[-1].body) is bytes


def test_line_multi_record_without_limit_is_one_batch() -> None:
    assert split(b"a\nb\n", "Line", True, None) == [(b"a\nb\n", 2)]


def test_a_line_over_the_limit_fails() -> None:
    with pytest.raises(RecordTooLarge, match="line is longer"):
        split(b"ok\n" + b"x" * 20 + b"\n", "Line", True, 8)
    with pytest.raises(RecordTooLarge, match="line is longer"):
        split(b"ok\n" + b"x" * 20 + b"\n", "Line", False, 8)


@pytest.mark.parametrize(
    ("split_type", "frame"), [("RecordIO", recordio_record), ("TFRecord", tfrecord_record)]
)
def test_binary_records_keep_their_framing(split_type: str, frame: object) -> None:
    assert callable(frame)
    records = [frame(b"r%d" % i * (i + 1)) for i in range(5)]
    data = b"".join(records)
    assert split(data, split_type, False, 1000) == [(r, 1) for r in records]
    multi = split(data, split_type, True, len(records[0]) + len(records[1]) + 1)
    assert b"".join(body for body, _ in multi) == data
    assert sum(n for _, n in multi) == 5
    assert multi[0] == (records[0] + records[1], 2)


def test_recordio_with_a_bad_magic_number_fails() -> None:
    with pytest.raises(BadRecord, match="bad magic"):
        split(b"\0" * 16, "RecordIO", False, 100)


def test_truncated_tfrecord_fails() -> None:
    with pytest.raises(BadRecord, match="truncated"):
        split(tfrecord_record(b"abcdef")[:-3], "TFRecord", False, 100)


def test_binary_record_over_the_limit_fails() -> None:
    with pytest.raises(RecordTooLarge, match="RecordIO record of"):
        split(recordio_record(b"x" * 100), "RecordIO", True, 50)
