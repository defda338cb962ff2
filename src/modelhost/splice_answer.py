"""A large answer moved from an instance's socket into pipes, and from the pipes into the
client's socket (``os.splice``): the answer's side of splice.py, which says when and why."""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import time
from collections.abc import Callable

from modelhost.splice import FLAGS, PIPE_SIZE, SETPIPE_SZ, Waiter, advance


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
        "_waiter",
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
        self._waiter = Waiter(loop)
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
            n = os.splice(src, pipe[1], min(self._left, PIPE_SIZE), flags=FLAGS)
        except BlockingIOError:
            if _readable(src):  # the pipe is full: the next one
                self._new_pipe()
                return True
            self._waiter.wait(src, False, self.fill)
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
            self._waiter.wait(src, False, self.fill)
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
            fcntl.fcntl(w, SETPIPE_SZ, PIPE_SIZE)
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
            self._waiter.clear()
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
                self._waiter.wait(dst, True, self._send)
                return False
            advance(self._out, n)
            return True
        if self._pipes:
            pipe = self._pipes[0]
            if not pipe[2]:
                os.close(pipe[0])
                os.close(pipe[1])
                self._pipes.pop(0)
                return True
            try:
                pipe[2] -= os.splice(pipe[0], dst, pipe[2], flags=FLAGS)
            except BlockingIOError:
                self._waiter.wait(dst, True, self._send)
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
        self._waiter.clear()
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


def _readable(fd: int) -> int:
    """Bytes waiting in a socket."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
