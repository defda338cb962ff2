"""Instances with several containers: serial inference pipelines and multi-container
(Direct) endpoints. Each container of an instance is its own process (built-in server, BYO
executable or container image) on its own port (``SAGEMAKER_BIND_TO_PORT``) with its own log
(``<variant>/<instance-id>/<container>.log``: one CloudWatch stream per container). The
containers share the instance id, start and stop together, and the instance counts as dead
when any of them dies (``Instance.exited``), so the controller replaces the whole instance.

The instance is its first container's ``Instance`` with the others as ``members``; the router
is told every container's address (``published_instance``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelhost.backends.local import Instance, InstanceFailed, InstanceSpec
from modelhost.publish import PublishedContainer, PublishedInstance

if TYPE_CHECKING:
    from modelhost.controller.fleet import Fleets, VariantPlan


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    """One container of a multi-container variant, its model data unpacked."""

    name: str  # the ContainerHostname, or container-<k>
    model_dir: Path
    environment: dict[str, str]
    image: str | None
    hostname: str | None


def container_name(hostname: str | None, index: int) -> str:
    """How SageMaker names a container in errors, metrics and log streams."""
    return hostname or f"container-{index}"


def published_instance(inst: Instance, mode: str, names: tuple[str, ...]) -> PublishedInstance:
    """What the router is told about ``inst``: one address, or one per container."""
    if not inst.members:
        return PublishedInstance(inst.instance_id, inst.address)
    every = (inst, *inst.members)
    return PublishedInstance(
        inst.instance_id,
        inst.address,
        tuple(PublishedContainer(n, m.address) for n, m in zip(names, every, strict=True)),
        mode,
    )


async def start_group(
    fleets: Fleets, endpoint: str, plan: VariantPlan, logs_dir: Path | None
) -> Instance:
    """One healthy instance of a multi-container ``plan``: every container started, then all
    waited for; on any failure every one is stopped and InstanceFailed names the container."""
    first = plan.instance_spec(endpoint, fleets.settings.logs_dir if logs_dir is None else logs_dir)
    iid = first.instance_id
    # <logs>/<endpoint>/<variant>/<instance-id>, or a job's <logs_dir>/<job>/<instance-id>
    logs = first.log_path.with_suffix("") if logs_dir is None else logs_dir / endpoint / iid
    started: list[Instance] = []
    try:
        for k, c in enumerate(plan.containers, 1):
            spec = InstanceSpec(
                endpoint=endpoint,
                variant=plan.name,
                model_dir=c.model_dir,
                environment=c.environment,
                image=c.image,
                profile=plan.profile,
                log_path=logs / f"{c.name}.log",
                instance_id=iid,
                hostname=c.hostname,
                container_index=k,
                shared_gpus=None if not started else started[0].gpus,
            )
            spec = await fleets.with_model_copy(spec)
            try:
                started.append(fleets.backend.start(spec))
            except (InstanceFailed, OSError) as exc:
                raise InstanceFailed(f"Container {c.name}: {exc}") from exc
        results = await asyncio.gather(
            *(fleets.backend.wait_ready(i, plan.startup_timeout) for i in started),
            return_exceptions=True,
        )
        for c, result in zip(plan.containers, results, strict=False):
            if isinstance(result, BaseException):
                raise InstanceFailed(f"Container {c.name}: {result}") from result
    except BaseException:
        await fleets.stop(started, grace=2.0)
        raise
    head = started[0]
    head.members = tuple(started[1:])
    return head
