"""Fleets: the instances serving one endpoint config, per variant, and how to build, grow,
shrink and stop them. Uses the backend for processes and the artifact cache for model data."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelhost.artifacts import ArtifactCache, ArtifactError
from modelhost.artifacts.files import working_copy
from modelhost.backends.containers import MODELS_MOUNT
from modelhost.backends.images import UnsupportedImage, command_for
from modelhost.backends.local import Instance, InstanceFailed, InstanceSpec
from modelhost.backends.protocol import Backend
from modelhost.controller.pipelines import (
    ContainerPlan,
    container_name,
    published_instance,
    start_group,
)
from modelhost.instance_types import Profile, profile_for
from modelhost.multimodel.archives import archives_root
from modelhost.multimodel.spec import MULTI_MODEL_ENV, multi_model_spec, undeclared
from modelhost.names import Arns
from modelhost.publish import MultiModelSpec, PublishedVariant
from modelhost.settings import Settings
from modelhost.state.records import (
    DeployedContainer,
    DeployedVariant,
    Deployment,
    VariantState,
)
from modelhost.state.store import Store

log = logging.getLogger(__name__)

PORT_RETRIES = 2
# An instance that never became ready has no requests to finish: it gets this long after
# SIGTERM (a model_fn may be in C code that ignores it) before SIGKILL.
STARTING_GRACE_S = 2.0
SERVERLESS_DEFAULT_MB = 2048


class FleetFailed(Exception):
    """A fleet could not be brought up; the message is the endpoint's FailureReason."""


@dataclass(slots=True)
class VariantPlan:
    """Everything needed to start instances of one variant, resolved once per fleet from its
    ``DeployedVariant`` (model data unpacked, instance type sized); each instance's
    ``InstanceSpec`` is derived from it."""

    name: str
    model_dir: Path
    environment: dict[str, str]
    image: str | None
    profile: Profile
    weight: float
    startup_timeout: float
    hostname: str | None = None
    max_concurrency: int = 0  # a serverless variant's MaxConcurrency; 0: no limit
    # A serverless variant: it scales to zero when idle while its ProvisionedConcurrency in
    # effect (Endpoint.provisioned, which autoscaling changes) is 0; the controller decides.
    scales_to_zero: bool = False
    serverless_memory_mb: int = 0  # a serverless variant's MemorySizeInMB
    # A model with several containers (controller/pipelines.py): every one, and the
    # InferenceExecutionConfig Mode ("Serial" or "Direct"). Empty for one container.
    containers: tuple[ContainerPlan, ...] = ()
    mode: str = ""
    # Where model_dir came from: a backend that runs instances elsewhere fetches it there.
    model_data_url: str | None = None
    model_data_source: dict[str, Any] | None = None
    multi_model: MultiModelSpec | None = None  # Mode MultiModel: models loaded on request

    def instance_spec(self, endpoint: str, logs_dir: Path) -> InstanceSpec:
        spec = InstanceSpec(
            endpoint=endpoint,
            variant=self.name,
            model_dir=self.model_dir,
            environment=self.environment,
            image=self.image,
            profile=self.profile,
            log_path=logs_dir,
            hostname=self.hostname,
            model_data_url=self.model_data_url,
            model_data_source=self.model_data_source,
        )
        if self.multi_model is not None and self.multi_model.mount is not None:
            spec.mounts = (self.multi_model.mount,)
        spec.log_path = logs_dir / endpoint / self.name / f"{spec.instance_id}.log"
        return spec


@dataclass
class Fleet:
    config_name: str
    plans: dict[str, VariantPlan]
    instances: dict[str, list[Instance]] = field(default_factory=dict)

    def all(self) -> list[Instance]:
        return [i for group in self.instances.values() for i in group]


def published(fleet: Fleet) -> list[PublishedVariant]:
    """What the router is told about ``fleet``: each variant's weight and live instances."""
    return [
        PublishedVariant(
            name,
            plan.weight,
            tuple(
                published_instance(i, plan.mode, tuple(c.name for c in plan.containers))
                for i in fleet.instances.get(name, [])
                if i.exited() is None
            ),
            plan.max_concurrency,
            plan.scales_to_zero,
            plan.serverless_memory_mb,
            plan.mode,
            plan.multi_model,
        )
        for name, plan in fleet.plans.items()
    ]


