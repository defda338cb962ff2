"""HTTP/1.1 wire pieces shared by modelhost's two servers: the front server (httpserver.py) and
the built-in model server inside each instance (runtime/protocol.py).

Both servers assemble each response's bytes themselves, so that a response is one
``transport.write`` (their hot paths are measured in microseconds; see docs/benchmarks.md). What
they have in common lives here once: status lines, the interim ``100 Continue``, chunk framing,
a head from header pairs, and write flow control (``FlowControl``). Nothing here formats
per-request bytes the servers can precompute; they keep their own constant heads.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

# RFC 9110's reason phrase where Python's HTTPStatus still has RFC 7231's (before 3.13).
_RFC_9110_PHRASES = {413: "Content Too Large"}
_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {_RFC_9110_PHRASES.get(s.value, s.phrase)}\r\n".encode("latin-1")
    for s in HTTPStatus
}

# A body up to this size is joined to its head and written at once; a larger one goes to the
# transport as a buffer of its own (one vectored write), never copied: images, audio and
# documents are megabytes, and each copy of them costs more than a whole small request.
JOIN_MAX = 64 * 1024

# A body as one bytes, or (a large one) as the parts it arrived in, never joined.
Payload = bytes | list[bytes]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # the answer to Expect: 100-continue
LAST_CHUNK = b"0\r\n\r\n"  # ends a chunked body (no trailers)


def payload_size(payload: Payload) -> int:
    return len(payload) if isinstance(payload, bytes) else sum(map(len, payload))


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``; a status HTTPStatus does not know is "Unknown"."""
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body; b"" for no data (an empty chunk would end the
    body)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


def head_bytes(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A status line and one line per header, each ending in CRLF; no blank line (the caller
    adds its framing headers and the blank line)."""
    parts = [status_line(status)]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    return b"".join(parts)


def response_head(
    status: int, headers: list[tuple[bytes, bytes]], length: int, more: bool, keep_alive: bool
) -> tuple[bytes, bool]:
    """The whole head, blank line included; and whether the body goes out chunked (it is sent
    in parts, ``more``, and the headers give no Content-Length). A body sent at once without a
    Content-Length of the caller's gets one of ``length``."""
    parts = [status_line(status)]
    has_length = False
    for name, value in headers:
        if name.lower() == b"content-length":
            has_length = True
        parts += (name, b": ", value, b"\r\n")
    chunked = more and not has_length
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif not has_length:
        parts += (b"content-length: ", str(length).encode(), b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts), chunked


class FlowControl(asyncio.Protocol):
    """An asyncio.Protocol with write flow control, for a server that sends a body in parts.

    The transport calls ``pause_writing`` when its buffer passes the high-water mark and
    ``resume_writing`` once it has drained. A sender that produces more parts checks
    ``write_paused`` after a write and, while it is set, awaits ``resumed()``: a slow client
    then holds the producer back instead of the buffer growing without bound. A response
    written at once never looks at any of this, so the common path pays nothing for it.
    """

    __slots__ = ("_resumed", "write_paused")

    def __init__(self) -> None:
        self.write_paused = False
        self._resumed: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        """Let every waiting sender go on. A protocol whose connection is lost calls it too,
        so that nothing waits for a transport that is gone."""
        self.write_paused = False
        waiter, self._resumed = self._resumed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def resumed(self) -> asyncio.Future[None]:
        """A future done at the next ``resume_writing``; one for all the senders waiting."""
        if self._resumed is None:
            self._resumed = asyncio.get_running_loop().create_future()
        return self._resumed
