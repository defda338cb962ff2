"""The reconcile loop driven through its seams, with no process and no socket: a fake backend
(instances with fake process handles), a fake Publisher recording what the router is told,
the real store and the real operations writing desired state."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from modelhost.api.operations.context import Context
from modelhost.api.operations.endpoint_configs import create_endpoint_config
from modelhost.api.operations.endpoints import (
    create_endpoint,
    delete_endpoint,
    update_endpoint,
    update_endpoint_weights_and_capacities,
)
from modelhost.api.operations.models import create_model
from modelhost.backends.local import ExitCallback, Instance, InstanceFailed, InstanceSpec
from modelhost.controller.fleet import Fleets
from modelhost.controller.loop import HEAL_BACKOFF_S, Controller
from modelhost.names import Arns
from modelhost.publish import Address, PublishedVariant
from modelhost.settings import Settings
from modelhost.state.records import Endpoint, EndpointStatus
from modelhost.state.store import Store

GRACE = 3.0
ROUNDS = 100  # reconcile passes a test may take to converge

Event = tuple[str, ...]


class FakeProcess:
    pid = 0

    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


class FakeBackend:
    """Instances are records; ``die`` plays a process exiting on its own."""

    local_model_copy = True

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.instances: set[Instance] = set()
        self.on_exit: ExitCallback | None = None
        self.failing = False  # wait_ready fails while set
        self._ports = iter(range(20000, 30000))

    def start(self, spec: InstanceSpec) -> Instance:
        process = cast(subprocess.Popen[bytes], FakeProcess())
        inst = Instance(spec, process, [], Address("127.0.0.1", next(self._ports)))
        self.instances.add(inst)
        self.events.append(("start", inst.instance_id))
        return inst

    async def wait_ready(self, inst: Instance, timeout: float) -> None:
        if self.failing:
            raise InstanceFailed("the instance did not pass the /ping health check")

    async def stop(self, inst: Instance, grace: float) -> None:
        self.instances.discard(inst)
        process = cast(FakeProcess, inst.process)
        process.code = -15 if process.code is None else process.code
        self.events.append(("stop", inst.instance_id))

    def kill_all(self) -> None:
        self.instances.clear()

    def die(self, inst: Instance) -> None:
        cast(FakeProcess, inst.process).code = -9
        if self.on_exit is not None:
            self.on_exit(inst)


class FakePublisher:
    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.routes: dict[str, list[PublishedVariant]] = {}

    def publish(self, endpoint: str, variants: Sequence[PublishedVariant]) -> None:
        self.routes[endpoint] = list(variants)
        ids = (i.instance_id for v in variants for i in v.instances)
        self.events.append(("publish", endpoint, *ids))

    def withdraw(self, endpoint: str) -> None:
        self.routes.pop(endpoint, None)
        self.events.append(("withdraw", endpoint))

    def lost(self, instance_id: str) -> None:
        self.events.append(("lost", instance_id))

    async def drain(self, instance_ids: Collection[str], timeout: float) -> None:
        assert timeout == GRACE
        self.events.extend(("drain", i) for i in instance_ids)

    def instance_ids(self, endpoint: str, variant: str = "AllTraffic") -> list[str]:
        [published] = [v for v in self.routes[endpoint] if v.name == variant]
        return [i.instance_id for i in published.instances]


class LoopThreadStore(Store):
    """Records writes made on the event loop's thread (there should be none)."""

    loop_thread: int | None = None
    writes_on_loop = 0

    def update_endpoint(self, name: str, change: Callable[[Endpoint], Any]) -> Any:
        if threading.get_ident() == self.loop_thread:
            self.writes_on_loop += 1
        return super().update_endpoint(name, change)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "model").mkdir()
        self.model_dir = tmp_path / "model"
        self.settings = Settings(data_dir=tmp_path / "data", stop_grace_s=GRACE)
        self.store = LoopThreadStore(f"sqlite:///{tmp_path / 'state.db'}")
        self.events: list[Event] = []
        self.backend = FakeBackend(self.events)
        self.publisher = FakePublisher(self.events)
        self.now = 1000.0
        self.ctx = Context(
            self.settings, self.store, Arns(self.settings.region, self.settings.account_id)
        )
        artifacts = _Artifacts(self.model_dir)
        fleets = Fleets(self.settings, self.store, self.backend, artifacts)  # type: ignore[arg-type]
        self.controller = Controller(
            fleets, self.publisher, clock=lambda: 5000.0, timer=lambda: self.now
        )
        self.backend.on_exit = self.controller.instance_exited

    def config(self, name: str, count: int, weight: float = 1.0) -> None:
        create_model(self.ctx, {"ModelName": name, "PrimaryContainer": {}})
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": count,
            "InitialVariantWeight": weight,
        }
        create_endpoint_config(
            self.ctx, {"EndpointConfigName": name, "ProductionVariants": [variant]}
        )

    async def converge(self, name: str) -> Endpoint | None:
        """Reconcile until no step runs and the endpoint is settled (or gone)."""
        self.store.loop_thread = threading.get_ident()
        for _ in range(ROUNDS):
            await self.controller.reconcile_once()
            tasks = [lv.task for lv in self.controller.live.values() if lv.task is not None]
            await asyncio.gather(*tasks)
            ep = self.store.endpoint(name)
            busy = any(lv.busy() for lv in self.controller.live.values())
            if not busy and (ep is None or ep.status in _SETTLED):
                return ep
        raise AssertionError(f"endpoint {name} did not settle in {ROUNDS} passes")

    async def create(self, name: str, count: int) -> Endpoint:
        self.config(name, count)
        create_endpoint(self.ctx, {"EndpointName": name, "EndpointConfigName": name})
        ep = await self.converge(name)
        assert ep is not None and ep.status is EndpointStatus.IN_SERVICE, ep
        return ep

    def running(self) -> list[Instance]:
        return sorted(self.backend.instances, key=lambda i: i.started)

    def order(self, *events: Event) -> list[int]:
        return [self.events.index(e) for e in events]

    def route_before(self, index: int) -> Event:
        """The instance ids of the last publish before ``events[index]``."""
        return next(e[2:] for e in reversed(self.events[:index]) if e[0] == "publish")


