"""One HTTP/1.1 connection to a built-in instance that carries requests back to back
(pipelining): the requests of one event-loop pass go out in one write, and the answers, which
come back in order, are matched to them in order.

Only for modelhost's own model server on its Unix socket with one worker (local backend): it
answers pipelined requests in order, one at a time, like any single-threaded server would, so
a connection per request buys nothing there but system calls. Containers, multi-worker and
batching instances keep a connection per request (upstream_conn.py).

Failure rules. The head request (the oldest unanswered) is the only one the instance can be
working on. If the connection drops or the head request times out, the head request fails as
it would on a connection of its own; the requests behind it were not started, and fail with
``ClosedBeforeResponse``, which the caller retries on a fresh connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import httptools

from modelhost.http11 import JOIN_MAX
from modelhost.router.upstream_conn import Done
from modelhost.router.upstream_types import (
    ClosedBeforeResponse,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
    UpstreamTimeout,
)

MAX_DEPTH = 256  # requests outstanding on one pipeline; more go to connections of their own
# Requests are written when this many are waiting, else at the end of the loop pass. Writing
# all of a pass at once (32 at c=32) makes a convoy: the instance idles while the router reads
# the pass's requests, then the router idles while the instance answers them all. Smaller
# writes let the two overlap (bench/router_overhead.py at c=32, docs/benchmarks.md run F:
# router/direct 0.51 writing per pass, 0.58 at 4, 0.62 at 8, 0.60 at 16).
FLUSH_AT = 8


class Pipeline(asyncio.Protocol):
    """A pipelined connection; ``send`` queues a request, ``on_done`` gets its answer once."""

    def __init__(self, on_lost: Callable[[Pipeline], None]) -> None:
        self._loop = asyncio.get_running_loop()  # cached: a system call on Python 3.11
        self._on_lost = on_lost
        self._parser = httptools.HttpResponseParser(self)
        self._waiting: deque[tuple[Done, float, float]] = deque()  # on_done, deadline, timeout
        self._out: list[bytes] = []  # heads and bodies waiting for the write
        self._out_bytes = 0
        self._unsent = 0  # requests in _out
        self._flushing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._started = False  # bytes of the head request's answer have arrived
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._framed = False
        self.transport: asyncio.Transport | None = None
        self.open = False  # takes requests
        self.streamed = False  # an answer came in chunks: the instance streams (see the pool)

    @property
    def depth(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._waiting)

    @property
    def unsent(self) -> int:
        """Requests waiting for the write (see ``FLUSH_AT``)."""
        return self._unsent

    def send(
        self, head: bytes, body: bytes, deadline: float, timeout: float, on_done: Done
    ) -> None:
        """Queue one request (its head, through the blank line, and its body)."""
        self._waiting.append((on_done, deadline, timeout))
        out = self._out
        out.append(head)
        if body:
            out.append(body)
        self._out_bytes += len(head) + len(body)
        self._unsent += 1
        if self._unsent >= FLUSH_AT:
            self._flush()
            return
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush_later)  # after the rest of this loop pass
        if self._timer is None:
            self._arm(deadline)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()

    def _flush_later(self) -> None:
        self._flushing = False
        self._flush()

    def _flush(self) -> None:
        """Write what is queued: small requests joined into one buffer, large bodies as
        buffers of their own (one vectored write, no copy)."""
        out = self._out
        if out and self.transport is not None and self.open:
            if len(out) == 1:
                self.transport.write(out[0])
            elif self._out_bytes <= JOIN_MAX:
                self.transport.write(b"".join(out))
            else:
                self.transport.writelines(out)
        out.clear()
        self._out_bytes = self._unsent = 0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._drop(UpstreamProtocolError(f"malformed response from instance: {exc}"))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all(
            UpstreamProtocolError("connection closed mid-response")
            if self._started
            else ClosedBeforeResponse("connection closed before any response")
        )
        self._on_lost(self)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._waiting:
            raise UpstreamProtocolError("unsolicited data on an idle connection")
        self._started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._framed = True
        elif name == b"transfer-encoding":
            self._framed = self.streamed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._status = status = self._parser.get_status_code()
        if status >= 200 and (not self._framed or not self._parser.should_keep_alive()):
            self.open = False  # the answers behind this one cannot follow on this connection

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200:  # 1xx informational: the real answer follows
            self._headers = []
            self._framed = False
            return
        response = UpstreamResponse(self._status, self._headers, self._chunks or [b""])
        self._headers = []
        self._chunks = []
        self._framed = self._started = False
        on_done = self._waiting.popleft()[0]
        if not self.open:
            self._drop(ClosedBeforeResponse("the instance closed the pipelined connection"))
        on_done(response)

    # -- internals -----------------------------------------------------------------------

    def _drop(self, head_error: UpstreamError) -> None:
        """Stop using the connection: the head request gets ``head_error`` (when its answer
        had begun), the rest are not started and may be retried."""
        self.open = False
        if self._started:
            on_done = self._waiting.popleft()[0]
            self._started = False
            on_done(head_error)
        self._fail_all(ClosedBeforeResponse("not sent: the pipelined connection was dropped"))
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, head_error: UpstreamError) -> None:
        waiting = self._waiting
        error = head_error
        while waiting:
            on_done = waiting.popleft()[0]
            on_done(error)
            error = ClosedBeforeResponse("not sent: the pipelined connection was dropped")

    def _arm(self, deadline: float) -> None:
        self._timer_at = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        _, deadline, timeout = self._waiting[0]
        if self._loop.time() < deadline:
            self._arm(deadline)
            return
        on_done = self._waiting.popleft()[0]
        self._started = False
        self.open = False
        on_done(UpstreamTimeout(f"no complete response from instance within {timeout:g} s"))
        self._fail_all(ClosedBeforeResponse("not sent: the pipelined connection timed out"))
        if self.transport is not None:
            self.transport.abort()
