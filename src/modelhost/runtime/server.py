"""Serving the model: listen on the TCP port (and the platform's Unix socket), until SIGTERM.

The HTTP protocol is in protocol.py; how invocations run (plain or batched) in invokers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

from modelhost.runtime.batched import make_batcher
from modelhost.runtime.handlers import ModelHandler
from modelhost.runtime.invokers import BatchingInvoker, Invoker
from modelhost.runtime.multimodel import MultiModels
from modelhost.runtime.protocol import HttpConnection
from modelhost.runtime.serverstate import DEFAULT_MAX_BODY_BYTES, ServerOptions, ServerState, say


async def serve(
    handler: ModelHandler | MultiModels,
    options: ServerOptions,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Listen until SIGTERM/SIGINT, then drain: in-flight requests finish, then return.
    ``handler``: the one model, or a multi-model server's models (loaded on request)."""
    loop = asyncio.get_running_loop()
    state = ServerState(handler, options)
    batcher = None if isinstance(handler, MultiModels) else make_batcher(handler, options, state)
    invoker: Invoker = state.invoker if batcher is None else BatchingInvoker(state.handler, batcher)

    def factory() -> HttpConnection:
        return HttpConnection(state, invoker)

    server = await loop.create_server(factory, options.host, options.port, backlog=1024)
    unix = await _unix_server(loop, factory, options.unix_path)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        host, port = server.sockets[0].getsockname()[:2]
        on_ready(host, port)
    await stop.wait()
    server.close()
    if unix is not None:
        unix.close()
        with contextlib.suppress(OSError):
            os.unlink(options.unix_path or "")
    state.begin_shutdown()
    try:
        await asyncio.wait_for(state.all_closed.wait(), options.shutdown_grace_s)
    except TimeoutError:
        say("shutdown grace period over")
    if batcher is not None:
        say(f"batching: {batcher.batched_requests} requests in {batcher.batches} batches")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)


async def _unix_server(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], HttpConnection],
    path: str | None,
) -> asyncio.Server | None:
    """The optional Unix socket beside the TCP port; failing to open it is not fatal."""
    if not path:
        return None
    with contextlib.suppress(OSError):
        os.unlink(path)
    try:
        return await loop.create_unix_server(factory, path, backlog=1024)
    except OSError as exc:
        say(f"not listening on unix socket {path}: {exc}")
        return None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(
    handler: ModelHandler | MultiModels,
    options: ServerOptions,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve on a uvloop event loop when uvloop is importable, else asyncio's default."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(handler, options, on_ready))


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "HttpConnection",
    "ServerOptions",
    "ServerState",
    "run",
    "serve",
]
