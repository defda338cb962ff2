"""`SAGEMAKER_MODEL_SERVER_WORKERS=N`: N model server processes sharing one port.

The parent has loaded nothing heavy (configuration, code dir and requirements only). It reserves
the port with an SO_REUSEPORT socket that never listens, forks N workers and supervises them:

- each worker loads the model and serves the port with SO_REUSEPORT (the kernel spreads new
  connections over them), then reports `ready` (or `failed <why>`) on a pipe;
- a worker that fails before it is ready stops the others; the parent repeats the worker's
  one-line reason last on stderr (the endpoint's FailureReason) and exits 1;
- a worker that dies after it was ready is replaced, at most `MAX_RESTARTS` times in all;
- SIGTERM / SIGINT are forwarded to every worker; the parent exits once all have.

Waiting is event driven: a selector over the pipe and one pidfd per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelhost.children import die_with_parent

MAX_RESTARTS = 5
_MESSAGE_LIMIT = 3000  # pipe writes under PIPE_BUF (4096) are atomic

# run in a worker: (worker index, report ready, report failure) -> exit status
Work = Callable[[int, Callable[[], None], Callable[[str], None]], int]


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: fixes the port (0 picks one) for workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def reuse_port_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """An event loop (uvloop when importable) whose create_server sets reuse_port=True.

    server.py binds with `loop.create_server(factory, host, port)`; this lets several
    processes serve one port without changing it.
    """
    try:
        import uvloop

        base: type[Any] = uvloop.Loop
    except ImportError:
        base = asyncio.SelectorEventLoop

    class ReusePortLoop(base):  # type: ignore[misc]
        async def create_server(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("reuse_port", True)
            return await super().create_server(*args, **kwargs)

    return ReusePortLoop


@dataclass
class _Worker:
    index: int
    pid: int
    pidfd: int
    ready: bool = False


@dataclass
class Supervisor:
    count: int
    work: Work
    say: Callable[[str], None]
    workers: dict[int, _Worker] = field(default_factory=dict)
    restarts: int = 0
    stopping: bool = False
    reason: str | None = None  # why the workers were stopped, said last
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _read_fd: int = -1
    _write_fd: int = -1
    _buffer: bytes = b""

    def run(self) -> int:
        self._read_fd, self._write_fd = os.pipe()
        self._selector.register(self._read_fd, selectors.EVENT_READ, None)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.count):
                self._start(index)
            while self.workers:
                for key, _ in self._selector.select():
                    if key.data is None:
                        self._read_reports()
                    else:
                        self._reap(key.data)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._selector.close()
            os.close(self._read_fd)
            os.close(self._write_fd)
        if self.reason is None:
            return 0
        self.say(self.reason)  # last, after every worker's own output
        return 1

    # --- workers -----------------------------------------------------------------------------

    def _start(self, index: int) -> None:
        signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # no handler runs in a half-made child
        try:
            pid = os.fork()
            if pid == 0:  # the worker
                os._exit(self._child(index, signals))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        pidfd = os.pidfd_open(pid)
        worker = _Worker(index, pid, pidfd)
        self.workers[pid] = worker
        self._selector.register(pidfd, selectors.EVENT_READ, worker)

    def _child(self, index: int, signals: set[signal.Signals]) -> int:
        code = 1
        try:
            for sig in signals:
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
            self._selector.close()
            os.close(self._read_fd)
            write_fd = self._write_fd
            code = self.work(
                index,
                lambda: _report(write_fd, f"{os.getpid()} ready"),
                lambda why: _report(write_fd, f"{os.getpid()} failed {why}"),
            )
        except BaseException as exc:  # never return into the parent's stack
            with contextlib.suppress(Exception):
                print(f"modelhost.runtime: worker {index}: {exc!r}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        return code

    def _read_reports(self) -> None:
        chunk = os.read(self._read_fd, 65536)
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            pid_text, _, rest = line.decode("utf-8", "replace").partition(" ")
            worker = self.workers.get(int(pid_text)) if pid_text.isdigit() else None
            if worker is None:
                continue
            state, _, why = rest.partition(" ")
            if state == "ready":
                worker.ready = True
            elif state == "failed" and not self.stopping:
                self._fail(why)

    def _reap(self, worker: _Worker) -> None:
        self._selector.unregister(worker.pidfd)
        os.close(worker.pidfd)
        _, wait_status = os.waitpid(worker.pid, 0)
        del self.workers[worker.pid]
        code = os.waitstatus_to_exitcode(wait_status)
        if self.stopping:
            return
        if not worker.ready:
            self._fail(f"worker {worker.index} exited with status {code} while loading")
        elif self.restarts < MAX_RESTARTS:
            self.restarts += 1
            self.say(
                f"worker {worker.index} (pid {worker.pid}) exited with status {code}; "
                "starting another"
            )
            self._start(worker.index)
        else:
            self._fail(
                f"worker {worker.index} exited with status {code}; "
                f"{MAX_RESTARTS} workers were replaced already, giving up"
            )

    # --- stopping ----------------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self.reason = why
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        self.stopping = True
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop(signum)


def _report(fd: int, message: str) -> None:
    data = message.replace("\n", " ")[:_MESSAGE_LIMIT].encode("utf-8", "replace") + b"\n"
    os.write(fd, data)


def supervise(count: int, work: Work, say: Callable[[str], None]) -> int:
    """Run `work` in `count` forked workers until they stop; the exit status."""
    return Supervisor(count, work, say).run()
