"""The container backend: an instance whose Image names a container image runs in a container
engine (docker, or podman where no Docker daemon answers), as SageMaker runs it:

    <engine> run --rm --name mh-<instance id> -v <model dir>:/opt/ml/model:ro
        -p 127.0.0.1:<free port>:8080 --cpus N --memory M -e K=V ... <image> serve

A multi-model instance also gets its models' directory (the extracted TargetModels,
``<cache>/multimodel``) read-only at /opt/ml/models, where SageMaker's MMS containers find
theirs (``InstanceSpec.mounts``). The container listens on 8080 (SAGEMAKER_BIND_TO_PORT is
not set); the port is published on 127.0.0.1 only. ``run`` stays attached: the Instance's
process is the ``<engine> run`` process and the container's output goes to the instance log.
Stop = ``<engine> stop -t <grace>`` (SIGTERM, then SIGKILL), then ``rm -f`` so that no
container is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelhost.backends.images import DEFAULT_ENGINES, NoEngine, UnsupportedImage
from modelhost.backends.local import (
    Instance,
    InstanceSpec,
    signal_group,
)
from modelhost.children import die_with_parent
from modelhost.ports import free_port
from modelhost.publish import Address

log = logging.getLogger(__name__)

CONTAINER_PORT = 8080
MODEL_MOUNT = "/opt/ml/model"
MODELS_MOUNT = "/opt/ml/models"  # a multi-model container's models (CONTRACT.md section 4)
NAME_PREFIX = "mh-"
PROBE_TIMEOUT_S = 20.0
FAILED_PROBE_TTL_S = 10.0  # ask again after this long when no engine answered
ENGINE_COMMAND_TIMEOUT_S = 60.0
PULL_TIMEOUT_S = 600.0
REMOVAL_TIMEOUT_S = 30.0  # how long a removed container may still be listed
REMOVAL_CHECKS = 200
# Podman as root here needs explicit ulimits (DESIGN.md); harmless for docker.
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")


@dataclass(frozen=True, slots=True)
class Engine:
    name: str  # as configured or found: "docker", "podman" or a path
    path: str
    podman: bool

    def base(self) -> list[str]:
        """The engine's command with its global flags."""
        if self.podman and shutil.which("runc"):
            return [self.path, "--runtime", "runc"]
        return [self.path]

    def run_argv(self, spec: InstanceSpec, image: str, host: str, port: int) -> list[str]:
        cpus = max(1, min(spec.profile.vcpus, os.cpu_count() or 1))
        memory_mib = max(64, min(int(spec.profile.memory_gib * 1024), _physical_mib()))
        argv = [*self.base(), "run", "--rm", "--name", container_name(spec)]
        argv += ["--label", f"modelhost.instance={spec.instance_id}"]
        argv += ["--label", f"modelhost.endpoint={spec.endpoint}"]
        if spec.hostname:
            argv += ["--hostname", spec.hostname]
        argv += ["-v", f"{Path(spec.model_dir).resolve()}:{MODEL_MOUNT}:ro"]
        for host_dir, inside in spec.mounts:
            argv += ["-v", f"{Path(host_dir).resolve()}:{inside}:ro"]
        argv += ["-p", f"{host}:{port}:{CONTAINER_PORT}"]
        argv += ["--cpus", str(cpus), "--memory", f"{memory_mib}m"]
        for limit in ULIMITS:
            argv += ["--ulimit", limit]
        for key, value in spec.environment.items():
            argv += ["-e", f"{key}={value}"]
        return [*argv, image, "serve"]

    def labels_argv(self, image: str) -> list[str]:
        """Prints the image's labels as a JSON object (``null`` when it has none)."""
        return [*self.base(), "image", "inspect", "--format", "{{json .Config.Labels}}", image]

    def pull_argv(self, image: str) -> list[str]:
        return [*self.base(), "pull", image]

    def stop_argv(self, name: str, grace: float) -> list[str]:
        return [*self.base(), "stop", "-t", str(max(0, math.ceil(grace))), name]

    def rm_argv(self, names: Sequence[str]) -> list[str]:
        return [*self.base(), "rm", "-f", *(["--ignore"] if self.podman else []), *names]

    def exists_argv(self, name: str) -> list[str]:
        """Lists the container ``name`` (running or not), or nothing."""
        return [*self.base(), "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"]


def container_name(spec: InstanceSpec) -> str:
    suffix = f"-{spec.container_index}" if spec.container_index else ""
    return f"{NAME_PREFIX}{spec.instance_id}{suffix}"


