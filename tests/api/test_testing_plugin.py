"""The pytest plugin the package ships (``modelhost.testing``): its ``modelhost_server`` and
``modelhost_session_server`` fixtures, ``serve()``, the README's example run as a user's own
test file, and its servers' lifetimes (a taken port, a stop that must kill, a pytest killed
with SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from modelhost.children import can_die_with_parent
from modelhost.testing import ModelhostServer, serve
from tests.fixtures.server import FIXTURE_MODELS
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.api

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = {"MODELHOST_EMBEDDED_S3": "false", "MODELHOST_RECONCILE_INTERVAL_S": "0.2"}


@pytest.mark.modelhost(env=FAST)
def test_clients_reach_the_server_from_the_environment(modelhost_server: ModelhostServer) -> None:
    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] == modelhost_server.url
    assert os.environ["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] == modelhost_server.url
    assert Path(os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"]).is_file()
    sm = boto3.client("sagemaker")  # no endpoint_url, no credentials: the fixture's
    assert sm.list_endpoints()["Endpoints"] == []
    sts = boto3.client("sts")
    assert sts.get_caller_identity()["Account"] == "123456789012"
    assert boto3.client("logs").describe_log_groups()["logGroups"] == []


def readme_example() -> str:
    """The README's plugin example (the python block after ``pytest plugin``)."""
    text = README.read_text()
    section = text[text.index("### Testing your own code: the pytest plugin") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_passes_as_a_users_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = str((FIXTURE_MODELS / "echo").resolve())
    code = readme_example().replace("/path/to/your/model", model)
    pytester.makepyfile(test_user=code)
    for name, value in FAST.items():  # the user's pytest, and so its server, inherit these
        monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess("-p", "modelhost.testing", "-q", timeout=180)
    result.assert_outcomes(passed=1)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no one has reaped yet counts as gone)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_serve_points_the_environment_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "http://127.0.0.1:1")
    with serve(env=FAST, environment=True) as server:
        assert server.process is not None
        pid, data_dir = server.process.pid, server.data_dir
        assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] == server.url
        assert boto3.client("sagemaker").list_models()["Models"] == []
    assert not alive(pid)
    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] == "http://127.0.0.1:1"
    assert not data_dir.exists()  # its temporary data directory


def test_a_taken_port_gets_a_fresh_one(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ModelhostServer(tmp_path / "data", port, FAST) as server:
            assert server.port != port
            assert server.client("sagemaker").list_endpoints()["Endpoints"] == []
            assert "cannot listen on" in server.log()


def test_a_stop_that_times_out_kills_the_process_group(tmp_path: Path) -> None:
    # A stand-in for a server that ignores SIGTERM, with a child in its process group.
    child_pid = tmp_path / "child.pid"
    server = ModelhostServer(tmp_path)
    server.process = subprocess.Popen(
        ["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {child_pid}; wait"],
        start_new_session=True,
    )
    child = int(wait_for(lambda: child_pid.exists() and child_pid.read_text().strip(), 10))
    try:
        assert server.stop(timeout=0.5) == -signal.SIGKILL
        wait_for(lambda: not alive(child), 10, "the group's other process to be killed")
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


SESSION_CONFTEST = f"""
import pytest

@pytest.fixture(scope="session")
def modelhost_session_env():
    return {FAST!r}
"""

SESSION_TESTS = """
import os
from pathlib import Path

import boto3

MODEL = {model!r}
PIDS = Path({pids!r})


def test_first(modelhost_session_server):
    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] == modelhost_session_server.url
    assert modelhost_session_server.s3_url is None  # the conftest's settings: no SeaweedFS
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="kept", PrimaryContainer={{"ModelDataUrl": MODEL}})
    with PIDS.open("a") as out:
        out.write(f"{{modelhost_session_server.process.pid}}\\n")


def test_second(modelhost_session_server):
    models = boto3.client("sagemaker").list_models()["Models"]
    assert [m["ModelName"] for m in models] == ["kept"]
    with PIDS.open("a") as out:
        out.write(f"{{modelhost_session_server.process.pid}}\\n")
"""


def test_a_session_server_is_shared_and_stopped_at_the_end(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    model = str((FIXTURE_MODELS / "echo").resolve())
    pytester.makeconftest(SESSION_CONFTEST)
    pytester.makepyfile(test_session=SESSION_TESTS.format(model=model, pids=str(pids)))
    result = pytester.runpytest_subprocess("-p", "modelhost.testing", "-q", timeout=180)
    result.assert_outcomes(passed=2)
    first, second = (int(line) for line in pids.read_text().split())
    assert first == second
    assert not alive(first)


HANGING_TEST = """
import threading
from pathlib import Path

import pytest


@pytest.mark.modelhost(env={env!r})
def test_hangs(modelhost_server):
    Path({pid_file!r}).write_text(str(modelhost_server.process.pid))
    threading.Event().wait(120)  # until the outer test kills this pytest
"""


@pytest.mark.skipif(not can_die_with_parent(), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_dies_with_a_killed_pytest(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pid_file = tmp_path / "server.pid"
    path = pytester.makepyfile(test_hang=HANGING_TEST.format(env=FAST, pid_file=str(pid_file)))
    cmd = [sys.executable, "-m", "pytest", "-p", "modelhost.testing", "-q", str(path)]
    inner = pytester.popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def started() -> str:
        assert inner.poll() is None, "the inner pytest exited before its server started"
        return pid_file.read_text() if pid_file.exists() else ""

    server = 0
    try:
        server = int(wait_for(started, 60, "the inner pytest's server to start"))
        inner.kill()  # SIGKILL: no teardown, no atexit
        inner.wait(10)
        wait_for(lambda: not alive(server), 30, f"the server (pid {server}) to exit")
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait(10)
        if server and alive(server):
            os.killpg(server, signal.SIGKILL)
