"""What every child process modelhost starts shares: it dies with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal


def die_with_parent() -> None:
    """In a child (between fork and exec, or in a worker): get SIGTERM when the parent thread
    dies, however it dies (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
