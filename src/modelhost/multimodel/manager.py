"""Multi-model requests, from the router's fast path to the instance: placement, single-flight
loads, LRU unloads within each instance's memory budget, and SageMaker's answers.

``InvokePath`` hands a request for a multi-model endpoint to ``MultiModelRouter.dispatch``
(such routes are never in its path cache, so single-model endpoints pay nothing). One task per
request then: the model's holders are looked up (policy.py); on a miss the model is loaded on
the instance with the most room, once however many requests ask for it together (the load is
a task of its own; a caller waits at most ``load_wait_s``, then gets ModelNotReadyException
while the load goes on); then ``POST /models/<name>/invoke`` goes through the instance's pool
and the answer comes back through ``InvokePath.answer``/``fail`` as for any invocation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from modelhost.artifacts import ArtifactError
from modelhost.errors import ModelNotReadyException, ServiceError, ValidationError
from modelhost.metrics import Recorder
from modelhost.multimodel import mms, policy
from modelhost.multimodel.archives import Archives, model_url
from modelhost.multimodel.metrics import MultiModelMetrics, MultiModelSlot
from modelhost.publish import MultiModelSpec
from modelhost.router.calls import Call
from modelhost.router.checks import not_multi_model
from modelhost.router.forwarder import UpstreamError, UpstreamPool, UpstreamResponse
from modelhost.router.invoke import InvokePath
from modelhost.router.routing import EndpointRoute, VariantRoute
from modelhost.settings import Settings
from modelhost.storage import ObjectStore

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000  # unload times and costs kept per (variant, target)


@dataclass(slots=True)
class _Instance:
    """The router's view of one multi-model instance."""

    pool: UpstreamPool
    endpoint: str
    variant: str
    models: policy.InstanceModels
    dirs: dict[str, Path] = field(default_factory=dict)  # target -> extracted directory


def mms_name(target: str) -> str:
    """The opaque model_name an instance knows a TargetModel by."""
    return hashlib.sha256(target.encode()).hexdigest()[:32]