class _Artifacts:
    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def materialize(self, url: str | None = None, source: Any = None) -> Path:
        return self.model_dir


_SETTLED = {EndpointStatus.IN_SERVICE, EndpointStatus.FAILED}


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_create_publishes_every_instance_and_writes_off_the_loop(h: Harness) -> None:
    ep = asyncio.run(h.create("ep", 2))
    ids = sorted(i.instance_id for i in h.running())
    assert len(ids) == 2 and sorted(h.publisher.instance_ids("ep")) == ids
    [variant] = h.publisher.routes["ep"]
    assert variant.weight == 1.0
    assert {i.address.port for i in variant.instances} == {i.port for i in h.running()}
    assert (ep.variants[0].current_count, ep.modified) == (2, 5000.0)  # the injected clock
    assert h.store.writes_on_loop == 0


def test_scale_out_then_in_drains_before_stopping(h: Harness) -> None:
    async def run() -> None:
        await h.create("ep", 2)
        _capacity(h, "ep", count=3, weight=2.0)
        ep = await h.converge("ep")
        assert ep is not None and ep.variants[0].current_count == 3
        assert len(h.publisher.instance_ids("ep")) == 3
        assert h.publisher.routes["ep"][0].weight == 2.0
        _capacity(h, "ep", count=1)
        ep = await h.converge("ep")
        assert ep is not None and ep.variants[0].current_count == 1

    asyncio.run(run())
    [kept] = h.publisher.instance_ids("ep")
    gone = [e[1] for e in h.events if e[0] == "stop"]
    assert len(gone) == 2 and kept not in gone
    for instance_id in gone:  # off the route, drained, then stopped
        drained, stopped = h.order(("drain", instance_id), ("stop", instance_id))
        assert instance_id not in h.route_before(drained) and drained < stopped


