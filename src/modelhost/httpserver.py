"""modelhost's front HTTP server: HTTP/1.1 on raw asyncio and httptools, speaking just enough
ASGI (``http`` and ``lifespan``) to run the app.

Why not uvicorn: the runtime API's budget is tens of microseconds per request, and uvicorn's
general machinery spent most of it (bench/router_overhead.py, docs/benchmarks.md): two writes
per response, per-request header validation, flow-control objects. Here a response that the app
sends in one ``http.response.body`` message is one ``transport.write`` (asgi_cycle.py), and the
hot path skips ASGI altogether (fastpath.py's ``FastPath``: router/invoke.py).

Request bodies are buffered up to ``max_body + 1`` bytes and the rest is discarded, so the app
can refuse an oversized body with its own error shape without the server holding it in memory.

This module is one connection's protocol; serving.py runs it (lifespan, listening, draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote

import httptools

from modelhost.asgi_cycle import ASGI, Cycle, Scope, plain
from modelhost.fastpath import SplicingFastPath
from modelhost.http11 import (
    CONTINUE,
    JOIN_MAX,
    FlowControl,
    Payload,
    status_line,
)
from modelhost.splice import AVAILABLE as SPLICE_AVAILABLE
from modelhost.splice import SPLICE_MIN, SplicedBody

if TYPE_CHECKING:
    from modelhost.serving import Server

log = logging.getLogger(__name__)

_KEEP = b"\r\n"
_CLOSE = b"connection: close\r\n\r\n"
_MAX_PIPELINED = 16
_MAX_HEAD = 64 * 1024  # request line and headers; more is refused with 431
_LINGER_S = 1.0  # after refusing a request, how long its remaining input is read and dropped
IDLE_TIMEOUT_S = 120.0  # a connection with no request in progress is closed after this
# A request head (request line and headers) must arrive whole within this many seconds of its
# first byte, however steadily it trickles in (slowloris); otherwise 408 and close.
HEAD_TIMEOUT_S = 30.0


class HttpProtocol(FlowControl):
    """One client connection: parse requests, run them through the app one at a time."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # (ASGI scope, or None for the fast path with its raw path), headers, body, keep-alive
        self.queue: deque[tuple[Scope | None, bytes, list[tuple[bytes, bytes]], Payload, bool]] = (
            deque()
        )
        self.busy = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._expect = False  # Expect: 100-continue
        self._client: tuple[str, int] | None = None
        self.failed = False
        self._refusal: bytes | None = None  # a 4xx owed after the requests queued before it
        self.last_request = False  # after an upgrade request: answer it, then close
        self.last_active = time.monotonic()  # the server's sweep closes long-idle connections
        self.head_started = 0.0  # when the head being received began arriving; 0: none is
        self._in_body = False
        self._length = 0  # the request's Content-Length, when it has one
        self._splice_len = 0  # when set: the body may be spliced if the head came without it
        self._splice: SplicedBody | None = None  # a body being spliced out of this socket
        self._after_splice: bool | None = None  # answered while splicing: keep-alive, to do

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.failed or self.last_request:
            return
        self.last_active = now = time.monotonic()
        if not self.head_started and not self._in_body:
            self.head_started = now
        self.server.awake.kick(self.server.in_flight)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An upgrade we do not do (curl --http2 asks for h2c): the request itself has
            # been read; answer it in HTTP/1.1, then close (the parser stops at an upgrade).
            self.last_request = True
            if not self.busy and not self.queue:
                self.close()  # answered already (the fast path can answer synchronously)
        except httptools.HttpParserError as exc:
            self._fail(400, f"Malformed HTTP request: {exc}".encode())
            return
        if self._splice_len and self._in_body:
            self._start_splice()

    def eof_received(self) -> bool:
        """The client shut its sending side (a half-close, or a client that sent its requests
        and waits): answer what it already sent, then close. True keeps the transport open
        for those answers; with nothing to answer, False lets it close."""
        if not self.busy and not self.queue:
            return False
        self.last_request = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self._splice is not None:
            self._splice.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        self.resume_writing()  # a response sent in parts stops waiting for the socket
        self.transport = None

    # -- httptools callbacks --------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > _MAX_HEAD:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        self._head_size += len(name) + len(value)
        if self._head_size > _MAX_HEAD:
            self._head_too_large()
        if name == b"expect":
            self._expect = value.lower() == b"100-continue"
        elif name == b"content-length" and value.isdigit():
            self._length = int(value)

    def _head_too_large(self) -> None:
        self._fail(431, b"Request header fields too large.")
        raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        self.head_started = 0.0
        self._in_body = True
        if self._length >= SPLICE_MIN and SPLICE_AVAILABLE:
            self._consider_splice()
        if not self._expect or self.transport is None or self.busy or self.queue:
            return  # a 100 Continue must not land inside another request's response
        self.transport.write(CONTINUE)

    def on_body(self, body: bytes) -> None:
        room = self.server.max_body + 1 - self._size
        if room > 0:
            part = body if len(body) <= room else body[:room]
            self._body.append(part)
            self._size += len(part)

    def on_message_complete(self) -> None:
        # take this request's parts and reset for the next one (no on_message_begin: one
        # parser callback less per request)
        parts, headers, url = self._body, self._headers, self._url
        # A large body goes to the fast path in its parts (it is written on without a copy).
        body: Payload = parts
        if len(parts) == 1:
            body = parts[0]
        elif self._size <= JOIN_MAX:
            body = b"".join(parts)
        self._url, self._headers, self._body = b"", [], []
        self._size = self._head_size = self._length = self._splice_len = 0
        self._expect = self._in_body = False
        keep_alive = self.parser.should_keep_alive()
        fast = self.server.fast
        path = url.partition(b"?")[0]
        if fast is not None and fast.accepts(self.parser.get_method(), path):
            if not self.busy and not self.queue and self.transport is not None:
                # the common case, straight through: nothing queued ahead of it
                self.busy = True
                self._run_fast(path, headers, body, keep_alive and not self.server.stopping)
                return
            self.queue.append((None, path, headers, body, keep_alive))
        else:
            self.queue.append((self._scope(url, headers), b"", headers, body, keep_alive))
        if len(self.queue) > _MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if not self.busy:
            self._next()

    # -- large bodies spliced to an instance (splice.py) -----------------------------------

    def _consider_splice(self) -> None:
        """At a large request's head: mark its body to be spliced if the fast path takes it
        and nothing else is under way on this connection."""
        fast = self.server.fast
        length = self._length
        if (
            fast is None
            or self.busy
            or self.queue
            or self._expect
            or self.transport is None
            or self.transport.get_extra_info("sslcontext") is not None  # bytes must be TLS's
            or length > self.server.max_body  # refused the ordinary way (ValidationError)
            or any(name == b"transfer-encoding" for name, _ in self._headers)
        ):
            return
        path = self._url.partition(b"?")[0]
        if (
            isinstance(fast, SplicingFastPath)
            and fast.accepts(self.parser.get_method(), path)
            and fast.splices(path, self._headers)
        ):
            self._splice_len = length

    def _start_splice(self) -> None:
        """The head came and the body did not all come with it: stop reading, and hand the
        request on with the body still in the socket. A new parser takes the next request."""
        transport = self.transport
        assert transport is not None
        length, self._splice_len = self._splice_len, 0
        try:
            src = os.dup(transport.get_extra_info("socket").fileno())
        except OSError:
            return  # out of descriptors: the body is read the ordinary way
        transport.pause_reading()
        loop = asyncio.get_running_loop()
        body = self._splice = SplicedBody(loop, src, self._body, length, self._splice_ended)
        headers, path = self._headers, self._url.partition(b"?")[0]
        keep_alive = self.parser.should_keep_alive() and not self.server.stopping
        self.parser = httptools.HttpRequestParser(self)
        self._url, self._headers, self._body = b"", [], []
        self._size = self._head_size = self._length = 0
        self._in_body = False
        self.busy = True
        self._run_fast(path, headers, body, keep_alive)

    def _splice_ended(self, ok: bool) -> None:
        """The spliced body is through (``ok``), or the client failed mid-body (close)."""
        self._splice = None
        keep_alive, self._after_splice = self._after_splice, None
        if not ok or self.transport is None:
            self.close()
            return
        self.transport.resume_reading()
        if keep_alive is not None:
            self._done(keep_alive)

    def _answered(self, keep_alive: bool) -> None:
        body = self._splice
        if body is None:
            self._done(keep_alive)
            return
        self._after_splice = keep_alive  # answered before the body was through: drop it
        body.discard()

    # -- running requests -----------------------------------------------------------------

    def _scope(self, url: bytes, headers: list[tuple[bytes, bytes]]) -> Scope:
        parsed = httptools.parse_url(url)
        raw_path: bytes = parsed.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        return {
            "type": "http",
            "asgi": ASGI,
            "http_version": self.parser.get_http_version(),
            "method": self.parser.get_method().decode("ascii"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": "",
            "headers": headers,
            "client": self._client,
            "server": self.server.address,
        }

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            self.last_active = time.monotonic()
            if self._refusal is not None:
                self._refuse(self._refusal)
            return
        self.busy = True
        if self.transport.is_reading() is False and len(self.queue) <= _MAX_PIPELINED:
            self.transport.resume_reading()
        scope, path, headers, body, keep_alive = self.queue.popleft()
        keep_alive = keep_alive and not self.server.stopping
        if scope is None:
            self._run_fast(path, headers, body, keep_alive)
            return
        if not isinstance(body, bytes):
            body = b"".join(body)
        cycle = Cycle(self, body, keep_alive, no_body=scope["method"] == "HEAD")
        task = asyncio.get_running_loop().create_task(self._run(scope, cycle))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _run_fast(
        self,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Payload | SplicedBody,
        keep_alive: bool,
    ) -> None:
        # a SplicedBody comes only to a SplicingFastPath (_consider_splice)
        fast = cast(SplicingFastPath, self.server.fast)
        assert fast is not None
        answered = False
        tail = _KEEP if keep_alive else _CLOSE

        def reply(head: bytes, payload: Payload) -> None:
            nonlocal answered
            if answered:
                return
            answered = True
            self.server.in_flight -= 1
            transport = self.transport
            if transport is not None:
                if type(payload) is bytes and len(payload) <= JOIN_MAX:
                    framing = b"content-length: %d\r\n" % len(payload)
                    transport.write(b"".join((head, framing, tail, payload)))
                else:
                    parts = [payload] if isinstance(payload, bytes) else payload
                    framing = b"content-length: %d\r\n" % sum(map(len, parts))
                    transport.writelines([head + framing + tail, *parts])
            self._answered(keep_alive)

        self.server.in_flight += 1
        try:
            fast.dispatch(path, headers, body, reply)
        except Exception:
            log.exception("unhandled error serving POST %s", path.decode("latin-1"))
            keep_alive = False
            tail = _CLOSE
            reply(status_line(500) + b"content-type: text/plain\r\n", b"Internal Server Error")

    async def _run(self, scope: Scope, cycle: Cycle) -> None:
        try:
            await self.server.app(scope, cycle.receive, cycle.send)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if not cycle.head_sent:
                await plain(cycle, 500, b"Internal Server Error")
        if not cycle.done:
            if not cycle.head_sent:
                await plain(cycle, 500, b"The application sent no response.")
            else:  # a half-sent response can only be cut off
                cycle.keep_alive = False
        self._done(cycle.keep_alive)

    def _done(self, keep_alive: bool) -> None:
        self.server.awake.kick(self.server.in_flight)  # the next request may come right away
        if keep_alive and self.transport is not None and not (self.last_request and not self.queue):
            self._next()
        elif keep_alive and self._refusal is not None:
            self._refuse(self._refusal)  # the client half-closed after the bad request
        else:
            self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def close_if_idle(self, idle_since: float | None = None) -> None:
        """Close unless a request is being served (and, with ``idle_since``, unless the
        connection sent or finished something after that time)."""
        if idle_since is None:
            if not self.busy:
                self.close()
        elif (not self.busy and self.last_active < idle_since) or self._stalled(idle_since):
            self.close()

    def _stalled(self, since: float) -> bool:
        """A client that stopped sending its spliced body."""
        body = self._splice
        return body is not None and body.last_moved < since

    def refuse_slow_head(self, started_before: float) -> None:
        """408 and close when a request head began arriving before ``started_before`` and is
        still not whole (and no answer is being written on this connection)."""
        if self.head_started and self.head_started < started_before and not self.busy:
            self._fail(408, b"The request head did not arrive in time.")

    def _fail(self, status: int, text: bytes) -> None:
        """Answer a request we cannot parse, then close gently: stop sending, drop what the
        client still sends for a moment, then close (closing with unread input would reset
        the connection, and the client could lose the answer)."""
        transport = self.transport
        if transport is None or self.failed:
            return
        self.failed = True
        head = status_line(status) + b"content-type: text/plain\r\nconnection: close\r\n"
        refusal = head + b"content-length: %d\r\n\r\n%b" % (len(text), text)
        if self.busy or self.queue:
            self._refusal = refusal  # the requests before it are answered first, in order
            return
        self._refuse(refusal)

    def _refuse(self, refusal: bytes) -> None:
        self._refusal = None
        transport = self.transport
        if transport is None:
            return
        transport.write(refusal)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER_S, self.close)