class MultiModelRouter:
    def __init__(
        self, archives: Archives, metrics: MultiModelMetrics, load_wait_s: float = 60.0
    ) -> None:
        self.archives = archives
        self.metrics = metrics
        metrics.loaded = self.loaded_counts
        self.load_wait_s = load_wait_s
        self._instances: dict[str, _Instance] = {}
        self._loads: dict[tuple[str, str, str], asyncio.Task[_Instance]] = {}
        self._unloaded_at: dict[tuple[str, str, str], float] = {}
        self._costs: dict[tuple[str, str], int] = {}  # (prefix, target) -> bytes last time
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- from the fast path --------------------------------------------------------------

    def dispatch(
        self,
        owner: InvokePath,
        route: EndpointRoute,
        wanted: bytes | None,
        target: bytes | None,
        call: Call,
    ) -> None:
        """One InvokeEndpoint on an endpoint with a multi-model variant."""
        try:
            variant = owner.choose(route, wanted)
        except ServiceError as err:
            call.error(err)
            return
        call.variant = variant
        spec = variant.multi_model
        if spec is None:
            if target is not None:
                owner.refuse(call, not_multi_model(route.name))
            else:
                owner.send(call, variant)
            return
        if target is None:
            missing = ValidationError(
                f"Request {call.rid.decode()} is missing a target model header."
            )
            owner.refuse(call, missing)
            return
        name = target.decode("utf-8", "replace")
        slot = self.metrics.slot(call.name, variant.name)
        slot.lookups += 1
        inst = self._holder(call.name, variant, spec, name)
        if inst is not None:  # a hit: on callbacks alone, as the single-model path
            slot.hits += 1
            self._invoke(owner, call, inst, spec, name)
            return
        self._spawn(self._miss(owner, call, variant, spec, name, slot))

    async def _miss(
        self,
        owner: InvokePath,
        call: Call,
        variant: VariantRoute,
        spec: MultiModelSpec,
        target: str,
        slot: MultiModelSlot,
    ) -> None:
        """Load ``target`` (or join its load under way), then invoke it."""
        try:
            url = model_url(spec.prefix, target)
            began = perf_counter()
            inst = await self._loaded(owner, call, variant, spec, target, url)
            slot.loading_wait.observe((perf_counter() - began) * 1e6)
        except ServiceError as err:
            owner.refuse(call, err)
            return
        self._invoke(owner, call, inst, spec, target)

    # -- placement -----------------------------------------------------------------------

    def _states(
        self, endpoint: str, variant: VariantRoute, spec: MultiModelSpec
    ) -> list[_Instance]:
        out = []
        for pool in variant.targets:
            st = self._instances.get(pool.instance_id)
            if st is None or st.pool is not pool:
                self._prune()
                budget = policy.InstanceModels(pool.instance_id, spec.memory_budget_bytes)
                st = _Instance(pool, endpoint, variant.name, budget)
                self._instances[pool.instance_id] = st
            out.append(st)
        return out

    def _holder(
        self, endpoint: str, variant: VariantRoute, spec: MultiModelSpec, target: str
    ) -> _Instance | None:
        states = self._states(endpoint, variant, spec)
        found = policy.holders([s.models for s in states], target)
        if not found:
            return None
        best = policy.least_busy(found, self._in_flight)
        return self._instances[best.instance_id]

    def _in_flight(self, instance_id: str) -> int:
        return self._instances[instance_id].pool.in_flight

    def _prune(self) -> None:
        for key in [k for k, st in self._instances.items() if st.pool.closed]:
            del self._instances[key]

    # -- loading -------------------------------------------------------------------------

    async def _loaded(
        self,
        owner: InvokePath,
        call: Call,
        variant: VariantRoute,
        spec: MultiModelSpec,
        target: str,
        url: str,
    ) -> _Instance:
        """The instance ``target`` is loaded on, once loaded (joining a load under way)."""
        key = (call.name.lower(), variant.name, target)
        task = self._loads.get(key)
        if task is None:
            states = self._states(call.name, variant, spec)
            if not states:
                raise ModelNotReadyException(
                    f"Endpoint {call.name} has no instance ready to serve."
                )
            chosen = policy.for_load([s.models for s in states], self._in_flight)
            inst = self._instances[chosen.instance_id]
            slot = self.metrics.slot(call.name, variant.name)
            task = asyncio.get_running_loop().create_task(
                self._load(owner, inst, spec, target, url, slot)
            )
            self._loads[key] = task
            task.add_done_callback(lambda t: self._load_done(key, t))
        remaining = self.load_wait_s - (perf_counter() - call.started)
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(remaining, 0.001))
        except TimeoutError:
            raise ModelNotReadyException(
                f"Model {target} of endpoint {call.name} is still loading; try again later."
            ) from None

    def _load_done(self, key: tuple[str, str, str], task: asyncio.Task[_Instance]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failure is the waiters' answer, not a warning

    async def _load(
        self,
        owner: InvokePath,
        inst: _Instance,
        spec: MultiModelSpec,
        target: str,
        url: str,
        slot: MultiModelSlot,
    ) -> _Instance:
        models = inst.models
        held = policy.HeldModel(target, 0, time.time(), loaded=False)
        models.models[target] = held  # counted while loading: no other load takes its room
        try:
            in_use = frozenset(p for st in self._instances.values() for p in st.dirs.values())
            fetched = await asyncio.to_thread(self.archives.fetch, url, in_use.__contains__)
            if fetched.seconds:
                slot.downloading.observe(fetched.seconds * 1e6)
            known = self._costs.get((spec.prefix, target))
            held.cost = policy.estimate(models, known, fetched.size)
            where = _instance_url(spec, target, fetched.path)
            await self._make_room(inst, 0, target, slot)
            began = perf_counter()
            result = await mms.load(inst.pool, mms_name(target), where)
            if result.status == 507:  # out of memory: every idle model goes, then once more
                await self._make_room(inst, models.budget, target, slot)
                result = await mms.load(inst.pool, mms_name(target), where)
            if result.status not in (200, 409):
                raise owner.model_error(inst.endpoint, result.status, result.text[-2000:])
            slot.loading.observe((perf_counter() - began) * 1e6)
        except ArtifactError as exc:
            self._forget(inst, target, held)
            slot.load_failures += 1
            raise ValidationError(str(exc)) from exc
        except UpstreamError as exc:
            self._forget(inst, target, held)
            slot.load_failures += 1
            raise owner.upstream_error(inst.endpoint, exc) from exc
        except BaseException:
            self._forget(inst, target, held)
            slot.load_failures += 1
            raise
        if result.memory_bytes is not None:  # at least its size on disk: RSS moves in pages
            held.cost = max(result.memory_bytes, fetched.size)
        self._remember(self._costs, (spec.prefix, target), held.cost)
        now = time.time()
        held.loaded, held.last_used = True, now
        inst.dirs[target] = fetched.path
        slot.loads += 1
        if policy.thrashed(self._unloaded_at.get((inst.endpoint, inst.variant, target)), now):
            slot.thrash += 1
        await self._make_room(inst, 0, target, slot)  # it may have cost more than thought
        return inst

    def _forget(self, inst: _Instance, target: str, held: policy.HeldModel) -> None:
        if inst.models.models.get(target) is held:
            del inst.models.models[target]

    @staticmethod
    def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= MAX_REMEMBERED:
            table.clear()
        table[key] = value

    # -- unloading -----------------------------------------------------------------------

    async def _make_room(
        self, inst: _Instance, needed: int, keep: str, slot: MultiModelSlot
    ) -> None:
        for target in policy.evictions(inst.models, needed, keep):
            await self._unload(inst, target, slot)

    async def _unload(self, inst: _Instance, target: str, slot: MultiModelSlot) -> None:
        """Unload ``target`` (idle): out of the placement at once, then DELETE on the instance."""
        held = inst.models.models.pop(target, None)
        inst.dirs.pop(target, None)
        if held is None:
            return
        began = perf_counter()
        try:
            await mms.unload(inst.pool, mms_name(target))
        except UpstreamError as exc:
            log.warning("unloading %s from %s failed: %s", target, inst.pool.instance_id, exc)
            return
        slot.unloading.observe((perf_counter() - began) * 1e6)
        slot.unloads += 1
        self._remember(self._unloaded_at, (inst.endpoint, inst.variant, target), time.time())

    # -- invoking ------------------------------------------------------------------------

    def _invoke(
        self, owner: InvokePath, call: Call, inst: _Instance, spec: MultiModelSpec, target: str
    ) -> None:
        held = inst.models.models[target]
        held.in_flight += 1
        held.last_used = time.time()
        pool = inst.pool
        head = mms.invoke_head(pool, mms_name(target), target.encode(), call.lines, call.size)

        def done(result: UpstreamResponse | UpstreamError) -> None:
            held.in_flight -= 1
            held.last_used = time.time()
            try:
                if type(result) is UpstreamResponse and result.status < 300:
                    owner.answer(call, result)
                elif _vanished(result) and call.attempt == 0:
                    self._forget(inst, target, held)  # the instance lost it: load it again
                    call.attempt += 1
                    slot = self.metrics.slot(call.name, call.variant.name)
                    self._spawn(self._miss(owner, call, call.variant, spec, target, slot))
                    return
                else:
                    owner.fail(call, result)
            except Exception:
                owner.internal(call)
            idle = held.in_flight == 0 and inst.models.models.get(target) is held
            if not spec.model_cache and idle:
                slot = self.metrics.slot(call.name, call.variant.name)
                self._spawn(self._unload(inst, target, slot))

        call.sent = perf_counter()
        pool.send(head, call.body, owner.timeout, done)

    # -- what the CLI and the metrics read -----------------------------------------------

    def loaded_counts(self) -> dict[tuple[str, str, str], int]:
        """Per live instance (read from the metrics scrape's thread: snapshots only)."""
        return {
            (st.endpoint, st.variant, iid): sum(
                1 for m in list(st.models.models.values()) if m.loaded
            )
            for iid, st in list(self._instances.items())
            if not st.pool.closed
        }

    def snapshot(self, endpoint: str) -> list[dict[str, Any]]:
        """Per instance of ``endpoint``: its budget and the models it holds."""
        self._prune()
        out = []
        for iid, st in sorted(self._instances.items()):
            if st.endpoint.lower() != endpoint.lower():
                continue
            models = sorted(st.models.models.values(), key=lambda m: -m.last_used)
            out.append(
                {
                    "InstanceId": iid,
                    "VariantName": st.variant,
                    "MemoryBudgetBytes": st.models.budget,
                    "MemoryUsedBytes": st.models.used,
                    "Models": [
                        {
                            "TargetModel": m.target,
                            "Bytes": m.cost,
                            "LastUsed": m.last_used,
                            "InFlight": m.in_flight,
                            "Status": "Loaded" if m.loaded else "Loading",
                        }
                        for m in models
                    ],
                }
            )
        return out

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in [*self._tasks, *self._loads.values()]:
            task.cancel()


def _instance_url(spec: MultiModelSpec, target: str, path: Path) -> str:
    """The ``url`` of ``POST /models``: the extracted directory as the instance sees it (a
    container sees the cache where it is mounted)."""
    where = spec.instance_path(str(path))
    if where is None:
        raise ValidationError(
            f"TargetModel {target} is a directory outside the model cache, which the endpoint's "
            "container cannot see; give it as a .tar.gz archive."
        )
    return where


def _vanished(result: UpstreamResponse | UpstreamError) -> bool:
    """The instance does not have the model (it restarted, or unloaded it itself)."""
    return type(result) is UpstreamResponse and result.status == 404


def multi_model_router(
    settings: Settings, objects: ObjectStore, recorder: Recorder
) -> MultiModelRouter:
    """The server's multi-model road, its metrics on ``recorder``'s registry."""
    metrics = MultiModelMetrics()
    recorder.registry.register(metrics)
    archives = Archives(
        objects, settings.cache_dir, settings.mme_disk_cache_bytes, settings.max_artifact_bytes
    )
    return MultiModelRouter(archives, metrics, settings.mme_load_wait_s)
