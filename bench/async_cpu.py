"""Server CPU per asynchronous request, over one long async phase (no real-time phase).

bench/async_throughput.py's rounds of 2,000 requests give CPU per request to about +-5% on a
shared machine; this sends --requests (default 20,000) InvokeEndpointAsync calls from
--concurrency keep-alive clients to the echo fixture (one instance, MaxConcurrentInvocations
--concurrency, results as local files) after a warm-up of 500, waits until every output
exists, and prints the server process's CPU milliseconds per request (all threads) and the
req/s. Run it alternately against two trees (PYTHONPATH picks the code) to compare them.
Not run in CI:  .venv/bin/python bench/async_cpu.py [--requests 20000 --concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Server, cpu_seconds, load_average
from async_throughput import BODY, deploy_async, run_clients, wait_outputs

PATH = "/endpoints/bench-async/async-invocations"
WARMUP = 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelhost-async-cpu-"))
    source = work / "input.json"
    source.write_bytes(BODY)

    def headers(prefix: str, n: int) -> list[dict[str, str]]:
        return [
            {
                "X-Amzn-SageMaker-InputLocation": str(source),
                "X-Amzn-SageMaker-Content-Type": "application/json",
                "X-Amzn-SageMaker-Inference-Id": f"{prefix}-{i}",
            }
            for i in range(n)
        ]

    with Server(env={"MODELHOST_EMBEDDED_S3": "false"}) as server:
        assert server.process is not None
        deploy_async(server, "bench-async", work / "out", args.concurrency)
        run_clients(server, PATH, headers("warm", WARMUP), b"", args.concurrency)
        wait_outputs(work / "out", WARMUP, args.timeout, f"warm-{WARMUP - 1}.out")
        pid = server.process.pid
        cpu, started = cpu_seconds([pid]), time.perf_counter()
        run_clients(server, PATH, headers("m", args.requests), b"", args.concurrency)
        last = f"m-{args.requests - 1}.out"
        wait_outputs(work / "out", WARMUP + args.requests, args.timeout, last)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds([pid]) - cpu
    out = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "async_rps": round(args.requests / seconds, 1),
        "server_cpu_ms_per_req": round(cpu * 1000.0 / args.requests, 3),
        "load_average": load_average(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
