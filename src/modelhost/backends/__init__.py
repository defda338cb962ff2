"""Backends: the only code that starts and stops instances.

``Backends`` has the LocalBackend interface the controller uses (start, wait_ready, stop,
kill_all, instances, on_exit) and picks, per instance, by its Image (backends/images.py): an
OS process (built-in server or a bring-your-own executable) or a container run by
docker/podman. Backends know where an instance listens (its ``publish.Address``), nothing
about HTTP connections: the router owns those.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from modelhost.backends import images
from modelhost.backends.containers import ContainerBackend, EngineFinder
from modelhost.backends.local import ExitCallback, Instance, InstanceSpec, LocalBackend

__all__ = ["Backends"]


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
