"""Noticing at once that an instance's process exited, without polling where the OS allows.

``watch_exit`` calls back once, on the event loop, when the process ends: through a pidfd
(Linux 5.3+: readable when the process exits) watched by the loop, else by polling the process.
It never reaps the process (``Popen.poll`` does that, as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Protocol

POLL_INTERVAL_S = 0.1  # the fallback where pidfd_open is not available

Cancel = Callable[[], None]


class Process(Protocol):
    """What the backends use of an instance's process: a ``subprocess.Popen``, or a
    ``ZygoteChild`` (a process the zygote forked). Either leads its own process group."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def watch_exit(process: Process, on_exit: Callable[[], None]) -> Cancel:
    """Call ``on_exit`` once when ``process`` exits; the result cancels the watch (idempotent).
    Must run on the loop thread."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or already reaped
        return _poll(loop, process, on_exit)
    return _watch_fd(loop, fd, on_exit)


def _watch_fd(loop: asyncio.AbstractEventLoop, fd: int, on_exit: Callable[[], None]) -> Cancel:
    open_fd = [fd]

    def cancel() -> None:
        if open_fd:
            loop.remove_reader(open_fd[0])
            os.close(open_fd.pop())

    def exited() -> None:
        cancel()
        on_exit()

    loop.add_reader(fd, exited)
    return cancel


def _poll(loop: asyncio.AbstractEventLoop, process: Process, on_exit: Callable[[], None]) -> Cancel:
    async def poll() -> None:
        while process.poll() is None:  # ends with the process, or when cancelled
            await asyncio.sleep(POLL_INTERVAL_S)
        on_exit()

    task = loop.create_task(poll(), name=f"watch-{process.pid}")

    def cancel() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to watch
            task.cancel()

    return cancel
