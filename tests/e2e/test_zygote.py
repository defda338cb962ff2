"""The zygote: built-in model servers forked from a process that imported their frameworks
already (runtime/zygote.py, backends/zygote.py), with the life a fresh process would have."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelhost.backends.local import Instance, InstanceSpec, LocalBackend
from modelhost.backends.zygote import ZygoteChild
from modelhost.instance_types import Profile
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _wait_until(condition: Callable[[], object], timeout: float) -> None:
    wait_for(condition, timeout, interval=0.01)


@pytest.fixture
def backend(tmp_path: Path) -> object:
    exited: list[str] = []
    backend = LocalBackend(gpu_count=0, on_exit=lambda inst: exited.append(inst.instance_id))
    backend.exited_ids = exited  # type: ignore[attr-defined]
    backend.start_zygote(tmp_path / "zygote.log")
    zygote = backend.zygote
    assert zygote is not None
    _wait_until(lambda: zygote.ready, 60)
    yield backend
    backend.kill_all()
    assert zygote.gone


def _spec(tmp_path: Path, model: str, env: dict[str, str] | None = None) -> InstanceSpec:
    return InstanceSpec(
        "ep", "v", FIXTURES / model, env or {}, None, Profile(1, 2.0), tmp_path / "i.log"
    )


ENV_MODEL = """
import json, os, numpy
def model_fn(model_dir):
    return None
def transform_fn(model, data, content_type, accept):
    answer = {"greeting": os.environ.get("GREETING"), "cwd": os.getcwd(),
              "draw": float(numpy.random.random())}
    return json.dumps(answer), "application/json"
"""


def _invoke(inst: Instance) -> dict[str, object]:
    path = inst.address.unix_path
    assert path is not None
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(10)
        conn.connect(path)
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}"
        )
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    answer: dict[str, object] = json.loads(body)
    return answer


def test_instances_are_forked_and_serve(backend: LocalBackend, tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "inference.py").write_text(ENV_MODEL)
    spec = InstanceSpec(
        "ep", "v", model, {"GREETING": "hello"}, None, Profile(1, 2.0), tmp_path / "i.log"
    )

    async def run() -> list[Instance]:
        two = [backend.start(spec), backend.start(dataclasses.replace(spec, instance_id="i-2"))]
        for inst in two:
            await backend.wait_ready(inst, 30)
        return two

    first, second = asyncio.run(run())
    for inst in (first, second):
        assert isinstance(inst.process, ZygoteChild)
        assert backend.zygote is not None and backend.zygote._process is not None
        assert _ppid(inst.process.pid) == backend.zygote._process.pid
        assert os.getpgid(inst.process.pid) == inst.process.pid  # its own group, as Popen's
        assert os.sched_getaffinity(inst.process.pid) == set(
            sorted(os.sched_getaffinity(0))[:1]
        )  # the instance type's one vCPU
    one, two = _invoke(first), _invoke(second)
    assert one["greeting"] == two["greeting"] == "hello"  # its own environment
    assert one["cwd"] == str(model)
    assert one["draw"] != two["draw"]  # numpy's random state is each one's own
    asyncio.run(backend.stop(first, 10))
    asyncio.run(backend.stop(second, 10))
    assert first.process.poll() == 0  # SIGTERM: the server finished and exited cleanly
    assert backend.exited_ids == []  # type: ignore[attr-defined]


def test_a_killed_instance_is_reported_with_its_status(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async def run() -> Instance:
        inst = backend.start(_spec(tmp_path, "echo"))
        await backend.wait_ready(inst, 30)
        os.killpg(inst.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not backend.exited_ids and time.monotonic() < deadline:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        return inst

    inst = asyncio.run(run())
    assert backend.exited_ids == [inst.instance_id]  # type: ignore[attr-defined]
    _wait_until(lambda: inst.process.poll() is not None, 10)
    assert inst.process.poll() == -signal.SIGKILL


def test_a_model_that_fails_to_load_says_why(backend: LocalBackend, tmp_path: Path) -> None:
    async def run() -> str:
        inst = backend.start(_spec(tmp_path, "badimport"))
        try:
            await backend.wait_ready(inst, 30)
        except Exception as exc:
            return str(exc)
        finally:
            await backend.stop(inst, 5)
        return "started"

    why = asyncio.run(run())
    assert "exited with status 1" in why
    assert "modelhost.runtime:" in why  # the log's last line: the cause


def test_an_environment_that_changes_imports_starts_afresh(
    backend: LocalBackend, tmp_path: Path
) -> None:
    async def run() -> Instance:
        inst = backend.start(_spec(tmp_path, "echo", {"PYTHONPATH": str(tmp_path)}))
        await backend.wait_ready(inst, 60)
        return inst

    inst = asyncio.run(run())
    assert not isinstance(inst.process, ZygoteChild)
    asyncio.run(backend.stop(inst, 10))


def test_instances_die_with_the_zygote(backend: LocalBackend, tmp_path: Path) -> None:
    async def run() -> Instance:
        inst = backend.start(_spec(tmp_path, "echo"))
        await backend.wait_ready(inst, 30)
        return inst

    inst = asyncio.run(run())
    assert backend.zygote is not None and backend.zygote._process is not None
    backend.zygote._process.kill()
    _wait_until(lambda: inst.process.poll() is not None, 15)
    _wait_until(lambda: backend.zygote is not None and not backend.zygote.ready, 5)
    # a later start falls back to a fresh interpreter
    later = asyncio.run(_start(backend, _spec(tmp_path, "echo")))
    assert not isinstance(later.process, ZygoteChild)
    asyncio.run(backend.stop(later, 10))


async def _start(backend: LocalBackend, spec: InstanceSpec) -> Instance:
    inst = backend.start(spec)
    await backend.wait_ready(inst, 60)
    return inst
