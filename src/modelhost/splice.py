"""A large request body moved from the client's socket to an instance's socket by the kernel,
never copied through Python: ``os.splice`` through a pipe (Linux).

The front server (httpserver.py) parses a request head as usual. When the body is large and
has a Content-Length (not chunked, within the payload limit) and its first bytes are all that
arrived with the head, it stops reading the client's socket and hands the request on with a
``SplicedBody`` in place of the bytes: the parts already read (``prefix``) and the client's
socket (a duplicate of its descriptor) holding the rest. The upstream connection
(router/upstream_conn.py) then ``start``\\ s it on its own socket (also a duplicate): the
request head and the prefix are written, and the rest goes client socket -> pipe -> instance
socket, ``size`` bytes counted exactly. When the last byte is through, the front server reads
the client's socket again (its next request, keep-alive or pipelined).

What can go wrong, and what happens:
- the client closes or resets mid-body: the upstream request fails (``on_client_lost``), the
  client's connection is closed (``on_end(False)``);
- the instance's socket fails mid-body (it closed, or its connection was aborted after a
  timeout): the rest of the body is read and dropped, so that the client's connection stays
  in step and gets the error the router answers; if nothing of the client's socket was taken
  yet, the body can be started again on another connection (the pool's retry);
- the answer is known before the body is through (an error, or an instance that answered
  early): ``discard`` drops the rest the same way.
Every descriptor (two duplicates, two pipe ends) is closed when the body ends, either way.

Memory per request: the pipe (at most ``PIPE_SIZE`` bytes of page references) and the prefix.

Answers are not spliced: an instance's answer is read into memory and written to the client
with ``writelines`` (splicing large answers cost the instance more CPU and the client more
latency than the copies saved: docs/benchmarks.md, run K).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Callable

AVAILABLE = hasattr(os, "splice")  # Linux; elsewhere nothing is spliced
# Bodies from this size are spliced, when the rest is not yet read. Below it the
# fixed costs (pipes, descriptors, waits) outweigh the copies saved: measured on a 2-vCPU VM
# at c=8, the router's CPU per request went +15% at 200 KB, +30% at 512 KB, even at 1 MB,
# -20% at 2 MB and -45% at 5 MB (docs/benchmarks.md, run I).
SPLICE_MIN = 1536 * 1024 if AVAILABLE else 1 << 62
PIPE_SIZE = 1 << 20  # the pipe's capacity, when the kernel grants it
SETPIPE_SZ = 1031  # fcntl's F_SETPIPE_SZ (Linux)
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if AVAILABLE else 0


class SplicedBody:
    """A request body of ``size`` bytes: ``prefix`` read already, the rest in ``src`` (a
    non-blocking descriptor this object owns and closes)."""

    __slots__ = (
        "_dst",
        "_in_pipe",
        "_left",
        "_loop",
        "_on_client_lost",
        "_on_sent",
        "_out",
        "_pipe",
        "_src",
        "_waiter",
        "discarding",
        "finished",
        "last_moved",
        "on_end",
        "prefix",
        "size",
        "taken",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: int,
        prefix: list[bytes],
        size: int,
        on_end: Callable[[bool], None],
    ) -> None:
        self._loop = loop
        self._src: int | None = src
        self.prefix = prefix
        self.size = size
        self.on_end = on_end  # True: the body was read to its end; False: the client failed
        self._left = size - sum(map(len, prefix))  # still in the client's socket
        self._in_pipe = 0
        self._pipe: tuple[int, int] | None = None
        self._dst: int | None = None
        self._out: list[bytes | memoryview] = []
        self._on_client_lost: Callable[[], None] | None = None
        self._on_sent: Callable[[], None] | None = None
        self.last_moved = time.monotonic()  # when bytes last came from the client
        self._waiter = Waiter(loop)
        self.taken = False  # bytes were taken from the client's socket (no retry after)
        self.discarding = False
        self.finished = False

    # -- the upstream connection's side ----------------------------------------------------

    def start(
        self,
        dst: int,
        head: bytes,
        on_client_lost: Callable[[], None],
        on_sent: Callable[[], None],
    ) -> None:
        """Write ``head``, the prefix and the rest of the body to ``dst`` (a non-blocking
        descriptor this object now owns). ``on_client_lost`` is called if the client fails
        before the body is through, ``on_sent`` once it is all written."""
        if self.finished or self.discarding or self.taken:
            os.close(dst)  # too late to send it (a retry after bytes were taken is refused)
            on_client_lost()
            return
        self._detach()
        self._dst = dst
        self._on_client_lost = on_client_lost
        self._on_sent = on_sent
        self._out = [head, *self.prefix]
        self._pump()

    def upstream_lost(self) -> None:
        """The instance's connection is gone (or answered): stop writing to it. The rest of
        the body is dropped if bytes were taken already; else it waits for a new ``start``."""
        if self.finished or self._dst is None:
            return
        self._detach()
        if self.taken:
            self.discard()

    def discard(self) -> None:
        """The answer is known: read the rest of the body and drop it."""
        if self.finished:
            return
        self._detach()
        self.discarding = True
        self._pump()

    def waiting_for_client(self) -> bool:
        """Whether the body waits for the client's next bytes (not for the instance)."""
        current = self._waiter.current
        return current is not None and not current[1]

    def cancel(self) -> None:
        """The client's connection was closed by the server: end without reading on."""
        if not self.finished:
            self._end(False)

    # -- the pump --------------------------------------------------------------------------

    def _pump(self) -> None:
        try:
            while self._step():
                pass
        except OSError as exc:
            if exc.filename == "dst":
                self.upstream_lost()
            else:
                self._end(False)

    def _step(self) -> bool:
        """One move; False when waiting (or ended)."""
        dst = self._dst
        if self._out and dst is not None:
            return self._write_out(dst)
        pipe = self._pipe
        if self._in_pipe:
            assert pipe is not None
            if self.discarding:
                self._in_pipe -= len(os.read(pipe[0], self._in_pipe))
                return True
            if dst is None:
                self._waiter.clear()
                return False  # waiting for ``start`` or ``discard``
            n = self._to_instance(dst, lambda: os.splice(pipe[0], dst, self._in_pipe, flags=FLAGS))
            if n is None:
                return False
            self._in_pipe -= n
            return True
        if self._left:
            if dst is None and not self.discarding:
                self._waiter.clear()
                return False
            return self._read_in()
        self._end(True)
        return False

    def _write_out(self, dst: int) -> bool:
        n = self._to_instance(dst, lambda: os.writev(dst, self._out))
        if n is None:
            return False
        advance(self._out, n)
        return True

    def _to_instance(self, dst: int, move: Callable[[], int]) -> int | None:
        """Bytes moved to the instance's socket by ``move``; None: it is full (waiting). Its
        errors are marked "dst" (the instance's side failed, not the client's)."""
        try:
            return move()
        except BlockingIOError:
            self._waiter.wait(dst, True, self._pump)
            return None
        except OSError as exc:
            exc.filename = "dst"
            raise

    def _read_in(self) -> bool:
        src = self._src
        assert src is not None
        pipe = self._pipe or self._open_pipe()
        try:
            n = os.splice(src, pipe[1], min(self._left, PIPE_SIZE), flags=FLAGS)
        except BlockingIOError:
            self._waiter.wait(src, False, self._pump)
            return False
        if n == 0:  # the client closed its side before the whole body
            raise ConnectionResetError("client closed mid-body")
        self.taken = True
        self.last_moved = time.monotonic()
        self._left -= n
        self._in_pipe += n
        return True

    def _open_pipe(self) -> tuple[int, int]:
        pipe = self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more system calls
            fcntl.fcntl(pipe[1], SETPIPE_SZ, PIPE_SIZE)
        return pipe

    def _detach(self) -> None:
        """Stop writing to the instance (its descriptor closed; queued bytes dropped)."""
        dst, self._dst = self._dst, None
        self._out = []
        self._on_client_lost = self._on_sent = None
        if dst is not None:
            self._waiter.clear_fd(dst)
            os.close(dst)

    def _end(self, ok: bool) -> None:
        self._waiter.clear()  # before any close: epoll keys on the open file, not the number
        self.finished = True
        lost, sent = self._on_client_lost, self._on_sent
        self._detach()
        for fd in (self._src, *(self._pipe or ())):
            if fd is not None:
                os.close(fd)
        self._src = self._pipe = None
        self._in_pipe = 0
        if not ok and lost is not None:
            lost()
        elif ok and sent is not None:
            sent()
        self.on_end(ok)


