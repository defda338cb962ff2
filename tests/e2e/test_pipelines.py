"""Models with several containers, on real processes: a serial inference pipeline (a
preprocessing inference.py, an sklearn model, a postprocessing inference.py) whose answer
equals the three steps run in-process, a failing middle container named in the error, and a
Direct multi-container endpoint (the sklearn model beside the C echo server) reached by
TargetContainerHostname, whose instance is replaced whole when one container dies."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.procs import instance_pids
from tests.fixtures.models import MODELS_DIR, fixture_model_dir, sklearn_iris_dir
from tests.fixtures.server import LiveServer, pack, unique, wait_status
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.e2e

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.0, 3.4, 1.5, 0.25]]
CSV = "\n".join(",".join(str(v) for v in row) for row in ROWS).encode()


def _poll(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    wait_for(predicate, timeout, what)


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, MODELS_DIR / name / "code" / "inference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _create(sm: Any, name: str, containers: list[dict[str, Any]], mode: str | None = None) -> None:
    extra = {} if mode is None else {"InferenceExecutionConfig": {"Mode": mode}}
    sm.create_model(ModelName=name, Containers=containers, **extra)
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
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


class Endpoints:
    """The module's three endpoints, created together (their instances start in parallel)."""

    def __init__(self, server: LiveServer, root: Path, echo: Path) -> None:
        self.sm = server.client("sagemaker")
        self.server = server
        self.root = root
        iris = sklearn_iris_dir(root / "iris")
        self.iris_dir = iris
        iris_tar = str(pack(iris, root / "iris.tar.gz"))
        pre = str(pack(fixture_model_dir("pipe_pre", root / "pre"), root / "pre.tar.gz"))
        post = str(pack(fixture_model_dir("pipe_post", root / "post"), root / "post.tar.gz"))
        err = str(pack(fixture_model_dir("error", root / "err"), root / "err.tar.gz"))
        (root / "weights").mkdir()
        (root / "weights" / "w.txt").write_text("w")
        weights = str(pack(root / "weights", root / "weights.tar.gz"))
        self.serial = unique("pipe-serial")
        _create(
            self.sm,
            self.serial,
            [
                {"ModelDataUrl": pre, "ContainerHostname": "pre"},
                {"ModelDataUrl": iris_tar},
                {"ModelDataUrl": post, "ContainerHostname": "post"},
            ],
        )
        self.failing = unique("pipe-fail")
        _create(
            self.sm,
            self.failing,
            [
                {"ModelDataUrl": weights, "Image": str(echo)},
                {"ModelDataUrl": err},
                {"ModelDataUrl": weights, "Image": str(echo)},
            ],
            "Serial",
        )
        self.direct = unique("pipe-direct")
        _create(
            self.sm,
            self.direct,
            [
                {"ModelDataUrl": iris_tar, "ContainerHostname": "iris"},
                {"ModelDataUrl": weights, "Image": str(echo), "ContainerHostname": "echo"},
            ],
            "Direct",
        )

    def wait(self, name: str) -> None:
        desc = wait_status(self.sm, name, {"InService", "Failed"}, timeout=180)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    def delete_all(self) -> None:
        for name in (self.serial, self.failing, self.direct):
            with contextlib.suppress(self.sm.exceptions.ClientError):
                self.sm.delete_endpoint(EndpointName=name)


@pytest.fixture(scope="module")
def endpoints(
    server: LiveServer, echo_server_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoints]:
    eps = Endpoints(server, tmp_path_factory.mktemp("pipelines"), echo_server_binary)
    try:
        yield eps
    finally:
        eps.delete_all()


def _in_process(iris_dir: Path) -> str:
    """The three steps run in this process, as the pipeline must run them."""
    import joblib
    import numpy as np

    pre, post = _module("pipe_pre"), _module("pipe_post")
    rows = pre.predict_fn(pre.input_fn(CSV, "text/csv"), None)
    body, content_type = pre.output_fn(rows, "application/json")
    classes = joblib.load(iris_dir / "model.joblib").predict(np.array(json.loads(body)))
    names = post.predict_fn(post.input_fn(json.dumps(classes.tolist()), content_type), None)
    out, _ = post.output_fn(names, "text/csv")
    assert isinstance(out, str)
    return out


