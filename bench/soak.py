"""Soak: steady high load on the demo endpoint plus control-plane churn, looking for losses
and leaks (issue 14, "Load and faults: nothing lost").

Starts `modelhost serve` (temporary data dir, free 127.0.0.1 port), deploys the demo iris
endpoint (modelhost.demo, 2 instances), then for --minutes:
  - --clients threads, each on its own keep-alive connection, invoke it back to back and check
    every answer's body;
  - one thread churns the control plane: CreateModel/EndpointConfig/Endpoint (the echo
    fixture), UpdateEndpoint to a second config (2 instances), one checked invocation,
    DeleteEndpoint, DeleteEndpointConfig/Model, in a loop.
Reports invocations, answers refused by a documented limit (ThrottlingException, the
back-pressure bound), unexpected failures (goal 0), the server's RSS slope, and its file
descriptors, sockets and descendant processes after a warm-up and at the end (goal: no
growth). tests/e2e/test_soak.py runs a 30-second slice in CI.

  PYTHONPATH=src .venv/bin/python bench/soak.py [--minutes 10] [--clients 16] [--json out]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import REPO, Server, instance_pids

from modelhost import demo

BODY = b"[[5.1,3.5,1.4,0.2]]"
EXPECTED = b'{"predictions": ["setosa"]}'
ECHO = REPO / "tests" / "fixtures" / "models" / "echo"
PER_CLIENT_MAX = 10_000_000  # every loop is bounded in count as well as in time
SETTLE_S = 20.0


@dataclass
class Resources:
    rss_mb: float
    fds: int
    sockets: int
    descendants: int
    instances: int


@dataclass
class Report:
    seconds: float
    clients: int
    invocations: int = 0
    throttled: int = 0  # ThrottlingException: refused by the documented back-pressure limit
    failures: int = 0  # anything else that was not the right answer (goal 0)
    failure_samples: list[str] = field(default_factory=list)
    churn_cycles: int = 0
    churn_failures: int = 0
    churn_samples: list[str] = field(default_factory=list)
    rss_slope_mb_per_min: float = 0.0
    rss_samples: int = 0
    rss_mb_first: float = 0.0
    rss_mb_last: float = 0.0
    start: Resources | None = None
    end: Resources | None = None

    def unexpected(self) -> int:
        return self.failures + self.churn_failures


def resources(pid: int, data_dir: Path) -> Resources:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    fds = sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        fds += 1
        sockets += target.startswith("socket:")
    return Resources(rss_kb / 1024, fds, sockets, len(descendants(pid)), len(instances(data_dir)))


def instances(data_dir: Path) -> list[int]:
    """The instance processes of the server on ``data_dir``: _harness.instance_pids without
    the zygote (which runs in the data directory itself; instances run in their model's)."""
    root = str(data_dir.resolve())
    found = []
    for pid in instance_pids(data_dir):
        try:
            if os.readlink(f"/proc/{pid}/cwd") != root:
                found.append(pid)
        except OSError:
            continue
    return sorted(found)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo and len(out) < 10_000:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return 60.0 * cov / var if var else 0.0


class Load:
    """Keep-alive clients invoking the demo endpoint until stopped; every answer checked."""

    def __init__(
        self,
        server: Server,
        endpoint: str,
        clients: int,
        request: tuple[bytes, str, bytes] = (BODY, "application/json", EXPECTED),
    ) -> None:
        self.port = server.port
        self.path = f"/endpoints/{endpoint}/invocations"
        self.body, self.content_type, self.expected = request
        self.outcomes: Counter[str] = Counter()
        self.samples: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(90)

    def client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
        headers = {"Content-Type": self.content_type}
        local: Counter[str] = Counter()
        try:
            for _ in range(PER_CLIENT_MAX):
                if self.stopped.is_set():
                    break
                try:
                    conn.request("POST", self.path, self.body, headers)
                    answer = conn.getresponse()
                    body = answer.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    self.fail(local, f"connection: {exc!r}")
                    continue
                if answer.status == 200 and body == self.expected:
                    local["ok"] += 1
                elif (answer.getheader("x-amzn-errortype") or "").startswith("Throttling"):
                    local["throttled"] += 1
                else:
                    self.fail(local, f"{answer.status} {body[:200]!r}")
        finally:
            conn.close()
            with self.lock:
                self.outcomes.update(local)

    def fail(self, local: Counter[str], what: str) -> None:
        local["failed"] += 1
        with self.lock:
            if len(self.samples) < 10:
                self.samples.append(what)


class Churn:
    """Endpoints created, updated, invoked and deleted in a loop until stopped."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cycles = 0
        self.failures = 0
        self.samples: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(180)

    def run(self) -> None:
        for i in range(100_000):
            if self.stopped.is_set():
                return
            try:
                self.cycle(f"churn-{i}")
                self.cycles += 1
            except Exception as exc:
                self.failures += 1
                if len(self.samples) < 10:
                    self.samples.append(f"cycle {i}: {exc}")
                time.sleep(0.5)  # not a tight loop of failures

    def cycle(self, name: str) -> None:
        s = self.server
        s.call("CreateModel", {"ModelName": name, "PrimaryContainer": {"ModelDataUrl": str(ECHO)}})
        for config, count in ((name, 1), (f"{name}-b", 2)):
            variant = {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": count,
            }
            s.call(
                "CreateEndpointConfig",
                {"EndpointConfigName": config, "ProductionVariants": [variant]},
            )
        s.call("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
        s.wait_status(name, timeout=120, poll=0.1)
        s.call("UpdateEndpoint", {"EndpointName": name, "EndpointConfigName": f"{name}-b"})
        s.wait_status(name, timeout=120, poll=0.1)
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=60)
        try:
            conn.request("POST", f"/endpoints/{name}/invocations", b"churn")
            answer = conn.getresponse()
            body = answer.read()
        finally:
            conn.close()
        if answer.status != 200 or body != b"churn":
            raise RuntimeError(f"invoking {name}: {answer.status} {body[:200]!r}")
        s.call("DeleteEndpoint", {"EndpointName": name})
        s.wait_gone(name, timeout=120)
        s.call("DeleteEndpointConfig", {"EndpointConfigName": name})
        s.call("DeleteEndpointConfig", {"EndpointConfigName": f"{name}-b"})
        s.call("DeleteModel", {"ModelName": name})


def deploy_demo(server: Server, workdir: Path, instances: int) -> str:
    archive = workdir / "iris.tar.gz"
    archive.write_bytes(demo.build_archive())
    for operation, request in demo.requests(str(archive)):
        if operation == "CreateEndpointConfig":
            request["ProductionVariants"][0]["InitialInstanceCount"] = instances  # type: ignore[index]
        server.call(operation, request)
    server.wait_status(demo.DEMO_ENDPOINT, timeout=180, poll=0.1)
    return demo.DEMO_ENDPOINT


def settle(pid: int, data_dir: Path, baseline: Resources) -> Resources:
    """Resources once idle: poll (bounded) until back to the baseline's fds and processes."""
    deadline = time.monotonic() + SETTLE_S
    now = resources(pid, data_dir)
    while time.monotonic() < deadline:
        if now.fds <= baseline.fds and now.descendants <= baseline.descendants:
            break
        time.sleep(0.25)
        now = resources(pid, data_dir)
    return now


def phase(server: Server, endpoint: str, clients: int, seconds: float, churn: bool) -> Any:
    load = Load(server, endpoint, clients)
    mover = Churn(server)
    load.start()
    if churn:
        mover.start()
    assert server.process is not None
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        samples.append((elapsed, resources(server.process.pid, server.data_dir).rss_mb))
        time.sleep(min(1.0, max(0.0, seconds - elapsed)))
    load.stop()
    if churn:
        mover.stop()
    return load, mover, samples


def soak(
    seconds: float, clients: int = 16, instances: int = 2, warmup: float = 5.0, churn: bool = True
) -> Report:
    report = Report(seconds=seconds, clients=clients)
    env = {"MODELHOST_RECONCILE_INTERVAL_S": "0.2", "MODELHOST_STOP_GRACE_S": "5"}
    with tempfile.TemporaryDirectory(prefix="modelhost-soak-") as tmp, Server(env=env) as server:
        assert server.process is not None
        pid = server.process.pid
        endpoint = deploy_demo(server, Path(tmp), instances)
        # Warm-up: the same load and one churn cycle, so that pools, threads and caches that
        # are bounded but lazily filled are in the baseline, not counted as a leak.
        load, mover, _ = phase(server, endpoint, clients, warmup, churn=False)
        mover.cycle("churn-warmup")
        if load.outcomes["failed"]:
            raise RuntimeError(f"warm-up failed: {load.samples}")
        report.start = settle(pid, server.data_dir, resources(pid, server.data_dir))
        load, mover, samples = phase(server, endpoint, clients, seconds, churn)
        report.invocations = sum(load.outcomes.values())
        report.throttled = load.outcomes["throttled"]
        report.failures = load.outcomes["failed"]
        report.failure_samples = load.samples
        report.churn_cycles = mover.cycles
        report.churn_failures = mover.failures
        report.churn_samples = mover.samples
        report.rss_samples = len(samples)
        report.rss_mb_first, report.rss_mb_last = samples[0][1], samples[-1][1]
        report.rss_slope_mb_per_min = slope_per_min(samples)
        report.end = settle(pid, server.data_dir, report.start)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--no-churn", action="store_true", help="load only")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = soak(args.minutes * 60, args.clients, args.instances, churn=not args.no_churn)
    out = asdict(report)
    print(json.dumps(out, indent=2))
    rate = report.invocations / report.seconds
    print(
        f"\n{report.invocations:,} invocations in {report.seconds:.0f} s ({rate:,.0f}/s), "
        f"{report.throttled} throttled, {report.failures} failed; "
        f"{report.churn_cycles} churn cycles, {report.churn_failures} failed; "
        f"RSS slope {report.rss_slope_mb_per_min:+.2f} MB/min; "
        f"start {report.start} end {report.end}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    leaked = report.start is None or report.end is None or _leaked(report.start, report.end)
    return 1 if report.unexpected() or leaked else 0


def _leaked(start: Resources, end: Resources) -> bool:
    return end.fds > start.fds or end.descendants > start.descendants


if __name__ == "__main__":
    sys.exit(main())