def image_labels(engine: Engine, image: str) -> dict[str, str]:
    """The labels of ``image``, pulled first when the engine does not have it (as ``run``
    would); UnsupportedImage naming the cause when it cannot be inspected."""
    done = _inspect(engine.labels_argv(image))
    if done.returncode != 0:
        pulled = _inspect(engine.pull_argv(image), PULL_TIMEOUT_S)
        if pulled.returncode == 0:
            done = _inspect(engine.labels_argv(image))
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip()[-500:] or f"exit status {done.returncode}"
        raise UnsupportedImage(f"Image {image} could not be inspected by {engine.name}: {why}")
    try:
        labels = json.loads(done.stdout or "null") or {}
    except ValueError:
        labels = {}
    if not isinstance(labels, dict):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def _inspect(
    argv: list[str], timeout: float = ENGINE_COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return subprocess.CompletedProcess(argv, 1, "", str(exc))


def probe(name: str) -> Engine:
    """The engine ``name`` if ``<name> info`` answers; NoEngine with the reason otherwise."""
    path = shutil.which(name)
    if path is None:
        raise NoEngine(f"{name}: not installed", [name])
    try:
        info = subprocess.run(
            [path, "info"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoEngine(f"{name}: {exc}", [name]) from exc
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        why = lines[-1] if lines else f"exit status {info.returncode}"
        raise NoEngine(f"{name} info: {why}", [name])
    return Engine(name, path, "podman" in (version.stdout + os.path.basename(path)).lower())


class EngineFinder:
    """Finds the engine once (the configured one, else docker then podman) and remembers it; a
    failure is remembered for FAILED_PROBE_TTL_S. Callable as an images.EngineProbe."""

    def __init__(self, preferred: str | None = None) -> None:
        self.candidates: tuple[str, ...] = (preferred,) if preferred else DEFAULT_ENGINES
        self._engine: Engine | None = None
        self._failure: tuple[float, NoEngine] | None = None
        self._lock = threading.Lock()

    def find(self) -> Engine:
        with self._lock:
            if self._engine is not None:
                return self._engine
            if self._failure and time.monotonic() - self._failure[0] < FAILED_PROBE_TTL_S:
                raise self._failure[1]
            reasons = []
            for name in self.candidates:
                try:
                    self._engine = probe(name)
                except NoEngine as exc:
                    reasons.append(exc.reason)
                    continue
                log.info("container engine: %s (%s)", name, self._engine.path)
                return self._engine
            failure = NoEngine("; ".join(reasons), self.candidates)
            self._failure = (time.monotonic(), failure)
            raise failure

    def __call__(self) -> str:
        return self.find().name


class ContainerBackend:
    """Starts and stops the containers of the instances whose image a container engine runs."""

    def __init__(self, finder: EngineFinder, host: str = "127.0.0.1") -> None:
        self.finder = finder
        self.host = host
        self.instances: set[Instance] = set()

    def owns(self, inst: Instance) -> bool:
        return inst in self.instances

    def labels(self, image: str) -> dict[str, str]:
        """``image``'s labels (an images.LabelReader; blocks: run it in a thread)."""
        try:
            engine = self.finder.find()
        except NoEngine as exc:
            raise UnsupportedImage(f"Image {image} needs a container engine: {exc}") from exc
        return image_labels(engine, image)

    def start(self, spec: InstanceSpec, image: str) -> Instance:
        """Start ``<engine> run`` attached (returns at once; the caller waits for /ping)."""
        engine = self.finder.find()
        port = free_port(self.host)
        argv = engine.run_argv(spec, image, self.host, port)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as logf:
            note = f"[modelhost] {engine.name} run {image} serve as {container_name(spec)}\n"
            logf.write(note.encode())
            logf.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # SIGTERM: run proxies it to the container
            )
        inst = Instance(spec, proc, [], Address(self.host, port))
        self.instances.add(inst)
        log.info(
            "started container %s (%s) for %s/%s on port %d",
            container_name(spec),
            image,
            spec.endpoint,
            spec.variant,
            port,
        )
        return inst

    async def stop(self, inst: Instance, grace: float) -> None:
        """``<engine> stop -t grace`` (SIGTERM, then SIGKILL), wait for the run process (kill
        it as a last resort), then remove whatever is left of the container."""
        self.instances.discard(inst)
        engine = self.finder.find()
        name = container_name(inst.spec)
        if inst.exited() is None:
            await asyncio.to_thread(
                _engine_command, engine.stop_argv(name, grace), grace + ENGINE_COMMAND_TIMEOUT_S
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(inst.process.wait, 10.0)
        if inst.exited() is None:
            signal_group(inst.process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(inst.process.wait, 5.0)
        await asyncio.to_thread(_engine_command, engine.rm_argv([name]), ENGINE_COMMAND_TIMEOUT_S)
        # `rm --ignore` returns at once while the run process's own --rm cleanup is still
        # removing the container: a deleted endpoint must leave nothing, so wait for it.
        await asyncio.to_thread(_wait_removed, engine, name)

    def kill_all(self) -> None:
        """Last resort at exit: remove every container still known, then kill the run
        processes."""
        if not self.instances:
            return
        with contextlib.suppress(NoEngine):
            engine = self.finder.find()
            names = [container_name(i.spec) for i in self.instances]
            _engine_command(engine.rm_argv(names), ENGINE_COMMAND_TIMEOUT_S)
        for inst in self.instances:
            if inst.exited() is None:
                signal_group(inst.process, signal.SIGKILL)
        self.instances.clear()


def _wait_removed(engine: Engine, name: str, timeout: float = REMOVAL_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    for attempt in range(REMOVAL_CHECKS):
        try:
            done = subprocess.run(
                engine.exists_argv(name), capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("checking that container %s is gone failed: %s", name, exc)
            return
        if done.returncode == 0 and name not in done.stdout.split():
            return
        if time.monotonic() > deadline:
            break
        if attempt % 10 == 9:  # still there after a while: ask again
            _engine_command(engine.rm_argv([name]), ENGINE_COMMAND_TIMEOUT_S)
        time.sleep(0.1)
    log.warning("container %s was still listed %.0f s after its removal", name, timeout)


def _engine_command(argv: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", " ".join(argv[:4]), exc)
        return
    if done.returncode != 0 and "no such container" not in done.stderr.lower():
        log.warning("%s: %s", " ".join(argv[:4]), done.stderr.strip()[-500:])


def _physical_mib() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError):
        return 1 << 30
