"""The asynchronous inference workers against fake instances (pools) and an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from modelhost.asyncinf import slot as slot_module
from modelhost.asyncinf.records import AsyncEndpointConfig, AsyncRequest, RequestStatus
from modelhost.asyncinf.worker import AsyncInference
from modelhost.router.forwarder import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResponse,
    UpstreamTimeout,
)
from modelhost.router.routing import EndpointRoute, RouteTable, VariantRoute
from modelhost.state.async_queue import AsyncQueue
from modelhost.state.store import Store
from modelhost.storage.local import LocalObjectStore

Answer = Callable[[bytes], UpstreamResponse | UpstreamError | None]


class FakePool:
    """An instance: ``answer`` gives each request's result, or None to hold it."""

    def __init__(self, instance_id: str, answer: Answer) -> None:
        self.instance_id = instance_id
        self.answer = answer
        self.closed = False
        self.in_flight = 0
        self.bodies: list[bytes] = []
        self.held: list[Callable[[UpstreamResponse | UpstreamError], None]] = []
        self.heads: list[list[tuple[bytes, bytes]]] = []

    def head(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], n: int) -> bytes:
        self.heads.append(headers)
        return b"head"

    def send(self, head: bytes, body: bytes, timeout: float, on_done: Any) -> None:
        self.bodies.append(body)
        result = self.answer(body)
        if result is None:
            self.held.append(on_done)
        else:
            on_done(result)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, tmp: Path, *pools: FakePool, max_concurrent: int = 2) -> None:
        self.dir = tmp / "results"
        self.queue = AsyncQueue(Store(f"sqlite:///{tmp / 'state.db'}"))
        self.routes = RouteTable()
        targets = cast(Any, list(pools))
        route = EndpointRoute("ep", [VariantRoute("AllTraffic", 1.0, targets)])
        self.routes._routes["ep"] = route
        self.config = AsyncEndpointConfig("ep", f"file://{self.dir}/out", None, max_concurrent)
        self.clock = Clock()
        self.worker = AsyncInference(
            self.queue,
            self.routes,
            LocalObjectStore(tmp / "objects"),
            lambda: {"ep": self.config},
            clock=self.clock,
        )
        self.n = 0
        self.codes: list[str] = []

    def enqueue(self, data: bytes, ttl: float = 60.0) -> AsyncRequest:
        self.n += 1
        source = self.dir / "in" / f"{self.n}"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        req = AsyncRequest(
            f"r{self.n}",
            "ep",
            f"id{self.n}",
            str(source),
            f"file://{self.dir}/out/id{self.n}.out",
            f"file://{self.dir}/out/id{self.n}-error.out",
            self.clock.now,
            self.clock.now + ttl,
            5.0,
            content_type="text/plain",
        )
        self.queue.enqueue(req)
        return req

    async def run(self) -> None:
        await self.worker.refresh()
        await self.worker.run_pass()
        await self.worker.settle(5.0)

    def result(self, req: AsyncRequest) -> tuple[RequestStatus, bytes | None]:
        got = self.queue.get(req.request_id)
        assert got is not None
        output = Path(req.output_location.removeprefix("file://"))
        if output.exists():
            return got.status, output.read_bytes()
        failure = Path(req.failure_location.removeprefix("file://"))
        if failure.exists():
            document = json.loads(failure.read_bytes())
            assert set(document) == {"ErrorCode", "Message"}
            self.codes.append(document["ErrorCode"])
            return got.status, document["Message"].encode()
        return got.status, None


def ok(body: bytes) -> UpstreamResponse:
    return UpstreamResponse(200, [(b"content-type", b"text/plain")], [b"echo:", body])


def test_success_writes_the_output_and_forwards_headers(tmp_path: Path) -> None:
    pool = FakePool("i1", ok)
    h = Harness(tmp_path, pool)
    req = h.enqueue(b"hello")
    asyncio.run(h.run())
    assert h.result(req) == (RequestStatus.DONE, b"echo:hello")
    assert (b"content-type", b"text/plain") in pool.heads[0]
    assert (b"x-amzn-sagemaker-inference-id", b"id1") in pool.heads[0]
    assert h.worker.stats.counts["ep"]["InvocationsProcesssed"] == 1


def test_model_error_and_timeout_write_failures(tmp_path: Path) -> None:
    def answer(body: bytes) -> UpstreamResponse | UpstreamError:
        if body == b"err":
            return UpstreamResponse(500, [], [b"kaput"])
        return UpstreamTimeout("slow")

    h = Harness(tmp_path, FakePool("i1", answer))
    failed = h.enqueue(b"err")
    slow = h.enqueue(b"slow")
    asyncio.run(h.run())
    status, text = h.result(failed)
    assert status is RequestStatus.FAILED and text is not None
    assert b'Received server error (500) from primary with message "kaput".' in text
    status, text = h.result(slow)
    assert status is RequestStatus.FAILED and b"InvocationTimeoutSeconds (5 s)" in (text or b"")
    assert h.worker.stats.counts["ep"]["InvocationFailures"] == 2
    assert h.codes == ["ModelError", "InvocationTimeout"]


