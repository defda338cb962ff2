"""Multi-model endpoints (issue 12): hit throughput, miss latency, and a scale run.

Starts `modelhost serve` (temporary data dir, local object store, free 127.0.0.1 port). Then:
  1. hit: the demo sklearn iris model on a single-model endpoint and, as `iris.tar.gz`, on a
     multi-model endpoint (loaded by one request first); wrk -t2 -c32 on each, alternating,
     --repeats times. Goal: MME req/s >= 0.9 x single-model req/s.
  2. miss: --misses distinct small sklearn archives (a few KB each, already in the object
     store) requested one after another, each for the first time: p50 from request to answer
     (goal <= 50 ms), with the breakdown from the server's metrics (download + extract, load
     in the instance = import + model_fn, and the rest: first predict and the router).
  3. scale (--scale, on a second server): --registered archives under one prefix, a working
     set of --working of them requested round-robin by one instance whose memory budget fits
     --fits models (each model's code/inference.py holds 1 MB): p50/p99, the instance's RSS,
     loads, unloads and the thrash count.
Needs wrk.  Not run in CI:  .venv/bin/python bench/multimodel_bench.py [--scale]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import Server, Wrk, instance_pids, machine, med, spread

from modelhost import demo

BODY = b"[[5.1,3.5,1.4,0.2]]"
CONTENT_TYPE = "application/json"
GOAL_HIT_RATIO = 0.9
GOAL_MISS_P50_MS = 50.0
BALLAST = """
import numpy as np


def model_fn(model_dir):
    ballast = np.ones(131072)  # 1 MB, touched
    return ballast


def transform_fn(model, data, content_type, accept):
    return str(float(model[0]))
