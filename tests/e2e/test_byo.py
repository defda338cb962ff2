"""Bring-your-own model servers, with no Python inside: the C echo server
(tests/fixtures/byo/echo_server.c) as a local executable (the process form, ``Image=<path>``)
and inside a container image run by docker/podman (``Image=localhost/...``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelhost.multimodel.manager import mms_name
from modelhost.multimodel.spec import MULTI_MODELS_LABEL
from tests.fixtures.containers import ByoImages
from tests.fixtures.multimodel import deploy_mme
from tests.fixtures.server import LiveServer, deploy, pack, unique, wait_gone
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e

WEIGHTS = b"weights: 42\n"


def _poll(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    wait_for(predicate, timeout, what)


def _model(tmp_path: Path) -> str:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_bytes(WEIGHTS)
    return str(pack(model, tmp_path / "model.tar.gz"))


def _invoker(server: LiveServer, name: str) -> Callable[[bytes], bytes]:
    rt = server.client("sagemaker-runtime")

    def invoke(body: bytes) -> bytes:
        out = rt.invoke_endpoint(
            EndpointName=name, Body=body, ContentType="application/octet-stream"
        )
        data: bytes = out["Body"].read()
        return data

    return invoke


def _delete(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)
    wait_gone(sm, name)


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


# -- process form ---------------------------------------------------------------------------


def test_c_server_as_local_executable(
    server: LiveServer, echo_server_binary: Path, tmp_path: Path
) -> None:
    sm = server.client("sagemaker")
    name = unique("byo-c")
    desc = deploy(
        sm,
        name,
        _model(tmp_path),
        image=str(echo_server_binary),
        environment={"GREETING": "hello from Environment"},
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    invoke = _invoker(server, name)
    assert invoke(b"hello world") == b"dlrow olleh"
    assert invoke(b"env:GREETING") == b"hello from Environment"
    port = int(invoke(b"env:SAGEMAKER_BIND_TO_PORT"))
    assert port not in (8080, server.port)
    model_dir = invoke(b"env:MODELHOST_MODEL_DIR")
    assert invoke(b"cwd:") == model_dir
    assert (Path(model_dir.decode()) / "weights.txt").read_bytes() == WEIGHTS
    assert invoke(b"file:weights.txt") == WEIGHTS
    pid = int(invoke(b"pid:"))
    assert _alive(pid)

    _delete(sm, name)
    _poll(lambda: not _alive(pid), what="the C server's exit")
    (log,) = (server.data_dir / "logs" / name / "AllTraffic").glob("*.log")
    assert "echo-server: SIGTERM, exiting" in log.read_text()


def test_c_server_ignoring_sigterm_is_killed_after_the_grace(
    own_server: LiveServer, echo_server_binary: Path
) -> None:
    own_server.env["MODELHOST_STOP_GRACE_S"] = "1"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("byo-stubborn")
    desc = deploy(
        sm, name, None, image=str(echo_server_binary), environment={"ECHO_IGNORE_SIGTERM": "1"}
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pid = int(_invoker(own_server, name)(b"pid:"))
    _delete(sm, name)
    _poll(lambda: not _alive(pid), timeout=15, what="SIGKILL of the C server")


# -- container form -------------------------------------------------------------------------


def test_c_server_in_a_container(server: LiveServer, byo_images: ByoImages, tmp_path: Path) -> None:
    engine = byo_images.engine
    sm = server.client("sagemaker")
    name = unique("byo-container")
    desc = deploy(
        sm,
        name,
        _model(tmp_path),
        image=byo_images.echo,
        environment={"GREETING": "hello from Environment"},
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    mine = f"label=modelhost.endpoint={name}"
    (container,) = engine.containers(mine)
    assert container.startswith("mh-i-")
    invoke = _invoker(server, name)
    assert invoke(b"hello world") == b"dlrow olleh"
    assert invoke(b"file:weights.txt") == WEIGHTS  # the model data at /opt/ml/model
    assert invoke(b"env:GREETING") == b"hello from Environment"
    assert invoke(b"env:SAGEMAKER_BIND_TO_PORT") == b""  # the container listens on 8080
    assert invoke(b"cwd:") == b"/"

    _delete(sm, name)
    assert engine.containers(mine) == []
    assert engine.containers(f"name={container}") == []
    (log,) = (server.data_dir / "logs" / name / "AllTraffic").glob("*.log")
    text = log.read_text()
    assert "echo-server: listening on 0.0.0.0:8080" in text
    assert "echo-server: SIGTERM, exiting" in text


def test_multi_model_container_loads_models_from_its_mount(
    server: LiveServer, byo_images: ByoImages, tmp_path: Path
) -> None:
    prefix = tmp_path / "models"
    prefix.mkdir()
    for model in ("a", "b"):
        (tmp_path / model).mkdir()
        (tmp_path / model / "weights.txt").write_text(f"weights of {model}")
        pack(tmp_path / model, prefix / f"{model}.tar.gz")
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = unique("mme-container")
    desc = deploy_mme(sm, name, str(prefix), image=byo_images.mme)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    for model in ("a", "b", "a"):
        target = f"{model}.tar.gz"
        out = rt.invoke_endpoint(EndpointName=name, TargetModel=target, Body=b"hi")
        # The server read weights.txt under the url it was given: the extracted archive is
        # mounted in the container (it answers 404 to a load whose url it cannot see).
        assert (
            out["Body"].read()
            == (
                f"model={mms_name(target)} target={target} weights=weights of {model} body=hi"
            ).encode()
        )
    (log,) = (server.data_dir / "logs" / name / "AllTraffic").glob("*.log")
    assert log.read_text().count("echo-server: POST /models HTTP/1.1") == 2
    _delete(sm, name)
    assert byo_images.engine.containers(f"label=modelhost.endpoint={name}") == []

    unlabelled = unique("mme-nolabel")
    desc = deploy_mme(sm, unlabelled, str(prefix), image=byo_images.echo)
    assert desc["EndpointStatus"] == "Failed"
    assert desc["FailureReason"] == (
        f"Your image {byo_images.echo} does not contain required {MULTI_MODELS_LABEL} label(s)."
    )
    assert byo_images.engine.containers(f"label=modelhost.endpoint={unlabelled}") == []


def test_container_that_never_answers_ping_fails_with_its_log(
    own_server: LiveServer, byo_images: ByoImages
) -> None:
    own_server.env["MODELHOST_STARTUP_HEALTH_TIMEOUT_S"] = "5"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("byo-sleep")
    desc = deploy(sm, name, None, image=byo_images.sleep)
    assert desc["EndpointStatus"] == "Failed"
    assert "/ping health check within 5 s" in desc["FailureReason"]
    assert "ECHO_MODE=sleep, never answering /ping" in desc["FailureReason"]
    assert byo_images.engine.containers(f"label=modelhost.endpoint={name}") == []


def test_container_image_without_engine_fails_clearly(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_CONTAINER_ENGINE"] = "/nonexistent/container-engine"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("byo-noengine")
    desc = deploy(sm, name, None, image="registry.example.com/team/custom-server:1.0")
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert reason.startswith(
        "Image registry.example.com/team/custom-server:1.0 needs a container engine; "
        "none answered (tried /nonexistent/container-engine): "
    ), reason
    assert "not installed" in reason
