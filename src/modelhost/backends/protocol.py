"""The backend seam: what the controller and the jobs ask of whatever runs instances.

``Backends`` (local processes and containers, backends/__init__.py) and ``RayBackend``
(actors on a Ray cluster, backends/ray.py) both have this shape; controller/fleet.py only
knows this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from modelhost.backends.local import ExitCallback, Instance, InstanceSpec


class Backend(Protocol):
    # The instances started and not yet stopped.
    instances: set[Instance]
    # Called on the loop when an instance dies unasked (its process exited, its node was lost).
    on_exit: ExitCallback | None
    # Whether instances read their model from this machine's disk (the fleet then gives each a
    # working copy there); False where the backend fetches the model on the instance's node.
    local_model_copy: bool

    def start_zygote(self, log_path: Path) -> None:
        """Get ready to start built-in instances fast, where the backend can (the local
        backend's zygote); a backend that cannot does nothing."""

    def start(self, spec: InstanceSpec) -> Instance:
        """Begin starting an instance; returns at once (see ``wait_ready``)."""

    async def wait_ready(self, inst: Instance, timeout: float) -> None:
        """Return once ``inst`` answers GET /ping with 200; raise InstanceFailed with the
        cause otherwise."""

    async def stop(self, inst: Instance, grace: float) -> None:
        """Stop ``inst`` (it may finish what it has in flight for ``grace`` s); harmless twice."""

    def kill_all(self) -> None:
        """Last resort at exit: nothing this backend started is left running."""
