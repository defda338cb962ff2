"""Control-plane scale by simulation: the real controller, API operations and state store, a
fake backend that starts no processes (an instance is ready as soon as it is asked for).

    PYTHONPATH=$PWD/src:$PWD python bench/control_plane_scale.py [--endpoints 1000] [--per 10]
        [--url postgresql://...]      # default: a throwaway PostgreSQL (tests/fixtures)
        [--sqlite]                    # the default store instead

Prints one JSON object: time for the controller to bring every endpoint InService from a
fresh create and again after a restart (a new controller on the same database, as a new
controller lease holder does), the reconcile loop's CPU per second at steady state and one
pass's duration, DescribeEndpoint / ListEndpoints latency through the API's dispatcher
(validation + operation + store, no HTTP), and how long a following server's read of the
stored routes takes.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelhost.api.dispatch import Dispatcher
from modelhost.api.operations import OPERATIONS, Context
from modelhost.artifacts import ArtifactCache
from modelhost.backends.local import Instance, InstanceSpec
from modelhost.cluster.leader import CONTROLLER_LEASE
from modelhost.cluster.routes import RouteFollower, SharedRoutes
from modelhost.controller.fleet import Fleets
from modelhost.controller.loop import Controller
from modelhost.names import Arns
from modelhost.publish import Address
from modelhost.router.routing import RouteTable
from modelhost.settings import Settings
from modelhost.state.leases import Lease
from modelhost.state.records import EndpointStatus
from modelhost.state.routes import RouteStore
from modelhost.state.store import Store
from modelhost.storage.local import LocalObjectStore


class NoProcess:
    pid = 0

    def poll(self) -> int | None:
        return None


class SimBackend:
    """The backend's interface as the controller uses it, without processes."""

    def __init__(self) -> None:
        self.instances: set[Instance] = set()
        self.on_exit: Any = None
        self._ports = itertools.count(20_000)

    def start(self, spec: InstanceSpec) -> Instance:
        port = next(self._ports)
        inst = Instance(spec, NoProcess(), [], Address("127.0.0.1", port))  # type: ignore[arg-type]
        self.instances.add(inst)
        return inst

    async def wait_ready(self, inst: Instance, timeout: float) -> None:
        await asyncio.sleep(0)

    async def stop(self, inst: Instance, grace: float) -> None:
        self.instances.discard(inst)

    def kill_all(self) -> None:
        self.instances.clear()


def call(dispatcher: Dispatcher, op: str, body: dict[str, Any]) -> dict[str, Any]:
    status, _, payload = dispatcher.handle(f"SageMaker.{op}", json.dumps(body).encode())
    if status != 200:
        raise RuntimeError(f"{op}: {status} {payload[:300]!r}")
    out: dict[str, Any] = json.loads(payload or b"{}")
    return out


def controller_for(settings: Settings, store: Store, owner: str) -> Controller:
    lease = Lease(store, CONTROLLER_LEASE, owner, 3600.0)
    assert lease.acquire(), "another owner holds the lease"
    routes = SharedRoutes(RouteTable(), RouteStore(store, CONTROLLER_LEASE, owner))
    artifacts = ArtifactCache(settings.cache_dir, LocalObjectStore(settings.objects_dir), 10**9)
    fleets = Fleets(settings, store, SimBackend(), artifacts)  # type: ignore[arg-type]
    controller = Controller(fleets, routes, settings.reconcile_interval_s)
    controller.shared = routes  # type: ignore[attr-defined]
    return controller


async def converge(controller: Controller, n: int, timeout: float) -> float:
    """Seconds until the controller holds n fleets and every endpoint is InService."""
    started = time.perf_counter()
    await controller.start()
    controller.shared.start()  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleets = sum(1 for lv in controller.live.values() if lv.fleet is not None)
        if fleets >= n:
            eps = await asyncio.to_thread(controller.store.endpoints)
            if all(e.status is EndpointStatus.IN_SERVICE for e in eps):
                return time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise RuntimeError("did not converge in time")


