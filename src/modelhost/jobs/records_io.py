"""Splitting an input stream into request bodies (pure, over a binary file object).

``batches`` reads as it goes (never the whole object, unless MaxPayloadInMB is 0, which asks
for no limit) and yields ``Batch``es: one request body and how many records it holds.
SplitType None is the whole object; Line splits on newlines; RecordIO (MXNet) and TFRecord
keep each record's framing, as SageMaker sends them. SingleRecord sends one record per request;
MultiRecord as many whole records as fit in the payload limit (never across files). A record
larger than the limit raises ``RecordTooLarge``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_LEN_MASK = (1 << 29) - 1


class RecordTooLarge(Exception):
    """A record does not fit in MaxPayloadInMB; the message says which and by how much."""


class BadRecord(Exception):
    """The input is not in the framing its SplitType says (RecordIO, TFRecord)."""


@dataclass(frozen=True, slots=True)
class Batch:
    body: bytes | bytearray  # a bytearray: a large block of lines (_line_blocks), uncopied
    records: int
    # The records as read, when each is transformed before sending (DataProcessing): the
    # answer is joined with them record by record.
    inputs: tuple[bytes, ...] | None = None


def read_full(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    data = f.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def batches(f: BinaryIO, split: str, multi: bool, limit: int | None) -> Iterator[Batch]:
    """``limit``: the payload limit in bytes; None: no limit (MaxPayloadInMB 0)."""
    if split == "None":
        yield from _whole(f, limit)
    elif split == "Line" and multi and limit is not None:
        yield from _line_blocks(f, limit)
    elif split == "Line":
        yield from group(_lines(f, limit, keep_newline=multi), multi, limit, "line")
    elif split == "RecordIO":
        yield from group(_recordio(f), multi, limit, "RecordIO record")
    elif split == "TFRecord":
        yield from group(_tfrecord(f), multi, limit, "TFRecord record")
    else:
        raise ValueError(f"unknown SplitType {split!r}")


def _whole(f: BinaryIO, limit: int | None) -> Iterator[Batch]:
    if limit is None:
        yield Batch(f.read(), 1)
        return
    data = read_full(f, limit + 1)
    if len(data) > limit:
        raise RecordTooLarge(
            f"the object (SplitType None) is larger than MaxPayloadInMB ({limit} bytes)"
        )
    yield Batch(data, 1)


def _line_blocks(f: BinaryIO, limit: int) -> Iterator[Batch]:
    """MultiRecord over lines, by blocks: read up to ``limit`` bytes, cut after the last
    newline, carry the rest into the next block. No per-line work in Python.

    A block is read into a ``bytearray`` that becomes the body itself (cut in place, never
    sliced into a copy), so a batch costs one payload of memory while it is read, sent and
    kept for a retry. A small block (the end of a file) is made ``bytes``."""
    carry = b""
    while True:
        buf = bytearray(limit)
        buf[: len(carry)] = carry
        size = len(carry) + _read_into(f, buf, len(carry))
        if size < limit:  # the end of the stream
            if size:
                del buf[size:]
                yield Batch(_small(buf), _count_lines(buf))
            return
        cut = buf.rfind(b"\n")
        if cut < 0:
            raise RecordTooLarge(f"a line is longer than MaxPayloadInMB ({limit} bytes)")
        carry = bytes(buf[cut + 1 :])
        del buf[cut + 1 :]
        yield Batch(_small(buf), buf.count(b"\n"))


SMALL_BODY = 64 * 1024


def _small(buf: bytearray) -> bytes | bytearray:
    """``buf`` as the body: as it is, or as ``bytes`` when small (the router's pipelined
    connection takes small bodies of type bytes only)."""
    return bytes(buf) if len(buf) <= SMALL_BODY else buf


def _read_into(f: BinaryIO, buf: bytearray, start: int) -> int:
    """Fill ``buf[start:]`` from ``f``: the bytes read, fewer only at the end of the stream."""
    readinto = getattr(f, "readinto", None)
    if readinto is None:  # a file object without readinto: read, then copy
        data = read_full(f, len(buf) - start)
        buf[start : start + len(data)] = data
        return len(data)
    got = start
    with memoryview(buf) as view:
        while got < len(buf):
            n = readinto(view[got:])
            if not n:
                break
            got += n
    return got - start


def _count_lines(data: bytes | bytearray) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _lines(f: BinaryIO, limit: int | None, keep_newline: bool) -> Iterator[bytes]:
    size = -1 if limit is None else limit + 2  # room for the record and its line end
    while True:
        line = f.readline(size)
        if not line:
            return
        record = line.rstrip(b"\r\n")
        if limit is not None and len(record) > limit:
            raise RecordTooLarge(f"a line is longer than MaxPayloadInMB ({limit} bytes)")
        if not record:
            continue  # blank lines are no records
        yield line if keep_newline else record


def _recordio(f: BinaryIO) -> Iterator[bytes]:
    while True:
        head = read_full(f, 8)
        if not head:
            return
        if len(head) < 8:
            raise BadRecord("truncated RecordIO header at the end of the object")
        magic, lrec = struct.unpack("<II", head)
        if magic != RECORDIO_MAGIC:
            raise BadRecord(f"not RecordIO: bad magic number 0x{magic:08x}")
        length = lrec & _RECORDIO_LEN_MASK
        rest = read_full(f, length + (-length % 4))
        if len(rest) < length:
            raise BadRecord("truncated RecordIO record at the end of the object")
        yield head + rest


def _tfrecord(f: BinaryIO) -> Iterator[bytes]:
    while True:
        head = read_full(f, 12)
        if not head:
            return
        if len(head) < 12:
            raise BadRecord("truncated TFRecord header at the end of the object")
        (length,) = struct.unpack("<Q", head[:8])
        rest = read_full(f, length + 4)
        if len(rest) < length + 4:
            raise BadRecord("truncated TFRecord record at the end of the object")
        yield head + rest


def group(records: Iterator[bytes], multi: bool, limit: int | None, what: str) -> Iterator[Batch]:
    """One record per batch (SingleRecord), or as many whole records as fit (MultiRecord)."""
    parts: list[bytes] = []
    size = 0
    for record in records:
        if limit is not None and len(record) > limit:
            raise RecordTooLarge(
                f"a {what} of {len(record)} bytes is larger than MaxPayloadInMB ({limit} bytes)"
            )
        if not multi:
            yield Batch(record, 1)
            continue
        if parts and limit is not None and size + len(record) > limit:
            body, count = b"".join(parts), len(parts)
            parts, size = [], 0  # not held (a second copy) while the batch is out
            yield Batch(body, count)
            del body
        parts.append(record)
        size += len(record)
    if parts:
        yield Batch(b"".join(parts), len(parts))


def line_groups(
    f: BinaryIO, multi: bool, limit: int | None, transform: Callable[[bytes], bytes]
) -> Iterator[Batch]:
    """Line records, each transformed (an InputFilter) before it is sent; a MultiRecord body
    is the transformed records one per line. Each batch keeps the records as read."""
    inputs: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for record in _lines(f, limit, keep_newline=False):
        part = transform(record) + (b"\n" if multi else b"")
        if limit is not None and len(part) > limit:
            raise RecordTooLarge(f"a filtered line is longer than MaxPayloadInMB ({limit} bytes)")
        if not multi:
            yield Batch(part, 1, (record,))
            continue
        if parts and limit is not None and size + len(part) > limit:
            batch = Batch(b"".join(parts), len(parts), tuple(inputs))
            inputs, parts, size = [], [], 0  # not held (a second copy) while the batch is out
            yield batch
            del batch
        inputs.append(record)
        parts.append(part)
        size += len(part)
    if parts:
        yield Batch(b"".join(parts), len(parts), tuple(inputs))


def recordio_record(data: bytes) -> bytes:
    """One RecordIO record holding ``data`` (for tests and tools)."""
    return struct.pack("<II", RECORDIO_MAGIC, len(data)) + data + b"\0" * (-len(data) % 4)


def tfrecord_record(data: bytes) -> bytes:
    """One TFRecord record holding ``data``; the CRCs are not checked here, so zeros do."""
    return struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
