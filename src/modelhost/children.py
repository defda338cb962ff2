"""What every child process modelhost starts shares: it dies with its parent."""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def _find_prctl() -> Callable[..., Any] | None:
    # Looked up once, in the parent: dlopen between fork and exec may deadlock on a lock
    # another thread of the parent held at fork time.
    try:
        prctl: Callable[..., Any] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return prctl


_PRCTL = _find_prctl()


def die_with_parent() -> None:
    """In a child (between fork and exec, or in a worker): get SIGTERM when the parent thread
    dies, however it dies (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    if _PRCTL is not None:
        with contextlib.suppress(OSError):
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def can_die_with_parent() -> bool:
    """Whether :func:`die_with_parent` does anything here (Linux)."""
    return _PRCTL is not None
