"""The demo sklearn iris endpoint: CreateEndpoint -> InService time, and router vs. direct.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port), puts the demo
model.tar.gz (modelhost.demo.build_archive) into its object store and sends the demo's
CreateModel and CreateEndpointConfig. Then:
  1. CreateEndpoint -> InService (DescribeEndpoint polled every 20 ms), --creates times, each
     with a fresh endpoint name, deleting the previous endpoint (and waiting for its instance
     to exit) first. The first run finds the artifact cache cold. Goal: <= 2 s.
  2. wrk (keep-alive POST of one JSON row) for --duration seconds per cell, alternating
     direct/router, --repeats times: c=32 (wrk -t2 -c32) req/s, goal router/direct >= 0.85;
     c=1 (wrk -t1 -c1) p50.
Needs wrk.  Not run in CI:  .venv/bin/python bench/demo_endpoint.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Server,
    Wrk,
    WrkResult,
    instance_pids,
    load_average,
    med,
    post,
    require_wrk,
    spread,
)

from modelhost import demo
from modelhost.storage import object_store

BODY = b"[[5.1,3.5,1.4,0.2]]"
CONTENT_TYPE = "application/json"
EXPECTED = b'{"predictions": ["setosa"]}'
GOAL_RATIO_C32 = 0.85
GOAL_INSERVICE_S = 2.0
CELLS = {"c32": (2, 32), "c1": (1, 1)}


def create_times(server: Server, creates: int) -> tuple[list[float], str]:
    """Seconds from CreateEndpoint to InService, one per fresh endpoint name; returns the
    times and the name of the endpoint left running."""
    times: list[float] = []
    previous: str | None = None
    for i in range(creates):
        if previous is not None:
            server.call("DeleteEndpoint", {"EndpointName": previous})
            server.wait_gone(previous)
            deadline = time.monotonic() + 30
            while instance_pids(server.data_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
        name = f"{demo.DEMO_ENDPOINT}-{i + 1}"
        start = time.perf_counter()
        server.call(
            "CreateEndpoint", {"EndpointName": name, "EndpointConfigName": demo.DEMO_ENDPOINT}
        )
        server.wait_status(name, timeout=120, poll=0.02)
        times.append(time.perf_counter() - start)
        note = " (cold artifact cache)" if i == 0 else ""
        print(f"  create {i + 1}: {name} InService after {times[-1]:.3f} s{note}", flush=True)
        previous = name
    assert previous is not None
    return times, previous


def measure(
    urls: dict[str, str], wrk: Wrk, duration: float, repeats: int, pids: dict[str, list[int]]
) -> dict[str, dict[str, list[WrkResult]]]:
    results: dict[str, dict[str, list[WrkResult]]] = {
        cell: {"direct": [], "router": []} for cell in CELLS
    }
    for rep in range(repeats):
        for cell, (threads, conns) in CELLS.items():
            order = ("direct", "router") if rep % 2 == 0 else ("router", "direct")
            for path in order:
                r = wrk.run(urls[path], threads, conns, duration, watch=pids)
                if r.errors:
                    raise RuntimeError(f"{path} {cell}: {r.errors} wrk errors")
                results[cell][path].append(r)
                print(
                    f"  rep {rep + 1} {cell:>3} {path:<6} {r.rps:>8,.0f} req/s "
                    f"p50 {r.p50_us:>7.0f} us  p99 {r.p99_us:>7.0f} us  "
                    f"CPU/req router {r.cpu_us['router']:>5.0f} us "
                    f"instance {r.cpu_us['instance']:>5.0f} us wrk {r.cpu_us['wrk']:>4.0f} us  "
                    f"other load {r.other_cpu:.2f} cores",
                    flush=True,
                )
    return results


def summarize(
    times: list[float], results: dict[str, dict[str, list[WrkResult]]]
) -> dict[str, object]:
    print("\nCreateEndpoint -> InService")
    warm = times[1:]
    print(f"  cold artifact cache (run 1): {times[0]:.3f} s")
    print(
        f"  all {len(times)} runs: min {min(times):.3f} / median {statistics.median(times):.3f}"
        f" / max {max(times):.3f} s"
    )
    if warm:
        print(
            f"  warm cache ({len(warm)} runs): min {min(warm):.3f} / median "
            f"{statistics.median(warm):.3f} / max {max(warm):.3f} s"
        )
    ok_create = max(times) <= GOAL_INSERVICE_S
    print(f"  goal <= {GOAL_INSERVICE_S:g} s every time: {'MET' if ok_create else 'NOT MET'}")
    print("\nmedian [min-max] over repeats")
    print(
        f"{'cell':<11} {'req/s':>20} {'p50 us':>16} {'p99 us':>18} "
        f"{'router CPU/req':>15} {'other load':>17}"
    )
    for cell, paths in results.items():
        for path, runs in paths.items():
            print(
                f"{cell + ' ' + path:<11} {spread([r.rps for r in runs]):>20} "
                f"{spread([r.p50_us for r in runs]):>16} {spread([r.p99_us for r in runs]):>18} "
                f"{spread([r.cpu_us['router'] for r in runs]):>15} "
                f"{spread([r.other_cpu for r in runs], '{:.2f}'):>17}"
            )
    c1, c32 = results["c1"], results["c32"]
    ratio = med([r.rps for r in c32["router"]]) / med([d.rps for d in c32["direct"]])
    ratios = [r.rps / d.rps for r, d in zip(c32["router"], c32["direct"], strict=True)]
    added = med([r.p50_us for r in c1["router"]]) - med([d.p50_us for d in c1["direct"]])
    ok_ratio = ratio >= GOAL_RATIO_C32
    print(
        f"\nrouter/direct req/s at c=32: {ratio:.2f} (per repeat "
        f"{', '.join(f'{x:.2f}' for x in ratios)})  goal >= {GOAL_RATIO_C32}: "
        f"{'MET' if ok_ratio else 'NOT MET'}"
    )
    print(
        f"c=1 p50: router {med([r.p50_us for r in c1['router']]):.0f} us, direct "
        f"{med([d.p50_us for d in c1['direct']]):.0f} us (added {added:.0f} us)"
    )
    return {
        "inservice_s": times,
        "ratio_c32": ratio,
        "ratio_c32_per_repeat": ratios,
        "added_p50_c1_us": added,
        "goals_met": ok_create and ok_ratio,
        "cells": {
            cell: {path: [vars(r) for r in runs] for path, runs in paths.items()}
            for cell, paths in results.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--creates", type=int, default=5, help="CreateEndpoint timings")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    print(f"load average before: {load_average()}", flush=True)
    with Server() as server:
        print(f"modelhost serve on {server.url}, data dir {server.data_dir}", flush=True)
        store = object_store(server.data_dir / "objects", None, "us-east-1")
        model_url = demo.ensure_artifact(store)
        for op, request in demo.requests(model_url):
            if op != "CreateEndpoint":
                server.call(op, request)
        times, name = create_times(server, args.creates)
        pid, port = server.instance()
        urls = {
            "direct": f"http://127.0.0.1:{port}/invocations",
            "router": f"{server.url}/endpoints/{name}/invocations",
        }
        for url in urls.values():
            status, body = post(url, BODY, CONTENT_TYPE)
            if status != 200 or body.replace(b" ", b"") != EXPECTED.replace(b" ", b""):
                raise RuntimeError(f"{url}: unexpected response {status} {body[:200]!r}")
        wrk = Wrk(BODY, CONTENT_TYPE, server.data_dir)
        assert server.process is not None
        pids = {"router": [server.process.pid], "instance": [pid]}
        wrk.run(urls["router"], 2, 32, 2.0)  # warm-up
        wrk.run(urls["direct"], 2, 32, 2.0)
        print(f"iris instance pid {pid} port {port}; {args.duration:g} s per run", flush=True)
        results = measure(urls, wrk, args.duration, args.repeats, pids)
    summary = summarize(times, results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
