"""The local backend: each instance is an OS process on this machine.

This module (with the other backends) is the only code that starts and stops instances.
Limits follow the instance type where the OS allows: CPU affinity and BLAS/OpenMP thread counts
from the vCPUs, an address-space limit from the memory, CUDA_VISIBLE_DEVICES from the GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelhost.backends.exits import Cancel, Process, watch_exit
from modelhost.backends.images import command_for, is_framework_image
from modelhost.backends.pidfiles import PidRecords
from modelhost.backends.zygote import Zygote, ZygoteChild
from modelhost.children import die_with_parent
from modelhost.instance_types import Profile
from modelhost.ports import free_port
from modelhost.publish import Address

log = logging.getLogger(__name__)

# The server's own environment an instance does not inherit: modelhost's settings (the data
# directory, hence the state database), the operator's AWS credentials and configuration, and
# anything named like a secret. What CreateModel's Environment sets is the user's, and kept.
_KEEP_AWS = frozenset({"AWS_REGION", "AWS_DEFAULT_REGION"})
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE_KEY", "API_KEY",
                 "ACCESS_KEY", "SESSION_KEY", "AUTH")  # fmt: skip


def inherited_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The part of the server's environment an instance process starts with."""
    return {name: value for name, value in environ.items() if not _private(name)}


def _private(name: str) -> bool:
    upper = name.upper()
    if upper.startswith("MODELHOST_"):
        return True
    if upper.startswith("AWS_") and upper not in _KEEP_AWS:
        return True
    return any(word in upper for word in _SECRET_WORDS)


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
LOG_TAIL_LINES = 20
# /ping is polled every 2 ms at first (an instance forked from the zygote is ready in tens of
# milliseconds), then less and less often, up to every 50 ms.
READY_POLL_FIRST_S = 0.002
READY_POLL_MAX_S = 0.05


class InstanceFailed(Exception):
    """An instance could not start or become healthy; the message is a FailureReason."""


@dataclass(slots=True)
class InstanceSpec:
    endpoint: str
    variant: str
    model_dir: Path
    environment: dict[str, str]
    image: str | None
    profile: Profile
    log_path: Path
    instance_id: str = field(default_factory=lambda: f"i-{uuid.uuid4().hex[:17]}")
    hostname: str | None = None  # the container's ContainerHostname
    work_dir: Path | None = None  # this instance's own files (its model copy): removed at stop
    # The container's place (1..n) in an instance that runs several (controller/pipelines.py);
    # they share the instance id. 0: the instance's only container.
    container_index: int = 0
    # A later container of such an instance sees the GPUs its first container took (one
    # instance's GPUs, shared by its containers) and takes none of its own.
    shared_gpus: list[int] | None = None
    # Where the model data came from (ModelDataUrl / ModelDataSource): a backend whose instances
    # run on other machines fetches it there (backends/ray.py) instead of using model_dir.
    model_data_url: str | None = None
    model_data_source: dict[str, Any] | None = None
    # More host directories a container instance sees, read-only: (host dir, path inside).
    # A multi-model container's extracted models (controller/fleet.py); processes ignore it.
    mounts: tuple[tuple[str, str], ...] = ()


@dataclass(eq=False)
class Instance:
    """A started instance: its spec, its process, its GPUs and where it listens."""

    spec: InstanceSpec
    process: Process
    gpus: list[int]
    address: Address
    started: float = field(default_factory=time.monotonic)
    # The address it gets once ready: the built-in server's Unix socket, when it makes one.
    ready_address: Address | None = None
    # An instance with several containers is its first container's process plus the others'
    # (controller/pipelines.py): they start, stop and die as one.
    members: tuple[Instance, ...] = ()

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id

    @property
    def port(self) -> int:
        return self.address.port

    def exited(self) -> int | None:
        code = self.process.poll()
        if code is None and self.members:
            for member in self.members:
                code = member.process.poll()
                if code is not None:
                    break
        return code


