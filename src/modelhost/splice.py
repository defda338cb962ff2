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
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
import time
from collections.abc import Callable

# Bodies from this size are spliced (when the rest is not yet read). Below it the fixed costs
# (pipes, descriptors, waits) outweigh the copies saved: measured on a 2-vCPU VM at c=8, the
# router's CPU per request went +15% at 200 KB, +30% at 512 KB, even at 1 MB, -20% at 2 MB
# and -45% at 5 MB (docs/benchmarks.md, run H).
AVAILABLE = hasattr(os, "splice")  # Linux; elsewhere nothing is spliced
SPLICE_MIN = 1536 * 1024 if AVAILABLE else 1 << 62
PIPE_SIZE = 1 << 20  # the pipe's capacity, when the kernel grants it
_F_SETPIPE_SZ = 1031
_FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if AVAILABLE else 0


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
        "_watch",
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
        self._watch: tuple[int, bool] | None = None  # (fd, writing) being waited on
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
        watch = self._watch
        return watch is not None and not watch[1]

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
                self._unwatch()
                return False  # waiting for ``start`` or ``discard``
            try:
                self._in_pipe -= os.splice(pipe[0], dst, self._in_pipe, flags=_FLAGS)
            except BlockingIOError:
                self._wait(dst, writing=True)
                return False
            except OSError as exc:
                exc.filename = "dst"
                raise
            return True
        if self._left:
            if dst is None and not self.discarding:
                self._unwatch()
                return False
            return self._read_in()
        self._end(True)
        return False

    def _write_out(self, dst: int) -> bool:
        try:
            n = os.writev(dst, self._out)
        except BlockingIOError:
            self._wait(dst, writing=True)
            return False
        except OSError as exc:
            exc.filename = "dst"
            raise
        _advance(self._out, n)
        return True

    def _read_in(self) -> bool:
        src = self._src
        assert src is not None
        pipe = self._pipe or self._open_pipe()
        try:
            n = os.splice(src, pipe[1], min(self._left, PIPE_SIZE), flags=_FLAGS)
        except BlockingIOError:
            self._wait(src, writing=False)
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
            fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, PIPE_SIZE)
        return pipe

    def _wait(self, fd: int, writing: bool) -> None:
        """Wait for ``fd``; a wait already in place is kept (no system call)."""
        if self._watch == (fd, writing):
            return
        self._unwatch()
        self._watch = (fd, writing)
        if writing:
            self._loop.add_writer(fd, self._pump)
        else:
            self._loop.add_reader(fd, self._pump)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            if watch[1]:
                self._loop.remove_writer(watch[0])
            else:
                self._loop.remove_reader(watch[0])

    def _detach(self) -> None:
        """Stop writing to the instance (its descriptor closed; queued bytes dropped)."""
        dst, self._dst = self._dst, None
        self._out = []
        self._on_client_lost = self._on_sent = None
        if dst is not None:
            if self._watch is not None and self._watch[0] == dst:
                self._unwatch()
            os.close(dst)

    def _end(self, ok: bool) -> None:
        self._unwatch()  # before any close: epoll keys on the open file, not the number
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


