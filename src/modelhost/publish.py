"""What the controller tells the router: which instances serve which endpoint, and where they
listen. The one seam between the control side (controller/, backends/) and the data side
(router/): nothing here knows about HTTP or processes.

A backend starts an instance and learns its ``Address`` (a host and port, or a Unix socket path
on this host, and whether the server answers pipelined requests in order). The controller
publishes an endpoint's variants as ``PublishedVariant``s; the router (router/routing.py
``RouteTable``) builds, keeps and closes its own connection pools from the addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Address:
    """Where an instance listens. ``unix_path``: a Unix socket to the same server, preferred
    when present (a loopback TCP hop costs more kernel time than the router's own work).
    ``pipelined``: the server answers requests sent back to back on one connection in order,
    one at a time (modelhost's own single-worker server), so the router may pipeline."""

    host: str
    port: int
    unix_path: str | None = None
    pipelined: bool = False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PublishedContainer:
    """One container of an instance that runs several: its name (the ContainerHostname, or
    ``container-<k>``) and where it listens."""

    name: str
    address: Address


@dataclass(frozen=True, slots=True)
class PublishedInstance:
    instance_id: str
    address: Address  # the (first) container's
    # An instance with several containers: every one, in order, and how they serve
    # ("Serial": each answer is the next one's request; "Direct": a request names one).
    # Empty for the ordinary one-container instance.
    containers: tuple[PublishedContainer, ...] = ()
    mode: str = ""


@dataclass(frozen=True, slots=True)
class MultiModelSpec:
    """A multi-model variant (Mode MultiModel): where its models are, and the memory each of
    its instances may fill with them."""

    prefix: str  # ModelDataUrl: s3://bucket/prefix/ or a local directory
    memory_budget_bytes: int
    model_cache: bool = True  # False: ModelCacheSetting Disabled (unload after every call)
    # Container instances see the extracted models elsewhere: (the host directory, where it is
    # mounted inside them). None: instances read this host's paths as they are.
    mount: tuple[str, str] | None = None

    def instance_path(self, path: str) -> str | None:
        """The ``url`` an instance is given for the host directory ``path`` (None: the
        instance cannot see it)."""
        if self.mount is None:
            return path
        host, inside = self.mount
        try:
            rest = PurePosixPath(path).relative_to(host)
        except ValueError:
            return None
        return str(PurePosixPath(inside) / rest)


@dataclass(frozen=True, slots=True)
class PublishedVariant:
    name: str
    weight: float
    instances: tuple[PublishedInstance, ...] = ()
    # A serverless variant's MaxConcurrency (requests beyond it are throttled); 0: no limit.
    max_concurrency: int = 0
    # A variant that scales to zero: with no instances, the router holds its requests and
    # asks for one (``Publisher.waker``) instead of answering "not ready".
    wakes: bool = False
    # A serverless variant's MemorySizeInMB (its compute is metered in GB-seconds); 0: none.
    memory_mb: int = 0
    mode: str = ""  # its instances' containers: "Serial", "Direct", or "" (one container)
    multi_model: MultiModelSpec | None = None


# What the router calls to ask the controller for the instances of a variant that scaled to
# zero: (endpoint, variant). Called on the event loop; returns at once.
Waker = Callable[[str, str], None]


class Publisher(Protocol):
    """The router as the controller sees it."""

    def publish(self, endpoint: str, variants: Sequence[PublishedVariant]) -> None:
        """Route ``endpoint`` to exactly these instances from now on. Instances it no longer
        lists stop getting new requests; those in flight on them finish (see ``drain``)."""

    def withdraw(self, endpoint: str) -> None:
        """Stop routing ``endpoint`` (its requests get "not found" / "not ready" answers)."""

    def lost(self, instance_id: str) -> None:
        """The instance is dead: leave every route at once; requests that were queued for it
        and not started go to the other instances of its variant."""

    async def drain(self, instance_ids: Collection[str], timeout: float) -> None:
        """Stop sending to these instances, wait (at most ``timeout`` s) until the requests in
        flight on them are answered, then close the router's connections to them. Call it
        before stopping an instance that may still be serving."""