def test_at_most_max_concurrent_per_instance_in_fifo_order(tmp_path: Path) -> None:
    pools = [FakePool("i1", lambda b: None), FakePool("i2", lambda b: None)]
    h = Harness(tmp_path, *pools, max_concurrent=2)
    reqs = [h.enqueue(str(n).encode()) for n in range(6)]

    async def scenario() -> None:
        await h.worker.refresh()
        await h.worker.run_pass()
        for _ in range(100):
            if sum(len(p.held) for p in pools) == 4:
                break
            await asyncio.sleep(0.01)
        assert [len(p.held) for p in pools] == [2, 2]
        sent = sorted(b for p in pools for b in p.bodies)
        assert sent == [b"0", b"1", b"2", b"3"]  # the oldest four
        await h.worker.run_pass()  # no room: nothing more starts
        assert sum(len(p.bodies) for p in pools) == 4
        pools[0].held.pop(0)(ok(b"x"))
        for _ in range(100):  # poll: the freed slot is seen once the request has ended
            await h.worker.run_pass()
            if sum(len(p.bodies) for p in pools) == 5:
                break
            await asyncio.sleep(0.01)
        assert pools[0].bodies[-1] == b"4"  # the freed slot took the next in line
        for p in pools:
            for done in p.held:
                done(ok(b"y"))
        await h.worker.stop()

    asyncio.run(scenario())
    assert h.result(reqs[5])[0] is RequestStatus.QUEUED  # stop gave back what was not done


def test_an_instance_that_goes_away_is_retried_then_failed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    req = h.enqueue(b"x")
    refusing = [FakePool(f"i{n}", lambda b: UpstreamConnectError("refused")) for n in range(4)]

    async def scenario() -> None:
        for pool in refusing[:3]:  # each replacement instance refuses too
            h.routes._routes["ep"].variants[0].targets = cast(Any, [pool])
            await h.run()

    asyncio.run(scenario())
    status, text = h.result(req)
    assert status is RequestStatus.FAILED
    assert b"failed after 3 attempts" in (text or b"") and b"refused" in (text or b"")
    assert [len(p.bodies) for p in refusing] == [1, 1, 1, 0]


def test_an_instance_that_dropped_a_request_gets_no_more_for_a_while(tmp_path: Path) -> None:
    gone = FakePool("i1", lambda b: UpstreamConnectError("refused"))
    h = Harness(tmp_path, gone)
    req = h.enqueue(b"x")
    asyncio.run(h.run())
    asyncio.run(h.run())
    assert len(gone.bodies) == 1
    assert h.result(req) == (RequestStatus.QUEUED, None)


def test_a_retry_reaches_another_instance(tmp_path: Path) -> None:
    gone = FakePool("i1", lambda b: UpstreamConnectError("refused"))
    h = Harness(tmp_path, gone)
    req = h.enqueue(b"x")
    asyncio.run(h.run())
    assert h.result(req) == (RequestStatus.QUEUED, None)
    h.routes._routes["ep"].variants[0].targets = cast(Any, [FakePool("i2", ok)])
    asyncio.run(h.run())
    assert h.result(req) == (RequestStatus.DONE, b"echo:x")


def test_ttl_expiry_without_capacity(tmp_path: Path) -> None:
    h = Harness(tmp_path)  # no instances
    req = h.enqueue(b"x", ttl=60.0)
    asyncio.run(h.run())
    assert h.result(req) == (RequestStatus.QUEUED, None)
    h.clock.now += 61.0
    asyncio.run(h.run())
    status, text = h.result(req)
    assert status is RequestStatus.FAILED
    assert b"RequestTTLSeconds (60 s)" in (text or b"")
    assert h.worker.stats.counts["ep"]["ExpiredRequests"] == 1


def test_missing_input_fails(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakePool("i1", ok))
    req = h.enqueue(b"x")
    Path(req.input_location).unlink()
    asyncio.run(h.run())
    status, text = h.result(req)
    assert status is RequestStatus.FAILED and b"does not exist" in (text or b"")


def test_a_result_written_before_a_restart_is_not_redone(tmp_path: Path) -> None:
    pool = FakePool("i1", ok)
    h = Harness(tmp_path, pool)
    req = h.enqueue(b"x")
    h.queue.claim("ep", "dead-server", h.clock.now, 60.0, 1)  # it ran, wrote, then died
    out = Path(req.output_location.removeprefix("file://"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"first")
    assert h.queue.recover() == 1
    asyncio.run(h.run())
    assert h.result(req) == (RequestStatus.DONE, b"first")
    assert pool.bodies == []


def test_requests_of_a_deleted_endpoint_fail(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    req = h.enqueue(b"x")
    h.worker._load_configs = dict
    h.clock.now += 1.0
    asyncio.run(h.run())
    status, text = h.result(req)
    assert status is RequestStatus.FAILED and b"was deleted" in (text or b"")


def test_a_slot_runs_the_queue_back_to_back_in_shared_commits(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakePool("i1", ok), max_concurrent=1)
    reqs = [h.enqueue(str(n).encode()) for n in range(5)]
    asyncio.run(h.run())
    assert [h.result(r) for r in reqs] == [
        (RequestStatus.DONE, b"echo:" + str(n).encode()) for n in range(5)
    ]
    # one claim by the dispatcher, then each ending claimed the next in its own commit
    assert h.worker._batches.commits.batches == 1 + 5
    assert not h.worker._held and not h.worker._chained


def test_a_request_claimed_when_the_chain_ends_goes_back_to_the_queue(
    tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr(slot_module, "CHAIN_MAX", 2)
    h = Harness(tmp_path, FakePool("i1", ok), max_concurrent=1)
    reqs = [h.enqueue(str(n).encode()) for n in range(3)]
    asyncio.run(h.run())
    assert [h.result(r)[0] for r in reqs[:2]] == [RequestStatus.DONE] * 2
    third = h.queue.get(reqs[2].request_id)
    assert third is not None and third.status is RequestStatus.QUEUED  # not held forever
    assert not h.worker._held
    asyncio.run(h.run())
    assert h.result(reqs[2]) == (RequestStatus.DONE, b"echo:2")
