"""Several ``modelhost serve`` processes on one PostgreSQL state store (a real server from
tests/fixtures/postgres.py): any of them answers the API and routes invocations, one runs the
controller, another takes over when it dies; HAProxy in front (docs/examples/haproxy.cfg)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.fixtures.postgres import PostgresServer
from tests.fixtures.server import FIXTURE_MODELS, LiveServer, deploy, free_port, unique

pytestmark = pytest.mark.e2e

LEASE_S = 2.0
HAPROXY_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "haproxy.cfg"


@contextmanager
def two_routers(
    url: str, data: Path, extra: dict[str, str] | None = None, hosts: bool = False
) -> Iterator[list[LiveServer]]:
    """Two servers, each with its own data directory, on one database (``hosts``: each
    told it runs on a host of its own, ``host-a`` and ``host-b``)."""
    env = {
        "MODELHOST_STATE_URL": url,
        "MODELHOST_LEADER_LEASE_S": str(LEASE_S),
        "MODELHOST_ROUTE_POLL_INTERVAL_S": "0.2",
        **(extra or {}),
    }
    servers = [
        LiveServer(data / name, env=env | ({"MODELHOST_HOST_ID": f"host-{name}"} if hosts else {}))
        for name in ("a", "b")
    ]
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            if s.process is not None:
                s.stop()


@pytest.fixture(scope="module")
def shared_db(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def routers(shared_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LiveServer]]:
    """Two routers for the tests that leave both running (unique endpoint names)."""
    with two_routers(shared_db, tmp_path_factory.mktemp("routers")) as servers:
        yield servers


def leader(servers: list[LiveServer], url: str, timeout: float = 30.0) -> LiveServer:
    """The server holding the controller lease (its owner names its pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT owner, until FROM leases WHERE name = 'controller'"
            ).fetchone()
        if row is not None and row[1] > time.time():
            pid = int(str(row[0]).split(":")[1])
            for s in servers:
                assert s.process is not None
                if s.process.pid == pid and s.process.poll() is None:
                    return s
        time.sleep(0.1)
    raise AssertionError("no live server took the controller lease")


def invoke_until(rt: Any, name: str, body: bytes, timeout: float = 60.0) -> bytes:
    """Invoke until it succeeds (a server learns new routes within its poll interval)."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            out: bytes = rt.invoke_endpoint(EndpointName=name, Body=body)["Body"].read()
            return out
        except rt.exceptions.ClientError as exc:
            error = exc
        time.sleep(0.1)
    raise AssertionError(f"{name} did not answer within {timeout} s: {error}")


def invocations(server: LiveServer, endpoint: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = (
        rf'^sagemaker_Invocations_total\{{[^}}]*EndpointName="{re.escape(endpoint)}"[^}}]*\}} (\S+)'
    )
    return sum(float(m) for m in re.findall(pattern, text, re.M))


def test_create_on_one_router_invoke_through_the_other(
    routers: list[LiveServer], shared_db: str
) -> None:
    runner = leader(routers, shared_db)
    other = next(s for s in routers if s is not runner)
    name = unique("pg-echo")
    desc = deploy(other.client("sagemaker"), name, str(FIXTURE_MODELS / "echo"))
    assert desc["EndpointStatus"] == "InService"
    assert invoke_until(other.client("sagemaker-runtime"), name, b"via b") == b"via b"
    assert invoke_until(runner.client("sagemaker-runtime"), name, b"via a") == b"via a"
    names = [e["EndpointName"] for e in runner.client("sagemaker").list_endpoints()["Endpoints"]]
    assert name in names


def test_another_router_takes_over_when_the_controller_dies(
    postgres_url: str, tmp_path: Path
) -> None:
    with two_routers(postgres_url, tmp_path) as routers:
        kill_the_controller(routers, postgres_url)


def kill_the_controller(routers: list[LiveServer], postgres_url: str) -> None:
    runner = leader(routers, postgres_url)
    other = next(s for s in routers if s is not runner)
    sm, rt = other.client("sagemaker"), other.client("sagemaker-runtime")
    names = [unique("pg-keep"), unique("pg-keep")]
    for name in names:
        assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
        assert invoke_until(rt, name, b"before") == b"before"

    killed_at = time.monotonic()
    runner.stop(signal.SIGKILL)  # its instances die with it (PR_SET_PDEATHSIG)
    assert leader(routers, postgres_url, timeout=LEASE_S * 5) is other
    took_over_s = time.monotonic() - killed_at
    assert took_over_s < LEASE_S * 3, took_over_s

    for name in names:  # the new runner rebuilds every fleet, as after a restart
        assert invoke_until(rt, name, b"after", timeout=90) == b"after"
        deadline = time.monotonic() + 30
        while sm.describe_endpoint(EndpointName=name)["EndpointStatus"] != "InService":
            assert time.monotonic() < deadline, "not InService again"
            time.sleep(0.1)
    listed = {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}
    assert set(names) <= listed


@pytest.fixture
def haproxy(routers: list[LiveServer], tmp_path: Path) -> Iterator[str]:
    """HAProxy with docs/examples/haproxy.cfg, its ports replaced by this test's."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        pytest.fail("haproxy is not installed: run scripts/ensure-postgres.sh", pytrace=False)
    port = free_port()
    text = HAPROXY_CONFIG.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    text = text.replace("127.0.0.1:8765", f"127.0.0.1:{routers[0].port}")
    text = text.replace("127.0.0.1:8766", f"127.0.0.1:{routers[1].port}")
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    log = (tmp_path / "haproxy.log").open("ab")
    process = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "haproxy did not answer"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def test_two_routers_behind_haproxy(routers: list[LiveServer], haproxy: str) -> None:
    through = LiveServer(routers[0].data_dir, port=int(haproxy.rsplit(":", 1)[1]))
    sm, rt = through.client("sagemaker"), through.client("sagemaker-runtime")
    name = unique("pg-lb")
    assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
    assert invoke_until(rt, name, b"first") == b"first"
    for s in routers:  # both have read the route (the one not running the controller polls)
        assert invoke_until(s.client("sagemaker-runtime"), name, b"ready") == b"ready"
    before = [invocations(s, name) for s in routers]
    for i in range(40):  # new connections each time: leastconn spreads them over both
        body = f"hello {i}".encode()
        assert (
            through.client("sagemaker-runtime")
            .invoke_endpoint(EndpointName=name, Body=body)["Body"]
            .read()
            == body
        )
    counts = [invocations(s, name) - b for s, b in zip(routers, before, strict=True)]
    assert all(c > 0 for c in counts), counts  # through the balancer, both got some