"""


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _sklearn_variants(count: int) -> list[bytes]:
    """``count`` archives of the demo model, each with its own marker file (distinct bytes)."""
    with tarfile.open(fileobj=io.BytesIO(demo.build_archive()), mode="r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return [_tar({**files, "id.txt": str(i).encode()}) for i in range(count)]


def _invoke(server: Server, name: str, target: str | None, body: bytes = BODY) -> bytes:
    headers = {"Content-Type": CONTENT_TYPE}
    if target is not None:
        headers["X-Amzn-SageMaker-Target-Model"] = target
    req = urllib.request.Request(
        f"{server.url}/endpoints/{name}/invocations", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        data: bytes = resp.read()
        return data


def _deploy_mme(server: Server, name: str, prefix: str) -> None:
    server.call(
        "CreateModel",
        {
            "ModelName": name,
            "PrimaryContainer": {"Mode": "MultiModel", "ModelDataUrl": prefix},
        },
    )
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
        },
    )
    server.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
    server.wait_status(name)


def _metrics(server: Server, endpoint: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if f'EndpointName="{endpoint}"' not in line or line.startswith("#"):
            continue
        m = re.match(r"(\w+)\{[^}]*\} (\S+)", line)
        if m and "_bucket" not in m.group(1):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _mean_us(metrics: dict[str, float], name: str) -> float:
    count = metrics.get(f"sagemaker_{name}_count", 0.0)
    return metrics.get(f"sagemaker_{name}_sum", 0.0) / count if count else 0.0


def _put(server: Server, key: str, data: bytes) -> None:
    path = server.data_dir / "objects" / "bench" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def hit_and_miss(duration: float, repeats: int, misses: int) -> dict[str, Any]:
    with Server() as server:
        archive = demo.build_archive()
        _put(server, "single/model.tar.gz", archive)
        _put(server, "mme/iris.tar.gz", archive)
        for i, data in enumerate(_sklearn_variants(misses)):
            _put(server, f"mme/miss-{i}.tar.gz", data)
        server.deploy("single", "s3://bench/single/model.tar.gz")
        _deploy_mme(server, "mme", "s3://bench/mme/")
        expected = _invoke(server, "single", None)
        assert _invoke(server, "mme", "iris.tar.gz") == expected
        # -- hit throughput
        wrk = Wrk(BODY, CONTENT_TYPE, server.data_dir, "single")
        wrk_mme = Wrk(BODY, CONTENT_TYPE, server.data_dir, "mme")
        with wrk_mme.script.open("a") as fh:
            fh.write('wrk.headers["X-Amzn-SageMaker-Target-Model"] = "iris.tar.gz"\n')
        hits: dict[str, list[float]] = {"single": [], "mme": []}
        for rep in range(repeats):
            order = ("single", "mme") if rep % 2 == 0 else ("mme", "single")
            for which in order:
                runner = wrk if which == "single" else wrk_mme
                r = runner.run(f"{server.url}/endpoints/{which}/invocations", 2, 32, duration)
                if r.errors:
                    raise RuntimeError(f"{which}: {r.errors} wrk errors")
                hits[which].append(r.rps)
                print(
                    f"  rep {rep + 1} {which:<6} {r.rps:>8,.0f} req/s p50 {r.p50_us:>6.0f} us "
                    f"other load {r.other_cpu:.2f} cores",
                    flush=True,
                )
        # -- misses
        before = _metrics(server, "mme")
        times = []
        for i in range(misses):
            began = time.perf_counter()
            _invoke(server, "mme", f"miss-{i}.tar.gz")
            times.append((time.perf_counter() - began) * 1e3)
        after = _metrics(server, "mme")
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        wait_us = _mean_us(delta, "ModelLoadingWaitTime")
        p50 = statistics.median(times)
        ratio = med(hits["mme"]) / med(hits["single"])
        return {
            "hit_rps_single": hits["single"],
            "hit_rps_mme": hits["mme"],
            "hit_ratio": round(ratio, 3),
            "hit_goal_met": ratio >= GOAL_HIT_RATIO,
            "miss_ms_p50": round(p50, 2),
            "miss_ms_p90": round(sorted(times)[int(len(times) * 0.9)], 2),
            "miss_goal_met": p50 <= GOAL_MISS_P50_MS,
            "miss_breakdown_ms": {
                "download_and_extract": round(_mean_us(delta, "ModelDownloadingTime") / 1e3, 2),
                "load_in_instance": round(_mean_us(delta, "ModelLoadingTime") / 1e3, 2),
                "waiting_for_load_total": round(wait_us / 1e3, 2),
                "first_predict_and_router": round(statistics.mean(times) - wait_us / 1e3, 2),
            },
            "misses": misses,
            "summary_hit": f"single {spread(hits['single'])} vs mme {spread(hits['mme'])} req/s",
        }


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scale(registered: int, working: int, fits: int, rounds: int) -> dict[str, Any]:
    budget = fits * 1_100_000  # a model: 1 MB of ballast plus its handler
    with Server(env={"MODELHOST_MME_MEMORY_BUDGET_BYTES": str(budget)}) as server:
        code = BALLAST.encode()
        began = time.perf_counter()
        for i in range(registered):
            _put(server, f"scale/m{i}.tar.gz", _tar({"code/inference.py": code, "id": b"%d" % i}))
        print(f"  {registered} archives written in {time.perf_counter() - began:.1f} s")
        _deploy_mme(server, "scale", "s3://bench/scale/")
        (pid,) = instance_pids(server.data_dir)
        rss_start = _rss_kb(pid)
        times: list[float] = []
        rss_max = rss_start
        began = time.perf_counter()
        for r in range(rounds):
            for i in range(working):
                t = time.perf_counter()
                _invoke(server, "scale", f"m{i * (registered // working)}.tar.gz", b"1")
                times.append((time.perf_counter() - t) * 1e3)
                if i % 50 == 0:
                    rss_max = max(rss_max, _rss_kb(pid))
            print(f"  round {r + 1}: p50 {statistics.median(times[-working:]):.1f} ms", flush=True)
        elapsed = time.perf_counter() - began
        m = _metrics(server, "scale")
        times.sort()
        return {
            "registered": registered,
            "working_set": working,
            "budget_models": fits,
            "budget_bytes": budget,
            "requests": len(times),
            "req_per_s": round(len(times) / elapsed, 1),
            "p50_ms": round(times[len(times) // 2], 2),
            "p99_ms": round(times[int(len(times) * 0.99)], 2),
            "max_ms": round(times[-1], 2),
            "instance_rss_mb_start": round(rss_start / 1024, 1),
            "instance_rss_mb_max": round(rss_max / 1024, 1),
            "loads": m.get("modelhost_ModelLoads_total", 0),
            "unloads": m.get("modelhost_ModelUnloads_total", 0),
            "thrash": m.get("modelhost_ModelThrash_total", 0),
            "loaded_at_end": m.get("sagemaker_LoadedModelCount", 0),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--misses", type=int, default=40)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--only-scale", action="store_true")
    parser.add_argument("--registered", type=int, default=10_000)
    parser.add_argument("--working", type=int, default=500)
    parser.add_argument("--fits", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    if not args.only_scale:
        print("hit and miss:")
        out["hit_and_miss"] = hit_and_miss(args.duration, args.repeats, args.misses)
        print(json.dumps(out["hit_and_miss"], indent=2))
    if args.scale or args.only_scale:
        print("scale:")
        out["scale"] = scale(args.registered, args.working, args.fits, args.rounds)
        print(json.dumps(out["scale"], indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
