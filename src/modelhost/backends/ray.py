"""The Ray backend: each instance is a Ray actor, placed by Ray on a node of a cluster, that
runs the instance process there (backends/node.py). The only module that calls Ray.

- ``modelhost serve --backend ray --ray-address ADDR`` (``MODELHOST_BACKEND=ray``,
  ``MODELHOST_RAY_ADDRESS``) joins a running cluster; with no address, a local Ray is started
  for a quick try (and stopped with the server).
- An actor asks for its instance type's size (``num_cpus``, ``memory``, ``num_gpus``). It is
  placed with a soft node affinity for the alive node with the fewest of its variant's
  instances (``preferred_node``), so a variant's instances go to different nodes while they
  fit; Ray places it elsewhere when that node has no room (SPREAD when no node is known).
  It is named ``<endpoint>/<variant>/<instance id>`` in the ``modelhost`` namespace.
- The router reaches the instance over TCP at the node's address (no Unix socket across
  nodes). Model data is fetched on the node from the platform's object store.
- Loss: the head keeps one call running on each actor (``wait_exit``, which returns when the
  process exits). When the process exits, or the actor or its node dies, that call ends or
  fails; the backend then reports the instance through ``on_exit``, as the local backend does
  for an exited process, and the controller starts a replacement where Ray finds room.
- Container images (docker/podman) and models with several containers do not run on this
  backend: no engine is assumed on the nodes, and one instance's containers would be actors
  placed apart; either fails with a clear reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modelhost.backends.images import command_for
from modelhost.backends.local import ExitCallback, Instance, InstanceFailed, InstanceSpec, ping
from modelhost.backends.node import (
    Launch,
    NodeInstance,
    RemoteProcess,
    actor_resources,
    node_dir,
    preferred_node,
)
from modelhost.publish import Address

log = logging.getLogger(__name__)

NAMESPACE = "modelhost"
ACTOR_CONCURRENCY = 4  # wait_exit runs for the actor's life beside start/stop/log_tail
CALL_TIMEOUT_S = 30.0
T = TypeVar("T")


class InstanceActor:
    """The actor (on its node): one ``NodeInstance``."""

    def __init__(self, launch: Launch) -> None:
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        gpus = [int(g) for g in ray.get_gpu_ids()]
        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.instance = NodeInstance(launch, host, gpus, node_dir(self.node_id), self.node_id)

    def start(self) -> dict[str, Any]:
        return {**self.instance.start(), "host": self.instance.host, "node": self.node_id}

    def wait_exit(self) -> int | None:
        return self.instance.wait_exit()

    def stop(self, grace: float) -> int | None:
        return self.instance.stop(grace)

    def log_tail(self) -> str:
        return self.instance.log_tail()


class RayBackend:
    """The backend seam (backends/protocol.py) over a Ray cluster."""

    local_model_copy = False  # each node fetches its own copy

    def __init__(
        self,
        address: str | None,
        platform_env: dict[str, str],
        region: str,
        max_artifact_bytes: int,
        model_copy_max_bytes: int,
        on_exit: ExitCallback | None = None,
    ) -> None:
        self.on_exit = on_exit
        self.platform_env = dict(platform_env)
        self.region = region
        self.max_artifact_bytes = max_artifact_bytes
        self.model_copy_max_bytes = model_copy_max_bytes
        self.instances: set[Instance] = set()
        self._actors: dict[Instance, Any] = {}
        self._watches: dict[Instance, asyncio.Task[None]] = {}
        # Where each instance is (or, until it starts, was asked to go): its Ray node id.
        self.nodes: dict[Instance, str] = {}
        connect(address)
        self._actor_class = ray.remote(InstanceActor)

    def start_zygote(self, log_path: Path) -> None:
        """Nothing: the zygote forks instances on this machine; a node starts each instance's
        interpreter anew (a zygote per node would be the ray equivalent)."""

    def start(self, spec: InstanceSpec) -> Instance:
        if spec.container_index:
            raise InstanceFailed(
                "Models with several containers (multi-container and serial-pipeline endpoints) "
                "do not run on the ray backend yet: one instance's containers would be actors "
                "placed apart."
            )
        command = command_for(spec.image)
        if command.container_image is not None:
            raise InstanceFailed(
                f"Image {spec.image} is a container image; the ray backend runs the built-in "
                "model server and bring-your-own executables only."
            )
        launch = Launch(
            spec,
            command.argv,
            self.platform_env,
            self.region,
            self.max_artifact_bytes,
            self.model_copy_max_bytes,
        )
        node = self._preferred_node(spec)
        strategy: Any = "SPREAD"
        if node is not None:  # soft: Ray places it elsewhere when that node has no room
            strategy = NodeAffinitySchedulingStrategy(node, soft=True, _spill_on_unavailable=True)
        actor = self._actor_class.options(
            name=f"{spec.endpoint}/{spec.variant}/{spec.instance_id}",
            namespace=NAMESPACE,
            scheduling_strategy=strategy,
            max_concurrency=ACTOR_CONCURRENCY,
            max_restarts=0,
            **actor_resources(spec.profile),
        ).remote(launch)
        inst = Instance(spec, RemoteProcess(), [], Address("127.0.0.1", 0))
        self._actors[inst] = actor
        self.instances.add(inst)
        if node is not None:
            self.nodes[inst] = node
        return inst

    def _preferred_node(self, spec: InstanceSpec) -> str | None:
        """Spread a variant's instances over the alive nodes (SPREAD alone spreads all actors
        round-robin, which can put two of one variant on one node)."""
        listed: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
        alive = sorted(str(n["NodeID"]) for n in listed if n.get("Alive"))
        live = {inst: node for inst, node in self.nodes.items() if inst.exited() is None}
        mine = (spec.endpoint, spec.variant)
        same = Counter(n for i, n in live.items() if (i.spec.endpoint, i.spec.variant) == mine)
        return preferred_node(alive, same, Counter(live.values()))

    async def wait_ready(self, inst: Instance, timeout: float) -> None:
        """Wait for Ray to place the actor and the node to start the process (model download
        included), then poll GET /ping on its address until 200."""
        deadline = time.monotonic() + timeout
        actor = self._actors[inst]
        try:
            started = await _wait(actor.start.remote(), timeout)
        except TimeoutError:
            raise InstanceFailed(
                f"The Ray cluster did not place and start the instance within {timeout:.0f} s "
                f"(it asks for {_size(inst)}; is there a node with that much free?)."
            ) from None
        except RayError as exc:
            raise InstanceFailed(f"The instance's Ray actor failed: {_first_line(exc)}") from exc
        if "error" in started:
            raise InstanceFailed(str(started["error"]))
        proc = _remote(inst)
        proc.pid = int(started["pid"])
        inst.address = Address(str(started["host"]), int(started["port"]))
        self.nodes[inst] = str(started["node"])
        log.info(
            "started %s for %s/%s on Ray node %s at %s",
            inst.instance_id,
            inst.spec.endpoint,
            inst.spec.variant,
            started["node"],
            inst.address,
        )
        self._watches[inst] = asyncio.create_task(self._watch(inst, actor))
        while True:
            if proc.poll() is not None:
                raise InstanceFailed(
                    f"The instance process exited with status {proc.poll()} before passing the "
                    f"/ping health check{_cause(proc)}. Last lines of its log:\n"
                    f"{await self._log_tail(actor)}"
                )
            if await ping(inst.address.host, inst.address.port):
                return
            if time.monotonic() > deadline:
                raise InstanceFailed(
                    f"The instance did not pass the /ping health check within {timeout:.0f} s. "
                    f"Last lines of its log:\n{await self._log_tail(actor)}"
                )
            await asyncio.sleep(0.05)

    async def _watch(self, inst: Instance, actor: Any) -> None:
        """Until the instance ends: its process exits, or its actor or node is lost."""
        try:
            code = await _wait(actor.wait_exit.remote(), None)
            _remote(inst).ended(code)
        except RayError as exc:
            _remote(inst).ended(None, _first_line(exc))
            log.warning("instance %s lost with its Ray actor: %s", inst.instance_id, exc)
        self._watches.pop(inst, None)
        if inst in self.instances and self.on_exit is not None:
            self.on_exit(inst)

    async def _log_tail(self, actor: Any) -> str:
        try:
            return str(await _wait(actor.log_tail.remote(), CALL_TIMEOUT_S))
        except (RayError, TimeoutError):
            return "(the instance's node could not be asked for its log)"

    async def stop(self, inst: Instance, grace: float) -> None:
        """Ask the actor to stop its process (SIGTERM, SIGKILL after ``grace``), then end the
        actor, which frees its resources. Stopping again, or a lost instance, is harmless."""
        self.instances.discard(inst)
        self.nodes.pop(inst, None)
        watch = self._watches.pop(inst, None)
        if watch is not None:
            watch.cancel()
        actor = self._actors.pop(inst, None)
        if actor is None:
            return
        if _remote(inst).pid == 0:  # never placed or never started: nothing to stop but it
            _remote(inst).ended(None, "stopped")
        if _remote(inst).returncode is None:
            with contextlib.suppress(RayError, TimeoutError):
                code = await _wait(actor.stop.remote(grace), grace + CALL_TIMEOUT_S)
                _remote(inst).ended(code)
        _remote(inst).ended(None, "stopped")
        with contextlib.suppress(RayError, ValueError):
            ray.kill(actor, no_restart=True)

    def kill_all(self) -> None:
        """Every actor this server started ends, and with it its process."""
        for inst, actor in list(self._actors.items()):
            with contextlib.suppress(RayError, ValueError):
                ray.kill(actor, no_restart=True)
            self.instances.discard(inst)
        self._actors.clear()
        self.nodes.clear()
        for task in self._watches.values():
            task.cancel()
        self._watches.clear()
        ray.shutdown()


def connect(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray (loopback, no dashboard)."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(
            namespace=NAMESPACE,
            log_to_driver=False,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
    nodes: list[dict[str, Any]] = ray.nodes()  # type: ignore[no-untyped-call]
    log.info("Ray cluster: %d node(s) alive", sum(1 for n in nodes if n.get("Alive")))


async def _wait(ref: Any, timeout: float | None) -> Any:
    """The value of an object ref, awaited on this loop (TimeoutError after ``timeout``)."""
    future: Future[Any] = ref.future()
    waiting: Awaitable[Any] = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(waiting, timeout)
    except GetTimeoutError as exc:
        raise TimeoutError(str(exc)) from exc


def _remote(inst: Instance) -> RemoteProcess:
    proc = inst.process
    assert isinstance(proc, RemoteProcess)
    return proc


def _cause(proc: RemoteProcess) -> str:
    return f" ({proc.cause})" if proc.cause else ""


def _size(inst: Instance) -> str:
    p = inst.spec.profile
    gpus = f", {p.gpus} GPU(s)" if p.gpus else ""
    return f"{p.vcpus} CPU(s), {p.memory_gib:g} GiB of memory{gpus}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
