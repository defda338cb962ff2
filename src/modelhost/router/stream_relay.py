"""InvokeEndpointWithResponseStream's body: the container's chunks relayed as AWS event-stream
``PayloadPart`` events as they arrive, and the exception events that end a broken stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelhost.router.eventstream import internal_stream_failure, model_stream_error, payload_part
from modelhost.router.forwarder import UpstreamError, UpstreamStream, UpstreamTimeout

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ERROR_TEXT_LIMIT = 4096  # how much of a container's error body reaches OriginalMessage

log = logging.getLogger(__name__)


_STREAM_TIMEOUT_TEXT = (
    "Your model primary did not complete sending the inference response in the allotted time."
)
_STREAM_INTERNAL_TEXT = "The stream failed inside modelhost; see the server log. Try again."


async def relay(upstream: UpstreamStream, receive: Receive, send: Send, name: str) -> None:
    """Each part of the container's body as one PayloadPart event, as it arrives; a failure
    ends the stream with an exception event. A client that goes away stops the upstream."""
    gone = close_on_disconnect(upstream, receive)
    tail = b""
    try:
        async for part in upstream:
            await send(
                {"type": "http.response.body", "body": payload_part(part), "more_body": True}
            )
    except UpstreamTimeout:
        tail = model_stream_error(_STREAM_TIMEOUT_TEXT, "ModelInvocationTimeExceeded")
    except UpstreamError as exc:
        text = f"The response stream from model primary broke: {exc.reason}."
        tail = model_stream_error(text, "StreamBroken")
    except Exception:
        log.exception("streaming the response of endpoint %s failed", name)
        tail = internal_stream_failure(_STREAM_INTERNAL_TEXT)
    finally:
        gone.cancel()
    await send({"type": "http.response.body", "body": tail, "more_body": False})


def close_on_disconnect(upstream: UpstreamStream, receive: Receive) -> asyncio.Future[Message]:
    """Wait for the client to go away, then stop reading from the container."""

    def done(waiter: asyncio.Future[Message]) -> None:
        if waiter.cancelled() or waiter.exception() is not None:
            return
        if waiter.result().get("type") == "http.disconnect":
            upstream.close()

    waiter = asyncio.ensure_future(receive())
    waiter.add_done_callback(done)
    return waiter


async def error_text(upstream: UpstreamStream) -> str:
    """The start of a container's error body (for ModelError's OriginalMessage)."""
    parts: list[bytes] = []
    size = 0
    try:
        async for part in upstream:
            parts.append(part)
            size += len(part)
            if size >= ERROR_TEXT_LIMIT:
                break
    except UpstreamError:
        pass
    finally:
        await upstream.aclose()
    return b"".join(parts).decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