class SplicedAnswer:
    """An instance's large answer moved out of its socket into pipes (``fill``) and, once it is
    all there, from the pipes into the client's socket (``send``): ``size`` bytes, ``prefix``
    first (read with the answer's head). The whole answer is in before anything is sent, so an
    instance that fails mid-answer still gets the caller its error, as for an answer read
    whole. If no pipe can be had (descriptors or pipe memory run out), the rest is read into
    memory instead (``tail``): slower, never wrong."""

    __slots__ = (
        "_dst",
        "_in_memory",
        "_left",
        "_loop",
        "_on_filled",
        "_on_sent",
        "_out",
        "_pipes",
        "_src",
        "_tail",
        "_watch",
        "closed",
        "last_moved",
        "prefix",
        "size",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: int,
        prefix: list[bytes],
        size: int,
        on_filled: Callable[[bool], None],
    ) -> None:
        self._loop = loop
        self.last_moved = time.monotonic()  # when bytes last went to the client
        self._src: int | None = src
        self.prefix = prefix
        self.size = size
        self._left = size - sum(map(len, prefix))
        self._on_filled: Callable[[bool], None] | None = on_filled
        self._on_sent: Callable[[bool], None] | None = None
        self._pipes: list[list[int]] = []  # [read end, write end, bytes in it], in order
        self._in_memory = False
        self._tail: list[bytes] = []
        self._dst: int | None = None
        self._out: list[bytes | memoryview] = []
        self._watch: tuple[int, bool] | None = None
        self.closed = False

    # -- in: the instance's socket -> pipes ------------------------------------------------

    def fill(self) -> None:
        """Take the rest of the answer from the instance's socket; ``on_filled(True)`` once
        it is all in (``src`` is closed then), ``on_filled(False)`` if the socket ended or
        failed first (everything is closed then)."""
        try:
            while self._left:
                if not self._fill_step():
                    return
        except OSError:
            self._filled(False)
            return
        self._filled(True)

    def _fill_step(self) -> bool:
        src = self._src
        assert src is not None
        pipe = None if self._in_memory else self._pipes[-1] if self._pipes else self._new_pipe()
        if pipe is None:
            return self._read_to_memory(src)
        try:
            n = os.splice(src, pipe[1], min(self._left, PIPE_SIZE), flags=_FLAGS)
        except BlockingIOError:
            if _readable(src):  # the pipe is full: the next one
                self._new_pipe()
                return True
            self._wait(src, writing=False, then=self.fill)
            return False
        if n == 0:
            raise ConnectionResetError("the instance closed its connection mid-answer")
        pipe[2] += n
        self._left -= n
        return True

    def _read_to_memory(self, src: int) -> bool:
        try:
            data = os.read(src, min(self._left, PIPE_SIZE))
        except BlockingIOError:
            self._wait(src, writing=False, then=self.fill)
            return False
        if not data:
            raise ConnectionResetError("the instance closed its connection mid-answer")
        self._tail.append(data)
        self._left -= len(data)
        return True

    def _new_pipe(self) -> list[int] | None:
        """A pipe of PIPE_SIZE bytes appended, or None (and memory from now on)."""
        try:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._in_memory = True
            return None
        try:
            fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            os.close(r)
            os.close(w)
            self._in_memory = True
            return None
        pipe = [r, w, 0]
        self._pipes.append(pipe)
        return pipe

    def _filled(self, ok: bool) -> None:
        on_filled, self._on_filled = self._on_filled, None
        if ok:
            self._unwatch()
            src, self._src = self._src, None
            if src is not None:
                os.close(src)
        else:
            self.close()
        if on_filled is not None:
            on_filled(ok)

    # -- out: pipes -> the client's socket -------------------------------------------------

    def send(self, dst: int, head: bytes, on_sent: Callable[[bool], None]) -> None:
        """Write ``head``, the prefix, the pipes and the tail to ``dst`` (a non-blocking
        descriptor this object now owns); ``on_sent`` gets whether all of it went, after
        everything is closed."""
        self._dst = dst
        self._on_sent = on_sent
        self._out = [head, *self.prefix]
        self.last_moved = time.monotonic()
        self._send()

    def _send(self) -> None:
        dst = self._dst
        assert dst is not None
        try:
            while self._send_step(dst):
                pass
        except OSError:
            self._sent(False)
            return
        self.last_moved = time.monotonic()

    def _send_step(self, dst: int) -> bool:
        if self._out:
            try:
                n = os.writev(dst, self._out)
            except BlockingIOError:
                self._wait(dst, writing=True, then=self._send)
                return False
            _advance(self._out, n)
            return True
        if self._pipes:
            pipe = self._pipes[0]
            if not pipe[2]:
                os.close(pipe[0])
                os.close(pipe[1])
                self._pipes.pop(0)
                return True
            try:
                pipe[2] -= os.splice(pipe[0], dst, pipe[2], flags=_FLAGS)
            except BlockingIOError:
                self._wait(dst, writing=True, then=self._send)
                return False
            return True
        if self._tail:
            self._out, self._tail = list(self._tail), []
            return True
        self._sent(True)
        return False

    def _sent(self, ok: bool) -> None:
        on_sent, self._on_sent = self._on_sent, None
        self.close()
        if on_sent is not None:
            on_sent(ok)

    # -- either way -----------------------------------------------------------------------

    def read_all(self) -> list[bytes]:
        """The whole answer in memory (for a caller that cannot splice); closes everything."""
        parts = list(self.prefix)
        for pipe in self._pipes:
            while pipe[2]:
                data = os.read(pipe[0], pipe[2])
                pipe[2] -= len(data)
                parts.append(data)
        parts += self._tail
        self.close()
        return parts

    def close(self) -> None:
        """Close every descriptor (idempotent); nothing is called back."""
        self._unwatch()
        self.closed = True
        self._on_filled = self._on_sent = None
        for fd in (self._src, self._dst):
            if fd is not None:
                os.close(fd)
        self._src = self._dst = None
        for pipe in self._pipes:
            os.close(pipe[0])
            os.close(pipe[1])
        self._pipes = []
        self._out = []
        self._tail = []

    def _wait(self, fd: int, writing: bool, then: Callable[[], None]) -> None:
        if self._watch == (fd, writing):
            return
        self._unwatch()
        self._watch = (fd, writing)
        if writing:
            self._loop.add_writer(fd, then)
        else:
            self._loop.add_reader(fd, then)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            if watch[1]:
                self._loop.remove_writer(watch[0])
            else:
                self._loop.remove_reader(watch[0])


def _advance(out: list[bytes | memoryview], n: int) -> None:
    """Drop the first ``n`` bytes written from ``out``."""
    while n and out:
        first = len(out[0])
        if n >= first:
            n -= first
            out.pop(0)
        else:
            out[0] = memoryview(out[0])[n:]
            n = 0


def _readable(fd: int) -> int:
    """Bytes waiting in a socket."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