async def steady(controller: Controller, seconds: float) -> dict[str, float]:
    """The process's CPU per wall second while only the reconcile loop runs, and one pass."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    passes, pass_cpu = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        await controller.reconcile_once()
        passes.append(time.perf_counter() - t0)
        pass_cpu.append(time.process_time() - c0)
    return {
        "cpu_per_s": round(cpu, 3),
        "pass_ms": round(statistics.median(passes) * 1e3, 1),
        "pass_cpu_ms": round(statistics.median(pass_cpu) * 1e3, 1),
    }


def latency(fn: Any, repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2] * 1e3, 2),
        "p99_ms": round(samples[int(len(samples) * 0.99)] * 1e3, 2),
    }


async def run(url: str, n: int, per: int, data: Path) -> dict[str, Any]:
    settings = Settings(
        data_dir=data, reconcile_interval_s=0.5, model_copy_max_bytes=0, embedded_s3=False
    )
    store = Store(url)
    ctx = Context(settings=settings, store=store, arns=Arns(settings.region, settings.account_id))
    api = Dispatcher(ctx, "sagemaker", "SageMaker", OPERATIONS)
    model = data / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.txt").write_text("nothing to load: no instance process runs")
    call(api, "CreateModel", {"ModelName": "sim", "PrimaryContainer": {"ModelDataUrl": str(model)}})
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "sim",
        "InstanceType": "ml.m5.large",
        "InitialInstanceCount": per,
    }
    config = {"EndpointConfigName": "sim", "ProductionVariants": [variant]}
    call(api, "CreateEndpointConfig", config)
    t0 = time.perf_counter()
    for i in range(n):
        call(api, "CreateEndpoint", {"EndpointName": f"ep-{i:05d}", "EndpointConfigName": "sim"})
    out: dict[str, Any] = {"endpoints": n, "instances": n * per}
    out["create_calls_s"] = round(time.perf_counter() - t0, 2)

    first = controller_for(settings, store, "first")
    out["converge_create_s"] = round(await converge(first, n, 1800), 2)
    out["steady"] = await steady(first, 10.0)
    describe = {"EndpointName": f"ep-{n // 2:05d}"}
    out["describe"] = await asyncio.to_thread(
        latency, lambda: call(api, "DescribeEndpoint", describe), 200
    )
    out["list_100"] = await asyncio.to_thread(
        latency, lambda: call(api, "ListEndpoints", {"MaxResults": 100}), 50
    )
    follower = RouteFollower(RouteTable(), RouteStore(store, CONTROLLER_LEASE, "f"), 0.5)
    t1 = time.perf_counter()
    await follower.poll_once()  # first read: every route published into its table
    out["follower_first_read_s"] = round(time.perf_counter() - t1, 3)
    t1, c1 = time.perf_counter(), time.process_time()
    await follower.poll_once()  # nothing changed: the stamps' read and compare only
    out["follower_poll_ms"] = round((time.perf_counter() - t1) * 1e3, 1)
    out["follower_poll_cpu_ms"] = round((time.process_time() - c1) * 1e3, 1)
    doc = await asyncio.to_thread(store.get, "endpoint", describe["EndpointName"])
    out["endpoint_doc_bytes"] = len(json.dumps(doc))

    # A restart: a new controller (its instances gone with the old one) on the same state.
    first.fleets.backend.kill_all()
    if first._runner is not None:
        first._runner.cancel()
    await first.shared.stop()  # type: ignore[attr-defined]
    store.put("x", "x", {})  # nothing; keeps the connection pool warm for the second
    Lease(store, CONTROLLER_LEASE, "first", 1.0).release()
    second = controller_for(settings, store, "second")
    out["converge_restart_s"] = round(await converge(second, n, 1800), 2)
    out["steady_after_restart"] = await steady(second, 5.0)
    if second._runner is not None:
        second._runner.cancel()
    await second.shared.stop()  # type: ignore[attr-defined]
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--per", type=int, default=10, help="instances per endpoint")
    parser.add_argument("--url", help="a PostgreSQL URL (default: a throwaway server)")
    parser.add_argument("--sqlite", action="store_true", help="the default SQLite store")
    args = parser.parse_args()
    # every shared model directory is announced once per instance: not what is measured
    logging.getLogger("modelhost.controller.fleet").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="modelhost-scale-") as tmp:
        data = Path(tmp)
        server = None
        if args.sqlite:
            url = f"sqlite:///{data / 'state.db'}"
        elif args.url:
            url = args.url
        else:
            from tests.fixtures.postgres import start_postgres, stop_postgres

            server = start_postgres()
            url = server.url(server.create_database())
        try:
            result = asyncio.run(run(url, args.endpoints, args.per, data))
        finally:
            if server is not None:
                stop_postgres(server)
    result["store"] = "sqlite" if args.sqlite else "postgresql"
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
