"""Each framework loader in-process: real small models built here, the default handler chain
against the framework's own prediction (skipped when a framework is not installed)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost.runtime.handlers import (
    HandlerOptions,
    InvocationResult,
    ModelHandler,
    ModelLoadError,
    StreamingResult,
    load_handler,
)
from modelhost.runtime.loaders import load_default_model
from modelhost.runtime.loaders.pytorch import NotTorchScript
from tests.fixtures import framework_models as fm

ROWS = fm.IRIS_ROWS
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


def plain(result: InvocationResult | StreamingResult) -> InvocationResult:
    """The handler's answer when it is not a stream (narrowed for the type checker)."""
    assert isinstance(result, InvocationResult)
    return result


def handler(model_dir: Path) -> ModelHandler:
    return load_handler(HandlerOptions(model_dir=str(model_dir)))


def invoke_json(h: ModelHandler, payload: Any, accept: str = "application/json") -> Any:
    result = plain(h.invoke(json.dumps(payload).encode(), "application/json", accept))
    assert result.content_type == accept
    return json.loads(result.body) if accept == "application/json" else result.body


# --- XGBoost ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pickle", "json", "ubj"])
def test_xgboost_formats_load_as_boosters(tmp_path: Path, fmt: str) -> None:
    xgb = pytest.importorskip("xgboost")
    model_dir, booster = fm.xgboost_iris(tmp_path, fmt)
    loaded = load_default_model(model_dir)
    assert isinstance(loaded, xgb.Booster)
    expected = booster.predict(xgb.DMatrix(ROWS))
    np.testing.assert_allclose(loaded.predict(xgb.DMatrix(ROWS)), expected, rtol=1e-6)


def test_xgboost_default_handlers_speak_csv_and_json(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    model_dir, booster = fm.xgboost_iris(tmp_path)
    expected = booster.predict(xgb.DMatrix(ROWS)).tolist()
    h = handler(model_dir)
    csv_body = "\n".join(",".join(str(v) for v in row) for row in ROWS.tolist()).encode()
    out = plain(h.invoke(csv_body, "text/csv", "text/csv"))
    lines = out.body.decode().splitlines()
    got = [[float(v) for v in line.split(",")] for line in lines]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    one = plain(h.invoke(b"5.1,3.5,1.4,0.2", None, "application/json"))  # no type: CSV, one row
    scores = json.loads(one.body)["predictions"]
    np.testing.assert_allclose(scores[0]["score"], expected[0], rtol=1e-6)
    body = invoke_json(h, ROWS.tolist())
    assert len(body["predictions"]) == 3
    libsvm = b"0 0:5.1 1:3.5 2:1.4 3:0.2\n"
    sparse = json.loads(plain(h.invoke(libsvm, "text/libsvm", "application/json")).body)
    np.testing.assert_allclose(sparse["predictions"][0]["score"], expected[0], rtol=1e-6)
    lines_out = plain(h.invoke(csv_body, "text/csv", "application/jsonlines")).body.decode()
    from_lines = [json.loads(x)["score"] for x in lines_out.splitlines()]
    np.testing.assert_allclose(from_lines, expected, rtol=1e-6)


# --- ONNX ------------------------------------------------------------------------------------


def test_onnx_linear_casts_to_the_input_type(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model_dir, weights, bias = fm.onnx_linear(tmp_path)
    h = handler(model_dir)
    expected = ROWS @ weights + bias
    np.testing.assert_allclose(invoke_json(h, ROWS.tolist()), expected, rtol=1e-5)
    one = invoke_json(h, ROWS[0].tolist())  # one row without its batch dimension
    np.testing.assert_allclose(one, expected[:1], rtol=1e-5)


# --- PyTorch ---------------------------------------------------------------------------------


def test_torchscript_default_handlers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model_dir, module = fm.torchscript_linear(tmp_path)
    h = handler(model_dir)
    with torch.no_grad():
        expected = module(torch.from_numpy(ROWS)).numpy()
    np.testing.assert_allclose(invoke_json(h, ROWS.tolist()), expected, rtol=1e-6)
    npy = plain(h.invoke(_npy(ROWS), "application/x-npy", "application/x-npy"))
    np.testing.assert_allclose(np.load(io.BytesIO(npy.body)), expected, rtol=1e-6)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_a_state_dict_needs_model_fn(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model_dir = fm.torch_state_dict(tmp_path)
    with pytest.raises(NotTorchScript, match=r"define model_fn\(model_dir\) in code/inference\.py"):
        load_default_model(model_dir)
    with pytest.raises(ModelLoadError, match=r"model_fn failed: NotTorchScript: model\.pth is not"):
        handler(model_dir)


def test_user_model_fn_with_a_state_dict_gets_the_torch_defaults(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model_dir = fm.torch_state_dict(tmp_path)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(
        "import os, torch\n"
        "def model_fn(model_dir):\n"
        "    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=-1))\n"
        "    net.load_state_dict(torch.load(os.path.join(model_dir, 'model.pth')))\n"
        "    return net.eval()\n"
        "def predict_fn(data, model):\n"
        "    with torch.no_grad():\n"
        "        return model(data)  # a tensor: the default output_fn converts it\n"
    )
    h = handler(model_dir)
    reference = fm._linear().eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(ROWS)).numpy()
    np.testing.assert_allclose(invoke_json(h, ROWS.tolist()), expected, rtol=1e-6)


# --- Hugging Face ----------------------------------------------------------------------------


def test_huggingface_pipeline_from_save_pretrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model_dir = fm.hf_tiny_classifier(tmp_path / "hf")
    monkeypatch.delenv("HF_TASK", raising=False)  # inferred from BertForSequenceClassification
    h = handler(model_dir)
    reference = transformers.pipeline("text-classification", model=str(model_dir), device="cpu")
    texts = ["hello world", "bad movie"]
    got = invoke_json(h, {"inputs": texts, "parameters": {"top_k": None}})
    expected = reference(texts, top_k=None)
    assert _scores(got) == pytest.approx(_scores(expected), rel=1e-5)
    assert invoke_json(h, "good movie")[0]["label"] == reference("good movie")[0]["label"]


def _scores(rows: list[list[dict[str, Any]]]) -> list[float]:
    return [item["score"] for row in rows for item in sorted(row, key=lambda i: i["label"])]


def test_huggingface_without_task_or_known_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("transformers")
    model_dir = fm.hf_tiny_classifier(tmp_path / "hf")
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["MysteryNet"]
    (model_dir / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv("HF_TASK", raising=False)
    with pytest.raises(ValueError, match="set HF_TASK"):
        load_default_model(model_dir)