def test_serial_pipeline_answers_as_the_three_steps_in_process(
    endpoints: Endpoints, rt: Any
) -> None:
    endpoints.wait(endpoints.serial)
    out = rt.invoke_endpoint(
        EndpointName=endpoints.serial, Body=CSV, ContentType="text/csv", Accept="text/csv"
    )
    assert out["ContentType"] == "text/csv"
    got = out["Body"].read().decode()
    assert got == _in_process(endpoints.iris_dir)
    assert got.splitlines()[0] == "setosa"
    # Another Accept reaches the last container only.
    out = rt.invoke_endpoint(
        EndpointName=endpoints.serial, Body=CSV, ContentType="text/csv", Accept="application/json"
    )
    assert json.loads(out["Body"].read()) == got.splitlines()


def test_serial_pipeline_streams_the_last_answer(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.serial)
    out = rt.invoke_endpoint_with_response_stream(
        EndpointName=endpoints.serial, Body=CSV, ContentType="text/csv", Accept="text/csv"
    )
    parts = b"".join(e["PayloadPart"]["Bytes"] for e in out["Body"] if "PayloadPart" in e)
    assert parts.decode() == _in_process(endpoints.iris_dir)


def test_serial_pipeline_metrics_and_log_streams_per_container(
    endpoints: Endpoints, rt: Any
) -> None:
    endpoints.wait(endpoints.serial)
    rt.invoke_endpoint(EndpointName=endpoints.serial, Body=CSV, ContentType="text/csv")
    with urllib.request.urlopen(f"{endpoints.server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for container in ("pre", "container-2", "post"):
        assert (
            f'sagemaker_ContainerLatency_count{{ContainerName="{container}",'
            f'EndpointName="{endpoints.serial}",VariantName="AllTraffic"}}' in text
        ), container
    logs = endpoints.server.client("logs")
    group = f"/aws/sagemaker/Endpoints/{endpoints.serial}"

    def streams() -> set[str]:
        found = logs.describe_log_streams(logGroupName=group)["logStreams"]
        return {s["logStreamName"].rsplit("/", 1)[-1] for s in found}

    _poll(lambda: {"pre", "container-2", "post"} <= streams(), 30, "a log stream per container")


def test_a_failing_container_is_named_with_its_status(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.failing)
    with pytest.raises(rt.exceptions.ModelError) as info:
        rt.invoke_endpoint(
            EndpointName=endpoints.failing, Body=b"[1, 2]", ContentType="application/json"
        )
    err = info.value.response
    assert "from container-2 with message" in err["Error"]["Message"]
    # Container 2 was handed container 1's answer with that answer's Content-Type (the C
    # echo server's application/octet-stream, not the client's application/json), which
    # the default input_fn refuses.
    assert err["OriginalStatusCode"] == 415, err
    assert "application/octet-stream" in err["OriginalMessage"], err


def test_direct_reaches_each_container_by_hostname(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.direct)
    echo = rt.invoke_endpoint(
        EndpointName=endpoints.direct,
        Body=b"hello",
        ContentType="application/octet-stream",
        TargetContainerHostname="echo",
    )
    assert echo["Body"].read() == b"olleh"
    iris = rt.invoke_endpoint(
        EndpointName=endpoints.direct,
        Body=json.dumps(ROWS).encode(),
        ContentType="application/json",
        TargetContainerHostname="iris",
    )
    assert json.loads(iris["Body"].read())[0] == 0  # setosa


@pytest.mark.parametrize(
    ("which", "hostname", "needle"),
    [
        ("direct", None, "specify TargetContainerHostname"),
        ("direct", "nope", "Container hostname nope is not found"),
        ("serial", "pre", "is not configured for direct invocation"),
    ],
)
def test_direct_validation_errors(
    endpoints: Endpoints, rt: Any, which: str, hostname: str | None, needle: str
) -> None:
    name = endpoints.direct if which == "direct" else endpoints.serial
    endpoints.wait(name)
    extra = {} if hostname is None else {"TargetContainerHostname": hostname}
    with pytest.raises(rt.exceptions.ValidationError) as info:
        rt.invoke_endpoint(EndpointName=name, Body=b"x", ContentType="text/csv", **extra)
    assert needle in info.value.response["Error"]["Message"]


def test_one_dead_container_replaces_the_whole_instance(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.direct)

    def echo_pid() -> int:
        out = rt.invoke_endpoint(
            EndpointName=endpoints.direct,
            Body=b"pid:",
            ContentType="text/plain",
            TargetContainerHostname="echo",
        )
        return int(out["Body"].read())

    def iris_ok() -> bool:
        try:
            rt.invoke_endpoint(
                EndpointName=endpoints.direct,
                Body=json.dumps(ROWS).encode(),
                ContentType="application/json",
                TargetContainerHostname="iris",
            )
            return True
        except rt.exceptions.ClientError:
            return False

    logs = endpoints.server.data_dir / "logs" / endpoints.direct / "AllTraffic"
    before = {p.name for p in logs.iterdir() if p.is_dir()}
    pid = echo_pid()
    os.kill(pid, signal.SIGKILL)

    def replaced() -> bool:
        now = {p.name for p in logs.iterdir() if p.is_dir()}
        if not (now - before):
            return False
        try:
            return echo_pid() != pid and iris_ok()
        except rt.exceptions.ClientError:
            return False

    _poll(replaced, 90, "a new instance with both containers")
    new = {p.name for p in logs.iterdir() if p.is_dir()} - before
    assert {p.name for p in (logs / new.pop()).iterdir()} >= {"iris.log", "echo.log"}


def test_a_failing_container_is_named_on_the_streaming_road(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.failing)
    with pytest.raises(rt.exceptions.ModelError) as info:
        rt.invoke_endpoint_with_response_stream(
            EndpointName=endpoints.failing, Body=b"[1, 2]", ContentType="application/json"
        )
    err = info.value.response
    assert "from container-2 with message" in err["Error"]["Message"]
    assert err["OriginalStatusCode"] == 415


def test_direct_streams_from_the_named_container(endpoints: Endpoints, rt: Any) -> None:
    endpoints.wait(endpoints.direct)
    out = rt.invoke_endpoint_with_response_stream(
        EndpointName=endpoints.direct,
        Body=b"stream me",
        ContentType="application/octet-stream",
        TargetContainerHostname="echo",
    )
    parts = b"".join(e["PayloadPart"]["Bytes"] for e in out["Body"] if "PayloadPart" in e)
    assert parts == b"em maerts"
    with pytest.raises(rt.exceptions.ValidationError, match="specify TargetContainerHostname"):
        rt.invoke_endpoint_with_response_stream(
            EndpointName=endpoints.direct, Body=b"x", ContentType="text/plain"
        )
    endpoints.wait(endpoints.serial)
    with pytest.raises(rt.exceptions.ValidationError, match="not configured for direct"):
        rt.invoke_endpoint_with_response_stream(
            EndpointName=endpoints.serial,
            Body=b"x",
            ContentType="text/csv",
            TargetContainerHostname="pre",
        )


def test_the_containers_of_a_gpu_instance_share_its_gpus(own_server: LiveServer) -> None:
    own_server.env["MODELHOST_GPU_COUNT"] = "1"  # a simulated one-GPU machine
    # Fresh processes, whose /proc/<pid>/environ is their own (a fork from the zygote shows
    # the zygote's there, and a pipeline's containers cannot all be asked through the model).
    own_server.env["MODELHOST_ZYGOTE"] = "false"
    own_server.start()
    sm = own_server.client("sagemaker")
    name = unique("pipe-gpu")
    echo = str(MODELS_DIR / "echo")
    sm.create_model(ModelName=name, Containers=[{"ModelDataUrl": echo}, {"ModelDataUrl": echo}])
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.g5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc = wait_status(sm, name, {"InService", "Failed"}, timeout=120)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pids = instance_pids(own_server.data_dir)
    assert len(pids) == 2
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"CUDA_VISIBLE_DEVICES=0" in environ
