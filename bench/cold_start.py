"""Cold start: a serverless endpoint of the demo sklearn model, from zero instances to the first
response (issue 11: p50 <= 250 ms, p99 <= 500 ms), over repeated scale-to-zero cycles.

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port, MODELHOST_SERVERLESS_IDLE_S
= --idle), deploys the demo iris model (the archive `make run` deploys, unpacked to a local
directory) as a serverless variant, waits for the zygote, then --cycles times: waits until the
variant has scaled to zero (no instance process left), sends one InvokeEndpoint and times it
to the answer. The server's own figure (wake -> instance ready and routed) is read from its
log. Then the breakdown, measured the same way the backend does it but without the server:
fork from the zygote, model load until /ping answers, first predict.
Prints one JSON object.
Not run in CI:  .venv/bin/python bench/cold_start.py [--cycles 20 --idle 0.5]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import signal
import socket
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import HOST, Server, instance_pids, load_average

from modelhost.backends.local import THREAD_VARS
from modelhost.backends.zygote import Zygote
from modelhost.demo import build_archive

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
STARTED = re.compile(rb"started from zero in (\d+) ms")


def demo_model(into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(build_archive())) as tar:
        tar.extractall(into, filter="data")
    return into


def deploy(server: Server, name: str, model: Path) -> None:
    server.call(
        "CreateModel", {"ModelName": name, "PrimaryContainer": {"ModelDataUrl": str(model)}}
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": name,
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 4},
    }
    server.call(
        "CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [variant]}
    )
    server.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
    server.wait_status(name)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def instances(server: Server) -> list[int]:
    """Instance processes: started afresh, or forked by the zygote (the zygote left out)."""
    return instance_pids(server.data_dir)


def invoke(port: int, name: str) -> float:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    started = time.perf_counter()
    conn.request(
        "POST", f"/endpoints/{name}/invocations", BODY, {"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    body = resp.read()
    took = time.perf_counter() - started
    conn.close()
    if resp.status != 200 or b"setosa" not in body:
        raise RuntimeError(f"invocation answered {resp.status}: {body[:200]!r}")
    return took * 1e3


def cycles(server: Server, name: str, count: int) -> tuple[list[float], list[float]]:
    client, server_side = [], []
    for _ in range(count):
        wait_for(lambda: not instances(server), 60, "the variant to scale to zero")
        client.append(invoke(server.port, name))
        log = server.log_path.read_bytes()
        server_side.append(float(STARTED.findall(log)[-1]))
    return client, server_side


def breakdown(model: Path, work: Path, count: int) -> dict[str, float]:
    """Fork, load (until /ping answers), first predict: medians over ``count`` instances."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELHOST_")}
    env |= {k: "1" for k in THREAD_VARS} | {"PYTHONUNBUFFERED": "1"}
    zygote = Zygote(env, work / "zygote.log")
    zygote.start()
    wait_for(lambda: zygote.ready, 120, "the zygote")
    forks, loads, predicts = [], [], []
    try:
        for i in range(count):
            sock = str(work / f"b{i}.sock")
            child_env = env | {"MODELHOST_MODEL_DIR": str(model), "MODELHOST_UNIX_SOCKET": sock}
            child_env["SAGEMAKER_BIND_TO_PORT"] = "0"
            t0 = time.perf_counter()
            child = zygote.spawn(child_env, model, work / "i.log", [], 0)
            t1 = time.perf_counter()
            assert child is not None
            wait_for(lambda path=sock: _pings(path), 60, "the instance")  # type: ignore[misc]
            t2 = time.perf_counter()
            _predict(sock)
            t3 = time.perf_counter()
            forks.append((t1 - t0) * 1e3)
            loads.append((t2 - t1) * 1e3)
            predicts.append((t3 - t2) * 1e3)
            os.kill(child.pid, signal.SIGTERM)
            child.wait(10)
    finally:
        zygote.close()
    return {
        "fork_ms_p50": round(statistics.median(forks), 1),
        "load_until_ping_ms_p50": round(statistics.median(loads), 1),
        "first_predict_ms_p50": round(statistics.median(predicts), 1),
    }


def _pings(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            return b" 200" in s.recv(100)
    except OSError:
        return False


def _predict(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(BODY), BODY)
        )
        if b"setosa" not in s.recv(4096):
            raise RuntimeError("the instance did not predict")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--idle", type=float, default=0.5, help="MODELHOST_SERVERLESS_IDLE_S")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        model = demo_model(Path(tmp) / "model")
        with Server(env={"MODELHOST_SERVERLESS_IDLE_S": str(args.idle)}) as server:
            deploy(server, "cold", model)
            wait_for(
                lambda: b"the zygote is ready" in server.log_path.read_bytes(), 120, "the zygote"
            )
            client, server_side = cycles(server, "cold", args.cycles)
        parts = breakdown(model, Path(tmp), min(args.cycles, 10))
    print(
        json.dumps(
            {
                "cycles": args.cycles,
                "cold_start_ms_p50": round(statistics.median(client), 1),
                "cold_start_ms_p99": round(percentile(client, 0.99), 1),
                "cold_start_ms_max": round(max(client), 1),
                "server_wake_to_ready_ms_p50": statistics.median(server_side),
                **parts,
                "goal": "p50 <= 250 ms, p99 <= 500 ms",
                "load_average": load_average(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
