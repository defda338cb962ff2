"""Framework models, code/requirements.txt and the SageMaker SDK variables, end to end.

Models are built here (nothing downloaded), deployed through a live modelhost server and
invoked with boto3; each answer must equal the framework's own in-process prediction. Runtime
process tests (workers, requirements cache, S3 source dir) start `python -m modelhost.runtime`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.test_runtime_process import READY_TIMEOUT_S, Runtime
from tests.fixtures import framework_models as fm
from tests.fixtures.models import fixture_model_dir
from tests.fixtures.server import LiveServer, deploy, unique, wait_status

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning"),
]

ROWS = fm.IRIS_ROWS
MISSING = (
    "This model needs {module}, which is not installed in the model server's environment: "
    "pip install {package} (or list it in code/requirements.txt)"
)
WHEEL_MODULE = "mhtinypkg"


def has(*modules: str) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in modules)


needs = {
    "xgboost": pytest.mark.skipif(not has("xgboost"), reason="xgboost not installed"),
    "onnx": pytest.mark.skipif(not has("onnx", "onnxruntime"), reason="onnx not installed"),
    "torch": pytest.mark.skipif(not has("torch"), reason="torch not installed"),
    "hf": pytest.mark.skipif(not has("torch", "transformers"), reason="transformers missing"),
}


def invoke(rt: Any, name: str, body: bytes, content_type: str, accept: str) -> bytes:
    out = rt.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type, Accept=accept)
    assert out["ContentType"] == accept
    data: bytes = out["Body"].read()
    return data


def with_code(model_dir: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (model_dir / "code" / rel).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / "code" / rel).write_text(text)
    return model_dir


def wheel_model(tmp: Path, value: str) -> Path:
    """A model whose inference.py imports a package only code/requirements.txt provides."""
    model_dir = tmp / "model"
    fm.tiny_wheel(model_dir / "code" / "wheels", WHEEL_MODULE, "0.1.0", f"VALUE = {value!r}\n")
    return with_code(
        model_dir,
        {
            "requirements.txt": f"--no-index\n--find-links ./wheels\n{WHEEL_MODULE}==0.1.0\n",
            "inference.py": (
                f"import {WHEEL_MODULE}\n"
                "def model_fn(model_dir):\n"
                f"    return {WHEEL_MODULE}.VALUE\n"
                "def transform_fn(model, data, content_type, accept):\n"
                "    return model, 'text/plain'\n"
            ),
        },
    )


# --- deployed through the platform -----------------------------------------------------------


class Deployed:
    """Endpoints created together (wait=False), each waited for by the test that uses it."""

    def __init__(self, server: LiveServer, root: Path) -> None:
        self.sm = server.client("sagemaker")
        self.root = root
        self.names: dict[str, str] = {}
        self.expected: dict[str, Any] = {}

    def create(self, key: str, model_dir: Path, env: dict[str, str] | None = None) -> None:
        name = unique(key)
        deploy(self.sm, name, str(model_dir), environment=env or {}, wait=False)
        self.names[key] = name

    def wait(self, key: str, status: str = "InService") -> dict[str, Any]:
        if key not in self.names:
            pytest.skip(f"{key} was not deployed (framework not installed)")
        desc = wait_status(self.sm, self.names[key], {"InService", "Failed"}, timeout=240)
        assert desc["EndpointStatus"] == status, desc.get("FailureReason")
        return desc

    def delete_all(self) -> None:
        for name in self.names.values():
            with contextlib.suppress(self.sm.exceptions.ClientError):
                self.sm.delete_endpoint(EndpointName=name)


def _build_all(d: Deployed) -> None:
    root = d.root
    if has("xgboost"):
        model_dir, booster = fm.xgboost_iris(root / "xgb")
        import xgboost as xgb

        d.expected["xgb"] = booster.predict(xgb.DMatrix(ROWS))
        d.create("xgb", model_dir)
    if has("onnx", "onnxruntime"):
        model_dir, weights, bias = fm.onnx_linear(root / "onnx")
        d.expected["onnx"] = ROWS @ weights + bias
        d.create("onnx", model_dir)
        blocked, _, _ = fm.onnx_linear(root / "onnx-blocked")
        d.create("onnx-blocked", blocked, {"MODELHOST_BLOCK_IMPORTS": "onnxruntime"})
    if has("torch"):
        import torch

        model_dir, module = fm.torchscript_linear(root / "torch")
        with torch.no_grad():
            d.expected["torch"] = module(torch.from_numpy(ROWS)).numpy()
        d.create("torch", model_dir)
        d.create("torch-state-dict", fm.torch_state_dict(root / "state-dict"))
    if has("torch", "transformers"):
        from transformers import pipeline

        model_dir = fm.hf_tiny_classifier(root / "hf")
        reference = pipeline("text-classification", model=str(model_dir), device="cpu")
        d.expected["hf"] = reference(["hello world", "bad movie"], top_k=None)
        d.create("hf", model_dir, {"HF_TASK": "text-classification"})
    d.create("tf", fm.tensorflow_layout(root / "tf"))
    envs = {"MODELHOST_ENVS_DIR": str(root / "envs")}  # not the shared default under /tmp
    d.create("reqs", wheel_model(root / "reqs", "from-the-wheel"), envs)
    bad = with_code(root / "reqs-bad", {"requirements.txt": "./nope-0.0.0.tar.gz\n"})
    d.create("reqs-bad", bad, envs)
    program = fixture_model_dir("echo", root / "program")
    with_code(
        program,
        {
            "other.py": "def model_fn(model_dir):\n    return 'other'\n"
            "def transform_fn(m, data, ct, accept):\n    return b'other.py', 'text/x'\n"
        },
    )
    d.create("program", program, {"SAGEMAKER_PROGRAM": "other.py"})
    pid_env = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    d.create("workers", fixture_model_dir("pid", root / "pid"), pid_env)


@pytest.fixture(scope="module")
def deployed(server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    d = Deployed(server, tmp_path_factory.mktemp("frameworks"))
    try:
        _build_all(d)
        yield d
    finally:
        d.delete_all()


@needs["xgboost"]
def test_xgboost_container_model(deployed: Deployed, rt: Any) -> None:
    deployed.wait("xgb")
    name, expected = deployed.names["xgb"], deployed.expected["xgb"]
    csv_rows = "\n".join(",".join(str(v) for v in row) for row in ROWS.tolist()).encode()
    out = invoke(rt, name, csv_rows, "text/csv", "text/csv").decode()
    got = [[float(v) for v in line.split(",")] for line in out.splitlines()]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    body = json.loads(invoke(rt, name, csv_rows, "text/csv", "application/json"))
    np.testing.assert_allclose([p["score"] for p in body["predictions"]], expected, rtol=1e-6)


@needs["onnx"]
def test_onnx_model(deployed: Deployed, rt: Any) -> None:
    deployed.wait("onnx")
    payload = json.dumps(ROWS.tolist()).encode()
    got = json.loads(
        invoke(rt, deployed.names["onnx"], payload, "application/json", "application/json")
    )
    np.testing.assert_allclose(got, deployed.expected["onnx"], rtol=1e-5)


@needs["torch"]
def test_torchscript_model(deployed: Deployed, rt: Any) -> None:
    deployed.wait("torch")
    payload = json.dumps(ROWS.tolist()).encode()
    got = json.loads(
        invoke(rt, deployed.names["torch"], payload, "application/json", "application/json")
    )
    np.testing.assert_allclose(got, deployed.expected["torch"], rtol=1e-6)


@needs["hf"]
def test_huggingface_model(deployed: Deployed, rt: Any) -> None:
    deployed.wait("hf")
    request = {"inputs": ["hello world", "bad movie"], "parameters": {"top_k": None}}
    raw = invoke(
        rt,
        deployed.names["hf"],
        json.dumps(request).encode(),
        "application/json",
        "application/json",
    )
    got, expected = json.loads(raw), deployed.expected["hf"]
    assert [[i["label"] for i in row] for row in got] == [
        [i["label"] for i in row] for row in expected
    ]
    flat = [i["score"] for row in got for i in row]
    assert flat == pytest.approx([i["score"] for row in expected for i in row], rel=1e-5)


@needs["onnx"]
def test_missing_framework_fails_naming_the_package(deployed: Deployed) -> None:
    reason = deployed.wait("onnx-blocked", "Failed")["FailureReason"]
    assert MISSING.format(module="onnxruntime", package="onnxruntime") in reason


def test_tensorflow_savedmodel_without_tensorflow(deployed: Deployed) -> None:
    reason = deployed.wait("tf", "Failed")["FailureReason"]
    assert MISSING.format(module="tensorflow", package="tensorflow") in reason


@needs["torch"]
def test_state_dict_without_model_fn_says_so(deployed: Deployed) -> None:
    reason = deployed.wait("torch-state-dict", "Failed")["FailureReason"]
    assert "model.pth is not a TorchScript model" in reason
    assert "define model_fn(model_dir) in code/inference.py" in reason


def test_requirements_are_installed_before_the_code_imports(deployed: Deployed, rt: Any) -> None:
    deployed.wait("reqs")
    assert invoke(rt, deployed.names["reqs"], b"x", "text/plain", "text/plain") == b"from-the-wheel"


def test_failing_requirements_quote_pip(deployed: Deployed) -> None:
    reason = deployed.wait("reqs-bad", "Failed")["FailureReason"]
    last = reason.strip().splitlines()[-1]
    assert last.startswith("modelhost.runtime: pip install -r code/requirements.txt failed: ERROR:")
    assert "nope-0.0.0.tar.gz" in last


def test_sagemaker_program_picks_the_script(deployed: Deployed, rt: Any) -> None:
    deployed.wait("program")
    assert invoke(rt, deployed.names["program"], b"x", "text/plain", "text/x") == b"other.py"


def test_two_workers_answer_through_the_platform(deployed: Deployed, rt: Any) -> None:
    deployed.wait("workers")
    seen: set[int] = set()
    # 16 overlapping calls make the router open 16 connections, which the kernel spreads over
    # the workers (SO_REUSEPORT): all 16 on one worker has odds of 2**-15.
    for _ in range(3):
        seen |= set(_concurrent_pids(lambda: _pid(rt, deployed.names["workers"], b"0.3"), 16))
        if len(seen) == 2:
            break
    assert len(seen) == 2, seen


def _pid(rt: Any, name: str, body_in: bytes = b"x") -> int:
    body = json.loads(invoke(rt, name, body_in, "text/plain", "application/json"))
    assert body["pid"] == body["loaded_by"]  # each worker loaded the model itself
    return int(body["pid"])


def _concurrent_pids(call: Callable[[], int], n: int) -> list[int]:
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    return results


# --- the runtime process on its own ----------------------------------------------------------


@pytest.fixture
def runtimes() -> Iterator[list[Runtime]]:
    started: list[Runtime] = []
    yield started
    for runtime in started:
        runtime.stop()


def _start(started: list[Runtime], model_dir: Path, log: Path, **env: str) -> Runtime:
    runtime = Runtime(model_dir, log, **env)
    started.append(runtime)
    return runtime


def _last_line(runtime: Runtime) -> str:
    return runtime.stderr().strip().splitlines()[-1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_workers_share_the_port_and_stop_on_sigterm(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    model = fixture_model_dir("pid", tmp_path / "pid")
    runtime = _start(runtimes, model, tmp_path / "log", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    runtime.wait_ready()
    pids: set[int] = set()
    for _ in range(64):  # each request on a new connection: the kernel picks a worker
        status, body, _ = runtime.invoke(b"x", Content_Type="text/plain")
        assert status == 200
        pids.add(json.loads(body)["pid"])
        if len(pids) == 2:
            break
    assert len(pids) == 2
    assert runtime.proc.pid not in pids  # the parent supervises only
    runtime.proc.send_signal(signal.SIGTERM)
    assert runtime.proc.wait(READY_TIMEOUT_S) == 0
    assert not any(_alive(pid) for pid in pids)
    assert runtime.stderr().count("modelhost.runtime: stopped") == 2


def test_a_worker_that_cannot_load_stops_all_with_the_reason_last(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    model = fixture_model_dir("badimport", tmp_path / "bad")
    runtime = _start(runtimes, model, tmp_path / "log", SAGEMAKER_MODEL_SERVER_WORKERS="3")
    assert runtime.proc.wait(READY_TIMEOUT_S) == 1
    assert _last_line(runtime) == (
        "modelhost.runtime: importing code/inference.py failed: ModuleNotFoundError: "
        "No module named 'modelhost_fixture_module_that_does_not_exist'"
    )


def test_requirements_cache_is_shared_and_atomic(runtimes: list[Runtime], tmp_path: Path) -> None:
    envs = tmp_path / "envs"
    models = [wheel_model(tmp_path / f"m{i}", "shared") for i in range(2)]
    both = [
        _start(runtimes, m, tmp_path / f"log{i}", MODELHOST_ENVS_DIR=str(envs))
        for i, m in enumerate(models)
    ]
    for runtime in both:
        runtime.wait_ready()
        assert runtime.invoke(b"x", Content_Type="text/plain")[1] == b"shared"
    installs = [r.stderr().count("installing code/requirements.txt") for r in both]
    assert sorted(installs) == [0, 1]  # one installed, the other reused it
    entries = sorted(p.name for p in envs.iterdir())
    assert len([e for e in entries if not e.endswith(".lock")]) == 1  # no temp dir left
    installed = next(p for p in envs.iterdir() if p.is_dir())
    assert (installed / f"{WHEEL_MODULE}.py").is_file()


def test_failing_requirements_exit_with_pips_error_last(
    runtimes: list[Runtime], tmp_path: Path
) -> None:
    model = with_code(tmp_path / "model", {"requirements.txt": "./nope-0.0.0.tar.gz\n"})
    envs = tmp_path / "envs"
    runtime = _start(runtimes, model, tmp_path / "log", MODELHOST_ENVS_DIR=str(envs))
    assert runtime.proc.wait(READY_TIMEOUT_S) == 1
    last = _last_line(runtime)
    assert last.startswith("modelhost.runtime: pip install -r code/requirements.txt failed: ERROR:")
    assert [p.name for p in envs.iterdir() if not p.name.endswith(".lock")] == []


def test_submit_directory_from_the_object_store(runtimes: list[Runtime], tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    key = objects / "bucket" / "job" / "sourcedir.tar.gz"
    key.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {
            "serve_me.py": "from helper import WORD\n"
            "def model_fn(model_dir):\n    return WORD\n"
            "def transform_fn(m, data, ct, accept):\n    return WORD, 'text/plain'\n",
            "lib/helper.py": "WORD = 'from-s3'\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    key.write_bytes(buffer.getvalue())
    model = tmp_path / "model"
    model.mkdir()
    runtime = _start(
        runtimes,
        model,
        tmp_path / "log",
        SAGEMAKER_SUBMIT_DIRECTORY="s3://bucket/job/sourcedir.tar.gz",
        SAGEMAKER_PROGRAM="serve_me.py",
        MODELHOST_OBJECTS_DIR=str(objects),
        MODELHOST_ENVS_DIR=str(tmp_path / "envs"),
    )
    runtime.wait_ready()
    assert runtime.invoke(b"x", Content_Type="text/plain")[1] == b"from-s3"
    shutil.rmtree(objects)  # the extracted copy is what serves
    assert runtime.invoke(b"x", Content_Type="text/plain")[1] == b"from-s3"


def test_log_level_debug(runtimes: list[Runtime], tmp_path: Path) -> None:
    model = fixture_model_dir("echo", tmp_path / "echo")
    runtime = _start(runtimes, model, tmp_path / "log", SAGEMAKER_CONTAINER_LOG_LEVEL="10")
    runtime.wait_ready()
    assert "DEBUG modelhost.runtime model server timeout 60 s" in runtime.stderr()
    os.kill(runtime.proc.pid, signal.SIGTERM)
    assert runtime.proc.wait(READY_TIMEOUT_S) == 0
