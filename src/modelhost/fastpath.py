"""The front server's fast path (httpserver.py): requests the app answers on callbacks,
without ASGI messages or a task (the runtime API's InvokeEndpoint, router/invoke.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from modelhost.http11 import Payload
from modelhost.http11 import head_bytes as head_bytes  # FastPath's heads; the router uses it
from modelhost.splice import SplicedBody

Reply = Callable[[bytes, Payload], None]


class FastPath(Protocol):
    """Requests the app answers without ASGI messages or a task: the runtime API's
    InvokeEndpoint, the hot path. ``dispatch`` gets the raw path, the lower-cased headers,
    the whole body and a ``reply(head, body)`` to call once, now or later; the answer is
    written back in one ``transport.write``. ``head`` is the status line and header lines,
    each ending in CRLF (see ``head_bytes``); it must not include Content-Length,
    Transfer-Encoding or Connection: the server writes those and the blank line."""

    def accepts(self, method: bytes, path: bytes) -> bool: ...

    def dispatch(
        self, path: bytes, headers: list[tuple[bytes, bytes]], body: Payload, reply: Reply
    ) -> None: ...


@runtime_checkable
class SplicingFastPath(FastPath, Protocol):
    """A fast path that can take a large body still in the client's socket (splice.py)."""

    def splices(self, path: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether this accepted request's body may come as a ``SplicedBody``."""
        ...

    def dispatch(
        self,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Payload | SplicedBody,
        reply: Reply,
    ) -> None: ...
