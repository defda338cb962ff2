"""Endpoint lifecycle with real instance processes: update without failed invocations,
in-place capacity changes, failure reasons, restart survival, instance replacement (a dead
instance noticed at once), deletion."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelhost.backends.exits import watch_exit
from modelhost.backends.local import InstanceSpec, LocalBackend
from modelhost.instance_types import Profile
from tests.e2e.procs import instance_env, instance_pids, wait_zygote
from tests.fixtures.server import (
    FIXTURE_MODELS,
    LiveServer,
    deploy,
    pack,
    unique,
    wait_gone,
    wait_status,
)
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e


def _poll(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    wait_for(predicate, timeout, what)


CLIENTS = 8
SLOW_LOAD_S = 120  # a model_fn this slow is stopped by DeleteEndpoint, not waited for
SLOW_SLEEP_S = 60  # a request this slow on an instance that dies is answered at once


def test_update_endpoint_loses_no_invocation(server: LiveServer) -> None:
    """Eight clients at once through a blue/green update: no error, every answer is the right
    one for its own request (from the old model or the new), and a client never goes back to the
    old fleet once the new one answered it."""
    sm = server.client("sagemaker")
    name = unique("bluegreen")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    sm.create_model(
        ModelName=f"{name}-v2", PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / "sum")}
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-v2",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-v2",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 2,
            }
        ],
    )
    errors: list[Exception] = []
    # per client: (request body, answer body) in order
    seen: list[list[tuple[bytes, bytes]]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def hammer(index: int) -> None:
        client = server.client("sagemaker-runtime")
        deadline = time.monotonic() + 60
        for n in range(100_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            body = b"[%d, %d]" % (index, n)
            try:
                out = client.invoke_endpoint(
                    EndpointName=name, Body=body, ContentType="application/json"
                )
                seen[index].append((body, out["Body"].read()))
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()

    def answered() -> int:
        return sum(map(len, seen))

    try:
        _poll(lambda: answered() > 40, what="traffic before the update")
        sm.update_endpoint(EndpointName=name, EndpointConfigName=f"{name}-v2")
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "Updating"
        desc = wait_status(sm, name, {"InService", "Failed"})
        after = answered()
        _poll(lambda: answered() > after + 40, what="traffic on the new fleet")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert desc["EndpointConfigName"] == f"{name}-v2"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    old = new = 0
    for index, answers in enumerate(seen):
        switched = False
        for body, answer in answers:
            a, b = index, int(body.split(b",")[1].rstrip(b"]"))
            if answer == body:  # the old fleet (echo) answered this very request
                assert not switched, f"client {index}: the old fleet answered after the new one"
                old += 1
            else:  # the new fleet (sum) answered this very request
                assert answer == b'{"sum": %.1f}' % (a + b), (body, answer)
                switched, new = True, new + 1
    assert old > 0 and new > 0
    assert all(seen)  # every client was answered


def test_capacity_changes_in_place(server: LiveServer) -> None:
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = unique("capacity")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    desc = wait_status(sm, name, {"InService"})
    variant = desc["ProductionVariants"][0]
    assert (variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]) == (3, 3)
    logs = list((server.data_dir / "logs" / name / "AllTraffic").glob("*.log"))
    assert len(logs) == 3
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name,
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}],
    )
    desc = wait_status(sm, name, {"InService"})
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert rt.invoke_endpoint(EndpointName=name, Body=b"still here")["Body"].read() == b"still here"


def test_import_error_fails_with_log_lines(server: LiveServer) -> None:
    sm = server.client("sagemaker")
    name = unique("badimport")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "badimport"))
    assert desc["EndpointStatus"] == "Failed"
    assert "No module named" in desc["FailureReason"]
    assert "exited with status 1" in desc["FailureReason"]


def test_bad_archive_fails_with_reason(server: LiveServer, tmp_path: Path) -> None:
    sm = server.client("sagemaker")
    bogus = tmp_path / "model.tar.gz"
    bogus.write_bytes(b"this is not a tarball")
    name = unique("badarchive")
    desc = deploy(sm, name, str(bogus))
    assert desc["EndpointStatus"] == "Failed"
    assert "not a valid" in desc["FailureReason"]


def test_ping_never_healthy_fails_with_timeout(own_server: LiveServer, tmp_path: Path) -> None:
    own_server.env["MODELHOST_STARTUP_HEALTH_TIMEOUT_S"] = "2"
    own_server.start()
    serve = tmp_path / "byo" / "serve"
    serve.parent.mkdir()
    serve.write_text("#!/bin/sh\necho 'byo: starting but never listening'\nexec sleep 600\n")
    serve.chmod(serve.stat().st_mode | stat.S_IEXEC)
    sm = own_server.client("sagemaker")
    name = unique("noping")
    desc = deploy(sm, name, None, image=str(serve.parent))
    assert desc["EndpointStatus"] == "Failed"
    assert "/ping health check within 2 s" in desc["FailureReason"]
    assert "never listening" in desc["FailureReason"]
    _poll(lambda: not _alive_children("sleep 600"), what="the BYO process to be stopped")


def _alive_children(needle: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle.encode() in Path(f"/proc/{entry}/cmdline").read_bytes().replace(
                    b"\0", b" "
                ):
                    out.append(int(entry))
            except OSError:
                pass
    return out


def test_killed_instance_is_replaced(own_server: LiveServer) -> None:
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("heal")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    [pid] = instance_pids(own_server.data_dir)
    os.kill(pid, signal.SIGKILL)
    _poll(
        lambda: (
            len(instance_pids(own_server.data_dir)) == 1
            and instance_pids(own_server.data_dir) != [pid]
        ),
        what="a replacement instance",
    )
    _poll(lambda: _invoke_ok(rt, name), what="invocations to succeed again")
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1


def _invoke_ok(rt: Any, name: str) -> bool:
    try:
        return bool(rt.invoke_endpoint(EndpointName=name, Body=b"ok")["Body"].read() == b"ok")
    except Exception:
        return False


def test_state_survives_restart_and_stop_leaves_no_orphans(
    own_server: LiveServer, tmp_path: Path
) -> None:
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("restart")
    archive = pack(FIXTURE_MODELS / "sum", tmp_path / "model.tar.gz")
    assert deploy(sm, name, str(archive), count=2)["EndpointStatus"] == "InService"
    assert len(instance_pids(own_server.data_dir)) == 2
    sm.delete_model(ModelName=name)  # the endpoint keeps what it was deployed with
    sm.delete_endpoint_config(EndpointConfigName=name)  # ... its config too
    archive.unlink()  # ... even when its model data is gone
    assert own_server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert instance_pids(own_server.data_dir) == []
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    _poll(lambda: _sum_ok(rt, name), what="the endpoint to serve after a restart")
    desc = sm.describe_endpoint(EndpointName=name)
    assert (desc["EndpointStatus"], desc["EndpointConfigName"]) == ("InService", name)
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    own_server.stop(signal.SIGINT)
    assert instance_pids(own_server.data_dir) == []


def _sum_ok(rt: Any, name: str) -> bool:
    try:
        out = rt.invoke_endpoint(EndpointName=name, Body=b"[2, 2]", ContentType="application/json")
        return bool(out["Body"].read() == b'{"sum": 4.0}')
    except Exception:
        return False


def test_delete_stops_every_instance(own_server: LiveServer) -> None:
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("delete")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"), count=2)["EndpointStatus"] == "InService"
    assert len(instance_pids(own_server.data_dir)) == 2
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    wait_gone(sm, name)
    assert instance_pids(own_server.data_dir) == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_failed_update_rolls_back_and_keeps_serving(server: LiveServer) -> None:
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = unique("rollback")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    bad = f"{name}-bad"
    sm.create_model(
        ModelName=bad, PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / "badimport")}
    )
    sm.create_endpoint_config(
        EndpointConfigName=bad,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": bad,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.update_endpoint(EndpointName=name, EndpointConfigName=bad)
    _poll(lambda: sm.describe_endpoint(EndpointName=name).get("FailureReason"), what="rollback")
    desc = wait_status(sm, name, {"InService"})
    assert desc["EndpointConfigName"] == name
    assert desc["FailureReason"].startswith("Update failed")
    assert "No module named" in desc["FailureReason"]
    assert rt.invoke_endpoint(EndpointName=name, Body=b"alive")["Body"].read() == b"alive"


def test_instance_type_sets_threads_and_memory_limit(own_server: LiveServer) -> None:
    own_server.start()
    wait_zygote(own_server.log_path)  # a forked instance gets its limits too
    sm = own_server.client("sagemaker")
    name = unique("limits")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "environ"), instance_type="ml.t2.medium")
    assert desc["EndpointStatus"] == "InService"
    [pid] = instance_pids(own_server.data_dir)
    rt = own_server.client("sagemaker-runtime")
    seen = instance_env(rt, name, ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"])
    threads = str(min(2, len(os.sched_getaffinity(0))))
    assert seen[pid] == {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(row for row in limits.splitlines() if row.startswith("Max address space"))
    assert line.split()[3] == str(4 * 2**30)


def test_delete_during_a_slow_start_stops_it_at_once(
    own_server: LiveServer, tmp_path: Path
) -> None:
    own_server.start()
    sm = own_server.client("sagemaker")
    model_dir = tmp_path / "slowload"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(
        f"import time\n\ndef model_fn(model_dir):\n    time.sleep({SLOW_LOAD_S})\n\n"
        "def transform_fn(model, data, content_type, accept):\n    return data\n"
    )
    name = unique("slowload")
    deploy(sm, name, str(model_dir), wait=False)
    _poll(lambda: len(instance_pids(own_server.data_dir)) == 1, what="the instance to start")
    started = time.monotonic()
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name, timeout=30)
    assert time.monotonic() - started < SLOW_LOAD_S / 4  # stopped, not waited for
    _poll(lambda: instance_pids(own_server.data_dir) == [], what="the instance to be stopped")


def test_requests_in_flight_when_an_instance_dies_are_answered(own_server: LiveServer) -> None:
    """The hot path runs on callbacks: every request must still get exactly one answer when
    its instance dies under it (the one being served and the ones queued behind it)."""
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    name = unique("dies")
    assert deploy(sm, name, str(FIXTURE_MODELS / "slow"))["EndpointStatus"] == "InService"
    [pid] = instance_pids(own_server.data_dir)
    outcomes: list[str] = []

    def call() -> None:
        try:
            rt.invoke_endpoint(
                EndpointName=name, Body=str(SLOW_SLEEP_S).encode(), ContentType="text/plain"
            )
            outcomes.append("answered")
        except rt.exceptions.ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=call, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    logs = own_server.data_dir / "logs" / name
    _poll(
        lambda: any(f"slow: sleeping {SLOW_SLEEP_S}" in p.read_text() for p in logs.rglob("*.log")),
        what="the instance to be serving the first request",
    )
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a request got no answer"
    # relative to what a hang would cost: the 60 s sleep (or the invocation timeout, as long)
    assert time.monotonic() - started < SLOW_SLEEP_S / 2
    assert len(outcomes) == 3
    assert set(outcomes) <= {"ModelError", "ModelNotReadyException"}, outcomes


WRITER = """import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "data.txt"), "a") as fh:  # in place, an existing file
        fh.write(f"{os.getpid()}\\n")
    with open(os.path.join(model_dir, "created.txt"), "w") as fh:
        fh.write("mine")
    return model_dir


