"""What the upstream client hands back: responses and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass


class UpstreamError(Exception):
    """Base of every failure talking to an instance; `reason` says what happened."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamConnectError(UpstreamError):
    """Could not connect (the instance is gone or not listening), or the pool is closed."""


class UpstreamTimeout(UpstreamError):
    """No full response arrived within the request's timeout."""


class UpstreamProtocolError(UpstreamError):
    """Malformed response, or the connection dropped before the response was complete."""


class _ClosedBeforeResponse(UpstreamProtocolError):
    """The connection closed before any response byte: safe to retry on a fresh one."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # names lower-cased
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
