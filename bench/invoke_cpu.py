"""The router's own CPU per InvokeEndpoint, with the instances' answers given at once (no I/O):
the fast path (router/invoke.py ``InvokePath.dispatch``) on a one-container endpoint, and on a
serial pipeline of three containers (router/pipeline.py ``SerialPool``), whose difference is
what the chaining costs the router per extra container. Runs on one event loop in this
process; each figure is the best of --rounds rounds of --requests calls (process CPU time),
which is steadier than wall-clock latency on a shared machine.

Run it with another checkout's ``src`` first on PYTHONPATH to compare the one-container figure
back to back (the pipeline figure needs this branch):
    PYTHONPATH=src .venv/bin/python bench/invoke_cpu.py [--requests 20000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from modelhost.publish import Address, PublishedInstance, PublishedVariant
from modelhost.router.forwarder import UpstreamPool, UpstreamResponse
from modelhost.router.invoke import InvokePath
from modelhost.router.routing import RouteTable
from modelhost.settings import Settings

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"content-type", b"application/json"),
    (b"accept", b"application/json"),
    (b"content-length", b"37"),
    (b"user-agent", b"Boto3/1.40 md/Botocore#1.40"),
    (b"x-amz-date", b"20261206T030000Z"),
    (b"authorization", b"AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/sagemaker/aws4"),
    (b"amz-sdk-invocation-id", b"9f6e3c1a-1d2b-4c5d-8e9f-0a1b2c3d4e5f"),
    (b"amz-sdk-request", b"attempt=1; max=1"),
]
ANSWER_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"37")]


def _instant(pool: UpstreamPool) -> None:
    """Answer every request on ``pool`` at once, as a real pool's callback would."""

    def send(head: bytes, body: Any, timeout: float, on_done: Any, *_: Any) -> None:
        pool.in_flight += 1
        pool.in_flight -= 1
        on_done(UpstreamResponse(200, ANSWER_HEADERS, [BODY]))

    pool.send = send  # type: ignore[method-assign]


def _routes(containers: int) -> RouteTable:
    routes = RouteTable()
    address = Address("127.0.0.1", 9)
    if containers == 1:
        inst = PublishedInstance("i-1", address)
        variant = PublishedVariant("AllTraffic", 1.0, (inst,))
    else:
        from modelhost.publish import PublishedContainer  # this branch only

        members = tuple(
            PublishedContainer(f"container-{k}", Address("127.0.0.1", 9 + k))
            for k in range(1, containers + 1)
        )
        inst = PublishedInstance("i-1", address, members, "Serial")
        variant = PublishedVariant("AllTraffic", 1.0, (inst,), mode="Serial")
    routes.publish("ep", [variant])
    pool = routes.get("ep").variants[0].targets[0]  # type: ignore[union-attr]
    if containers == 1:
        _instant(pool)
    else:
        from modelhost.router.pipeline import SerialPool

        assert isinstance(pool, SerialPool)
        for member in pool.members[1:]:
            _instant(member)
        _answer_first_container_at_once(pool)
    return routes


def _answer_first_container_at_once(pool: UpstreamPool) -> None:
    """Container 1 of a pipeline is the SerialPool's own base pool (``UpstreamPool.send``
    called on it): answer that one at once too. The process measures nothing else after."""
    original = UpstreamPool.send

    def send(
        self: UpstreamPool, head: bytes, body: Any, timeout: float, on_done: Any, *rest: Any
    ) -> None:
        if self is pool:
            on_done(UpstreamResponse(200, ANSWER_HEADERS, [BODY]))
        else:
            original(self, head, body, timeout, on_done, *rest)

    UpstreamPool.send = send  # type: ignore[method-assign]


async def _measure(containers: int, requests: int, rounds: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = InvokePath(_routes(containers), None, Settings(data_dir=Path(tmp)))  # type: ignore[arg-type]
        answered = 0

        def reply(head: bytes, payload: Any) -> None:
            nonlocal answered
            answered += 1

        raw = b"/endpoints/ep/invocations"
        best = float("inf")
        for _ in range(rounds):
            start = time.process_time()
            for _ in range(requests):
                path.dispatch(raw, HEADERS, BODY, reply)
            best = min(best, time.process_time() - start)
        assert answered == requests * rounds, answered
        return best / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--single-only", action="store_true", help="for a checkout without it")
    args = parser.parse_args()
    out: dict[str, float] = {}
    out["one_container_us"] = asyncio.run(_measure(1, args.requests, args.rounds))
    if not args.single_only:
        out["pipeline3_us"] = asyncio.run(_measure(3, args.requests, args.rounds))
        out["per_extra_container_us"] = (out["pipeline3_us"] - out["one_container_us"]) / 2
    print(json.dumps({k: round(v, 2) for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
