"""Serial inference pipelines: what each extra container adds to the router's latency.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port) and deploys two endpoints of
the echo fixture: `bench-echo1` (one container) and `bench-pipe3` (a serial pipeline of three
echo containers, each its own built-in server process). wrk (keep-alive POST, c=1, -t1) runs
--duration seconds per cell, alternating the two endpoints (which goes first swaps each
repeat), --repeats times. Reports, from the medians over repeats:
  added p50 per extra container = (p50 pipe3 - p50 echo1) / 2   (goal <= 150 us, issue 12)
plus the router's CPU per request on each (the pipeline's is three hops' worth).
Needs wrk.  Not run in CI:  .venv/bin/python bench/pipeline_overhead.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REPO,
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

ECHO = str(REPO / "tests" / "fixtures" / "models" / "echo")
BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
CONTENT_TYPE = "application/json"
SINGLE, PIPE = "bench-echo1", "bench-pipe3"
CONTAINERS = 3
GOAL_ADDED_P50_PER_CONTAINER_US = 150.0


def deploy_pipeline(server: Server, name: str, count: int) -> None:
    containers = [{"ModelDataUrl": ECHO} for _ in range(count)]
    server.call("CreateModel", {"ModelName": name, "Containers": containers})
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": 1,
    }
    server.call(
        "CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [variant]}
    )
    server.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
    server.wait_status(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    print(f"load average before: {load_average()}", flush=True)
    with Server() as server:
        server.deploy(SINGLE, ECHO)
        deploy_pipeline(server, PIPE, CONTAINERS)
        urls = {n: f"{server.url}/endpoints/{n}/invocations" for n in (SINGLE, PIPE)}
        for url in urls.values():
            status, body = post(url, BODY, CONTENT_TYPE)
            if status != 200 or body != BODY:
                raise RuntimeError(f"{url}: unexpected response {status} {body[:200]!r}")
        assert server.process is not None
        pids = {
            "router": [server.process.pid],
            "instance": instance_pids(server.data_dir),
        }
        wrk = Wrk(BODY, CONTENT_TYPE, server.data_dir)
        for url in urls.values():
            wrk.run(url, 1, 1, 2.0)  # warm-up
        results: dict[str, list[WrkResult]] = {SINGLE: [], PIPE: []}
        for rep in range(args.repeats):
            order = (SINGLE, PIPE) if rep % 2 == 0 else (PIPE, SINGLE)
            for name in order:
                r = wrk.run(urls[name], 1, 1, args.duration, watch=pids)
                if r.errors:
                    raise RuntimeError(f"{name}: {r.errors} wrk errors")
                results[name].append(r)
                print(
                    f"  rep {rep + 1} {name:<12} {r.rps:>8,.0f} req/s p50 {r.p50_us:>6.0f} us "
                    f"p99 {r.p99_us:>6.0f} us  CPU/req router {r.cpu_us['router']:>4.0f} us  "
                    f"other load {r.other_cpu:.2f} cores",
                    flush=True,
                )
    p50 = {n: med([r.p50_us for r in rs]) for n, rs in results.items()}
    added = (p50[PIPE] - p50[SINGLE]) / (CONTAINERS - 1)
    per_rep = [
        (p.p50_us - s.p50_us) / (CONTAINERS - 1)
        for p, s in zip(results[PIPE], results[SINGLE], strict=True)
    ]
    print("\nmedian [min-max] over repeats, c=1")
    for name, runs in results.items():
        print(
            f"  {name:<12} p50 {spread([r.p50_us for r in runs]):>14} us  "
            f"p99 {spread([r.p99_us for r in runs]):>14} us  "
            f"req/s {spread([r.rps for r in runs]):>16}  "
            f"router CPU/req {spread([r.cpu_us['router'] for r in runs]):>10} us"
        )
    met = added <= GOAL_ADDED_P50_PER_CONTAINER_US
    print(
        f"\nadded p50 per extra container: {added:.0f} us (per repeat "
        f"{', '.join(f'{a:.0f}' for a in per_rep)})  goal <= "
        f"{GOAL_ADDED_P50_PER_CONTAINER_US:.0f} us: {'MET' if met else 'NOT MET'}"
    )
    summary = {
        "p50_us": p50,
        "added_p50_per_container_us": added,
        "added_per_repeat_us": per_rep,
        "goal_met": met,
        "runs": {n: [vars(r) for r in rs] for n, rs in results.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