def advance(out: list[bytes | memoryview], n: int) -> None:
    """Drop the first ``n`` bytes written from ``out``."""
    while n and out:
        first = len(out[0])
        if n >= first:
            n -= first
            out.pop(0)
        else:
            out[0] = memoryview(out[0])[n:]
            n = 0


class Waiter:
    """The one descriptor a transfer waits on, through the event loop (level-triggered). A
    wait for the same descriptor and direction as the current one is kept: no system call."""

    __slots__ = ("_loop", "current")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.current: tuple[int, bool] | None = None  # (fd, writing)

    def wait(self, fd: int, writing: bool, then: Callable[[], None]) -> None:
        if self.current == (fd, writing):
            return
        self.clear()
        self.current = (fd, writing)
        if writing:
            self._loop.add_writer(fd, then)
        else:
            self._loop.add_reader(fd, then)

    def clear_fd(self, fd: int) -> None:
        """Stop waiting if the wait is on ``fd`` (before it is closed)."""
        if self.current is not None and self.current[0] == fd:
            self.clear()

    def clear(self) -> None:
        """Stop waiting; always before closing the descriptor (epoll keys on the open file)."""
        current, self.current = self.current, None
        if current is not None:
            if current[1]:
                self._loop.remove_writer(current[0])
            else:
                self._loop.remove_reader(current[0])
