"""Adaptive busy polling for the front server's event loop.

On a VM, a process that blocks in ``epoll_wait`` lets its vCPU halt, and the next event must
wake it again: on the 2-core Firecracker VM in docs/benchmarks.md that costs tens of
microseconds per wake-up, more than the router's own work for a request. After activity (a
request arrived, a response went out) ``KeepAwake`` keeps the loop polling without blocking
for a short window, so an event that comes soon finds it awake. Each pass costs a clock read
and a ready callback, nothing more: the scheduler preempts the polling loop as it would any
busy process when an instance or a client wakes on the same CPU.

The window adapts like KVM's halt polling: ``next_window`` grows it while events come within
the longest window, and shrinks it to nothing when they do not. A client that sends requests
back to back keeps the router awake (at most one core); sparse traffic or an idle server
costs nothing. ``MODELHOST_BUSY_POLL_US=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import time

GROW_START_S = 10e-6  # the window a grow from zero starts at


def next_window(window: float, waited: float, longest: float) -> float:
    """The next poll window (seconds) after an event came ``waited`` seconds after the
    previous one, when the window was ``window``.

    An event within ``longest`` of the previous one would have been (or was) caught by
    polling: grow the window (double it, from ``GROW_START_S`` when it was zero), up to
    ``longest``. A later event means the poll was wasted: halve it, and drop it to zero once
    it falls under ``GROW_START_S``.
    """
    if longest <= 0:
        return 0.0
    if waited <= longest:
        return min(longest, max(window * 2, GROW_START_S))
    half = window / 2
    return half if half >= GROW_START_S else 0.0


class KeepAwake:
    """Call ``kick`` on activity; the loop then stays awake for the current window."""

    __slots__ = ("_clock", "_last", "_loop", "_running", "_until", "longest", "passes", "window")

    def __init__(self, longest_s: float) -> None:
        self.longest = max(0.0, longest_s)
        self.window = self.longest
        self._last = 0.0
        self._until = 0.0
        self._running = False
        self._clock = time.perf_counter
        # Cached: on Python 3.11, asyncio.get_running_loop() makes a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0  # loop passes made while kept awake (for tests and curiosity)

    @property
    def polling(self) -> bool:
        """Whether the loop is being kept awake right now."""
        return self._running

    def kick(self) -> None:
        """Something happened: adapt the window and keep the loop awake for it."""
        if self.longest <= 0:
            return
        now = self._clock()
        self.window = window = next_window(self.window, now - self._last, self.longest)
        self._last = now
        self._until = now + window
        if window > 0 and not self._running:
            self._running = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        # A ready callback makes the loop poll for I/O with a zero timeout instead of blocking.
        if self._clock() < self._until:
            self.passes += 1
            assert self._loop is not None
            self._loop.call_soon(self._tick)
        else:
            self._running = False
