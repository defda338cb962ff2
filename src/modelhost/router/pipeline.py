"""Instances with several containers, as the router sees them: one pool per instance, so
that the route table, the least-loaded choice, draining, async inference and batch transform
treat them as any other instance.

``SerialPool`` (an inference pipeline, ``Mode: Serial``): ``send`` takes the request as any
pool does and chains it through the containers on callbacks (no task per hop): container 1
gets the client's body and Content-Type, each answer's body becomes the next container's
request with that answer's Content-Type, and the client's Accept goes to the last container
only (the others answer in their ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``). A failing
container's answer comes back as a ``ContainerResponse`` naming it; a failure to reach it
carries its name in ``container``. ``stream`` chains the same way and streams the last answer.

``DirectPool`` (``Mode: Direct``): ``send_to`` reaches one container by its hostname;
``send`` (a request that names none: async inference, batch transform) goes to the first.

Each pool keeps the in-flight count of the whole instance (the router's least-loaded pick
reads it) and reports each container's latency to ``sink`` (``ContainerLatency``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from modelhost.http11 import Payload, payload_size
from modelhost.publish import PublishedInstance
from modelhost.router.forwarder import UpstreamPool
from modelhost.router.upstream_stream import UpstreamStream
from modelhost.router.upstream_types import UpstreamError, UpstreamProtocolError, UpstreamResponse
from modelhost.splice import SplicedBody

SERIAL = "Serial"
DIRECT = "Direct"
PRIMARY = "primary"
_POST = b"POST /invocations HTTP/1.1\r\n"
_DROPPED = frozenset({b"content-type", b"accept", b"content-length", b"host"})

# (endpoint, variant, container name, microseconds): ContainerLatency.
Sink = Callable[[str, str, str, float], None]
Done = Callable[[UpstreamResponse | UpstreamError], None]


class ContainerResponse(UpstreamResponse):
    """A non-2xx answer of one container of a multi-container instance, naming it."""

    __slots__ = ("container",)

    def __init__(self, result: UpstreamResponse, container: str) -> None:
        super().__init__(result.status, result.headers, result.parts)
        self.container = container


class ContainerFailed(UpstreamError):
    """A container before the last of a streamed pipeline answered non-2xx."""

    def __init__(self, container: str, status: int, text: str) -> None:
        super().__init__(f"container {container} answered {status}")
        self.container = container
        self.status = status
        self.text = text


def container_of(result: object) -> str:
    """The container an error came from: its name in a multi-container instance."""
    name = getattr(result, "container", None)
    return name if isinstance(name, str) else PRIMARY


def last_container(pool: UpstreamPool) -> str:
    """The container whose answer a pool's stream carries."""
    return pool.last if isinstance(pool, SerialPool) else PRIMARY


def _tag(result: UpstreamError, name: str) -> UpstreamError:
    result.container = name  # type: ignore[attr-defined]
    return result


def pool_for(
    inst: PublishedInstance, on_gone: Callable[[UpstreamPool], None] | None = None
) -> UpstreamPool:
    """The pool of a published instance: a plain one, or one over all its containers."""
    if not inst.containers:
        return UpstreamPool(inst.address, name=inst.instance_id, on_gone=on_gone)
    if inst.mode == DIRECT:
        return DirectPool(inst, on_gone)
    return SerialPool(inst, on_gone)


class MultiContainerPool(UpstreamPool):
    """The pool of an instance with several containers: itself for the first container, and
    one plain pool for each of the others (``members`` lists all, in order)."""

    def __init__(
        self, inst: PublishedInstance, on_gone: Callable[[UpstreamPool], None] | None
    ) -> None:
        super().__init__(inst.containers[0].address, name=inst.instance_id, on_gone=on_gone)
        self.published = inst
        self.names = tuple(c.name for c in inst.containers)
        gone = None if on_gone is None else (lambda _pool: on_gone(self))
        self.members: tuple[UpstreamPool, ...] = (
            self,
            *(
                UpstreamPool(c.address, name=inst.instance_id, on_gone=gone)
                for c in inst.containers[1:]
            ),
        )
        self.labels: tuple[str, str] = ("", "")  # endpoint, variant (set when routed)
        self.sink: Sink | None = None

    def record(self, index: int, seconds: float) -> None:
        sink = self.sink
        if sink is not None:
            sink(self.labels[0], self.labels[1], self.names[index], seconds * 1e6)

    def member_send(
        self, index: int, head: bytes, body: Payload, timeout: float, on_done: Done
    ) -> None:
        if index == 0:
            UpstreamPool.send(self, head, body, timeout, on_done)
        else:
            self.members[index].send(head, body, timeout, on_done)

    async def close(self) -> None:
        await asyncio.gather(UpstreamPool.close(self), *(m.close() for m in self.members[1:]))


class _Head:
    """A request head taken apart once: the lines every container gets, the client's
    Content-Type and Accept lines, and the request line."""

    __slots__ = ("accept", "common", "content_type", "invocation", "original")

    def __init__(self, head: bytes) -> None:
        self.original = head
        lines = head.split(b"\r\n")
        self.invocation = lines[0] == _POST[:-2]
        common: list[bytes] = []
        self.accept = b""
        self.content_type = b""
        for line in lines[1:]:
            if not line:
                continue
            key = line.split(b":", 1)[0].strip().lower()
            if key in _DROPPED:
                if key == b"accept":
                    self.accept = line + b"\r\n"
                elif key == b"content-type":
                    self.content_type = line + b"\r\n"
                continue
            common.append(line + b"\r\n")
        self.common = b"".join(common)

    def first(self) -> bytes:
        """Container 1's head: the client's, less its Accept."""
        if not self.accept:
            return self.original
        return self.original.replace(self.accept, b"", 1)

    def next(self, pool: UpstreamPool, content_type: bytes | None, size: int, last: bool) -> bytes:
        """A later container's head: the previous answer's Content-Type, and on the last
        container the client's Accept."""
        parts = [_POST, self.common]
        if content_type is not None:
            parts += (b"content-type: ", content_type, b"\r\n")
        if last:
            parts.append(self.accept)
        parts.append(pool.head_end(size))
        return b"".join(parts)


