"""Streaming time to first byte: the tokens fixture through the router vs. on its instance.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port), deploys the tokens fixture
(1 instance), then for --repeats rounds streams `--words` words with `--delay` s between them:
  direct:  POST /invocations on the instance (raw socket, chunked body)
  router:  POST /endpoints/<ep>/invocations-response-stream (raw socket, event stream)
  boto3:   invoke_endpoint_with_response_stream, iterating the EventStream
and reports the median time to the response head (TTFB), to the first and last token, and
the end-to-end span. A second pass with no delay and --burst words gives the per-token cost
of each path. Every request has a socket timeout; the whole run is bounded by the sizes given.
Not run in CI:  .venv/bin/python bench/streaming_ttfb.py [--words 20 --delay 0.05]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HOST, REPO, Server, load_average

TOKENS = REPO / "tests" / "fixtures" / "models" / "tokens"
ENDPOINT = "bench-tokens"
SOCKET_TIMEOUT_S = 30.0


@dataclass
class Timing:
    head: float  # seconds from sending the request to the response head
    first: float  # ... to the first token
    last: float  # ... to the last token
    tokens: int


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_stream(port: int, path: str, body: bytes, headers: dict[str, str], events: bool) -> Timing:
    """One chunked response over a fresh socket; with `events`, chunks hold event messages."""
    with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        start = time.perf_counter()
        sock.sendall(_request(path, body, headers))
        status = reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r}")
        while reader.readline() not in (b"\r\n", b""):
            pass
        head = time.perf_counter() - start
        stamps: list[float] = []
        buffer = EventStreamBuffer()
        while (size := int(reader.readline().strip(), 16)) > 0:
            data = reader.read(size + 2)[:-2]
            now = time.perf_counter() - start
            if events:
                buffer.add_data(data)
                stamps += [now for m in buffer if m.headers[":message-type"] == "event"]
            else:
                stamps.append(now)
    return Timing(head, stamps[0], stamps[-1], len(stamps))


def boto3_stream(client: object, body: bytes) -> Timing:
    start = time.perf_counter()
    out = client.invoke_endpoint_with_response_stream(  # type: ignore[attr-defined]
        EndpointName=ENDPOINT, Body=body, ContentType="application/json"
    )
    head = time.perf_counter() - start
    stamps = [time.perf_counter() - start for event in out["Body"] if "PayloadPart" in event]
    return Timing(head, stamps[0], stamps[-1], len(stamps))


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:9.2f}"


def report(name: str, runs: list[Timing], words: int) -> None:
    assert all(r.tokens == words for r in runs), f"{name}: wrong token count"
    print(
        f"{name:<8}{median_ms([r.head for r in runs])}{median_ms([r.first for r in runs])}"
        f"{median_ms([r.last for r in runs])}{median_ms([r.last - r.first for r in runs])}"
    )


def measure(
    paths: dict[str, Callable[[bytes], Timing]], body: bytes, repeats: int
) -> dict[str, list[Timing]]:
    runs: dict[str, list[Timing]] = {name: [] for name in paths}
    for fn in paths.values():
        fn(body)  # warm-up: connections, imports, caches
    for _ in range(repeats):
        for name, fn in paths.items():  # interleaved, so drift hits every path alike
            runs[name].append(fn(body))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--burst", type=int, default=2000, help="words in the no-delay pass")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with Server() as server:
        server.deploy(ENDPOINT, str(TOKENS))
        _, instance_port = server.instance()
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(retries={"max_attempts": 1}, read_timeout=SOCKET_TIMEOUT_S),
        )
        json_headers = {"Content-Type": "application/json"}
        stream_path = f"/endpoints/{ENDPOINT}/invocations-response-stream"
        paths: dict[str, Callable[[bytes], Timing]] = {
            "direct": lambda b: raw_stream(instance_port, "/invocations", b, json_headers, False),
            "router": lambda b: raw_stream(server.port, stream_path, b, json_headers, True),
            "boto3": lambda b: boto3_stream(client, b),
        }
        text = " ".join(f"w{i}" for i in range(args.words))
        paced = json.dumps({"text": text, "delay": args.delay}).encode()
        print(f"load average {load_average()}")
        print(
            f"\n{args.words} tokens, {args.delay * 1e3:.0f} ms apart, median of {args.repeats}"
            f" (ms from sending the request)"
        )
        print(f"{'path':<8}{'head':>9}{'first':>9}{'last':>9}{'span':>9}")
        for name, runs in measure(paths, paced, args.repeats).items():
            report(name, runs, args.words)

        burst = " ".join(f"w{i}" for i in range(args.burst))
        unpaced = json.dumps({"text": burst}).encode()
        print(f"\n{args.burst} tokens, no delay: per-token cost (us) = span / tokens")
        for name, runs in measure(paths, unpaced, args.repeats).items():
            spans = [(r.last - r.first) / (r.tokens - 1) * 1e6 for r in runs]
            first = statistics.median(r.first for r in runs) * 1e3
            print(f"{name:<8}{statistics.median(spans):9.1f} us/token   first token {first:.2f} ms")


if __name__ == "__main__":
    main()
