"""What the model server's connections (protocol.py) share: the server's options, and its
state (the handler or multi-model registry, the invoker, the open connections, shutdown)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modelhost.runtime.batching import BatchPolicy
from modelhost.runtime.handlers import ModelHandler
from modelhost.runtime.invokers import Invoker, PlainInvoker
from modelhost.runtime.multimodel import MultiModels

if TYPE_CHECKING:
    from modelhost.runtime.protocol import HttpConnection

DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    shutdown_grace_s: float = 20.0  # SageMaker sends SIGKILL 30 s after SIGTERM
    batching: BatchPolicy | None = None  # None: MODELHOST_BATCHING* from the environment
    unix_path: str | None = None  # also listen here (the platform's router prefers it)


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, handler: ModelHandler | MultiModels, options: ServerOptions) -> None:
        self.max_body = options.max_body_bytes
        self.connections: set[HttpConnection] = set()
        self.stopping = False
        self.all_closed = asyncio.Event()
        self.reading = 0  # invocations whose body is still arriving (batching counts them)
        # A multi-model server (SAGEMAKER_MULTI_MODEL): the MMS API, and the invoker.
        self.models: MultiModels | None = None
        self.invoker: Invoker  # the connections' unless one is given another
        if isinstance(handler, MultiModels):
            self.models = self.invoker = handler
        else:
            self.handler = handler
            self.invoker = PlainInvoker(handler)

    def begin_shutdown(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their response."""
        self.stopping = True
        for conn in list(self.connections):
            conn.close_when_idle()
        if not self.connections:
            self.all_closed.set()

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self.all_closed.set()


def say(message: str) -> None:
    """One line on stderr, as the model server reports everything it has to say."""
    print(f"modelhost.runtime: {message}", file=sys.stderr, flush=True)