class Fleets:
    def __init__(
        self, settings: Settings, store: Store, backend: Backend, artifacts: ArtifactCache
    ) -> None:
        self.settings = settings
        self.store = store
        self.backend = backend
        self.artifacts = artifacts
        self.arns = Arns(settings.region, settings.account_id)

    async def plan(self, deployment: Deployment | None, variants: list[VariantState]) -> Fleet:
        if deployment is None or deployment.variants is None:
            raise FleetFailed("The endpoint has no recorded deployment.")
        plans: dict[str, VariantPlan] = {}
        weights = {v.name: v.desired_weight for v in variants}
        for dv in deployment.variants:
            weight = weights.get(dv.name, dv.initial_weight)
            known = deployment.model_dirs.get(dv.name)
            plans[dv.name] = await self._plan_variant(dv, weight, known)
        return Fleet(deployment.config.name, plans)

    async def _plan_variant(
        self, dv: DeployedVariant, weight: float, known_dir: str | None = None
    ) -> VariantPlan:
        container = self._container(dv)
        spec = multi_model_spec(container, _profile(dv), self.settings)
        if spec is not None:
            model_dir, spec = await self._multi_model_dir(container, spec)
        else:
            model_dir = await self._model_dir(container, known_dir)
        containers: tuple[ContainerPlan, ...] = ()
        if dv.containers is not None and len(dv.containers) > 1:
            dirs = [model_dir]
            for c in dv.containers[1:]:
                dirs.append(await self._model_dir(c, None))
            containers = tuple(
                ContainerPlan(
                    container_name(c.hostname, k), d, dict(c.environment), c.image, c.hostname
                )
                for k, (c, d) in enumerate(zip(dv.containers, dirs, strict=True), 1)
            )
        timeout = dv.startup_timeout_s
        return VariantPlan(
            dv.name,
            model_dir,
            dict(container.environment) | (MULTI_MODEL_ENV if spec else {}),
            container.image,
            _profile(dv),
            weight,
            self.settings.startup_health_timeout_s if timeout is None else timeout,
            container.hostname,
            dv.max_concurrency or 0,
            dv.serverless_memory_mb is not None,
            dv.serverless_memory_mb or 0,
            containers,
            dv.mode or ("Serial" if containers else ""),
            container.model_data_url,
            container.model_data_source,
            spec,
        )

    async def _multi_model_dir(
        self, container: DeployedContainer, spec: MultiModelSpec
    ) -> tuple[Path, MultiModelSpec]:
        """A multi-model container's model directory: empty (its models come on request),
        once its server is known to speak the MMS API (FleetFailed otherwise); and its spec,
        with the models' directory mounted at MODELS_MOUNT when a container engine runs it."""
        try:
            command = command_for(container.image)
            why = await asyncio.to_thread(undeclared, container.image, command)
        except UnsupportedImage as exc:
            raise FleetFailed(str(exc)) from exc
        if why:
            raise FleetFailed(why)
        if command.container_image is not None:
            root = archives_root(self.settings.cache_dir)
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            spec = replace(spec, mount=(str(root), MODELS_MOUNT))
        return await asyncio.to_thread(self.artifacts.materialize, None, None), spec

    async def _model_dir(self, container: DeployedContainer, known_dir: str | None) -> Path:
        """The container's model data, unpacked (FleetFailed naming the cause otherwise)."""
        try:
            command_for(container.image)
            return await asyncio.to_thread(
                self.artifacts.materialize, container.model_data_url, container.model_data_source
            )
        except ArtifactError as exc:
            if known_dir is None or not Path(known_dir).is_dir():
                raise FleetFailed(str(exc)) from exc
            log.warning("%s; using the copy unpacked when it was deployed: %s", exc, known_dir)
            return Path(known_dir)
        except UnsupportedImage as exc:
            raise FleetFailed(str(exc)) from exc

    def _container(self, dv: DeployedVariant) -> DeployedContainer:
        """The variant's (first) container (FleetFailed naming the cause otherwise); a model
        with several is planned container by container (controller/pipelines.py)."""
        if not dv.containers:
            arn = self.arns.arn("model", dv.model_name)
            raise FleetFailed(f'Could not find model "{arn}".')
        return dv.containers[0]

    async def grow(self, endpoint: str, fleet: Fleet, variant: str, count: int) -> list[Instance]:
        """Start ``count`` instances of ``variant`` and wait until every one is healthy; on any
        failure stop them all and raise FleetFailed naming the cause."""
        plan = fleet.plans[variant]
        results = await asyncio.gather(
            *(self._start_ready(endpoint, plan) for _ in range(count)), return_exceptions=True
        )
        ready = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop(ready)
            first = errors[0]
            if isinstance(first, InstanceFailed | UnsupportedImage | OSError):
                raise FleetFailed(f"Production variant {variant}: {first}") from first
            raise first
        fleet.instances.setdefault(variant, []).extend(ready)
        return ready

    async def plan_variant(self, dv: DeployedVariant) -> VariantPlan:
        """The plan of one variant-like group of instances (a transform job's)."""
        return await self._plan_variant(dv, 1.0)

    async def start_ready(self, name: str, plan: VariantPlan, logs_dir: Path) -> Instance:
        """One healthy instance of ``plan`` (a job's) whose log is ``<logs_dir>/<name>/<instance
        id>.log``: the stream ``<job>/<instance-id>`` of CloudWatch's TransformJobs group."""
        return await self._start_ready(name, plan, logs_dir)

    async def _start_ready(
        self, endpoint: str, plan: VariantPlan, logs_dir: Path | None = None
    ) -> Instance:
        """One healthy instance. The port an instance is given was free when picked; if
        another process took it before the instance bound it, start again on a new one."""
        if plan.containers:
            return await start_group(self, endpoint, plan, logs_dir)
        logs = self.settings.logs_dir if logs_dir is None else logs_dir
        for attempt in range(PORT_RETRIES + 1):
            spec = plan.instance_spec(endpoint, logs)
            if logs_dir is not None:  # a job's instance: no variant directory
                spec.log_path = logs_dir / endpoint / f"{spec.instance_id}.log"
            spec = await self.with_model_copy(spec)
            try:
                inst = self.backend.start(spec)
            except BaseException:
                if spec.work_dir is not None:
                    await asyncio.to_thread(shutil.rmtree, spec.work_dir, True)
                raise
            try:
                await self.backend.wait_ready(inst, plan.startup_timeout)
                return inst
            except InstanceFailed as exc:
                await self.stop([inst], STARTING_GRACE_S)
                if attempt == PORT_RETRIES or "address already in use" not in str(exc).lower():
                    raise
                log.warning(
                    "instance %s of %s/%s found its port taken; starting another",
                    spec.instance_id,
                    endpoint,
                    plan.name,
                )
            except BaseException:  # cancelled (a DeleteEndpoint), or a bug: leave nothing
                await self.stop([inst], STARTING_GRACE_S)
                raise
        raise AssertionError("unreachable")

    async def with_model_copy(self, spec: InstanceSpec) -> InstanceSpec:
        """Give an instance process its own copy of the model directory, as every SageMaker
        instance has its own /opt/ml/model: what its code writes there stays its own and never
        reaches the artifact cache. Containers mount the cache's copy read-only instead."""
        if command_for(spec.image).container_image is not None or not self.backend.local_model_copy:
            return spec
        suffix = f"-{spec.container_index}" if spec.container_index else ""
        work = self.settings.instances_dir / f"{spec.instance_id}{suffix}"
        limit = self.settings.model_copy_max_bytes
        try:
            copied = await asyncio.to_thread(
                working_copy, Path(spec.model_dir), work / "model", limit
            )
        except OSError as exc:
            await asyncio.to_thread(shutil.rmtree, work, True)
            raise InstanceFailed(f"Could not copy the model data for the instance: {exc}") from exc
        if not copied:
            log.warning(
                "%s/%s: the model data is over MODELHOST_MODEL_COPY_MAX_BYTES (%d); its "
                "instances share one directory, and what they write there is seen by all",
                spec.endpoint,
                spec.variant,
                limit,
            )
            return spec
        spec.model_dir = work / "model"
        spec.work_dir = work
        return spec

    async def build(self, endpoint: str, fleet: Fleet, variants: list[VariantState]) -> None:
        """Every variant's instances, healthy; on any failure none is left running (the other
        variants are waited for first, so a slower one cannot outlive the failure)."""
        counts = {v.name: v.desired_count for v in variants}
        try:
            results = await asyncio.gather(
                *(self.grow(endpoint, fleet, name, counts.get(name, 1)) for name in fleet.plans),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            await self.stop(fleet.all())
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop(fleet.all())
            raise errors[0]

    async def stop(self, instances: list[Instance], grace: float | None = None) -> None:
        """SIGTERM, then SIGKILL after the grace period (the settings' unless given)."""
        wait = self.settings.stop_grace_s if grace is None else grace
        # An instance with several containers stops them all (controller/pipelines.py).
        every = [m for i in instances for m in (i, *getattr(i, "members", ()))]
        await asyncio.gather(*(self.backend.stop(m, wait) for m in every))


def _profile(dv: DeployedVariant) -> Profile:
    if dv.instance_type is not None:
        return profile_for(dv.instance_type)
    memory_mb = dv.serverless_memory_mb or SERVERLESS_DEFAULT_MB
    return Profile(vcpus=max(1, memory_mb // 2048), memory_gib=memory_mb / 1024)