def test_update_moves_traffic_then_drains_the_old_fleet(h: Harness) -> None:
    async def run() -> str:
        await h.create("ep", 1)
        [old] = h.running()
        h.config("ep-v2", 2)
        update_endpoint(h.ctx, {"EndpointName": "ep", "EndpointConfigName": "ep-v2"})
        ep = await h.converge("ep")
        assert ep is not None and ep.config_name == "ep-v2"
        assert ep.variants[0].current_count == 2
        return old.instance_id

    old = asyncio.run(run())
    new = h.publisher.instance_ids("ep")
    assert len(new) == 2 and old not in new and len(h.running()) == 2
    drained, stopped = h.order(("drain", old), ("stop", old))
    assert old not in h.route_before(drained) and drained < stopped


def _started_ids(h: Harness) -> list[str]:
    return [e[1] for e in h.events if e[0] == "start"]


def _capacity(h: Harness, name: str, count: int, weight: float | None = None) -> None:
    wanted: dict[str, Any] = {"VariantName": "AllTraffic", "DesiredInstanceCount": count}
    if weight is not None:
        wanted["DesiredWeight"] = weight
    update_endpoint_weights_and_capacities(
        h.ctx, {"EndpointName": name, "DesiredWeightsAndCapacities": [wanted]}
    )


def test_a_dead_instance_is_lost_at_once_then_replaced(h: Harness) -> None:
    async def run() -> None:
        await h.create("ep", 2)
        victim, survivor = h.running()
        h.backend.die(victim)
        assert h.events[-1] == ("lost", victim.instance_id)  # at once, before any pass
        assert h.controller._wake.is_set()
        ep = await h.converge("ep")
        assert ep is not None and ep.variants[0].current_count == 2
        ids = h.publisher.instance_ids("ep")
        assert victim.instance_id not in ids and survivor.instance_id in ids and len(ids) == 2
        assert ("drain", victim.instance_id) not in h.events  # dead: nothing to drain
        assert ("stop", victim.instance_id) in h.events  # reaped

    asyncio.run(run())


def test_replacing_backs_off_on_the_injected_timer(h: Harness) -> None:
    async def run() -> None:
        await h.create("ep", 1)
        [victim] = h.running()
        h.backend.failing = True
        h.backend.die(victim)
        await h.converge("ep")
        starts = len(_started_ids(h))
        await h.converge("ep")  # within the backoff: no new attempt
        assert len(_started_ids(h)) == starts
        h.backend.failing = False
        h.now += HEAL_BACKOFF_S + 1
        ep = await h.converge("ep")
        assert ep is not None and ep.variants[0].current_count == 1
        assert len(h.running()) == 1

    asyncio.run(run())


def test_delete_withdraws_drains_then_stops(h: Harness) -> None:
    async def run() -> None:
        await h.create("ep", 2)
        ids = [i.instance_id for i in h.running()]
        delete_endpoint(h.ctx, {"EndpointName": "ep"})
        assert await h.converge("ep") is None
        for instance_id in ids:
            withdrawn, drained, stopped = h.order(
                ("withdraw", "ep"), ("drain", instance_id), ("stop", instance_id)
            )
            assert withdrawn < drained < stopped
        assert h.running() == [] and "ep" not in h.publisher.routes

    asyncio.run(run())


