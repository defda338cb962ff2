"""Asynchronous inference throughput against real-time, on the same machine and model.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port, local object store),
deploys the echo fixture twice (1 instance each): a real-time endpoint and an async one
(MaxConcurrentInvocationsPerInstance --concurrency, results as local files). After
--warmup requests of each (unmeasured), --rounds rounds of (medians are reported, and each
round's ratio; alternating keeps the load of other work on the machine from favouring one):
  realtime: --requests InvokeEndpoint calls from --concurrency keep-alive clients -> req/s
  async:    --requests InvokeEndpointAsync calls from --concurrency clients, timed until every
            output object exists -> req/s, and the ratio to real-time (issue 10: >= 0.5)
then:
  latency:  --probes requests sent one at a time to the idle async endpoint: enqueue-to-start
            (the queue's created -> started, from its state store), p50 and p90 (goal: p50 <= 20 ms)
  cpu:      CPU milliseconds per request of the server process, the instances and this client
            in each phase (*_cpu_ms_per_req): steadier than req/s on a shared machine
Prints one JSON object. Every wait is bounded by --timeout.
Not run in CI:  .venv/bin/python bench/async_throughput.py [--requests 2000 --concurrency 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HOST, REPO, Server, cpu_seconds, instance_pids, load_average

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
BODY = b'{"instances": [[1.0, 2.0, 3.0, 4.0]]}'


def deploy_async(server: Server, name: str, output: Path, concurrency: int) -> None:
    server.call("CreateModel", {"ModelName": name, "PrimaryContainer": {"ModelDataUrl": str(ECHO)}})
    server.call(
        "CreateEndpointConfig",
        {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
            "AsyncInferenceConfig": {
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
                "OutputConfig": {"S3OutputPath": f"file://{output}"},
            },
        },
    )
    server.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
    server.wait_status(name)


def run_clients(
    server: Server, path: str, headers: list[dict[str, str]], body: bytes, clients: int
) -> float:
    """Send one request per header set from ``clients`` keep-alive connections; seconds taken."""
    shares = [headers[i::clients] for i in range(clients)]

    def client(mine: list[dict[str, str]]) -> None:
        conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
        try:
            for h in mine:
                conn.request("POST", path, body, h)
                resp = conn.getresponse()
                resp.read()
                if resp.status not in (200, 202):
                    raise RuntimeError(f"{path} answered {resp.status}")
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, shares))
    return time.perf_counter() - started


def count_outputs(output: Path) -> int:
    """Output objects written (whole: a file under its final name; temp names start with .)."""
    try:
        return sum(1 for e in os.scandir(output) if e.name.endswith(".out"))
    except FileNotFoundError:
        return 0


def wait_outputs(output: Path, count: int, timeout: float, last: str | None = None) -> None:
    """Until ``count`` outputs exist. With ``last`` (the name of the output of the request
    sent last: FIFO, so the others are done or nearly), that one is awaited first with a
    stat() now and then: scanning a folder of thousands of outputs every few milliseconds
    would take CPU from the server being measured on a 2-core machine."""
    deadline = time.monotonic() + timeout
    while last is not None and time.monotonic() < deadline:
        if os.path.exists(output / last):
            break
        time.sleep(0.002)
    while time.monotonic() < deadline:
        if count_outputs(output) >= count:
            return
        time.sleep(0.005)
    raise RuntimeError(f"only {count_outputs(output)} of {count} outputs appeared")


class CpuMeter:
    """CPU seconds spent by the server, its instances and this process since ``start``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start()

    def _now(self) -> tuple[float, float, float]:
        assert self.server.process is not None
        return (
            cpu_seconds([self.server.process.pid]),
            cpu_seconds(instance_pids(self.server.data_dir)),
            time.process_time(),
        )

    def start(self) -> None:
        self._at = self._now()

    def per_request(self, prefix: str, requests: int, out: dict[str, object]) -> None:
        now = self._now()
        for name, a, b in zip(("server", "instances", "client"), self._at, now, strict=True):
            out[f"{prefix}_{name}_cpu_ms_per_req"] = round((b - a) * 1000.0 / requests, 3)


