"""The CBOR subset (RFC 8949) that Smithy's rpc-v2-cbor protocol uses, which botocore speaks
for CloudWatch since 1.38 or so: integers, floats, byte and text strings (definite or
indefinite), arrays, maps, true/false/null and tag 1 (epoch-seconds timestamps).

``decode`` returns plain Python values, a timestamp as its epoch number (the shapes walker
turns numbers into datetimes where the model says timestamp). ``encode_shaped`` writes a value
along a botocore output shape, so timestamps go out as tag 1 as botocore's parser expects.
Malformed input raises ``SerializationException``.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from modelhost.errors import SerializationException

MAX_DEPTH = 64
_BREAK = object()


def decode(data: bytes) -> Any:
    reader = _Reader(data)
    value = reader.item(0)
    if value is _BREAK or reader.pos != len(data):
        raise SerializationException("CBOR body has trailing or misplaced data.")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise SerializationException("CBOR body ends in the middle of an item.")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def argument(self, info: int) -> int | None:
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            return int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31:
            return None  # indefinite length
        raise SerializationException(f"CBOR additional information {info} is reserved.")

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise SerializationException("CBOR body is nested too deeply.")
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            return self.simple(info)
        arg = self.argument(info)
        if major == 0:
            return _definite(arg)
        if major == 1:
            return -1 - _definite(arg)
        if major in (2, 3):
            raw = self.string(major, arg, depth)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SerializationException("CBOR text string is not UTF-8.") from exc
        if major == 4:
            return self.array(arg, depth)
        if major == 5:
            return self.map(arg, depth)
        tag = _definite(arg)  # major 6
        value = self.item(depth + 1)
        if tag == 1 and isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise SerializationException(f"CBOR tag {tag} is not supported here.")

    def simple(self, info: int) -> Any:
        if info == 20:
            return False
        if info == 21:
            return True
        if info in (22, 23):
            return None
        if info == 25:
            return struct.unpack(">e", self.take(2))[0]
        if info == 26:
            return struct.unpack(">f", self.take(4))[0]
        if info == 27:
            return struct.unpack(">d", self.take(8))[0]
        if info == 31:
            return _BREAK
        raise SerializationException(f"CBOR simple value {info} is not supported.")

    def string(self, major: int, arg: int | None, depth: int) -> bytes:
        if arg is not None:
            return self.take(arg)
        parts: list[bytes] = []
        while True:
            initial = self.take(1)[0]
            if initial == 0xFF:
                return b"".join(parts)
            if initial >> 5 != major or initial & 0x1F == 31:
                raise SerializationException("CBOR indefinite string has a bad chunk.")
            parts.append(self.take(_definite(self.argument(initial & 0x1F))))

    def array(self, arg: int | None, depth: int) -> list[Any]:
        out: list[Any] = []
        for _ in range(arg if arg is not None else len(self.data)):
            value = self.item(depth + 1)
            if value is _BREAK:
                if arg is not None:
                    raise SerializationException("CBOR break inside a definite array.")
                return out
            out.append(value)
        if arg is None:
            raise SerializationException("CBOR indefinite array has no break.")
        return out

    def map(self, arg: int | None, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(arg if arg is not None else len(self.data)):
            key = self.item(depth + 1)
            if key is _BREAK:
                if arg is not None:
                    raise SerializationException("CBOR break inside a definite map.")
                return out
            if not isinstance(key, str):
                raise SerializationException("CBOR map keys must be text strings.")
            value = self.item(depth + 1)
            if value is _BREAK:
                raise SerializationException("CBOR map has a key without a value.")
            out[key] = value
        if arg is None:
            raise SerializationException("CBOR indefinite map has no break.")
        return out


def _definite(arg: int | None) -> int:
    if arg is None:
        raise SerializationException("CBOR indefinite length where none is allowed.")
    return arg


# --- encoding ---------------------------------------------------------------------------


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError(f"integer too large for CBOR: {n}")


def encode(value: Any) -> bytes:
    """A plain value (errors' ``{"__type", "message"}``) as CBOR."""
    out = bytearray()
    _plain(out, value)
    return bytes(out)


def _plain(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(0xF6)
    elif isinstance(value, bool):
        out.append(0xF5 if value else 0xF4)
    elif isinstance(value, int):
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif isinstance(value, float):
        out += b"\xfb" + struct.pack(">d", value)
    elif isinstance(value, str):
        raw = value.encode()
        out += _head(3, len(raw)) + raw
    elif isinstance(value, bytes | bytearray):
        out += _head(2, len(value)) + bytes(value)
    elif isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        out += b"\xc1" + b"\xfb" + struct.pack(">d", aware.timestamp())
    elif isinstance(value, list | tuple):
        out += _head(4, len(value))
        for v in value:
            _plain(out, v)
    elif isinstance(value, dict):
        items = [(k, v) for k, v in value.items() if v is not None]
        out += _head(5, len(items))
        for k, v in items:
            _plain(out, str(k))
            _plain(out, v)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def encode_shaped(shape: Any, value: Any) -> bytes:
    """``value`` along a botocore shape: members checked, doubles as doubles, timestamps as
    tag 1. A member the shape lacks raises ``KeyError`` (a bug on our side)."""
    out = bytearray()
    _shaped(out, shape, value)
    return bytes(out)


def _shaped(out: bytearray, shape: Any, value: Any) -> None:
    kind = shape.type_name
    if kind == "structure":
        items = [(k, v) for k, v in value.items() if v is not None]
        out += _head(5, len(items))
        for name, item in items:
            member = shape.members.get(name)
            if member is None:
                raise KeyError(f"{name!r} is not a member of {shape.name}")
            _plain(out, name)
            _shaped(out, member, item)
    elif kind == "list":
        out += _head(4, len(value))
        for v in value:
            _shaped(out, shape.member, v)
    elif kind == "map":
        out += _head(5, len(value))
        for k, v in value.items():
            _plain(out, str(k))
            _shaped(out, shape.value, v)
    elif kind in ("double", "float"):
        _plain(out, float(value))
    elif kind == "timestamp":
        if not isinstance(value, datetime):
            value = datetime.fromtimestamp(float(value), UTC)
        _plain(out, value)
    else:
        _plain(out, value)
