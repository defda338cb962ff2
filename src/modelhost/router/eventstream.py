"""AWS event-stream messages for InvokeEndpointWithResponseStream (pure).

A message is a prelude (total length u32, headers length u32, CRC32 of those 8 bytes), the
headers, the payload, and a CRC32 of everything before it (all big-endian). Each header is
``[name length u8][name][type u8][value length u16][value]``; only type 7 (string) is written.
botocore's ``EventStreamBuffer`` decodes what this module encodes (see the unit tests).
"""

from __future__ import annotations

import json
import struct
import zlib

__all__ = ["encode", "internal_stream_failure", "model_stream_error", "payload_part"]

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_PRELUDE_AND_CRCS = _PRELUDE.size + 2 * _CRC.size


def _header(name: bytes, value: bytes) -> bytes:
    return b"".join(
        (bytes((len(name),)), name, bytes((_STRING,)), struct.pack(">H", len(value)), value)
    )


def _headers(*pairs: tuple[bytes, bytes]) -> bytes:
    return b"".join(_header(name, value) for name, value in pairs)


# The header blocks never change; build them once.
_PAYLOAD_PART = _headers(
    (b":event-type", b"PayloadPart"),
    (b":content-type", b"application/octet-stream"),
    (b":message-type", b"event"),
)
_MODEL_STREAM_ERROR = _headers(
    (b":exception-type", b"ModelStreamError"),
    (b":content-type", b"application/json"),
    (b":message-type", b"exception"),
)
_INTERNAL_STREAM_FAILURE = _headers(
    (b":exception-type", b"InternalStreamFailure"),
    (b":content-type", b"application/json"),
    (b":message-type", b"exception"),
)


def encode(headers: bytes, payload: bytes) -> bytes:
    """One message from an encoded header block and a payload."""
    prelude = _PRELUDE.pack(_PRELUDE_AND_CRCS + len(headers) + len(payload), len(headers))
    prelude += _CRC.pack(zlib.crc32(prelude))
    message = b"".join((prelude, headers, payload))
    return message + _CRC.pack(zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data`` as is."""
    return encode(_PAYLOAD_PART, data)


def model_stream_error(message: str, error_code: str) -> bytes:
    """A ``ModelStreamError`` exception; ``error_code`` is ``StreamBroken`` or
    ``ModelInvocationTimeExceeded``."""
    body = json.dumps({"Message": message, "ErrorCode": error_code}).encode()
    return encode(_MODEL_STREAM_ERROR, body)


def internal_stream_failure(message: str) -> bytes:
    """An ``InternalStreamFailure`` exception (the platform itself failed mid-stream)."""
    return encode(_INTERNAL_STREAM_FAILURE, json.dumps({"Message": message}).encode())
