"""The event-stream encoder, decoded by botocore's own parsers (pure; no network)."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any, cast

import botocore.session
import pytest
from botocore.eventstream import EventStream, EventStreamBuffer
from botocore.exceptions import EventStreamError
from botocore.model import StructureShape
from botocore.parsers import EventStreamJSONParser

from modelhost.router.eventstream import (
    internal_stream_failure,
    model_stream_error,
    payload_part,
)

OPERATION = "InvokeEndpointWithResponseStream"


def decode(data: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


class _Raw:
    """What botocore's EventStream reads from: an object whose stream() yields byte chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def stream(self) -> Iterator[bytes]:
        yield from self._chunks


def boto_events(chunks: list[bytes]) -> EventStream[Any]:
    """The EventStream boto3 hands to users, over the given raw chunks."""
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    output = model.operation_model(OPERATION).output_shape
    assert output is not None
    shape = cast(StructureShape, output.members["Body"])
    return EventStream(_Raw(chunks), shape, EventStreamJSONParser(), OPERATION)


def test_payload_part_headers_and_payload() -> None:
    (message,) = decode(payload_part(b"hello"))
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == b"hello"


def test_frame_layout_and_crcs() -> None:
    data = payload_part(b"xyz")
    total, headers_len, prelude_crc = struct.unpack(">III", data[:12])
    assert total == len(data)
    assert prelude_crc == zlib.crc32(data[:8])
    assert data[12 + headers_len : -4] == b"xyz"
    assert struct.unpack(">I", data[-4:])[0] == zlib.crc32(data[:-4])


@pytest.mark.parametrize("payload", [b"", b"\x00\xff" * 1000, "héllo".encode()])
def test_payloads_round_trip(payload: bytes) -> None:
    (message,) = decode(payload_part(payload))
    assert message.payload == payload


def test_model_stream_error() -> None:
    (message,) = decode(model_stream_error("it broke", "StreamBroken"))
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "ModelStreamError"
    assert message.headers[":content-type"] == "application/json"
    assert json.loads(message.payload) == {"Message": "it broke", "ErrorCode": "StreamBroken"}


def test_internal_stream_failure() -> None:
    (message,) = decode(internal_stream_failure("oops"))
    assert message.headers[":exception-type"] == "InternalStreamFailure"
    assert json.loads(message.payload) == {"Message": "oops"}


def test_messages_split_across_reads_decode_in_order() -> None:
    data = b"".join(payload_part(b"part %d" % i) for i in range(5))
    buffer = EventStreamBuffer()
    payloads = []
    for i in range(0, len(data), 7):
        buffer.add_data(data[i : i + 7])
        payloads += [m.payload for m in buffer]
    assert payloads == [b"part %d" % i for i in range(5)]


def test_boto3_parses_payload_parts() -> None:
    events = list(boto_events([payload_part(b"a"), payload_part(b"b")]))
    assert events == [{"PayloadPart": {"Bytes": b"a"}}, {"PayloadPart": {"Bytes": b"b"}}]


@pytest.mark.parametrize("code", ["StreamBroken", "ModelInvocationTimeExceeded"])
def test_boto3_raises_model_stream_error(code: str) -> None:
    events = boto_events([payload_part(b"a"), model_stream_error("went away", code)])
    it = iter(events)
    assert next(it) == {"PayloadPart": {"Bytes": b"a"}}
    with pytest.raises(EventStreamError) as info:
        next(it)
    error = info.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("ModelStreamError", "went away")


def test_boto3_raises_internal_stream_failure() -> None:
    with pytest.raises(EventStreamError) as info:
        list(boto_events([internal_stream_failure("router failed")]))
    assert info.value.response["Error"]["Code"] == "InternalStreamFailure"