def measure_round(
    server: Server,
    work: Path,
    args: argparse.Namespace,
    headers: list[dict[str, str]],
    done: int,
) -> dict[str, object]:
    """One real-time phase, then one asynchronous phase of ``args.requests`` each."""
    out: dict[str, object] = {}
    rt_headers = [{"Content-Type": "application/json"}] * args.requests
    meter = CpuMeter(server)
    seconds = run_clients(
        server, "/endpoints/bench-realtime/invocations", rt_headers, BODY, args.concurrency
    )
    out["realtime_rps"] = round(args.requests / seconds, 1)
    meter.per_request("realtime", args.requests, out)
    meter.start()
    started = time.perf_counter()
    enqueue_s = run_clients(
        server, "/endpoints/bench-async/async-invocations", headers, b"", args.concurrency
    )
    last = headers[-1]["X-Amzn-SageMaker-Inference-Id"]
    wait_outputs(work / "out", done + args.requests, args.timeout, f"{last}.out")
    total_s = time.perf_counter() - started
    meter.per_request("async", args.requests, out)
    out["async_enqueue_rps"] = round(args.requests / enqueue_s, 1)
    out["async_rps"] = round(args.requests / total_s, 1)
    out["async_vs_realtime"] = round(seconds / total_s, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--rounds", type=int, default=3, help="realtime/async pairs (medians)")
    parser.add_argument("--warmup", type=int, default=200, help="requests of each, unmeasured")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modelhost-async-bench-"))
    source = work / "input.json"
    source.write_bytes(BODY)
    out: dict[str, object] = {"requests": args.requests, "concurrency": args.concurrency}
    with Server(env={"MODELHOST_EMBEDDED_S3": "false"}) as server:
        server.deploy("bench-realtime", str(ECHO))
        deploy_async(server, "bench-async", work / "out", args.concurrency)

        def async_headers(prefix: str, n: int) -> list[dict[str, str]]:
            return [
                {
                    "X-Amzn-SageMaker-InputLocation": str(source),
                    "X-Amzn-SageMaker-Content-Type": "application/json",
                    "X-Amzn-SageMaker-Inference-Id": f"{prefix}-{i}",
                }
                for i in range(n)
            ]

        done = 0  # outputs written so far
        if args.warmup:  # first connections, pools and caches, outside the measurements
            warm = min(args.warmup, args.requests)
            rt = [{"Content-Type": "application/json"}] * warm
            run_clients(server, "/endpoints/bench-realtime/invocations", rt, BODY, args.concurrency)
            path = "/endpoints/bench-async/async-invocations"
            run_clients(server, path, async_headers("warm", warm), b"", args.concurrency)
            done += warm
            wait_outputs(work / "out", done, args.timeout, f"warm-{warm - 1}.out")
        rounds: list[dict[str, object]] = []
        for r in range(args.rounds):  # alternated: load from others hits both sides alike
            rounds.append(
                measure_round(server, work, args, async_headers(f"load{r}", args.requests), done)
            )
            done += args.requests
        out["rounds"] = len(rounds)
        for key in rounds[0]:
            values = [float(str(m[key])) for m in rounds]
            out[key] = round(statistics.median(values), 3 if "cpu" in key else 2)
        out["async_vs_realtime_each"] = [m["async_vs_realtime"] for m in rounds]

        probes = async_headers("probe", args.probes)
        for i, header in enumerate(probes):  # one at a time, while capacity is idle
            run_clients(server, "/endpoints/bench-async/async-invocations", [header], b"", 1)
            wait_outputs(work / "out", done + i + 1, args.timeout, f"probe-{i}.out")
        with sqlite3.connect(server.data_dir / "state.db") as db:
            rows = db.execute(
                "SELECT started - created FROM async_requests WHERE inference_id LIKE 'probe-%'"
            ).fetchall()
            runs = db.execute(
                "SELECT finished - started FROM async_requests WHERE inference_id LIKE 'load%'"
            ).fetchall()
        run_ms = sorted(r[0] * 1000.0 for r in runs if r[0] is not None)
        if run_ms:
            out["async_start_to_end_ms_p50"] = round(statistics.median(run_ms), 2)
        waits_ms = sorted(r[0] * 1000.0 for r in rows if r[0] is not None)
        if waits_ms:
            out["enqueue_to_start_ms_p50"] = round(statistics.median(waits_ms), 2)
            out["enqueue_to_start_ms_p90"] = round(waits_ms[int(len(waits_ms) * 0.9) - 1], 2)
    out["load_average"] = load_average()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
