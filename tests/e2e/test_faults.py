"""Faults and load with real processes (issue 14, "nothing lost"): back-pressure on a saturated
variant, a hung instance, the server killed with SIGKILL and restarted, a write failing while
model data is unpacked. An instance killed mid-request: test_lifecycle.py
(test_requests_in_flight_when_an_instance_dies_are_answered, test_killed_instance_is_replaced,
test_killed_instance_loses_no_invocation)."""

from __future__ import annotations

import http.client
import os
import resource
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.procs import instance_pids
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, pack, unique, wait_status

pytestmark = pytest.mark.e2e


def _poll(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


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
