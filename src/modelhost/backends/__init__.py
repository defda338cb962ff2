"""Backends: the only code that starts and stops instances.

``Backends`` has the interface the controller uses (start, wait_ready, stop, kill_all,
instances, on_exit: backends/protocol.py) and picks, per instance, by its Image
(backends/images.py): an OS process (built-in server or a bring-your-own executable) or a
container run by docker/podman. ``create_backend`` picks those, or the ray backend
(backends/ray.py). Backends know where an instance listens (its ``publish.Address``), nothing
about HTTP connections: the router owns those.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

from modelhost.backends import images
from modelhost.backends.containers import ContainerBackend, EngineFinder
from modelhost.backends.local import ExitCallback, Instance, InstanceSpec, LocalBackend
from modelhost.backends.protocol import Backend
from modelhost.settings import Settings

__all__ = ["Backends", "create_backend"]

RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def create_backend(settings: Settings, platform_env: dict[str, str]) -> Backend:
    """The backend the settings name: this machine's processes and containers (default), or
    actors on a Ray cluster (imported only then: Ray is an optional extra)."""
    if settings.backend == "ray":
        if settings.ray_address is None and "ray" not in sys.modules:
            # The local Ray a server starts for a quick try stays on loopback: without this,
            # Ray (reading it when imported) moves its nodes to the host's outward address.
            os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
        try:
            from modelhost.backends.ray import RayBackend
        except ImportError as exc:
            raise RuntimeError(
                f"The ray backend needs Ray ({exc}): pip install 'modelhost[ray]'."
            ) from exc
        images.use_engine_probe(no_engine_on_ray)
        images.use_label_reader(None)

        return RayBackend(
            settings.ray_address,
            platform_env,
            settings.region,
            settings.max_artifact_bytes,
            settings.model_copy_max_bytes,
        )
    backend = Backends(
        host=settings.instance_host,
        container_engine=settings.container_engine,
        gpu_count=settings.gpu_count,
        platform_env=platform_env,
        pid_dir=settings.data_dir / "instance-pids",
    )
    backend.stop_orphans()  # a killed server's instances that outlived it
    return backend


def no_engine_on_ray() -> str:
    """The ray backend's engine probe: container images fail when planned, saying why."""
    raise images.NoEngine("it runs no container images on its nodes", ("the ray backend",))


class Backends(LocalBackend):
    def __init__(
        self,
        host: str = "127.0.0.1",
        gpu_count: int | None = None,
        container_engine: str | None = None,
        platform_env: dict[str, str] | None = None,
        on_exit: ExitCallback | None = None,
        pid_dir: Path | None = None,
    ) -> None:
        super().__init__(host, gpu_count, platform_env, on_exit, pid_dir)
        self.containers = ContainerBackend(EngineFinder(container_engine), host)
        # The controller asks images.command_for early (fail fast): let it find the engine.
        images.use_engine_probe(self.containers.finder)
        images.use_label_reader(self.containers.labels)

    def start(self, spec: InstanceSpec) -> Instance:
        command = images.command_for(spec.image)
        if command.container_image is None:
            return super().start(spec)
        inst = self.containers.start(spec, command.container_image)
        self.watch(inst)  # its `<engine> run` process lives as long as the container
        return inst

    async def stop(self, inst: Instance, grace: float) -> None:
        if not self.containers.owns(inst):
            await super().stop(inst, grace)
        else:
            self.forget(inst)
            await self.containers.stop(inst, grace)
        if inst.spec.work_dir is not None:  # its model copy
            await asyncio.to_thread(shutil.rmtree, inst.spec.work_dir, True)

    def kill_all(self) -> None:
        self.containers.kill_all()
        super().kill_all()
