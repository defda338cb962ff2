"""Adaptive batching: sklearn iris, one JSON row per request, with and without batching.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port), trains the iris
LogisticRegression fixture and deploys it twice (1 instance each): `plain` (no batching) and
`batched` (MODELHOST_BATCHING=true, default size and delay). Then runs wrk (keep-alive POST of
`[[5.1, 3.5, 1.4, 0.2]]`) for --duration seconds per cell, alternating the four paths
(plain/batched x direct to the instance/through the router), --repeats times:
  c=1:  wrk -t1 -c1    batching must add no latency on an idle server
  c=32: wrk -t2 -c32   goal: batched req/s >= 3x plain
Prints req/s, p50 and p99 (median over repeats), the CPU per request of router and instance,
and the ratios. Needs wrk.  Not run in CI:  .venv/bin/python bench/batching_bench.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REPO,
    Server,
    Wrk,
    WrkResult,
    instance_pids,
    load_average,
    machine,
    med,
    post,
    process_env,
    require_wrk,
    spread,
)

BODY = b"[[5.1, 3.5, 1.4, 0.2]]"
CONTENT_TYPE = "application/json"
GOAL_RATIO_C32 = 3.0
CELLS = {"c1": (1, 1), "c32": (2, 32)}  # name: (wrk threads, connections)
MODELS = {"plain": {}, "batched": {"MODELHOST_BATCHING": "true"}}
PATHS = [f"{model} {via}" for model in MODELS for via in ("direct", "router")]

Results = dict[str, dict[str, list[WrkResult]]]  # cell -> path -> one result per repeat


def deploy(server: Server, name: str, model_dir: Path, environment: dict[str, str]) -> None:
    container = {"ModelDataUrl": str(model_dir), "Environment": environment}
    server.call("CreateModel", {"ModelName": name, "PrimaryContainer": container})
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


def instances(server: Server) -> dict[str, tuple[int, int]]:
    """{"plain": (pid, port), "batched": (pid, port)} from the instances' environments."""
    found = {}
    for pid in instance_pids(server.data_dir):
        env = process_env(pid)
        kind = "batched" if env.get("MODELHOST_BATCHING") == "true" else "plain"
        found[kind] = (pid, int(env["SAGEMAKER_BIND_TO_PORT"]))
    if set(found) != set(MODELS):
        raise RuntimeError(f"expected a plain and a batched instance, found {found}")
    return found


def measure(
    urls: dict[str, str], wrk: Wrk, duration: float, repeats: int, pids: dict[str, list[int]]
) -> Results:
    results: Results = {cell: {path: [] for path in PATHS} for cell in CELLS}
    for rep in range(repeats):
        for cell, (threads, conns) in CELLS.items():
            for path in PATHS if rep % 2 == 0 else PATHS[::-1]:
                watch = {"router": pids["router"], "instance": pids[path.split()[0]]}
                r = wrk.run(urls[path], threads, conns, duration, watch=watch)
                if r.errors:
                    raise RuntimeError(f"{path} {cell}: {r.errors} wrk errors")
                results[cell][path].append(r)
                print(
                    f"  rep {rep + 1} {cell:>3} {path:<15} {r.rps:>8,.0f} req/s "
                    f"p50 {r.p50_us:>6.0f} us  p99 {r.p99_us:>6.0f} us  CPU/req router "
                    f"{r.cpu_us['router']:>4.0f} us instance {r.cpu_us['instance']:>4.0f} us  "
                    f"other load {r.other_cpu:.2f} cores",
                    flush=True,
                )
    return results


def summarize(results: Results) -> dict[str, object]:
    print("\nmedian [min-max] over repeats")
    print(f"{'cell':<20} {'req/s':>22} {'p50 us':>16} {'p99 us':>18} {'instance CPU/req':>17}")
    for cell, paths in results.items():
        for path, runs in paths.items():
            print(
                f"{cell + ' ' + path:<20} {spread([r.rps for r in runs]):>22} "
                f"{spread([r.p50_us for r in runs]):>16} {spread([r.p99_us for r in runs]):>18} "
                f"{spread([r.cpu_us['instance'] for r in runs]):>17}"
            )
    summary: dict[str, object] = {}
    for via in ("direct", "router"):
        c32 = results["c32"]
        ratio = med([r.rps for r in c32[f"batched {via}"]]) / med(
            [r.rps for r in c32[f"plain {via}"]]
        )
        c1 = results["c1"]
        added = med([r.p50_us for r in c1[f"batched {via}"]]) - med(
            [r.p50_us for r in c1[f"plain {via}"]]
        )
        met = "MET" if ratio >= GOAL_RATIO_C32 else "NOT MET"
        print(
            f"{via:>6}: batched/plain req/s at c=32 {ratio:.2f} (goal >= {GOAL_RATIO_C32:g}: "
            f"{met}); p50 added by batching at c=1 {added:+.0f} us"
        )
        summary[via] = {"ratio_c32": ratio, "added_p50_c1_us": added}
    summary["cells"] = {
        cell: {path: [vars(r) for r in runs] for path, runs in paths.items()}
        for cell, paths in results.items()
    }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    require_wrk()
    sys.path.insert(0, str(REPO))
    from tests.fixtures.models import sklearn_iris_dir

    print(f"machine: {machine()}\nload average before: {load_average()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, Server() as server:
        model_dir = sklearn_iris_dir(Path(tmp) / "iris")
        for kind, environment in MODELS.items():
            deploy(server, f"bench-iris-{kind}", model_dir, environment)
        found = instances(server)
        urls = {}
        for kind, (_, port) in found.items():
            urls[f"{kind} direct"] = f"http://127.0.0.1:{port}/invocations"
            urls[f"{kind} router"] = f"{server.url}/endpoints/bench-iris-{kind}/invocations"
        answers = {path: post(url, BODY, CONTENT_TYPE) for path, url in urls.items()}
        if len(set(answers.values())) != 1 or answers[PATHS[0]][0] != 200:
            raise RuntimeError(f"the four paths answer differently: {answers}")
        assert server.process is not None
        pids = {"router": [server.process.pid], **{k: [pid] for k, (pid, _) in found.items()}}
        wrk = Wrk(BODY, CONTENT_TYPE, server.data_dir)
        for url in urls.values():  # warm-up: connections, pools, caches
            wrk.run(url, 2, 32, 1.0)
        print(f"instances {found}; {args.duration:g} s per run", flush=True)
        results = measure(urls, wrk, args.duration, args.repeats, pids)
    summary = summarize(results)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