class SerialPool(MultiContainerPool):
    """An inference pipeline's instance (see the module's doc)."""

    @property
    def last(self) -> str:
        return self.names[-1]

    def send(self, head: bytes, body: Payload | SplicedBody, timeout: float, on_done: Done) -> None:
        if isinstance(body, SplicedBody):  # never chosen for one (InvokePath.splices)
            on_done(UpstreamProtocolError("a spliced body cannot go through a pipeline"))
            return
        parsed = _Head(head)
        if not parsed.invocation:  # GET /execution-parameters and the like: the first one
            UpstreamPool.send(self, head, body, timeout, on_done)
            return
        _Chain(self, parsed, timeout, on_done).start(body)

    async def stream(
        self, head: bytes, body: bytes, timeout: float, first_byte_timeout: float
    ) -> UpstreamStream:
        """Every container but the last answers whole; the last one's answer streams."""
        parsed = _Head(head)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        payload: Payload = body
        request = parsed.first()
        self.in_flight += 1
        try:
            for index in range(len(self.members) - 1):
                result = await self._call(index, request, payload, deadline - loop.time())
                if isinstance(result, UpstreamError):
                    raise _tag(result, self.names[index])
                if result.status >= 300:
                    text = result.body.decode("utf-8", "replace")
                    raise ContainerFailed(self.names[index], result.status, text)
                payload = result.payload
                size = len(payload) if type(payload) is bytes else payload_size(payload)
                following = index + 1
                request = parsed.next(
                    self.members[following],
                    result.header(b"content-type"),
                    size,
                    following == len(self.members) - 1,
                )
            last = self.members[-1]
            joined = payload if isinstance(payload, bytes) else b"".join(payload)
            remaining = max(0.001, deadline - loop.time())
            try:
                return await last.stream(request, joined, remaining, first_byte_timeout)
            except UpstreamError as exc:
                raise _tag(exc, self.last) from None
        finally:
            self.in_flight -= 1

    async def _call(
        self, index: int, head: bytes, body: Payload, timeout: float
    ) -> UpstreamResponse | UpstreamError:
        answer: asyncio.Future[UpstreamResponse | UpstreamError]
        answer = asyncio.get_running_loop().create_future()

        def done(result: UpstreamResponse | UpstreamError) -> None:
            if not answer.done():
                answer.set_result(result)

        started = perf_counter()
        self.member_send(index, head, body, max(0.001, timeout), done)
        result = await answer
        self.record(index, perf_counter() - started)
        return result


class _Chain:
    """One request through a serial pipeline, on callbacks: ``done`` answers each hop."""

    __slots__ = ("deadline", "head", "index", "on_done", "pool", "started")

    def __init__(self, pool: SerialPool, head: _Head, timeout: float, on_done: Done) -> None:
        self.pool = pool
        self.head = head
        self.on_done = on_done
        self.index = 0
        self.started = perf_counter()
        self.deadline = self.started + timeout

    def start(self, body: Payload) -> None:
        pool = self.pool
        UpstreamPool.send(pool, self.head.first(), body, self.deadline - self.started, self.done)

    def done(self, result: UpstreamResponse | UpstreamError) -> None:
        pool = self.pool
        index = self.index
        now = perf_counter()
        pool.record(index, now - self.started)
        if index:
            pool.in_flight -= 1  # counted while a later container had it
        if isinstance(result, UpstreamError):
            self.on_done(_tag(result, pool.names[index]))
            return
        if result.status >= 300:
            self.on_done(ContainerResponse(result, pool.names[index]))
            return
        index += 1
        if index == len(pool.members):
            self.on_done(result)
            return
        self.index = index
        self.started = now
        payload = result.payload
        size = len(payload) if type(payload) is bytes else payload_size(payload)
        member = pool.members[index]
        last = index == len(pool.members) - 1
        head = self.head.next(member, result.header(b"content-type"), size, last)
        pool.in_flight += 1
        member.send(head, payload, max(0.001, self.deadline - now), self.done)


class DirectPool(MultiContainerPool):
    """A multi-container instance invoked directly (see the module's doc)."""

    def index(self, hostname: str) -> int | None:
        try:
            return self.names.index(hostname)
        except ValueError:
            return None

    def send_to(
        self, index: int, lines: bytes, body: Payload, size: int, timeout: float, on_done: Done
    ) -> None:
        """``_POST + lines`` (the forwarded header lines) to container ``index``."""
        member = self.members[index]
        head = _POST + lines + member.head_end(size)
        started = perf_counter()
        if index:
            self.in_flight += 1

        def done(result: UpstreamResponse | UpstreamError) -> None:
            if index:
                self.in_flight -= 1
            self.record(index, perf_counter() - started)
            name = self.names[index]
            if isinstance(result, UpstreamError):
                on_done(_tag(result, name))
            elif result.status >= 300:
                on_done(ContainerResponse(result, name))
            else:
                on_done(result)

        self.member_send(index, head, body, timeout, done)