# Told, on the event loop, that an instance's process exited while nobody was stopping it.
ExitCallback = Callable[[Instance], None]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalBackend:
    local_model_copy = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        gpu_count: int | None = None,
        platform_env: dict[str, str] | None = None,
        on_exit: ExitCallback | None = None,
        pid_dir: Path | None = None,
    ) -> None:
        self.host = host
        # One record per running instance process (pidfiles.py): a later server on the same
        # data directory stops those this one leaves behind if it dies.
        self.pids = PidRecords(pid_dir) if pid_dir is not None else None
        # Called when an instance's process exits unasked (see ``watch``).
        self.on_exit = on_exit
        self._watches: dict[Instance, Cancel] = {}
        # What every instance is told about the platform (requirements cache, object store).
        self.platform_env = dict(platform_env or {})
        # Unix sockets of built-in servers live here (short: socket paths max out at 107 bytes).
        self.sockets_dir = Path(tempfile.mkdtemp(prefix="mh-"))
        self.gpu_count = detect_gpus() if gpu_count is None else gpu_count
        self._gpus_free = list(range(self.gpu_count))
        self.instances: set[Instance] = set()
        # Forks built-in model servers from a process that imported their frameworks already
        # (runtime/zygote.py); None: every instance starts a fresh interpreter.
        self.zygote: Zygote | None = None

    def start_zygote(self, log_path: Path) -> None:
        """Start the zygote; built-in instances started once it is ready are forked from it."""
        # What every instance inherits, scrubbed as for them: a forked instance's
        # /proc/self/environ shows the zygote's environment, so it must hold no more.
        env = inherited_environment(os.environ)
        env.update({k: str(os.cpu_count() or 1) for k in THREAD_VARS})
        env.update(self.platform_env)
        env["PYTHONUNBUFFERED"] = "1"
        self.zygote = Zygote(env, log_path)
        self.zygote.start()

    def start(self, spec: InstanceSpec) -> Instance:
        """Start the process (returns at once; see ``wait_ready``). Must run on the loop thread:
        the child asks to be killed when its parent thread dies."""
        command = command_for(spec.image)
        port = free_port(self.host)
        shared = spec.shared_gpus
        gpus = self._take_gpus(spec.profile.gpus) if shared is None else []
        env = self._environment(spec, port, gpus if shared is None else shared)
        if command.builtin:
            suffix = f"-{spec.container_index}" if spec.container_index else ""
            socket = self.sockets_dir / f"{spec.instance_id}{suffix}.sock"
            env["MODELHOST_UNIX_SOCKET"] = str(socket)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            proc = self._spawn(spec, command.argv, env, command.builtin)
        except OSError:
            self._gpus_free.extend(gpus)
            raise
        if self.pids is not None:
            self.pids.add(spec.instance_id, proc.pid)
        inst = Instance(spec, proc, gpus, Address(self.host, port))
        if (path := env.get("MODELHOST_UNIX_SOCKET")) is not None:
            inst.ready_address = Address(self.host, port, path, pipelined=not _batching(env))
        self.watch(inst)
        how = "forked from the zygote" if isinstance(proc, ZygoteChild) else "a new process"
        log.info(
            "started %s for %s/%s on port %d (%s)",
            spec.instance_id,
            spec.endpoint,
            spec.variant,
            port,
            how,
        )
        return inst

    def _spawn(
        self, spec: InstanceSpec, argv: list[str], env: dict[str, str], builtin: bool
    ) -> Process:
        cpus, memory = _limit_values(spec.profile)
        if builtin and self.zygote is not None:
            child = self.zygote.spawn(env, spec.model_dir, spec.log_path, cpus, memory)
            if child is not None:
                return child
        with spec.log_path.open("ab") as logf:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=spec.model_dir,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_limits(cpus, memory),
            )

    def _environment(self, spec: InstanceSpec, port: int, gpus: list[int]) -> dict[str, str]:
        return instance_environment(spec, self.platform_env, self.host, port, gpus)

    def _take_gpus(self, wanted: int) -> list[int]:
        """GPU indices for a new instance. With no GPU on this machine at all, a GPU instance
        type runs on the CPU (so ml.g*/ml.p* configs deploy on a laptop); with GPUs, each
        instance gets its own, and asking for more than are free is a clear failure."""
        if wanted == 0 or self.gpu_count == 0:
            return []
        if wanted > len(self._gpus_free):
            raise InstanceFailed(
                f"The instance type needs {wanted} GPU(s); {len(self._gpus_free)} of this "
                f"machine's {self.gpu_count} are free."
            )
        taken, self._gpus_free = self._gpus_free[:wanted], self._gpus_free[wanted:]
        return taken

    async def wait_ready(self, inst: Instance, timeout: float) -> None:
        """Poll GET /ping until 200; fail with the cause and the log's last lines."""
        deadline = time.monotonic() + timeout
        pause = READY_POLL_FIRST_S
        while True:
            code = inst.exited()
            if code is not None:
                raise InstanceFailed(
                    f"The instance process exited with status {code} before passing the /ping "
                    f"health check. Last lines of its log:\n{tail(inst.spec.log_path)}"
                )
            if await ping(inst.address.host, inst.address.port):
                _prefer_unix_socket(inst)
                return
            if time.monotonic() > deadline:
                raise InstanceFailed(
                    f"The instance did not pass the /ping health check within {timeout:.0f} s. "
                    f"Last lines of its log:\n{tail(inst.spec.log_path)}"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, READY_POLL_MAX_S)

    def watch(self, inst: Instance) -> None:
        """Count ``inst`` as running and, when an ``on_exit`` callback is set, call it as soon
        as the process exits (until ``forget``: a stop is not an exit to report)."""
        self.instances.add(inst)
        if self.on_exit is not None:
            self._watches[inst] = watch_exit(inst.process, lambda: self._exited(inst))

    def forget(self, inst: Instance) -> bool:
        """Stop counting ``inst`` as running (its stop has begun); False if it was not."""
        cancel = self._watches.pop(inst, None)
        if cancel is not None:
            cancel()
        if inst not in self.instances:
            return False
        self.instances.discard(inst)
        return True

    def _exited(self, inst: Instance) -> None:
        self._watches.pop(inst, None)
        self._unrecord(inst)
        if inst in self.instances and self.on_exit is not None:
            self.on_exit(inst)

    async def stop(self, inst: Instance, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds (the server finishes the requests it
        has in flight before it exits). Stopping an instance again is harmless."""
        if self.forget(inst):
            self._gpus_free.extend(inst.gpus)
        if inst.exited() is None:
            signal_group(inst.process, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while inst.exited() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if inst.exited() is None:
                signal_group(inst.process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            inst.process.wait(timeout=5)
        signal_group(inst.process, signal.SIGKILL)  # children of a crashed server, if any
        self._unrecord(inst)

    def _unrecord(self, inst: Instance) -> None:
        if self.pids is not None:
            self.pids.remove(inst.instance_id)

    def stop_orphans(self) -> list[int]:
        """At start-up: stop instance processes a previous server on this data directory left
        running (it was killed, and they could not act on their SIGTERM)."""
        return self.pids.stop_orphans() if self.pids is not None else []

    def kill_all(self) -> None:
        """Last resort at exit: no orphan processes, whatever happened before."""
        for inst in list(self.instances):
            self.forget(inst)
            if inst.exited() is None:
                signal_group(inst.process, signal.SIGKILL)
            self._unrecord(inst)
        if self.zygote is not None:
            self.zygote.close()
        shutil.rmtree(self.sockets_dir, ignore_errors=True)


def instance_environment(
    spec: InstanceSpec,
    platform_env: dict[str, str],
    host: str,
    port: int,
    gpus: list[int],
    model_dir: Path | None = None,
) -> dict[str, str]:
    """An instance process's environment, on the machine it runs on (this process's own, less
    modelhost's settings and secrets, plus the container's Environment and the platform's)."""
    env = inherited_environment(os.environ)
    threads = str(max(1, min(spec.profile.vcpus, os.cpu_count() or 1)))
    env.update({k: threads for k in THREAD_VARS})
    env.update(spec.environment)
    env.update(platform_env)
    if spec.image and is_framework_image(spec.image):
        env["MODELHOST_FRAMEWORK"] = spec.image
    env.update(
        {
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "MODELHOST_BIND_HOST": host,
            "MODELHOST_MODEL_DIR": str(spec.model_dir if model_dir is None else model_dir),
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        }
    )
    return env


def _prefer_unix_socket(inst: Instance) -> None:
    ready = inst.ready_address
    if ready is not None and ready.unix_path is not None and os.path.exists(ready.unix_path):
        inst.address = ready


def signal_group(proc: Process, sig: int) -> None:
    """Send ``sig`` to the process group ``proc`` leads (each instance starts its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def ping(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()


def detect_gpus() -> int:
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def _limit_values(profile: Profile) -> tuple[list[int], int]:
    """The CPUs an instance of ``profile`` may run on, and its address-space limit in bytes."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    want = cpus[: max(1, min(profile.vcpus, len(cpus)))] if cpus else []
    return want, int(profile.memory_gib * 2**30)


def limits(profile: Profile) -> Callable[[], None]:
    """What a child started for an instance of ``profile`` runs between fork and exec (on a
    node, too: backends/node.py)."""
    return _limits(*_limit_values(profile))


def _limits(want: list[int], memory: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        die_with_parent()
        if want:
            os.sched_setaffinity(0, want)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


def _batching(env: dict[str, str]) -> bool:
    """Whether the built-in server may batch (runtime/batching.py; its connections then take
    no pipelined requests). Anything but a clear "off" counts as on."""
    return env.get("MODELHOST_BATCHING", "").strip().lower() not in _OFF


_OFF = frozenset({"", "0", "false", "no", "off"})
