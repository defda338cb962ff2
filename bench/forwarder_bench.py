"""Upstream client benchmark: modelhost's UpstreamPool against aiohttp's client.

Starts a minimal raw-asyncio echo HTTP server (httptools, uvloop when installed) in a
subprocess on 127.0.0.1 and a free port, then measures from this process, for each client:
c=1 latency (p50/p99) and c=32 throughput, each for --duration seconds (5-10 s).
aiohttp is measured only when importable.

    .venv/bin/python bench/forwarder_bench.py [--duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

from modelhost.publish import Address
from modelhost.router.forwarder import UpstreamError, UpstreamPool, UpstreamResponse

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
HEADERS = [(b"Content-Type", b"application/json"), (b"Accept", b"application/json")]
SERVER_LIFETIME_S = 300.0  # the server stops itself even if this process dies
Send = Callable[[], Awaitable[bytes]]


# -- server (subprocess) ---------------------------------------------------------------


class _EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body.clear()
        assert self._transport is not None
        self._transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(SERVER_LIFETIME_S)
    server.close()


def _start_server() -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--serve"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    if not ready:
        proc.kill()
        raise SystemExit("echo server did not start within 10 s")
    return proc, int(proc.stdout.readline())


# -- measurements ----------------------------------------------------------------------


async def _latency(send: Send, duration: float) -> dict[str, float]:
    samples: list[float] = []
    end = time.perf_counter() + duration
    cpu = time.process_time()
    while (start := time.perf_counter()) < end:
        await send()
        samples.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_us": cuts[49] * 1e6, "p99_us": cuts[98] * 1e6, "cpu_us": cpu / len(samples) * 1e6}


async def _throughput(send: Send, duration: float, concurrency: int) -> dict[str, float]:
    done = 0
    end = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await send()
            done += 1

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rps": done / elapsed, "cpu_us_c32": cpu / done * 1e6}


async def _measure(send: Send, duration: float) -> dict[str, float]:
    for _ in range(200):  # warm up connections and caches
        assert await send() == BODY
    result = await _latency(send, duration)
    result.update(await _throughput(send, duration, 32))
    return result


async def _bench_pool(port: int, duration: float) -> dict[str, float]:
    pool = UpstreamPool(Address("127.0.0.1", port))
    head = pool.head(b"POST", b"/invocations", HEADERS, len(BODY))
    loop = asyncio.get_running_loop()

    async def send() -> bytes:
        answer: asyncio.Future[UpstreamResponse | UpstreamError] = loop.create_future()
        pool.send(head, BODY, 10.0, answer.set_result)
        result = await answer
        if isinstance(result, UpstreamError):
            raise result
        return result.body

    try:
        return await _measure(send, duration)
    finally:
        await pool.close()


async def _bench_aiohttp(aiohttp: Any, port: int, duration: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/invocations"
    headers = {k.decode(): v.decode() for k, v in HEADERS}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> bytes:
            async with session.post(url, data=BODY, headers=headers) as resp:
                body: bytes = await resp.read()
                return body

        return await _measure(send, duration)


# -- main ------------------------------------------------------------------------------


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_all(port: int, duration: float) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        results["UpstreamPool"] = runner.run(_bench_pool(port, duration))
        try:
            aiohttp = importlib.import_module("aiohttp")
        except ImportError:
            print("aiohttp not importable: skipped", file=sys.stderr)
        else:
            results[f"aiohttp {aiohttp.__version__}"] = runner.run(
                _bench_aiohttp(aiohttp, port, duration)
            )
    return results


def _print_table(results: dict[str, dict[str, float]], duration: float) -> None:
    print(f"\nloopback echo, {duration:g} s per cell, {os.cpu_count()} CPUs, body {len(BODY)} B")
    print(f"{'client':<16} {'c=1 p50':>9} {'c=1 p99':>9} {'CPU/req':>9} {'c=32 req/s':>11}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['p50_us']:>7.0f}us {r['p99_us']:>7.0f}us "
            f"{r['cpu_us']:>7.0f}us {r['rps']:>11,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell (5-10)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.Runner(loop_factory=_new_loop).run(_serve())
        return
    duration = min(max(args.duration, 5.0), 10.0)
    proc, port = _start_server()
    try:
        _print_table(_run_all(port, duration), duration)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
