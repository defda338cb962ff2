"""Router overhead: the echo fixture called through the router vs. on its instance directly.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port), deploys the echo fixture
(1 instance, ml.m5.large), finds the instance's own port, then runs wrk (keep-alive POST) for
--duration seconds per cell, alternating direct/router, --repeats times:
  c=1:  wrk -t1 -c1   p50/p99 latency and req/s
  c=32: wrk -t2 -c32  req/s and p50/p99
Reports the added p50 at c=1 (router - direct; goal <= 100 us) and the throughput ratio
router/direct at c=32 (goal >= 0.6), plus the CPU per request of the router and the instance.
Then large bodies (binary, echoed back): 64 KB, 1 MB and 5 MB at c=1 and c=8, --large-duration
seconds per cell; goal router/direct req/s >= 0.8 at c=8 for each size (issue 8). Also the
router's peak RSS growth over the large-body runs (its memory per in-flight request).
Needs wrk.  Not run in CI:  .venv/bin/python bench/router_overhead.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REPO,
    Server,
    Wrk,
    WrkResult,
    load_average,
    med,
    post,
    require_wrk,
    spread,
)

ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
CONTENT_TYPE = "application/json"
ENDPOINT = "bench-echo"
GOAL_ADDED_P50_US = 100.0
GOAL_RATIO_C32 = 0.6
CELLS = {"c1": (1, 1), "c32": (2, 32)}  # name: (wrk threads, connections)
LARGE_BODIES = {"64KB": 64 * 1024, "1MB": 2**20, "5MB": 5 * 2**20}
LARGE_CELLS = {"c1": (1, 1), "c8": (2, 8)}
GOAL_RATIO_LARGE_C8 = 0.8


def measure(
    direct_url: str,
    router_url: str,
    wrk: Wrk,
    duration: float,
    repeats: int,
    pids: dict[str, list[int]],
) -> dict[str, dict[str, list[WrkResult]]]:
    """results[cell][path] = one WrkResult per repeat; direct and router alternate."""
    results: dict[str, dict[str, list[WrkResult]]] = {
        cell: {"direct": [], "router": []} for cell in CELLS
    }
    urls = {"direct": direct_url, "router": router_url}
    for rep in range(repeats):
        for cell, (threads, conns) in CELLS.items():
            order = ("direct", "router") if rep % 2 == 0 else ("router", "direct")
            for path in order:
                r = wrk.run(urls[path], threads, conns, duration, watch=pids)
                if r.errors:
                    raise RuntimeError(f"{path} {cell}: {r.errors} wrk errors")
                results[cell][path].append(r)
                print(
                    f"  rep {rep + 1} {cell:>3} {path:<6} {r.rps:>9,.0f} req/s "
                    f"p50 {r.p50_us:>7.0f} us  p99 {r.p99_us:>7.0f} us  "
                    f"CPU/req router {r.cpu_us['router']:>5.0f} us "
                    f"instance {r.cpu_us['instance']:>5.0f} us wrk {r.cpu_us['wrk']:>4.0f} us  "
                    f"other load {r.other_cpu:.2f} cores",
                    flush=True,
                )
    return results


def measure_large(
    direct_url: str,
    router_url: str,
    workdir: Path,
    duration: float,
    repeats: int,
    pids: dict[str, list[int]],
) -> dict[str, dict[str, dict[str, list[WrkResult]]]]:
    """results[size][cell][path]: large binary bodies, direct and router alternating."""
    urls = {"direct": direct_url, "router": router_url}
    results: dict[str, dict[str, dict[str, list[WrkResult]]]] = {}
    for size_name, size in LARGE_BODIES.items():
        wrk = Wrk(os.urandom(size), "application/octet-stream", workdir, f"body-{size_name}")
        wrk.run(router_url, 1, 8, 1.0)  # warm-up
        results[size_name] = {cell: {"direct": [], "router": []} for cell in LARGE_CELLS}
        for rep in range(repeats):
            for cell, (threads, conns) in LARGE_CELLS.items():
                order = ("direct", "router") if rep % 2 == 0 else ("router", "direct")
                for path in order:
                    r = wrk.run(urls[path], threads, conns, duration, watch=pids)
                    if r.errors:
                        raise RuntimeError(f"{path} {size_name} {cell}: {r.errors} wrk errors")
                    results[size_name][cell][path].append(r)
                    print(
                        f"  rep {rep + 1} {size_name:>4} {cell:>3} {path:<6} {r.rps:>8,.0f} req/s "
                        f"p50 {r.p50_us:>8.0f} us  CPU/req router {r.cpu_us['router']:>6.0f} us "
                        f"instance {r.cpu_us['instance']:>6.0f} us  "
                        f"other load {r.other_cpu:.2f} cores",
                        flush=True,
                    )
    return results


def summarize_large(
    results: dict[str, dict[str, dict[str, list[WrkResult]]]], rss_growth_mb: float
) -> dict[str, object]:
    print("\nlarge bodies, median over repeats: router / direct req/s (p50 us)")
    ratios: dict[str, dict[str, float]] = {}
    for size_name, cells in results.items():
        ratios[size_name] = {}
        for cell, paths in cells.items():
            router = med([r.rps for r in paths["router"]])
            direct = med([r.rps for r in paths["direct"]])
            ratios[size_name][cell] = router / direct
            print(
                f"  {size_name:>4} {cell:>3}: {router:>8,.0f} / {direct:>8,.0f} = "
                f"{router / direct:.2f}  (p50 {med([r.p50_us for r in paths['router']]):.0f} / "
                f"{med([r.p50_us for r in paths['direct']]):.0f})"
            )
    met = all(r["c8"] >= GOAL_RATIO_LARGE_C8 for r in ratios.values())
    print(
        f"large bodies router/direct at c=8 >= {GOAL_RATIO_LARGE_C8}: "
        f"{'MET' if met else 'NOT MET'}; router peak RSS growth {rss_growth_mb:.0f} MB"
    )
    return {"ratios": ratios, "goal_met": met, "router_rss_growth_mb": rss_growth_mb}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summarize(results: dict[str, dict[str, list[WrkResult]]]) -> dict[str, object]:
    c1, c32 = results["c1"], results["c32"]
    added = [r.p50_us - d.p50_us for r, d in zip(c1["router"], c1["direct"], strict=True)]
    ratios = [r.rps / d.rps for r, d in zip(c32["router"], c32["direct"], strict=True)]
    added_p50 = med([r.p50_us for r in c1["router"]]) - med([d.p50_us for d in c1["direct"]])
    ratio = med([r.rps for r in c32["router"]]) / med([d.rps for d in c32["direct"]])
    print("\nmedian [min-max] over repeats")
    print(
        f"{'cell':<10} {'req/s':>22} {'p50 us':>16} {'p99 us':>18} "
        f"{'router CPU/req':>15} {'other load':>17}"
    )
    for cell, paths in results.items():
        for path, runs in paths.items():
            print(
                f"{cell + ' ' + path:<10} {spread([r.rps for r in runs]):>22} "
                f"{spread([r.p50_us for r in runs]):>16} {spread([r.p99_us for r in runs]):>18} "
                f"{spread([r.cpu_us['router'] for r in runs]):>15} "
                f"{spread([r.other_cpu for r in runs], '{:.2f}'):>17}"
            )
    ok_p50 = added_p50 <= GOAL_ADDED_P50_US
    ok_ratio = ratio >= GOAL_RATIO_C32
    per_rep = ", ".join(f"{a:.0f}" for a in added)
    print(
        f"\nadded p50 at c=1: {added_p50:.0f} us (per repeat {per_rep})"
        f"  goal <= {GOAL_ADDED_P50_US:.0f} us: {'MET' if ok_p50 else 'NOT MET'}"
    )
    print(
        f"router/direct req/s at c=32: {ratio:.2f} (per repeat "
        f"{', '.join(f'{x:.2f}' for x in ratios)})  goal >= {GOAL_RATIO_C32}: "
        f"{'MET' if ok_ratio else 'NOT MET'}"
    )
    return {
        "added_p50_us": added_p50,
        "added_p50_us_per_repeat": added,
        "ratio_c32": ratio,
        "ratio_c32_per_repeat": ratios,
        "goals_met": ok_p50 and ok_ratio,
        "cells": {
            cell: {path: [vars(r) for r in runs] for path, runs in paths.items()}
            for cell, paths in results.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-duration", type=float, default=5.0, help="per large cell")
    parser.add_argument("--no-large", action="store_true", help="skip the large bodies")
    parser.add_argument("--only-large", action="store_true", help="only the large bodies")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    print(f"load average before: {load_average()}", flush=True)
    with Server() as server:
        print(f"modelhost serve on {server.url}, data dir {server.data_dir}", flush=True)
        server.deploy(ENDPOINT, str(ECHO))
        pid, port = server.instance()
        direct = f"http://127.0.0.1:{port}/invocations"
        router = f"{server.url}/endpoints/{ENDPOINT}/invocations"
        for url in (direct, router):
            status, body = post(url, BODY, CONTENT_TYPE)
            if status != 200 or body != BODY:
                raise RuntimeError(f"{url}: unexpected response {status} {body[:200]!r}")
        wrk = Wrk(BODY, CONTENT_TYPE, server.data_dir)
        assert server.process is not None
        pids = {"router": [server.process.pid], "instance": [pid]}
        wrk.run(router, 2, 32, 2.0)  # warm-up: connections, pools, caches
        wrk.run(direct, 2, 32, 2.0)
        print(f"echo instance pid {pid} port {port}; {args.duration:g} s per run", flush=True)
        summary: dict[str, object] = {}
        if not args.only_large:
            results = measure(direct, router, wrk, args.duration, args.repeats, pids)
            summary = summarize(results)
        if not args.no_large:
            rss_before = peak_rss_mb(server.process.pid)
            large = measure_large(
                direct, router, server.data_dir, args.large_duration, args.repeats, pids
            )
            growth = peak_rss_mb(server.process.pid) - rss_before
            summary["large"] = summarize_large(large, growth)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
