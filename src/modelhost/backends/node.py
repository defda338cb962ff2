"""An instance on a cluster node: what a Ray actor (backends/ray.py) does on the node it was
placed on, kept free of Ray so that it can be read and tested on its own.

On its node an instance fetches its model data itself (the node's own artifact cache, from the
platform's object store: the embedded S3 server or any S3-compatible one), takes a free port on
the node's address, and starts the same process the local backend would (the built-in model
server or a bring-your-own ``serve``) with the same environment and limits. The process is
started and waited for by one thread that lives as long as it does, so the process gets
SIGTERM (PR_SET_PDEATHSIG) if the actor's process dies, whatever kills it.

Paths: a ``file://`` or local-path ModelDataUrl is read at that path on the node, which holds
on one host or a shared filesystem; ``s3://`` data comes through the object store. The
instance's log is written at the head's log path on the node (the same file on one host).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelhost.artifacts import ArtifactCache, ArtifactError
from modelhost.artifacts.files import working_copy
from modelhost.backends.local import (
    InstanceSpec,
    instance_environment,
    limits,
    signal_group,
    tail,
)
from modelhost.instance_types import Profile
from modelhost.ports import free_port
from modelhost.storage import StorageError, object_store

S3_ENDPOINT_ENV = "MODELHOST_S3_ENDPOINT_URL"
OBJECTS_ENV = "MODELHOST_OBJECTS_DIR"
S3_KEY_ENVS = ("MODELHOST_S3_ACCESS_KEY_ID", "MODELHOST_S3_SECRET_ACCESS_KEY")
NODE_ENV = "MODELHOST_NODE_ID"  # the instance is told which node it runs on
START_TIMEOUT_S = 30.0  # for the OS to start the process (not for it to become healthy)


@dataclass(slots=True)
class Launch:
    """Everything the head sends a node to start one instance (pickled by Ray)."""

    spec: InstanceSpec
    argv: list[str]
    platform_env: dict[str, str]
    region: str
    max_artifact_bytes: int
    model_copy_max_bytes: int


def actor_resources(profile: Profile) -> dict[str, float]:
    """An instance type's size as Ray's resource requests (memory in bytes; GPUs only when
    the type has some, so a CPU node can take a CPU type)."""
    resources: dict[str, float] = {
        "num_cpus": float(profile.vcpus),
        "memory": float(int(profile.memory_gib * 2**30)),
    }
    if profile.gpus:
        resources["num_gpus"] = float(profile.gpus)
    return resources


def preferred_node(
    alive: Sequence[str], same_variant: Mapping[str, int], everything: Mapping[str, int]
) -> str | None:
    """The node a new instance of a variant should go to: the alive node with the fewest of
    that variant's instances, then with the fewest instances at all (so one node's loss takes
    as few of a variant's instances as it can). Only a preference: Ray places the actor
    elsewhere when that node has no room."""
    if not alive:
        return None
    return min(alive, key=lambda n: (same_variant.get(n, 0), everything.get(n, 0)))


def object_store_env(
    platform_env: dict[str, str],
) -> tuple[Path, str | None, tuple[str, str] | None]:
    """The object store an instance's node reads model data from, as the platform tells every
    instance (the same variables the built-in server reads)."""
    objects = Path(platform_env.get(OBJECTS_ENV, "objects"))
    key, secret = (platform_env.get(name) for name in S3_KEY_ENVS)
    credentials = (key, secret) if key and secret else None
    return objects, platform_env.get(S3_ENDPOINT_ENV) or None, credentials


def node_dir(node_id: str) -> Path:
    """This node's own directory for model caches and instance working copies."""
    return Path(tempfile.gettempdir()) / f"modelhost-node-{os.getuid()}" / node_id[:16]


class NodeInstance:
    """One instance process on this node, for the actor that owns it."""

    def __init__(
        self, launch: Launch, host: str, gpus: list[int], home: Path, node_id: str = ""
    ) -> None:
        self.launch = launch
        self.node_id = node_id
        self.host = host
        self.gpus = gpus
        self.home = home
        self.work = home / "instances" / launch.spec.instance_id
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._started = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None

    # --- starting ---------------------------------------------------------------------------

    def start(self) -> dict[str, Any]:
        """Fetch the model, start the process; ``{"port", "pid"}`` or ``{"error": reason}``."""
        try:
            model_dir = self.model_dir()
        except (ArtifactError, StorageError, OSError) as exc:
            return {"error": f"Could not get the model data on the node: {exc}"}
        port = free_port(self.host)
        spec = self.launch.spec
        env = instance_environment(
            spec, self.launch.platform_env, self.host, port, self.gpus, model_dir
        )
        env[NODE_ENV] = self.node_id
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        threading.Thread(
            target=self._run,
            args=(env, model_dir),
            name=f"instance-{spec.instance_id}",
            daemon=True,
        ).start()
        self._started.wait(START_TIMEOUT_S)
        if self.process is None:
            return {"error": f"Could not start the instance process: {self._error}"}
        return {"port": port, "pid": self.process.pid}

    def model_dir(self) -> Path:
        """The node's own copy of the model: from the node's artifact cache (filled from the
        object store), then this instance's working copy when it is small enough."""
        spec = self.launch.spec
        objects, endpoint, credentials = object_store_env(self.launch.platform_env)
        store = object_store(objects, endpoint, self.launch.region, credentials)
        cache = ArtifactCache(self.home / "cache", store, self.launch.max_artifact_bytes)
        cached = cache.materialize(spec.model_data_url, spec.model_data_source)
        copy = self.work / "model"
        if working_copy(cached, copy, self.launch.model_copy_max_bytes):
            return copy
        return cached

    def _run(self, env: dict[str, str], cwd: Path) -> None:
        """Start the process and wait for it, on this thread for its whole life (the process
        is told to die with the thread that started it)."""
        spec = self.launch.spec
        try:
            with spec.log_path.open("ab") as logf:
                self.process = subprocess.Popen(
                    self.launch.argv,
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=limits(spec.profile),
                )
        except OSError as exc:
            self._error = exc
            self.returncode = -1
            self._started.set()
            self._done.set()
            return
        self._started.set()
        self.returncode = self.process.wait()
        self._done.set()

    # --- watching and stopping --------------------------------------------------------------

    def wait_exit(self, timeout: float | None = None) -> int | None:
        """The process's exit status once it ends (None if ``timeout`` passes first)."""
        self._done.wait(timeout)
        return self.returncode

    def stop(self, grace: float) -> int | None:
        """SIGTERM, SIGKILL after ``grace`` s, then remove the working copy. Harmless twice."""
        proc = self.process
        if proc is not None and self.returncode is None:
            signal_group(proc, signal.SIGTERM)
            if not self._done.wait(grace):
                signal_group(proc, signal.SIGKILL)
                self._done.wait(5.0)
        if proc is not None:
            signal_group(proc, signal.SIGKILL)  # children of a crashed server, if any
        shutil.rmtree(self.work, ignore_errors=True)
        return self.returncode

    def log_tail(self) -> str:
        return tail(self.launch.spec.log_path)


class RemoteProcess:
    """The head's view of an instance process on another node (``ProcessLike``): its status is
    set by the backend's watch on the actor; it is never signalled from here."""

    def __init__(self) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self.cause = ""  # why it ended, when its node or actor was lost

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("remote instance", timeout or 0.0)
            time.sleep(0.02)
        return self.returncode

    def ended(self, code: int | None, cause: str = "") -> None:
        """Record that the process ended (status -9 when its node or actor died with it)."""
        if self.returncode is None:
            self.returncode = -9 if code is None else code
            self.cause = cause
