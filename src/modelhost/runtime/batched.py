"""Batching for a server: its `Batcher`, and connections whose invocations share predict_fn
calls (batching.py decides; invokers.py's `BatchingInvoker` runs each request)."""

from __future__ import annotations

import os

from modelhost.runtime.batching import Batcher, BatchPolicy
from modelhost.runtime.handlers import ModelHandler
from modelhost.runtime.invokers import BatchingInvoker
from modelhost.runtime.protocol import HttpConnection
from modelhost.runtime.serverstate import ServerOptions, ServerState, say


class BatchingConnection(HttpConnection):
    """A connection whose invocations go through the server's `Batcher`: an `HttpConnection`
    with a `BatchingInvoker`, nothing more."""

    __slots__ = ()

    def __init__(self, state: ServerState, batcher: Batcher) -> None:
        super().__init__(state, BatchingInvoker(state.handler, batcher))


def make_batcher(
    handler: ModelHandler, options: ServerOptions, state: ServerState
) -> Batcher | None:
    """The server's Batcher when batching is on and the handlers allow it, else None."""
    policy = options.batching or BatchPolicy.from_env(os.environ)
    if not policy.enabled:
        return None
    if not handler.batchable:
        say("MODELHOST_BATCHING ignored: transform_fn, or a predict_fn taking a context")
        return None
    ms = policy.max_delay_s * 1000
    say(f"batching on: up to {policy.max_batch_size} rows, waiting at most {ms:g} ms")
    return Batcher(policy, handler.predict, coming=lambda: state.reading)
