"""One keep-alive HTTP/1.1 connection to an instance: writes a request, parses the response
with httptools, and hands the outcome to a callback (or a future), once.

Used by `UpstreamPool` (forwarder.py), which owns the connections; a stream
(upstream_stream.py) reads a response body as it arrives through the sinks.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import cast

import httptools

from modelhost.http11 import JOIN_MAX, Payload
from modelhost.router.upstream_types import (
    ClosedBeforeResponse,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.splice import SplicedBody

Done = Callable[[UpstreamResponse | UpstreamError], None]


def write_request(transport: asyncio.Transport, head: bytes, body: Payload) -> None:
    """A request's head and body: joined when small, else as buffers of their own (one
    vectored write; the body is never copied)."""
    if type(body) is bytes:
        if len(body) <= JOIN_MAX:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
    else:
        transport.writelines([head, *body])


_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")
_NO_BODY_STATUSES = (204, 304)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; parses responses and resolves one waiter at a time."""

    __slots__ = (
        "_at_head",
        "_body_pump",
        "_chunks",
        "_deadline",
        "_eof_body",
        "_framed",
        "_headers",
        "_live",
        "_loop",
        "_on_done",
        "_parser",
        "_status",
        "_timeout",
        "_timer",
        "_timer_at",
        "body_sink",
        "chunk_done",
        "closed",
        "got_bytes",
        "head_sink",
        "reusable",
        "transport",
    )

    def __init__(self, live: set[UpstreamConnection]) -> None:
        self._live = live
        # Cached: on Python 3.11, asyncio.get_running_loop() makes a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._on_done: Done | None = None
        # One lazy timer per connection instead of one per request: it is armed for the
        # first deadline and, when it fires early (a later request moved the deadline),
        # re-armed for the current one. A request only sets _deadline.
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._framed = False
        self._eof_body = False
        self._at_head = False
        self._body_pump: SplicedBody | None = None  # a body being spliced into this socket
        self.body_sink: Callable[[bytes], None] | None = None
        self.head_sink: Callable[[int, list[tuple[bytes, bytes]]], None] | None = None
        self.chunk_done: Callable[[], None] | None = None
        self.got_bytes = False
        self.reusable = False
        self.closed = False

    # -- exchange, called by the pool --------------------------------------------------

    def start(
        self,
        head: bytes,
        body: Payload | SplicedBody,
        deadline: float,
        timeout: float,
        at_head: bool,
        on_done: Done,
    ) -> None:
        """Write one request (its head, through the blank line, and its body); ``on_done``
        gets its response or an UpstreamError, once.

        `at_head`: act once the head is parsed: hand it to `head_sink` when set (a stream; the
        body follows), else finish (a HEAD request, whose response has no body).
        """
        assert self.transport is not None
        self._on_done = on_done
        self._arm(deadline, timeout)
        self._at_head = at_head
        self.got_bytes = False
        self.reusable = False
        if isinstance(body, SplicedBody):
            self._splice(head, body)
        else:
            write_request(self.transport, head, body)

    def _splice(self, head: bytes, body: SplicedBody) -> None:
        """Write the request through a pipe from the client's socket (splice.py)."""
        assert self.transport is not None
        self._body_pump = body
        sock = self.transport.get_extra_info("socket")
        body.start(os.dup(sock.fileno()), head, self._client_lost, self._body_sent)

    def _client_lost(self) -> None:
        self.fail(UpstreamProtocolError("the client closed its connection mid-body"))

    def _body_sent(self) -> None:
        """The timeout counts from the end of the body, as for a body read whole first."""
        self.rearm(self._loop.time() + self._timeout, self._timeout)

    def send(
        self, head: bytes, body: bytes, deadline: float, timeout: float, at_head: bool
    ) -> asyncio.Future[UpstreamResponse]:
        """`start`, with a future for the outcome."""
        waiter: asyncio.Future[UpstreamResponse] = self._loop.create_future()

        def settle(result: UpstreamResponse | UpstreamError) -> None:
            if waiter.done():
                return
            if isinstance(result, UpstreamResponse):
                waiter.set_result(result)
            else:
                waiter.set_exception(result)

        self.start(head, body, deadline, timeout, at_head, settle)
        return waiter

    def rearm(self, deadline: float, timeout: float) -> None:
        """Move the pending request's deadline (a stream's, once its head is in)."""
        if self._on_done is not None:
            self._arm(deadline, timeout)

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def fail(self, exc: UpstreamError) -> None:
        """Fail the pending request (if any) and drop the connection."""
        self._resolve_error(exc)
        self.abort()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.fail(UpstreamProtocolError(f"malformed response from instance: {exc}"))

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the pending request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._live.discard(self)
        self._stop_pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_done is None:
            return
        if self._eof_body and exc is None:
            self._finish()  # body delimited by end of stream
        elif not self.got_bytes:
            self._resolve_error(ClosedBeforeResponse("connection closed before any response"))
        else:
            self._resolve_error(UpstreamProtocolError("connection closed mid-response"))

    # -- httptools callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._on_done is None:
            raise UpstreamProtocolError("unsolicited data on an idle connection")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _FRAMING_HEADERS:
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._status = self._parser.get_status_code()
        self.reusable = self._parser.should_keep_alive() and status != 101
        if self._at_head and status >= 200:
            if self.head_sink is None:
                self.reusable = False  # the parser cannot know a HEAD response has no body
                self._finish()
                return
            self.head_sink(status, list(self._headers))
        if not self._framed and status >= 200 and status not in _NO_BODY_STATUSES:
            self._eof_body = True

    def on_body(self, body: bytes) -> None:
        if self.body_sink is not None:
            self.body_sink(body)
        else:
            self._chunks.append(body)

    def on_chunk_complete(self) -> None:
        if self.chunk_done is not None:
            self.chunk_done()

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx informational: the real response follows
            self._headers = []
            self._framed = False
            return
        if self._on_done is not None:
            self._finish()

    # -- internals ---------------------------------------------------------------------

    def _stop_pump(self) -> None:
        """No more of a spliced body goes to this socket (the connection is gone, or its
        answer came before the whole body went out: then it is not reused)."""
        pump, self._body_pump = self._body_pump, None
        if pump is not None and not pump.finished:
            self.reusable = False
            pump.upstream_lost()

    def _finish(self) -> None:
        if self._body_pump is not None:
            self._stop_pump()
        response = UpstreamResponse(self._status, self._headers, self._chunks or [b""])
        on_done = self._take()
        if on_done is not None:
            on_done(response)

    def _resolve_error(self, exc: UpstreamError) -> None:
        on_done = self._take()
        if on_done is not None:
            on_done(exc)

    def _take(self) -> Done | None:
        on_done, self._on_done = self._on_done, None
        self._headers = []  # handed to the response, with the chunks
        self._chunks = []
        self._framed = self._eof_body = False
        return on_done

    def _arm(self, deadline: float, timeout: float) -> None:
        self._deadline = deadline
        self._timeout = timeout
        timer = self._timer
        if timer is None or deadline < self._timer_at:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._on_done is None:
            return  # idle: the next request arms it again
        if self._loop.time() >= self._deadline:
            timeout = self._timeout
            pump = self._body_pump
            if pump is not None and pump.waiting_for_client():
                # the client is still sending its body: the instance has nothing to answer yet
                self._arm(self._loop.time() + timeout, timeout)
                return
            self.fail(UpstreamTimeout(f"no complete response from instance within {timeout:g} s"))
        else:
            self._arm(self._deadline, self._timeout)
