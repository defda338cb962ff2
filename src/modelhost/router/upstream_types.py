"""What the upstream client hands back: responses and the errors it raises."""

from __future__ import annotations


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


class ClosedBeforeResponse(UpstreamProtocolError):
    """The connection closed before any response byte: safe to retry on a fresh one."""


class UpstreamResponse:
    """An instance's whole answer. The body is kept as the parts it arrived in (``parts``):
    ``payload`` hands them on as they are, so a large answer reaches the caller without being
    joined; ``body`` joins them (once) for whoever needs one ``bytes``."""

    __slots__ = ("_body", "headers", "parts", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], parts: list[bytes]) -> None:
        self.status = status
        self.headers = headers  # names lower-cased
        self.parts = parts
        self._body: bytes | None = None

    @property
    def body(self) -> bytes:
        body = self._body
        if body is None:
            parts = self.parts
            body = self._body = parts[0] if len(parts) == 1 else b"".join(parts)
        return body

    @property
    def payload(self) -> bytes | list[bytes]:
        """The body as one ``bytes`` when it came in one part, else its parts."""
        parts = self.parts
        return parts[0] if len(parts) == 1 else (self._body or parts)

    def header(self, name: bytes) -> bytes | None:
        """First value of header `name` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None