def test_an_idle_serverless_variant_sleeps_then_wakes_on_request(tmp_path: Path) -> None:
    """Idle for idle_s on the injected timer: drained, stopped, published with no instance
    (and ``wakes``); the router's waker starts one again without a reconcile pass."""
    h = Harness(tmp_path)
    answered = {"n": 0}
    h.controller.idle_s = 60.0
    h.controller.activity = lambda endpoint, variant: (answered["n"], 0)
    create_model(h.ctx, {"ModelName": "sl", "PrimaryContainer": {}})
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "sl",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
    }
    create_endpoint_config(h.ctx, {"EndpointConfigName": "sl", "ProductionVariants": [variant]})
    create_endpoint(h.ctx, {"EndpointName": "sl", "EndpointConfigName": "sl"})

    async def run() -> None:
        await h.converge("sl")
        [first] = h.running()
        await h.converge("sl")  # seen idle from now
        h.now += 59.0
        answered["n"] += 1  # an invocation: idle again from here
        await h.converge("sl")
        h.now += 59.0
        await h.converge("sl")
        assert h.running() == [first]
        h.now += 2.0
        await h.converge("sl")
        assert h.running() == []
        assert h.events.index(("drain", first.instance_id)) < h.events.index(
            ("stop", first.instance_id)
        )
        [published] = h.publisher.routes["sl"]
        assert published.instances == () and published.wakes
        ep = h.store.endpoint("sl")
        assert ep is not None and ep.status is EndpointStatus.IN_SERVICE

        h.controller.wake_variant("sl", "AllTraffic")
        live = h.controller.live["sl"]
        assert live.task is not None
        await live.task  # started at once, not by a pass
        [second] = h.running()
        assert h.publisher.instance_ids("sl") == [second.instance_id]
        await h.converge("sl")
        assert h.running() == [second]  # a pass neither stops nor adds one

        # Woken while a step still runs (the end of going to sleep, say): at its end.
        h.now += 61.0
        await h.converge("sl")
        assert h.running() == []
        step_done = asyncio.Event()

        async def step() -> None:
            await step_done.wait()

        live.task = asyncio.create_task(step())
        h.controller.wake_variant("sl", "AllTraffic")
        assert h.running() == []
        busy = live.task
        step_done.set()
        await busy
        await asyncio.sleep(0)  # the done callback starts the wake-up
        assert live.task is not busy and live.task is not None
        await live.task
        assert len(h.running()) == 1

    asyncio.run(run())


def test_provisioned_concurrency_never_sleeps(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.controller.idle_s = 1.0
    h.controller.activity = lambda endpoint, variant: (0, 0)
    create_model(h.ctx, {"ModelName": "pc", "PrimaryContainer": {}})
    config = {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 1}
    variant = {"VariantName": "AllTraffic", "ModelName": "pc", "ServerlessConfig": config}
    create_endpoint_config(h.ctx, {"EndpointConfigName": "pc", "ProductionVariants": [variant]})
    create_endpoint(h.ctx, {"EndpointName": "pc", "EndpointConfigName": "pc"})

    async def run() -> None:
        await h.converge("pc")
        for _ in range(3):
            h.now += 10.0
            await h.converge("pc")
        assert len(h.running()) == 1

    asyncio.run(run())


def test_provisioned_concurrency_changed_in_the_store_is_honoured_at_once(tmp_path: Path) -> None:
    """What Application Auto Scaling does: 0 lets the idle variant sleep, more wakes it."""
    h = Harness(tmp_path)
    h.controller.idle_s = 1.0
    h.controller.activity = lambda endpoint, variant: (0, 0)
    create_model(h.ctx, {"ModelName": "pc", "PrimaryContainer": {}})
    config = {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 1}
    variant = {"VariantName": "AllTraffic", "ModelName": "pc", "ServerlessConfig": config}
    create_endpoint_config(h.ctx, {"EndpointConfigName": "pc", "ProductionVariants": [variant]})
    create_endpoint(h.ctx, {"EndpointName": "pc", "EndpointConfigName": "pc"})

    def provision(n: int) -> None:
        h.store.update_endpoint(
            "pc", lambda e: setattr(e.variants[0], "provisioned_concurrency", n)
        )

    async def passes(n: int) -> None:
        for _ in range(n):
            h.now += 10.0
            await h.converge("pc")

    async def run() -> None:
        await h.converge("pc")
        ep = h.store.endpoint("pc")
        assert ep is not None and ep.provisioned("AllTraffic") == 1
        await passes(3)
        assert len(h.running()) == 1
        provision(0)
        await passes(3)
        assert h.running() == []  # idle, nothing provisioned: scaled to zero
        provision(2)
        await passes(1)
        assert len(h.running()) == 1  # woken with no request waiting
        await passes(3)
        assert len(h.running()) == 1
        ep = h.store.endpoint("pc")
        assert ep is not None and ep.status is EndpointStatus.IN_SERVICE

    asyncio.run(run())
