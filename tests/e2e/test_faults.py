"""Faults and load with real processes (issue 14, "nothing lost"): back-pressure on a saturated
variant, a hung instance, the server killed with SIGKILL and restarted, a write failing while
model data is unpacked. An instance killed mid-request: test_lifecycle.py
(test_requests_in_flight_when_an_instance_dies_are_answered, test_killed_instance_is_replaced,
test_killed_instance_loses_no_invocation)."""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import instance_pids
from tests.fixtures.seaweed import S3Server
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


def _post(
    server: LiveServer, endpoint: str, body: bytes, content_type: str = "text/plain"
) -> tuple[int, str, bytes, float]:
    """One InvokeEndpoint over raw HTTP (no client retries): status, error type, body, s."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    started = time.monotonic()
    try:
        conn.request(
            "POST", f"/endpoints/{endpoint}/invocations", body, {"Content-Type": content_type}
        )
        answer = conn.getresponse()
        payload = answer.read()
        code = answer.getheader("x-amzn-errortype") or ""
        return answer.status, code.split(":")[0], payload, time.monotonic() - started
    finally:
        conn.close()


HOLD_S = 1.5


def test_saturated_variant_is_throttled_at_once(own_server: LiveServer) -> None:
    """Two instances, at most 2 requests each: of 8 at once, 4 are served and 4 get
    ThrottlingException (400) at once, not after the ones ahead of them."""
    own_server.env["MODELHOST_MAX_REQUESTS_PER_INSTANCE"] = "2"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("full")
    assert deploy(sm, name, str(FIXTURE_MODELS / "slow"), count=2)["EndpointStatus"] == "InService"
    results: list[tuple[int, str, bytes, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client() -> None:
        barrier.wait(10)
        got = _post(own_server, name, str(HOLD_S).encode())
        with lock:
            results.append(got)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8
    served = [r for r in results if r[0] == 200]
    throttled = [r for r in results if r[:2] == (400, "ThrottlingException")]
    assert len(served) == 4 and len(throttled) == 4, [r[:3] for r in results]
    assert b"limit per instance" in throttled[0][2]
    # refused at once: well before the first served request (HOLD_S) came back
    assert max(r[3] for r in throttled) < min(r[3] for r in served) / 2
    assert _post(own_server, name, b"0")[0] == 200  # room again once they are answered


HANG = """import os
import signal


def model_fn(model_dir):
    return None


def transform_fn(model, data, content_type, accept):
    if data in (b"hang", "hang"):
        os.kill(os.getpid(), signal.SIGSTOP)  # hung: no /ping, no answer, process alive
    return f"pid {os.getpid()}", "text/plain"