def transform_fn(model_dir, data, content_type, accept):
    with open(os.path.join(model_dir, "data.txt")) as fh:
        return fh.read(), "text/plain"
"""


def test_each_instance_writes_to_its_own_model_directory(
    own_server: LiveServer, tmp_path: Path
) -> None:
    """As on SageMaker, where every instance has its own /opt/ml/model: what one instance's
    code writes there is not seen by another, nor by a later deployment of the same data."""
    own_server.start()
    sm, rt = own_server.client("sagemaker"), own_server.client("sagemaker-runtime")
    model_dir = tmp_path / "writer"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(WRITER)
    (model_dir / "data.txt").write_text("base\n")
    archive = pack(model_dir, tmp_path / "writer.tar.gz")
    first = unique("writer")
    desc = deploy(sm, first, str(archive), count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pids = set(instance_pids(own_server.data_dir))
    assert len(pids) == 2
    seen = set()
    for _ in range(40):  # least-in-flight with rotating ties reaches both instances
        body = rt.invoke_endpoint(EndpointName=first, Body=b"x")["Body"].read().decode()
        lines = body.splitlines()
        assert lines[0] == "base" and len(lines) == 2, body  # its own write only
        seen.add(int(lines[1]))
        if seen == pids:
            break
    assert seen == pids
    copies = own_server.data_dir / "instances"
    assert len(list(copies.iterdir())) == 2

    sm.delete_endpoint(EndpointName=first)
    wait_gone(sm, first)
    _poll(lambda: not any(copies.iterdir()), what="the instances' copies to be removed")
    second = unique("writer")
    assert deploy(sm, second, str(archive))["EndpointStatus"] == "InService"
    body = rt.invoke_endpoint(EndpointName=second, Body=b"x")["Body"].read().decode()
    assert len(body.splitlines()) == 2, body  # the cached model data was never written to


CLIENTS = 16
PER_CLIENT_MAX = 2000  # each client's loop is bounded in count as well as in time


def test_killed_instance_loses_no_invocation(own_server: LiveServer) -> None:
    """SIGKILL one of two instances under 16 concurrent clients: the dead one leaves the route
    at once, the requests queued behind it go to the live one (no error at all, not even a
    "no instance ready"), and the endpoint heals back to two instances."""
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("killed")
    desc = deploy(sm, name, str(FIXTURE_MODELS / "echo"), count=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pids = instance_pids(own_server.data_dir)
    assert len(pids) == 2
    load = _Load(own_server, name)
    load.start()
    try:
        _poll(lambda: load.answered() > 300, what="traffic on both instances")
        before = load.answered()
        os.killpg(pids[0], signal.SIGKILL)  # each instance leads its own process group
        _poll(lambda: load.answered() > before + 1000, what="traffic after the kill")
    finally:
        load.stop()
    assert load.errors == [], load.errors[:5]
    _poll(lambda: _heals_to(sm, own_server.data_dir, name, pids[0]), what="a replacement")


def _heals_to(sm: Any, data_dir: Path, name: str, killed: int) -> bool:
    running = instance_pids(data_dir)
    variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
    return len(running) == 2 and killed not in running and variant["CurrentInstanceCount"] == 2


class _Load:
    """CLIENTS threads, each invoking in a loop on its own keep-alive connection."""

    def __init__(self, server: LiveServer, endpoint: str) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.path = f"/endpoints/{endpoint}/invocations"
        self.counts = [0] * CLIENTS
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def answered(self) -> int:
        return sum(self.counts)

    def _client(self, index: int) -> None:
        conn = http.client.HTTPConnection(*self.address, timeout=30)
        deadline = time.monotonic() + 120
        try:
            for n in range(PER_CLIENT_MAX):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                body = b"%d-%d" % (index, n)
                if self._invoke(conn, body):
                    self.counts[index] += 1
        finally:
            conn.close()

    def _invoke(self, conn: http.client.HTTPConnection, body: bytes) -> bool:
        try:
            conn.request("POST", self.path, body, {"Content-Type": "text/plain"})
            answer = conn.getresponse()
            payload = answer.read()
        except OSError as exc:
            self.errors.append(f"{body!r}: {exc!r}")
            conn.close()
            return False
        if answer.status != 200 or payload != body:
            self.errors.append(f"{body!r}: {answer.status} {payload[:200]!r}")
            return False
        return True


# -- noticing an exit at once (backends/exits.py) --------------------------------------------


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling"])
def test_exit_is_noticed_once(pidfd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)

    async def run() -> None:
        exited = asyncio.Event()
        calls: list[int | None] = []

        def on_exit() -> None:
            calls.append(process.poll())
            exited.set()

        process = subprocess.Popen(["sleep", "60"])
        try:
            cancel = watch_exit(process, on_exit)
            process.kill()
            await asyncio.wait_for(exited.wait(), 10)
            cancel()  # after the call: harmless
        finally:
            process.kill()
            process.wait(10)
        assert calls == [-signal.SIGKILL]

    asyncio.run(run())


def test_backend_reports_an_exit_but_not_a_stop(tmp_path: Path) -> None:
    serve = tmp_path / "byo" / "serve"
    serve.parent.mkdir()
    serve.write_text("#!/bin/sh\nexec sleep 600\n")
    serve.chmod(serve.stat().st_mode | stat.S_IEXEC)
    exited: list[str] = []
    backend = LocalBackend(gpu_count=0, on_exit=lambda inst: exited.append(inst.instance_id))

    def spec() -> InstanceSpec:
        return InstanceSpec(
            "ep", "v", tmp_path, {}, str(serve.parent), Profile(1, 1.0), tmp_path / "i.log"
        )

    async def run() -> None:
        stopped, killed = backend.start(spec()), backend.start(spec())
        await backend.stop(stopped, 5.0)
        os.killpg(killed.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not exited and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await backend.stop(killed, 5.0)
        assert exited == [killed.instance_id]
        assert backend.instances == set()

    try:
        asyncio.run(run())
    finally:
        backend.kill_all()
