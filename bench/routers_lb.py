"""Two routers behind HAProxy vs one, on one PostgreSQL state store, at c=64.

    PYTHONPATH=$PWD/src:$PWD python bench/routers_lb.py [--duration 10] [--runs 3]

One endpoint (the echo fixture model, 2 instances) served by router A (it holds the controller
lease, so its instances are A's children); router B follows A's routes. wrk (keep-alive,
c=64, 2 threads) POSTs a small body, in turns: straight to A; through HAProxy
(docs/examples/haproxy.cfg) to A alone; through HAProxy to A and B. Prints the requests per
second of each run and the medians' ratio (two routers / one, both through HAProxy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._harness import REPO, Server, Wrk, free_port, load_average, machine, med
from tests.fixtures.postgres import start_postgres, stop_postgres

HAPROXY_CONFIG = REPO / "docs" / "examples" / "haproxy.cfg"
ECHO = REPO / "tests" / "fixtures" / "models" / "echo"


def haproxy(workdir: Path, front: int, backends: list[int]) -> subprocess.Popen[bytes]:
    text = HAPROXY_CONFIG.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{front}")
    lines = []
    for line in text.splitlines():
        if "server router-b" in line and len(backends) < 2:
            continue
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = text.replace("127.0.0.1:8765", f"127.0.0.1:{backends[0]}")
    if len(backends) > 1:
        text = text.replace("127.0.0.1:8766", f"127.0.0.1:{backends[1]}")
    config = workdir / f"haproxy-{len(backends)}.cfg"
    config.write_text(text)
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{front}/healthz", timeout=1):
                time.sleep(2.5)  # every server's health check passed once (inter 1s)
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("haproxy did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pg = start_postgres()
    workdir = Path(tempfile.mkdtemp(prefix="modelhost-lb-"))
    env = {"MODELHOST_STATE_URL": pg.url(pg.create_database())}
    a, b = Server(env=env), Server(env=env)
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        a.start()
        a.call(
            "CreateModel", {"ModelName": "echo", "PrimaryContainer": {"ModelDataUrl": str(ECHO)}}
        )
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": "echo",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 2,
        }
        a.call(
            "CreateEndpointConfig", {"EndpointConfigName": "echo", "ProductionVariants": [variant]}
        )
        a.call("CreateEndpoint", {"EndpointName": "echo", "EndpointConfigName": "echo"})
        a.wait_status("echo")
        b.start()
        one, two = free_port(), free_port()
        proxies = [haproxy(workdir, one, [a.port]), haproxy(workdir, two, [a.port, b.port])]
        path = "/endpoints/echo/invocations"
        targets = {
            "direct_a": f"{a.url}{path}",
            "haproxy_a": f"http://127.0.0.1:{one}{path}",
            "haproxy_a_b": f"http://127.0.0.1:{two}{path}",
        }
        wrk = Wrk(b'{"x": 1}', "application/json", workdir)
        for url in targets.values():  # warm up (B learns the routes within 0.5 s)
            wrk.run(url, 2, 64, 2.0)
        results: dict[str, list[float]] = {name: [] for name in targets}
        errors: dict[str, int] = dict.fromkeys(targets, 0)
        for _ in range(args.runs):
            for name, url in targets.items():
                r = wrk.run(url, 2, 64, args.duration)
                results[name].append(round(r.rps))
                errors[name] += r.errors
        out = {
            "rps": results,
            "errors": errors,
            "ratio_two_over_one_via_haproxy": round(
                med(results["haproxy_a_b"]) / med(results["haproxy_a"]), 2
            ),
            "load_average": load_average(),
            "machine": machine(),
        }
        print(json.dumps(out, indent=1))
    finally:
        for p in proxies:
            p.terminate()
            p.wait(10)
        b.stop()
        a.stop()
        stop_postgres(pg)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
