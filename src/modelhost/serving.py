"""Running the front server: lifespan startup, listening, draining on SIGTERM/SIGINT.

The connection protocol is in httpserver.py.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

from modelhost.asgi_cycle import ASGI, ASGIApp, Message
from modelhost.fastpath import FastPath
from modelhost.httpserver import HEAD_TIMEOUT_S, IDLE_TIMEOUT_S, HttpProtocol
from modelhost.keepawake import KeepAwake


class Server:
    """Run ``app``: lifespan startup, serve until SIGTERM/SIGINT, drain, lifespan shutdown."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        max_body: int,
        drain_s: float = 30.0,
        fast: FastPath | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        busy_poll_s: float = 0.0,
        head_timeout_s: float = HEAD_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.idle_timeout_s = idle_timeout_s
        self.head_timeout_s = head_timeout_s
        self.fast = fast
        self.address = (host, port)
        self.max_body = max_body
        self.drain_s = drain_s
        self.awake = KeepAwake(busy_poll_s)  # see keepawake.py; 0 turns it off
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # fast-path requests being answered (they run without a task)
        self.stopping = False
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, on_listening: Callable[[], None] | None = None) -> None:
        """Bind first (a taken port fails before the app starts anything), then lifespan
        startup, then accept connections until stopped."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HttpProtocol(self),
            *self.address,
            reuse_address=True,
            backlog=1024,
            start_serving=False,
        )
        lifespan = _Lifespan(self.app)
        try:
            await lifespan.startup()
        except BaseException:
            server.close()
            raise
        await server.start_serving()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if on_listening is not None:
            on_listening()
        sweeper = asyncio.create_task(self._sweep_idle())
        try:
            await self._stop.wait()
        finally:
            sweeper.cancel()
            await self._shutdown(server, lifespan)

    async def _sweep_idle(self) -> None:
        """Close connections idle (or stuck mid-request) longer than the idle timeout, and
        refuse request heads that take longer than the head timeout to arrive. One periodic
        pass instead of a timer per request keeps the hot path free of it."""
        period = max(0.05, min(self.idle_timeout_s / 4, self.head_timeout_s / 4, 15.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            cutoff, head_cutoff = now - self.idle_timeout_s, now - self.head_timeout_s
            for conn in list(self.connections):
                conn.refuse_slow_head(head_cutoff)
                conn.close_if_idle(cutoff)

    async def _shutdown(self, server: asyncio.Server, lifespan: _Lifespan) -> None:
        self.stopping = True
        server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = time.monotonic() + self.drain_s
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.drain_s)
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        await lifespan.shutdown()


class _Lifespan:
    """The ASGI lifespan protocol, from the server's side."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self.task = asyncio.create_task(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait([self.finished, self.task], return_when=asyncio.FIRST_COMPLETED)

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": {}}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as exc:
            for fut in (self.started, self.finished):
                if not fut.done():
                    fut.set_exception(exc)
            raise

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set_result(None)
        elif kind == "lifespan.startup.failed":
            self.started.set_exception(RuntimeError(message.get("message", "startup failed")))
        elif kind.startswith("lifespan.shutdown"):
            self.finished.set_result(None)
