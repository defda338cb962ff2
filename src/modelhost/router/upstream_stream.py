"""Streaming responses from an instance (InvokeEndpointWithResponseStream's upstream side)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from modelhost.router.upstream_conn import UpstreamConnection
from modelhost.router.upstream_types import (
    UpstreamProtocolError,
    UpstreamResponse,
)

# Called once when a stream is done with its connection: (connection, body read to the end).
Release = Callable[[UpstreamConnection, bool], None]

# A stream stops reading from the instance while more than this is parsed but not consumed,
# and reads again once the consumer is down to STREAM_LOW_WATER.
STREAM_HIGH_WATER = 256 * 1024
STREAM_LOW_WATER = 64 * 1024
# The largest part a stream hands out: bigger chunks (or a Content-Length body) are split.
STREAM_MAX_PART = 6 * 1024 * 1024


class UpstreamStream:
    """A response read as it arrives: `status` and `headers` (names lower-cased), then
    `async for part in stream` gives the body one HTTP chunk at a time (a Content-Length or
    close-delimited body comes as one part; parts over STREAM_MAX_PART are split).

    Iteration raises UpstreamProtocolError when the body ends abnormally (the instance closed
    the connection before the last chunk), UpstreamTimeout past the deadline; parts that
    arrived before either are handed out first. A slow consumer stops the reading from the
    instance (flow control). Call `aclose` when done, whether or not the body was read to the
    end: ``release`` gets the connection back, to be reused only after a complete body.
    """

    def __init__(
        self, conn: UpstreamConnection, deadline: float, timeout: float, release: Release
    ) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._release = release
        self._conn = conn
        self._deadline = deadline
        self._timeout = timeout
        loop = asyncio.get_running_loop()
        self._head: asyncio.Future[None] = loop.create_future()
        self._end: asyncio.Future[UpstreamResponse] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._parts: deque[bytes] = deque()
        self._partial: list[bytes] = []
        self._partial_size = 0
        self._buffered = 0
        self._paused = False
        self._settled = False
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> bytes:
        end = self._end
        assert end is not None
        while True:
            if self._parts:
                return self._take()
            if end.done():
                self._settle()
                if self._parts:
                    continue
                exc = end.exception()
                self._finish(exc is None)
                if exc is not None:
                    raise exc
                raise StopAsyncIteration
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

    async def aclose(self) -> None:
        """Hand the connection back (dropping it unless the body was complete); idempotent."""
        self.close()

    def close(self) -> None:
        """`aclose` for synchronous callers (a done-callback); iteration stops after it."""
        end = self._end
        self._settled = True
        self._partial.clear()
        self._parts.clear()
        self._finish(end is not None and end.done() and end.exception() is None)
        self._wake()

    # -- driven by the pool (forwarder.py) and the connection's sinks ---------------------

    async def start(self, head: bytes, body: bytes, first: float, first_timeout: float) -> None:
        conn = self._conn
        conn.head_sink = self._on_head
        conn.body_sink = self._on_body
        conn.chunk_done = self._on_chunk
        self._end = end = conn.send(head, body, first, first_timeout, True)
        end.add_done_callback(self._on_end)
        await self._head

    def _on_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers
        self._conn.rearm(self._deadline, self._timeout)
        if not self._head.done():
            self._head.set_result(None)

    def _on_body(self, data: bytes) -> None:
        self._partial.append(data)
        self._partial_size += len(data)
        if self._partial_size >= STREAM_MAX_PART:
            self._on_chunk()

    def _on_chunk(self) -> None:
        if not self._partial_size:
            return
        part = self._partial[0] if len(self._partial) == 1 else b"".join(self._partial)
        self._partial.clear()
        self._partial_size = 0
        self._parts.append(part)
        self._buffered += len(part)
        if self._buffered > STREAM_HIGH_WATER and not self._paused:
            self._set_reading(False)
        self._wake()

    def _on_end(self, end: asyncio.Future[UpstreamResponse]) -> None:
        exc = end.exception()  # also marks it retrieved
        if not self._head.done():
            if exc is not None:
                self._head.set_exception(exc)
            else:  # cannot happen for status >= 200: the head comes first
                self._head.set_result(None)
        self._settle()
        self._wake()

    def _settle(self) -> None:
        """Once the response is over: what is left of the last chunk becomes a part."""
        if not self._settled:
            self._settled = True
            self._on_chunk()

    def _take(self) -> bytes:
        part = self._parts.popleft()
        self._buffered -= len(part)
        if self._paused and self._buffered <= STREAM_LOW_WATER:
            self._set_reading(True)
        return part

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _set_reading(self, reading: bool) -> None:
        self._paused = not reading
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()

    def detach(self) -> None:
        """Unhook from the connection (the pool does this when the head never came)."""
        conn = self._conn
        conn.head_sink = conn.body_sink = conn.chunk_done = None

    def _finish(self, complete: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._paused:
            self._set_reading(True)
        self.detach()
        if not complete and self._end is not None and not self._end.done():
            self._conn.fail(UpstreamProtocolError("the stream was closed before its end"))
        self._release(self._conn, complete)
