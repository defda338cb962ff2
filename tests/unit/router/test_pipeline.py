"""SerialPool's chaining and DirectPool's targeting (router/pipeline.py), with each
container's pool answered by a stub: which head each container gets, how answers and
failures come back, and the instance's in-flight count."""

from __future__ import annotations

import asyncio
from typing import Any

from modelhost.publish import Address, PublishedContainer, PublishedInstance
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.pipeline import (
    ContainerResponse,
    DirectPool,
    SerialPool,
    container_of,
    pool_for,
)
from modelhost.router.upstream_types import UpstreamError, UpstreamResponse, UpstreamTimeout

CLIENT_HEAD = (
    b"POST /invocations HTTP/1.1\r\ncontent-type: text/csv\r\nAccept: text/plain\r\n"
    b"x-amzn-sagemaker-custom-attributes: a=1\r\nContent-Length: 3\r\nHost: h:1\r\n\r\n"
)


def _instance(mode: str, names: tuple[str, ...]) -> PublishedInstance:
    containers = tuple(
        PublishedContainer(n, Address("127.0.0.1", 1000 + k)) for k, n in enumerate(names)
    )
    return PublishedInstance("i-1", containers[0].address, containers, mode)


class Stub:
    """Answers a pool's requests as told, recording each head and body."""

    def __init__(self, pool: UpstreamPool, answer: UpstreamResponse | UpstreamError) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[Any] = []
        self.answer = answer
        self.pool = pool
        self.pending: list[Any] = []

    def send(self, head: bytes, body: Any, timeout: float, on_done: Any) -> None:
        self.heads.append(head)
        self.bodies.append(body)
        self.pending.append(on_done)

    def release(self) -> None:
        for done in self.pending:
            done(self.answer)
        self.pending.clear()


def _stub_all(pool: SerialPool | DirectPool, answers: list[Any]) -> list[Stub]:
    stubs = [Stub(m, a) for m, a in zip(pool.members, answers, strict=True)]
    for stub in stubs[1:]:
        stub.pool.send = stub.send  # type: ignore[method-assign]

    def member_send(index: int, head: bytes, body: Any, timeout: float, on_done: Any) -> None:
        stubs[index].send(head, body, timeout, on_done)

    setattr(pool, "member_send", member_send)  # noqa: B010 (an instance attribute, for the test)
    return stubs


def _ok(body: bytes, content_type: bytes) -> UpstreamResponse:
    return UpstreamResponse(200, [(b"content-type", content_type)], [body])


def test_each_answer_is_the_next_request_and_accept_reaches_the_last_only() -> None:
    pool = pool_for(_instance("Serial", ("pre", "container-2", "post")))
    assert isinstance(pool, SerialPool)
    stubs = _stub_all(
        pool,
        [_ok(b"one", b"application/json"), _ok(b"two", b"text/x-two"), _ok(b"3", b"text/csv")],
    )
    results: list[Any] = []
    UpstreamPool.send = _wrap_base(UpstreamPool.send, pool, stubs[0])  # type: ignore[method-assign]
    try:
        pool.send(CLIENT_HEAD, b"a,b", 5.0, results.append)
        for stub in stubs:
            assert pool.in_flight == 1
            stub.release()
    finally:
        UpstreamPool.send = _ORIGINAL  # type: ignore[method-assign]
    assert pool.in_flight == 0
    assert [type(r) for r in results] == [UpstreamResponse] and results[0].body == b"3"
    first, second, third = (s.heads[0].lower() for s in stubs)
    assert b"content-type: text/csv" in first and b"accept" not in first
    assert b"content-type: application/json" in second and b"accept" not in second
    assert b"content-type: text/x-two" in third and b"accept: text/plain" in third
    for head in (first, second, third):
        assert b"x-amzn-sagemaker-custom-attributes: a=1" in head
    assert stubs[1].bodies == [b"one"] and stubs[2].bodies == [b"two"]
    assert b"content-length: 3\r\n" in second and b"host: 127.0.0.1:1001" in second


_ORIGINAL = UpstreamPool.send


def _wrap_base(original: Any, pool: UpstreamPool, stub: Stub) -> Any:
    def send(self: UpstreamPool, head: bytes, body: Any, timeout: float, on_done: Any) -> None:
        if self is pool:
            self.in_flight += 1

            def done(result: Any) -> None:
                self.in_flight -= 1
                on_done(result)

            stub.send(head, body, timeout, done)
        else:
            original(self, head, body, timeout, on_done)

    return send


def test_a_failing_container_is_named_and_the_rest_never_called() -> None:
    pool = pool_for(_instance("Serial", ("a", "b", "c")))
    assert isinstance(pool, SerialPool)
    bad = UpstreamResponse(503, [], [b"busy"])
    stubs = _stub_all(pool, [_ok(b"x", b"t/x"), bad, _ok(b"z", b"t/z")])
    results: list[Any] = []
    UpstreamPool.send = _wrap_base(UpstreamPool.send, pool, stubs[0])  # type: ignore[method-assign]
    try:
        pool.send(CLIENT_HEAD, b"abc", 5.0, results.append)
        stubs[0].release()
        stubs[1].release()
    finally:
        UpstreamPool.send = _ORIGINAL  # type: ignore[method-assign]
    (result,) = results
    assert isinstance(result, ContainerResponse) and result.status == 503
    assert container_of(result) == "b" and result.body == b"busy"
    assert stubs[2].heads == [] and pool.in_flight == 0


def test_a_timeout_in_a_container_carries_its_name() -> None:
    pool = pool_for(_instance("Serial", ("a", "b")))
    assert isinstance(pool, SerialPool)
    stubs = _stub_all(pool, [_ok(b"x", b"t/x"), UpstreamTimeout("late")])
    results: list[Any] = []
    UpstreamPool.send = _wrap_base(UpstreamPool.send, pool, stubs[0])  # type: ignore[method-assign]
    try:
        pool.send(CLIENT_HEAD, b"abc", 5.0, results.append)
        stubs[0].release()
        stubs[1].release()
    finally:
        UpstreamPool.send = _ORIGINAL  # type: ignore[method-assign]
    assert isinstance(results[0], UpstreamTimeout) and container_of(results[0]) == "b"
    assert container_of(UpstreamTimeout("plain")) == "primary"


def test_direct_sends_to_the_named_container_only() -> None:
    pool = pool_for(_instance("Direct", ("iris", "echo")))
    assert isinstance(pool, DirectPool)
    assert pool.index("echo") == 1 and pool.index("nope") is None
    stubs = _stub_all(pool, [_ok(b"i", b"t/i"), UpstreamResponse(500, [], [b"no"])])
    results: list[Any] = []
    pool.send_to(1, b"content-type: a/b\r\n", b"xyz", 3, 5.0, results.append)
    assert pool.in_flight == 1 and stubs[0].heads == []
    stubs[1].release()
    assert pool.in_flight == 0
    assert stubs[1].heads[0].startswith(b"POST /invocations HTTP/1.1\r\ncontent-type: a/b\r\n")
    assert isinstance(results[0], ContainerResponse) and container_of(results[0]) == "echo"


def test_closing_the_instance_closes_every_container() -> None:
    pool = pool_for(_instance("Serial", ("a", "b", "c")))
    assert isinstance(pool, SerialPool)
    asyncio.run(pool.close())
    assert all(m.closed for m in pool.members)
