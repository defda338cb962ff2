"""Ray backend overhead on the invoke path: router vs. direct, local backend vs. ray backend.

For each backend in turn, starts `modelhost serve` (temporary data dir, free 127.0.0.1 port;
`--backend ray` starts a local one-node Ray, on loopback, with the server), deploys the echo
fixture (1 instance, ml.m5.large) and runs router_overhead.py's cells (wrk keep-alive POST,
c=1 and c=32, direct and router alternating, --repeats times). The local backend's router
reaches its instance over a Unix socket; the ray backend's over TCP at the node's address (here
127.0.0.1), since an actor's instance is on another machine in a real cluster. Nothing of Ray
is on the invoke path itself: the router talks HTTP to the instance process.

Reports, per backend, the router's added p50 at c=1 and router/direct req/s at c=32, and the
ray backend's router p50 and req/s against the local backend's.
Needs wrk and ray.  Not run in CI:  .venv/bin/python bench/ray_overhead.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Server,
    Wrk,
    _read,
    load_average,
    med,
    post,
    process_env,
    require_wrk,
)
from router_overhead import BODY, CONTENT_TYPE, ECHO, ENDPOINT, measure, summarize

BACKENDS = ("local", "ray")


def ray_instance(data_dir: Path) -> tuple[int, int]:
    """(pid, port) of the ray backend's one instance process: told of its node and of this
    server's object store (its working directory is on the node, not under data_dir)."""
    objects = str(data_dir.resolve() / "objects")
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and b"modelhost.runtime" in _read(f"/proc/{entry}/cmdline"):
            env = process_env(int(entry))
            if "MODELHOST_NODE_ID" in env and env.get("MODELHOST_OBJECTS_DIR") == objects:
                found.append((int(entry), int(env["SAGEMAKER_BIND_TO_PORT"])))
    if len(found) != 1:
        raise RuntimeError(f"expected one ray instance process, found {found}")
    return found[0]


def run_backend(backend: str, duration: float, repeats: int) -> dict[str, object]:
    # No zygote: the harness finds the one instance process by its environment, which a
    # forked instance shows as its zygote's (the ray backend has no zygote either).
    with Server(env={"MODELHOST_BACKEND": backend, "MODELHOST_ZYGOTE": "false"}) as server:
        print(f"\n== {backend} backend: modelhost serve on {server.url}", flush=True)
        server.deploy(ENDPOINT, str(ECHO))
        pid, port = server.instance() if backend == "local" else ray_instance(server.data_dir)
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
        print(f"echo instance pid {pid} port {port}; {duration:g} s per run", flush=True)
        return summarize(measure(direct, router, wrk, duration, repeats, pids))


def compare(summaries: dict[str, dict[str, object]]) -> dict[str, float]:
    def router_runs(backend: str, cell: str) -> list[dict[str, float]]:
        cells: dict[str, dict[str, list[dict[str, float]]]] = summaries[backend]["cells"]  # type: ignore[assignment]
        return cells[cell]["router"]

    p50 = {b: med([r["p50_us"] for r in router_runs(b, "c1")]) for b in BACKENDS}
    rps = {b: med([r["rps"] for r in router_runs(b, "c32")]) for b in BACKENDS}
    result = {
        "router_p50_c1_local_us": p50["local"],
        "router_p50_c1_ray_us": p50["ray"],
        "ray_minus_local_p50_c1_us": p50["ray"] - p50["local"],
        "router_rps_c32_local": rps["local"],
        "router_rps_c32_ray": rps["ray"],
        "ray_over_local_rps_c32": rps["ray"] / rps["local"],
    }
    print("\nthrough the router, ray backend vs local backend (medians):")
    print(
        f"  c=1  p50 {p50['local']:.0f} us -> {p50['ray']:.0f} us "
        f"({p50['ray'] - p50['local']:+.0f} us)"
    )
    print(
        f"  c=32 req/s {rps['local']:,.0f} -> {rps['ray']:,.0f} ({rps['ray'] / rps['local']:.2f}x)"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    print(f"load average before: {load_average()}", flush=True)
    summaries = {b: run_backend(b, args.duration, args.repeats) for b in BACKENDS}
    result = {"backends": summaries, "comparison": compare(summaries)}
    print(f"load average after: {load_average()}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
