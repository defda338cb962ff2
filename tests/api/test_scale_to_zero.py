"""Serverless variants scale to zero when idle (MODELHOST_SERVERLESS_IDLE_S) and back on the
next request, which is held until an instance is ready and answered, never dropped; a variant
with ProvisionedConcurrency stays warm. The endpoint stays InService throughout."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import LiveServer, deploy, unique

pytestmark = pytest.mark.api

PID_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "pid"
IDLE_S = 1.0


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {"MODELHOST_SERVERLESS_IDLE_S": str(IDLE_S)}
    with LiveServer(tmp_path_factory.mktemp("scale-to-zero"), env=env) as live:
        yield live


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def _serverless(sm: Any, provisioned: int | None = None) -> str:
    name = unique("ep-zero")
    config: dict[str, Any] = {"MemorySizeInMB": 1024, "MaxConcurrency": 4}
    if provisioned is not None:
        config["ProvisionedConcurrency"] = provisioned
    variants = [{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": config}]
    desc = deploy(sm, name, str(PID_MODEL), variants=variants)
    assert desc["EndpointStatus"] == "InService", desc
    return name


def _pid(rt: Any, name: str, body: bytes = b"x") -> int:
    out = rt.invoke_endpoint(EndpointName=name, Body=body, ContentType="text/plain")
    answer: int = json.loads(out["Body"].read())["pid"]
    return answer


def _wait_dead(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"instance process {pid} still runs"
        time.sleep(0.05)


def test_idle_variant_scales_to_zero_and_the_next_request_waits_for_it(
    idle_server: LiveServer,
) -> None:
    sm, rt = idle_server.client("sagemaker"), idle_server.client("sagemaker-runtime")
    name = _serverless(sm)
    first = _pid(rt, name)
    _wait_dead(first, 30)  # idle for IDLE_S: its instance was stopped
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"

    # Requests at zero are held, one instance starts, and every one is answered.
    with ThreadPoolExecutor(3) as pool:
        pids = list(pool.map(lambda _: _pid(rt, name), range(3)))
    assert len(set(pids)) == 1 and pids[0] != first
    assert "started from zero" in idle_server.log_tail(200)
    with urllib.request.urlopen(f"{idle_server.url}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    setup = [
        line for line in metrics.splitlines() if line.startswith("sagemaker_ModelSetupTime_count")
    ]
    assert any(name in line and line.endswith(" 1.0") for line in setup), setup
    metered = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("modelhost_ServerlessComputeGBSeconds_total") and name in line
    ]
    assert metered and 0 < metered[0] < 60, metered  # 1 GB x the model's busy seconds
    assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"

    # Busy is not idle: a request that outlasts IDLE_S keeps the instance.
    assert _pid(rt, name, str(IDLE_S * 2).encode()) == pids[0]
    assert _pid(rt, name) == pids[0]

    # InvokeEndpointWithResponseStream at zero waits the same way.
    _wait_dead(pids[0], 30)
    out = rt.invoke_endpoint_with_response_stream(
        EndpointName=name, Body=b"x", ContentType="text/plain"
    )
    data = b"".join(e["PayloadPart"]["Bytes"] for e in out["Body"] if "PayloadPart" in e)
    assert json.loads(data)["pid"] not in (first, pids[0])
    sm.delete_endpoint(EndpointName=name)


def test_provisioned_concurrency_stays_warm(idle_server: LiveServer) -> None:
    sm, rt = idle_server.client("sagemaker"), idle_server.client("sagemaker-runtime")
    warm = _serverless(sm, provisioned=1)
    cold = _serverless(sm)
    warm_pid, cold_pid = _pid(rt, warm), _pid(rt, cold)
    _wait_dead(cold_pid, 30)  # the other one's idle time passed meanwhile
    assert _alive(warm_pid)
    assert _pid(rt, warm) == warm_pid
    sm.delete_endpoint(EndpointName=warm)
    sm.delete_endpoint(EndpointName=cold)
