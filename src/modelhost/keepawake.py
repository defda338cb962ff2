"""Adaptive busy polling for the front server's event loop.

On a VM, a process that blocks in ``epoll_wait`` lets its vCPU halt, and the next event must
wake it again: on the 2-core Firecracker VM in docs/benchmarks.md that costs tens of
microseconds per wake-up, more than the router's own work for a request. After activity (a
request arrived, a response went out) ``KeepAwake`` keeps the loop polling without blocking
for a short window, so an event that comes soon finds it awake. Each pass yields the CPU, so
an instance or a client that is ready to run on the same CPU runs first.

It only polls while few requests are in flight (``SPIN_MAX_IN_FLIGHT``): that is when a
wake-up is a visible share of a request's time. Under load the loop seldom sleeps anyway,
and polling while requests wait on busy instances would take CPU from those instances. The
asynchronous inference workers' running slots count too (``BACKGROUND``): their requests wait
on the instances as well, and no front-server connection counts them.

The window adapts like KVM's halt polling: ``next_window`` grows it while events come within
the longest window, and shrinks it to nothing when they do not. A client that sends requests
back to back keeps the router awake (at most one core); sparse traffic or an idle server
costs nothing. ``MODELHOST_BUSY_POLL_US=0`` turns it off.
"""

from __future__ import annotations

import asyncio
import os
import time

GROW_START_S = 10e-6  # the window a grow from zero starts at
SPIN_MAX_IN_FLIGHT = 2  # with more requests in flight than this, the loop may sleep


class Background:
    """Work this process has in flight that no front-server request counts: the asynchronous
    inference workers' running slots (asyncinf/slot.py adds and takes away one per slot, not
    per request)."""

    __slots__ = ("slots",)

    def __init__(self) -> None:
        self.slots = 0


BACKGROUND = Background()  # one per process, like the event loop it concerns


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

    __slots__ = (
        "_clock",
        "_last",
        "_loop",
        "_running",
        "_until",
        "_yield",
        "longest",
        "passes",
        "window",
    )

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
        self._yield = getattr(os, "sched_yield", _no_yield)

    @property
    def polling(self) -> bool:
        """Whether the loop is being kept awake right now."""
        return self._running

    def kick(self, in_flight: int = 0) -> None:
        """Something happened, with ``in_flight`` requests now being answered: adapt the
        window and keep the loop awake for it (not at all under load)."""
        if self.longest <= 0:
            return
        if in_flight + BACKGROUND.slots > SPIN_MAX_IN_FLIGHT:
            self._until = 0.0  # a pass in progress stops at its next turn
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
            self._yield()
            assert self._loop is not None
            self._loop.call_soon(self._tick)
        else:
            self._running = False


def _no_yield() -> None:
    return None
