"""InvokeEndpointWithResponseStream end to end (boto3 -> router -> model server), plus the
router's mid-stream failure paths driven in-process against a scripted container."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.app import RuntimeApp
from modelhost.router.routing import RouteTable
from modelhost.runtime.handlers import HandlerOptions, ModelHandler, resolve_chain
from modelhost.runtime.server import HttpConnection, ServerOptions, ServerState
from modelhost.settings import Settings
from modelhost.state.store import Store
from tests.fixtures.server import (
    FIXTURE_MODELS,
    LiveServer,
    deploy,
    invoke_concurrently,
    unique,
)

pytestmark = pytest.mark.e2e


def _endpoint(server: LiveServer, model: str) -> str:
    sm = server.client("sagemaker")
    name = unique(model)
    assert deploy(sm, name, str(FIXTURE_MODELS / model))["EndpointStatus"] == "InService"
    return name


@pytest.fixture(scope="module")
def tokens(server: LiveServer) -> str:
    return _endpoint(server, "tokens")


@pytest.fixture(scope="module")
def streamfail(server: LiveServer) -> str:
    return _endpoint(server, "streamfail")


@pytest.fixture(scope="module")
def echo(server: LiveServer) -> str:
    return _endpoint(server, "echo")


def stream(rt: Any, name: str, body: bytes | str, **kwargs: Any) -> dict[str, Any]:
    out: dict[str, Any] = rt.invoke_endpoint_with_response_stream(
        EndpointName=name, Body=body, **kwargs
    )
    return out


def parts(response: dict[str, Any]) -> list[bytes]:
    return [event["PayloadPart"]["Bytes"] for event in response["Body"]]


def test_tokens_arrive_as_separate_payload_parts_in_order(rt: Any, tokens: str) -> None:
    body = json.dumps({"text": "the quick brown fox jumps"})
    out = stream(rt, tokens, body, ContentType="application/json", Accept="text/plain")
    assert parts(out) == [b"the", b"quick", b"brown", b"fox", b"jumps"]
    assert out["ContentType"] == "text/plain"
    assert out["InvokedProductionVariant"] == "AllTraffic"
    assert out["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/vnd.amazon.eventstream"
    )


@pytest.mark.parametrize("use_async", [False, True], ids=["generator", "async-generator"])
def test_first_event_arrives_well_before_the_last(rt: Any, tokens: str, use_async: bool) -> None:
    words = "one two three four five six"
    body = json.dumps({"text": words, "delay": 0.15, "async": use_async})
    start = time.monotonic()
    out = stream(rt, tokens, body, ContentType="application/json")
    arrivals = []
    for event in out["Body"]:
        arrivals.append((time.monotonic() - start, event["PayloadPart"]["Bytes"]))
    total = time.monotonic() - start
    assert [word for _, word in arrivals] == words.encode().split()
    assert total >= 5 * 0.15
    assert arrivals[0][0] < total / 2


def test_custom_attributes_and_headers_reach_the_container(rt: Any, tokens: str) -> None:
    out = stream(
        rt,
        tokens,
        b'{"text": "a b"}',
        ContentType="application/json",
        CustomAttributes="trace=abc-123",
        InferenceId="inf-1",
        TargetVariant="AllTraffic",
    )
    assert parts(out) == [b"a", b"b"]
    assert out["CustomAttributes"] == "trace=abc-123"  # the model server echoes it


def test_failure_mid_stream_is_a_model_stream_error(rt: Any, streamfail: str) -> None:
    out = stream(rt, streamfail, b"x", ContentType="text/plain")
    events = iter(out["Body"])
    assert next(events) == {"PayloadPart": {"Bytes": b"first"}}
    assert next(events) == {"PayloadPart": {"Bytes": b"second"}}
    with pytest.raises(EventStreamError) as info:
        next(events)
    assert info.value.response["Error"]["Code"] == "ModelStreamError"
    assert "broke" in info.value.response["Error"]["Message"]


def test_non_streaming_model_answers_in_one_part(rt: Any, echo: str) -> None:
    body = b'{"a": [1, 2, 3]}' * 100
    out = stream(rt, echo, body, ContentType="application/json")
    assert parts(out) == [body]
    assert out["ContentType"] == "application/json"


def test_unknown_endpoint_is_validation_error(rt: Any) -> None:
    with pytest.raises(ClientError) as info:
        stream(rt, "no-such-endpoint", b"x")
    err = info.value.response["Error"]
    assert err["Code"] == "ValidationError"
    assert err["Message"] == "Endpoint no-such-endpoint of account 123456789012 not found."
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_failure_before_the_stream_is_a_model_error(rt: Any, tokens: str) -> None:
    with pytest.raises(ClientError) as info:
        stream(rt, tokens, b"not json", ContentType="application/json")
    err = cast(dict[str, Any], info.value.response)
    assert err["Error"]["Code"] == "ModelError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err["OriginalStatusCode"] == 500
    assert "JSONDecodeError" in err["OriginalMessage"]


def test_sync_invoke_of_a_streaming_model_gets_the_whole_body(rt: Any, tokens: str) -> None:
    out = rt.invoke_endpoint(
        EndpointName=tokens, Body=b'{"text": "a b c"}', ContentType="application/json"
    )
    assert out["Body"].read() == b"abc"


# -- the router in-process, against a scripted container ------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
WAIT = 10.0


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass
class Call:
    """One ASGI request to the router; records what it sends back."""

    body: bytes | None = b"{}"
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    streaming: asyncio.Event = field(default_factory=asyncio.Event)  # set by the first body message
    disconnect: asyncio.Event = field(default_factory=asyncio.Event)  # set to hang up

    async def receive(self) -> MutableMapping[str, Any]:
        if self.body is not None:
            body, self.body = self.body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = dict(message["headers"])
        else:
            self.chunks.append(message.get("body", b""))
            self.streaming.set()

    def events(self) -> list[Any]:
        buffer = EventStreamBuffer()
        buffer.add_data(b"".join(self.chunks))
        return list(buffer)


@asynccontextmanager
async def router(script: Script, stream_timeout: float = WAIT) -> AsyncIterator[RuntimeApp]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    address = Address("127.0.0.1", server.sockets[0].getsockname()[1])
    routes = RouteTable()
    routes.publish(
        "ep", [PublishedVariant("AllTraffic", 1.0, (PublishedInstance("i-0", address),))]
    )
    app = RuntimeApp(routes, cast(Store, None), Settings(invocation_timeout_s=WAIT))
    app.stream_timeout = stream_timeout
    try:
        yield app
    finally:
        await routes.close()
        server.close()


async def invoke(app: RuntimeApp, call: Call) -> Call:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/endpoints/ep/invocations-response-stream",
        "headers": [(b"content-type", b"application/json")],
    }
    async with asyncio.timeout(WAIT):
        await app(scope, call.receive, call.send)
    return call


def test_router_timeout_mid_stream_is_model_invocation_time_exceeded() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED_HEAD + chunk(b"early"))
        await reader.read()  # then stalls

    async def main() -> None:
        async with router(script, stream_timeout=0.3) as app:
            call = await invoke(app, Call())
        assert call.status == 200
        first, last = call.events()
        assert first.payload == b"early"
        assert last.headers[":exception-type"] == "ModelStreamError"
        assert json.loads(last.payload)["ErrorCode"] == "ModelInvocationTimeExceeded"

    asyncio.run(main())


def test_router_upstream_closing_mid_stream_is_stream_broken() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED_HEAD + chunk(b"a") + chunk(b"b"))  # then closes

    async def main() -> None:
        async with router(script) as app:
            call = await invoke(app, Call())
        events = call.events()
        assert [e.payload for e in events[:2]] == [b"a", b"b"]
        assert json.loads(events[2].payload)["ErrorCode"] == "StreamBroken"
        assert call.headers[b"x-amzn-sagemaker-content-type"] == b"text/plain"
        assert call.headers[b"content-type"] == b"application/vnd.amazon.eventstream"

    asyncio.run(main())


def test_router_error_status_before_the_stream_is_424() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 503 X\r\nContent-Length: 4\r\n\r\nbusy")
        await reader.read()

    async def main() -> None:
        async with router(script) as app:
            call = await invoke(app, Call())
        assert call.status == 424
        error = json.loads(b"".join(call.chunks))
        assert (error["OriginalStatusCode"], error["OriginalMessage"]) == (503, "busy")

    asyncio.run(main())


def test_router_client_disconnect_stops_the_upstream() -> None:
    upstream_closed = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(CHUNKED_HEAD + chunk(b"a"))
        await reader.read()  # returns when the router drops the connection
        upstream_closed.set()

    async def main() -> None:
        async with router(script) as app:
            call = Call()
            task = asyncio.ensure_future(invoke(app, call))
            async with asyncio.timeout(WAIT):
                await call.streaming.wait()
                call.disconnect.set()
                await upstream_closed.wait()
                await task

    asyncio.run(main())


# -- the model server in-process, over a raw socket ---------------------------------------


def handler_for(transform_fn: Callable[..., Any]) -> ModelHandler:
    chain = resolve_chain({"transform_fn": transform_fn}, "application/json")
    return ModelHandler(None, chain, HandlerOptions(model_dir="."))


@asynccontextmanager
async def model_server(handler: ModelHandler) -> AsyncIterator[int]:
    state = ServerState(handler, ServerOptions())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpConnection(state), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        state.begin_shutdown()


def post(body: bytes = b"x") -> bytes:
    return b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )


async def read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, list[bytes]]:
    """The head and the chunks of one chunked response."""
    head = await reader.readuntil(b"\r\n\r\n")
    chunks = []
    while (size := int((await reader.readuntil(b"\r\n"))[:-2], 16)) > 0:
        chunks.append((await reader.readexactly(size + 2))[:-2])
    assert await reader.readexactly(2) == b"\r\n"
    return head, chunks


def test_runtime_streams_chunks_and_keeps_the_connection() -> None:
    def transform_fn(model: Any, data: Any, content_type: str, accept: str) -> Any:
        yield "a"
        yield b""  # skipped: an empty chunk would end the body
        yield b"bc"
        yield bytearray(b"d")

    async def main() -> None:
        async with model_server(handler_for(transform_fn)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(2):
                writer.write(post())
                head, chunks = await asyncio.wait_for(read_chunked(reader), WAIT)
                assert b"Transfer-Encoding: chunked" in head
                assert b"Content-Length" not in head
                assert chunks == [b"a", b"bc", b"d"]
            writer.close()

    asyncio.run(main())


def test_runtime_generator_failing_before_its_first_item_is_a_500() -> None:
    def transform_fn(model: Any, data: Any, content_type: str, accept: str) -> Any:
        raise ValueError("no tokens today")
        yield "never"

    async def main() -> None:
        async with model_server(handler_for(transform_fn)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            assert head.startswith(b"HTTP/1.1 500 ")
            text = b"ValueError: no tokens today"
            assert b"Content-Length: %d" % len(text) in head
            assert await reader.readexactly(len(text)) == text
            writer.close()

    asyncio.run(main())


def test_runtime_failure_mid_stream_closes_without_the_last_chunk() -> None:
    def transform_fn(model: Any, data: Any, content_type: str, accept: str) -> Any:
        yield "one"
        raise RuntimeError("mid-stream")

    async def main() -> None:
        async with model_server(handler_for(transform_fn)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            rest = await asyncio.wait_for(reader.read(), WAIT)  # read() returns at EOF
            assert rest.endswith(b"\r\n\r\n3\r\none\r\n")  # no "0\r\n\r\n"
            writer.close()

    asyncio.run(main())


def test_runtime_pipelined_request_behind_a_stream_is_not_answered() -> None:
    def transform_fn(model: Any, data: Any, content_type: str, accept: str) -> Any:
        yield data

    async def main() -> None:
        async with model_server(handler_for(transform_fn)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post(b"first") + post(b"second"))
            _, chunks = await asyncio.wait_for(read_chunked(reader), WAIT)
            assert chunks == [b"first"]
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then closed
            writer.close()

    asyncio.run(main())


def test_runtime_client_going_away_closes_the_generator() -> None:
    closed = asyncio.Event()
    release = asyncio.Event()

    async def tokens() -> AsyncIterator[str]:
        try:
            yield "one"
            await release.wait()  # never set: only a cancellation ends this
            yield "two"
        finally:
            closed.set()

    def transform_fn(model: Any, data: Any, content_type: str, accept: str) -> Any:
        return tokens()

    async def main() -> None:
        async with model_server(handler_for(transform_fn)) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            await asyncio.wait_for(reader.readuntil(b"3\r\none\r\n"), WAIT)
            writer.close()
            await asyncio.wait_for(closed.wait(), WAIT)

    asyncio.run(main())


def test_concurrent_sync_invokes_of_a_streaming_model_all_get_their_body(
    server: LiveServer, tokens: str
) -> None:
    """The built-in server answers a generator with a chunked body and drops requests
    pipelined behind it (test_runtime_pipelined_request_behind_a_stream_is_not_answered);
    the router, which pipelines InvokeEndpoint requests to it, must send those again."""
    words = [[f"client {n} request {i}" for i in range(10)] for n in range(8)]
    bodies = [[json.dumps({"text": w}).encode() for w in mine] for mine in words]
    headers = {"Content-Type": "application/json", "Accept": "text/plain"}
    answers = invoke_concurrently(server, tokens, bodies, headers)
    assert answers == [[w.replace(" ", "").encode() for w in mine] for mine in words]