"""


def test_hung_instance_times_out_and_is_replaced(own_server: LiveServer, tmp_path: Path) -> None:
    own_server.env["MODELHOST_INVOCATION_TIMEOUT_S"] = "2"
    own_server.env["MODELHOST_HEALTH_CHECK_INTERVAL_S"] = "0.5"
    own_server.start()
    sm = own_server.client("sagemaker")
    model_dir = tmp_path / "hang"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(HANG)
    name = unique("hang")
    assert deploy(sm, name, str(model_dir))["EndpointStatus"] == "InService"
    [pid] = instance_pids(own_server.data_dir)
    status, code, body, took = _post(own_server, name, b"hang")
    assert (status, code) == (424, "ModelError"), body
    assert b"timed out" in body and took < 10
    _poll(
        lambda: instance_pids(own_server.data_dir) not in ([], [pid]),
        what="the hung instance to be replaced",
    )
    assert pid not in instance_pids(own_server.data_dir)
    _poll(lambda: _post(own_server, name, b"x")[0] == 200, what="the new instance to serve")
    assert _post(own_server, name, b"x")[2] != f"pid {pid}".encode()
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointStatus"] == "InService"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1


def test_server_killed_and_restarted(own_server: LiveServer) -> None:
    """SIGKILL the server: its instances go with it (no orphan), the state database is
    intact, and a new server on the same data directory brings every endpoint back."""
    own_server.start()
    sm = own_server.client("sagemaker")
    echo, total = unique("crash-echo"), unique("crash-sum")
    assert deploy(sm, echo, str(FIXTURE_MODELS / "echo"), count=2)["EndpointStatus"] == "InService"
    assert deploy(sm, total, str(FIXTURE_MODELS / "sum"))["EndpointStatus"] == "InService"
    assert len(instance_pids(own_server.data_dir)) == 3
    assert own_server.stop(signal.SIGKILL) == -signal.SIGKILL
    _poll(lambda: instance_pids(own_server.data_dir) == [], what="no orphan instance")
    with sqlite3.connect(own_server.data_dir / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    own_server.start()
    sm = own_server.client("sagemaker")
    for name, count in ((echo, 2), (total, 1)):
        desc = wait_status(sm, name, {"InService", "Failed"}, timeout=60)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == count
    assert _post(own_server, echo, b"back")[:3] == (200, "", b"back")
    assert _post(own_server, total, b"[1, 2]", "application/json")[2] == b'{"sum": 3.0}'
    assert len(instance_pids(own_server.data_dir)) == 3
    own_server.stop()
    assert instance_pids(own_server.data_dir) == []


FILE_LIMIT = 2 * 1024 * 1024


def test_write_failure_while_unpacking_fails_the_endpoint(
    own_server: LiveServer, tmp_path: Path
) -> None:
    """A write that fails while model data is unpacked (a full disk; simulated with the
    server's RLIMIT_FSIZE, which fails the write as ENOSPC does, with EFBIG): the endpoint
    fails with the cause, nothing half-written is kept, and once there is room the same
    model deploys."""
    own_server.start()
    assert own_server.process is not None
    sm = own_server.client("sagemaker")
    model_dir = tmp_path / "big"
    shutil.copytree(FIXTURE_MODELS / "echo", model_dir)
    (model_dir / "weights.bin").write_bytes(os.urandom(3 * FILE_LIMIT))
    archive = pack(model_dir, tmp_path / "big.tar.gz")
    cache = own_server.data_dir / "cache"
    pid = own_server.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (FILE_LIMIT, hard))
    try:
        name = unique("full-disk")
        desc = deploy(sm, name, str(archive))
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert desc["EndpointStatus"] == "Failed"
    assert "File too large" in desc["FailureReason"], desc["FailureReason"]
    assert list((cache / "models").iterdir()) == []  # nothing half-written kept
    assert list((cache / "tmp").iterdir()) == []
    again = unique("full-disk")
    desc = deploy(sm, again, str(archive))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    [built] = list((cache / "models").iterdir())
    assert (built / "weights.bin").stat().st_size == 3 * FILE_LIMIT


class _Relay:
    """A TCP relay to the object store that can be unplugged (its port then refuses
    connections: the store is unreachable) and plugged in again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.plug()

    def plug(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        self._spawn(self._accept, listener)

    def unplug(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept() under way (Linux)
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()  # new connections are refused
            self.listener = None
        for conn in self.conns:  # and the open ones (the client's keep-alive pool) cut
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(100_000):
            try:
                client, _ = listener.accept()
            except OSError:
                return  # unplugged
            upstream = socket.create_connection(self.target, timeout=30)
            self.conns += (client, upstream)
            self._spawn(_pump, client, upstream)
            self._spawn(_pump, upstream, client)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        for _ in range(10_000_000):
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_unreachable_object_store_fails_with_reason_then_works(
    own_server: LiveServer, s3_server: S3Server, tmp_path: Path
) -> None:
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    relay = _Relay((host, int(port)))
    try:
        bucket = unique("models").lower()
        s3 = s3_server.client()
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(
            str(pack(FIXTURE_MODELS / "echo", tmp_path / "m.tar.gz")), bucket, "m.tar.gz"
        )
        own_server.env |= {
            "MODELHOST_S3_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
            "MODELHOST_S3_ACCESS_KEY_ID": s3_server.access_key,
            "MODELHOST_S3_SECRET_ACCESS_KEY": s3_server.secret_key,
            "MODELHOST_REGION": s3_server.region,
        }
        own_server.start()
        sm = own_server.client("sagemaker")
        name = unique("nostore")
        url = f"s3://{bucket}/m.tar.gz"
        sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": url})  # checked: there
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        relay.unplug()
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        desc = wait_status(sm, name, {"InService", "Failed"}, timeout=90)
        assert desc["EndpointStatus"] == "Failed"
        reason = desc["FailureReason"]
        assert url in reason and "Could not connect" in reason, reason
        relay.plug()
        sm.delete_endpoint(EndpointName=name)
        wait_gone(sm, name)
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        desc = wait_status(sm, name, {"InService", "Failed"}, timeout=60)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        assert _post(own_server, name, b"stored")[:3] == (200, "", b"stored")
    finally:
        relay.unplug()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_instance_a_killed_server_left_is_stopped_by_the_next(
    own_server: LiveServer, tmp_path: Path
) -> None:
    """A hung (stopped) instance cannot act on the SIGTERM its server's death sends it: it
    outlives a SIGKILLed server; the next server on the data directory stops it."""
    own_server.env["MODELHOST_INVOCATION_TIMEOUT_S"] = "1"
    own_server.env["MODELHOST_HEALTH_CHECK_INTERVAL_S"] = "0"  # not replaced meanwhile
    own_server.start()
    sm = own_server.client("sagemaker")
    model_dir = tmp_path / "hang"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(HANG)
    name = unique("orphan")
    assert deploy(sm, name, str(model_dir))["EndpointStatus"] == "InService"
    [pid] = instance_pids(own_server.data_dir)
    assert _post(own_server, name, b"hang")[0] == 424  # timed out: the instance is stopped
    _poll(lambda: _state(pid) == "T", what="the instance to be stopped")
    own_server.stop(signal.SIGKILL)
    assert _state(pid) == "T"  # an orphan: alive, SIGTERM pending
    own_server.start()
    _poll(lambda: _state(pid) in ("", "Z"), what="the orphan to be stopped")
    sm = own_server.client("sagemaker")
    desc = wait_status(sm, name, {"InService", "Failed"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert _post(own_server, name, b"x")[0] == 200
    assert pid not in instance_pids(own_server.data_dir)
