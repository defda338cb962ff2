"""MaxPayloadInMB 0: an input object streamed to the instance as one chunked request, and its
answer streamed into the output file; neither is ever held whole in memory.

The router's pools send whole bodies, so this is its own small HTTP/1.1 client: one
connection per request (``Connection: close``), httptools for the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import httptools

from modelhost.http11 import LAST_CHUNK, chunk
from modelhost.publish import Address

ERROR_TEXT_MAX = 300
READ_SIZE = 256 * 1024


class StreamFailed(Exception):
    """The request could not be sent or its answer not read; the message says why."""


class _Answer:
    """httptools callbacks: a 2xx body goes to ``sink``; an error's first bytes are kept."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.error = bytearray()
        self.complete = False
        self.last = b""

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if 200 <= self.status < 300:
            self.sink.write(body)
            self.last = body[-1:]
        elif len(self.error) < ERROR_TEXT_MAX:
            self.error += body[: ERROR_TEXT_MAX - len(self.error)]

    def on_message_complete(self) -> None:
        self.complete = True


async def stream_call(
    address: Address,
    headers: list[tuple[bytes, bytes]],
    read: Callable[[], Awaitable[bytes]],
    sink: BinaryIO,
    timeout: float,
) -> tuple[int, bytes, bytes]:
    """POST /invocations with the body ``read`` returns piece by piece (b"" ends it); the
    status, the start of an error answer, and the last byte written to ``sink``."""
    try:
        return await asyncio.wait_for(_call(address, headers, read, sink), timeout)
    except TimeoutError:
        raise StreamFailed(f"no whole answer within {timeout:.0f} s") from None
    except (OSError, httptools.HttpParserError) as exc:
        raise StreamFailed(f"the connection failed: {exc}") from exc


async def _call(
    address: Address,
    headers: list[tuple[bytes, bytes]],
    read: Callable[[], Awaitable[bytes]],
    sink: BinaryIO,
) -> tuple[int, bytes, bytes]:
    if address.unix_path is not None:
        reader, writer = await asyncio.open_unix_connection(address.unix_path)
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        head = [b"POST /invocations HTTP/1.1\r\n", b"Host: %b\r\n" % str(address).encode()]
        head += [b"%b: %b\r\n" % (k, v) for k, v in headers]
        head.append(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        writer.write(b"".join(head))
        while piece := await read():
            writer.write(chunk(piece))
            await writer.drain()
        writer.write(LAST_CHUNK)
        await writer.drain()
        answer = _Answer(sink)
        while not answer.complete:
            data = await reader.read(READ_SIZE)
            if not data:
                raise StreamFailed("the instance closed the connection before its whole answer")
            answer.parser.feed_data(data)
        return answer.status, bytes(answer.error), answer.last
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