# --- a router on another host ------------------------------------------------------------------

PID_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "pid"


def stored_ports(url: str, endpoint: str) -> list[int]:
    """The TCP ports of the endpoint's instances, as the controller's server stored them."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT variants FROM routes WHERE endpoint = %s", (endpoint.lower(),)
        ).fetchone()
    if row is None:
        return []
    return [i["port"] for v in row[0]["variants"] for i in v["instances"]]


def tcp_peer_ports(pid: int) -> set[int]:
    """The remote ports of the process's TCP connections (its socket inodes in /proc/net)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def routed(server: LiveServer, endpoint: str) -> float | None:
    """How many instances the server routes the endpoint's variants to (its /metrics)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = (
        rf'^sagemaker_CurrentInstanceCount\{{[^}}]*EndpointName="{re.escape(endpoint)}"'
        rf"[^}}]*\}} (\S+)"
    )
    found = re.findall(pattern, text, re.M)
    return sum(float(m) for m in found) if found else None


def test_a_router_on_another_host_uses_tcp_and_wakes_the_controller(
    postgres_url: str, tmp_path: Path
) -> None:
    """Each server believes it runs on a host of its own: the one without the controller
    reaches the instances over TCP at the stored address (not by the other host's Unix
    sockets), and a request it holds for a serverless variant at zero instances wakes the
    controller's server (a wake request in the database)."""
    extra = {"MODELHOST_SERVERLESS_IDLE_S": "1", "MODELHOST_INVOCATION_TIMEOUT_S": "40"}
    with two_routers(postgres_url, tmp_path, extra, hosts=True) as routers:
        runner = leader(routers, postgres_url)
        other = next(s for s in routers if s is not runner)
        assert other.process is not None
        sm, rt = other.client("sagemaker"), other.client("sagemaker-runtime")

        name = unique("pg-tcp")
        assert deploy(sm, name, str(FIXTURE_MODELS / "echo"))["EndpointStatus"] == "InService"
        assert invoke_until(rt, name, b"over tcp") == b"over tcp"
        ports = stored_ports(postgres_url, name)
        assert len(ports) == 1
        assert ports[0] in tcp_peer_ports(other.process.pid)  # its kept-alive connection

        zero = unique("pg-zero")
        config = {"MemorySizeInMB": 1024, "MaxConcurrency": 4}
        variants = [{"VariantName": "AllTraffic", "ModelName": zero, "ServerlessConfig": config}]
        desc = deploy(sm, zero, str(PID_MODEL), variants=variants)
        assert desc["EndpointStatus"] == "InService"
        deadline = time.monotonic() + 60
        while stored_ports(postgres_url, zero) or routed(other, zero) != 0:  # idle: at zero
            assert time.monotonic() < deadline, "the serverless variant never scaled to zero"
            time.sleep(0.1)
        started = time.monotonic()
        out = rt.invoke_endpoint(EndpointName=zero, Body=b"x", ContentType="text/plain")
        assert "pid" in json.loads(out["Body"].read())
        assert time.monotonic() - started < 30  # woken, not left to time out (40 s)
