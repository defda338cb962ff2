"""The ``modelhost`` client commands as a user runs them: subprocesses against a live server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.server import FIXTURE_MODELS, LiveServer, free_port, unique

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 180.0


def modelhost(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one ``modelhost`` command from a directory of its own (never the server's data
    directory); stdout and stderr are captured, never inherited."""
    with tempfile.TemporaryDirectory(prefix="modelhost-cli-") as elsewhere:
        done = subprocess.run(
            [sys.executable, "-m", "modelhost.cli.main", *args],
            input=stdin,
            cwd=elsewhere,
            capture_output=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )
        assert not (Path(elsewhere) / ".modelhost").exists(), "a client made a data directory"
    return done


def client(
    server: LiveServer, command: str, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return modelhost(command, *args, "--url", server.url, stdin=stdin)


def deploy(server: LiveServer, model: str, name: str) -> subprocess.CompletedProcess[bytes]:
    return client(
        server,
        "deploy",
        str(FIXTURE_MODELS / model),
        "--name",
        name,
        "--timeout",
        "120",
    )


def listed(server: LiveServer) -> dict[str, Any]:
    out = client(server, "endpoints", "--json")
    assert out.returncode == 0, out.stderr.decode()
    return {row["name"]: row for row in json.loads(out.stdout)}


def wait_unlisted(server: LiveServer, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while name in listed(server):
        assert time.monotonic() < deadline, f"{name} still listed after {timeout} s"


@pytest.fixture(scope="module")
def echo(server: LiveServer) -> str:
    """The echo fixture deployed with ``modelhost deploy``."""
    name = unique("cli-echo")
    out = deploy(server, "echo", name)
    assert out.returncode == 0, out.stderr.decode()
    assert "InService" in out.stderr.decode()
    assert f"modelhost invoke {name}" in out.stderr.decode()
    return name


def test_deploy_uploads_to_the_server_object_store(server: LiveServer, echo: str) -> None:
    archives = list(
        (server.data_dir / "objects" / "modelhost-deployments" / echo).glob("*/model.tar.gz")
    )
    assert len(archives) == 1


def test_invoke_prints_the_response_body(server: LiveServer, echo: str) -> None:
    out = client(server, "invoke", echo, "--body", '{"hello": [1, 2]}')
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout == b'{"hello": [1, 2]}'


def test_invoke_reads_stdin_and_files(server: LiveServer, echo: str, tmp_path: Path) -> None:
    piped = client(server, "invoke", echo, "--content-type", "text/plain", stdin=b"from stdin")
    assert (piped.returncode, piped.stdout) == (0, b"from stdin"), piped.stderr.decode()
    body = tmp_path / "body.bin"
    body.write_bytes(bytes(range(256)))
    filed = client(
        server, "invoke", echo, "--file", str(body), "--content-type", "application/octet-stream"
    )
    assert (filed.returncode, filed.stdout) == (0, bytes(range(256))), filed.stderr.decode()


def test_endpoints_json_lists_it_in_service(server: LiveServer, echo: str) -> None:
    row = listed(server)[echo]
    assert row["status"] == "InService"
    assert row["variants"] == [
        {
            "name": "AllTraffic",
            "instance_type": "ml.m5.large",
            "current_instance_count": 1,
            "desired_instance_count": 1,
            "current_weight": 1.0,
            "desired_weight": 1.0,
            "last_scaling": None,
        }
    ]


def test_tables_show_the_endpoint_and_model(server: LiveServer, echo: str) -> None:
    table = client(server, "endpoints")
    assert (
        table.returncode == 0
        and echo in table.stdout.decode()
        and "InService" in table.stdout.decode()
    )
    models = client(server, "models", "--json")
    assert models.returncode == 0, models.stderr.decode()
    (model,) = [m for m in json.loads(models.stdout) if m["name"] == echo]
    assert model["model_data"][0].startswith(f"s3://modelhost-deployments/{echo}/")


def test_logs_prints_instance_lines(server: LiveServer, echo: str) -> None:
    out = client(server, "logs", echo)
    assert out.returncode == 0, out.stderr.decode()
    assert re.search(rb"^AllTraffic/\S+ \| ", out.stdout, re.MULTILINE), out.stdout


def test_deploy_again_updates_the_endpoint(server: LiveServer, echo: str) -> None:
    out = deploy(server, "echo", echo)
    assert out.returncode == 0, out.stderr.decode()
    assert f"Updating endpoint {echo}" in out.stderr.decode()
    assert listed(server)[echo]["config"].startswith(f"{echo}-")


def test_failed_deploy_exits_1_with_the_reason(server: LiveServer) -> None:
    name = unique("cli-bad")
    out = deploy(server, "badimport", name)
    assert out.returncode == 1
    err = out.stderr.decode()
    assert "modelhost_fixture_module_that_does_not_exist" in err
    assert "modelhost/cli/" not in err  # the instance's traceback, not one of the CLI
    assert listed(server)[name]["status"] == "Failed"
    assert client(server, "delete", name, "--all").returncode == 0


def test_delete_all_removes_endpoint_config_and_model(server: LiveServer) -> None:
    name = unique("cli-del")
    assert deploy(server, "echo", name).returncode == 0
    out = client(server, "delete", name, "--all")
    assert out.returncode == 0, out.stderr.decode()
    wait_unlisted(server, name)
    models = json.loads(client(server, "models", "--json").stdout)
    assert name not in {m["name"] for m in models}
    again = client(server, "delete", name)
    assert again.returncode == 1
    assert (
        "ValidationException" in again.stderr.decode() and "Could not find" in again.stderr.decode()
    )


def test_delete_model_removes_one_model_alone(server: LiveServer) -> None:
    name = unique("cli-model")
    sm = server.client("sagemaker")
    sm.create_model(ModelName=name, PrimaryContainer={"ModelDataUrl": str(FIXTURE_MODELS / "echo")})
    out = client(server, "delete", name, "--model")
    assert out.returncode == 0, out.stderr.decode()
    assert f"Deleted model {name}" in out.stderr.decode()
    models = json.loads(client(server, "models", "--json").stdout)
    assert name not in {m["name"] for m in models}
    both = client(server, "delete", name, "--model", "--all")
    assert both.returncode == 1 and "do not go together" in both.stderr.decode()


def test_client_errors_are_one_line_without_traceback(server: LiveServer) -> None:
    out = client(server, "invoke", unique("missing"), "--body", "{}")
    assert out.returncode == 1
    assert "not found" in out.stderr.decode() and "Traceback" not in out.stderr.decode()


def test_a_server_that_does_not_answer_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = modelhost("endpoints", "--url", url)
    assert out.returncode == 1
    err = out.stderr.decode()
    assert url in err and "modelhost serve" in err and "Traceback" not in err


def test_bad_paths_fail_before_any_call(server: LiveServer) -> None:
    out = deploy(server, "does-not-exist", unique("cli-nopath"))
    assert out.returncode == 1 and "does not exist" in out.stderr.decode()
