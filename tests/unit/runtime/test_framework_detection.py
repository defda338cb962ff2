"""Which framework loads a model dir, from file names alone (pure; no framework imported)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelhost.runtime.loaders import (
    FrameworkNotInstalled,
    ModelNotFoundError,
    detect_model,
    framework_handlers,
    load_default_model,
)
from modelhost.runtime.loaders._imports import _Blocker, block_imports, require
from modelhost.runtime.loaders.detect import (
    AmbiguousModelError,
    Detection,
    detect,
    framework_hint,
    list_model_files,
)
from modelhost.runtime.loaders.huggingface import task_for
from modelhost.runtime.loaders.onnx import providers

HF = ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]
TF_M12 = Detection("tensorflow", "m/12")


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["xgboost-model"], Detection("xgboost", "xgboost-model")),
        (["model.joblib", "other.pkl"], Detection("sklearn", "model.joblib")),
        (["clf.pkl"], Detection("sklearn", "clf.pkl")),
        (["model.json"], Detection("xgboost", "model.json")),
        (["booster.ubj"], Detection("xgboost", "booster.ubj")),
        (["booster.bst", "code/inference.py"], Detection("xgboost", "booster.bst")),
        (["model.onnx"], Detection("onnx", "model.onnx")),
        (["resnet.onnx", "labels.txt"], Detection("onnx", "resnet.onnx")),
        (["model.pt"], Detection("pytorch", "model.pt")),
        (["model.pth"], Detection("pytorch", "model.pth")),
        (["model.pth", "extra.pt"], Detection("pytorch", "model.pth")),
        (["net.pth"], Detection("pytorch", "net.pth")),
        (HF, Detection("huggingface", "")),
        (["config.json", "pytorch_model.bin"], Detection("huggingface", "")),
        (["config.json", "model-00001-of-00002.safetensors"], Detection("huggingface", "")),
        (["saved_model.pb", "variables/variables.index"], Detection("tensorflow", "")),
        (["resnet/1/saved_model.pb", "resnet/1/variables/v"], Detection("tensorflow", "resnet/1")),
        (["m/1/saved_model.pb", "m/12/saved_model.pb", "m/3/saved_model.pb"], TF_M12),
        (["export/Servo/1700/saved_model.pb"], Detection("tensorflow", "export/Servo/1700")),
    ],
)  # fmt: skip
def test_detects_each_layout(files: list[str], expected: Detection) -> None:
    assert detect(files) == expected


@pytest.mark.parametrize(
    "files",
    [
        [],
        ["README.md", "weights.bin"],
        ["config.json"],  # a config without weights is no model
        ["config.json", "tokenizer.json", "special_tokens_map.json"],
        ["sub/model.onnx"],  # only the root counts for single files
    ],
)
def test_nothing_to_load(files: list[str]) -> None:
    assert detect(files) is None


def test_xgboost_container_name_beats_everything() -> None:
    assert detect(["xgboost-model", "model.joblib", "model.pt"]) == Detection(
        "xgboost", "xgboost-model"
    )


def test_huggingface_json_files_are_not_xgboost_models() -> None:
    # no weights: not a save_pretrained dir, and its JSON files are no Booster either
    assert detect(["config.json", "tokenizer_config.json", "generation_config.json"]) is None


@pytest.mark.parametrize(
    ("files", "names"),
    [
        (["a.onnx", "b.onnx"], "a.onnx, b.onnx"),
        (["a.pt", "b.pth"], "a.pt, b.pth"),
        (["a.pkl", "b.joblib"], "a.pkl, b.joblib"),
        (["a.json", "b.ubj"], "a.json, b.ubj"),
        (["x/1/saved_model.pb", "y/1/saved_model.pb"], "x, y"),
    ],
)
def test_ambiguous_candidates_are_named(files: list[str], names: str) -> None:
    with pytest.raises(AmbiguousModelError, match=names.replace(".", r"\.")) as caught:
        detect(files)
    assert "model_fn" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("value", "framework"),
    [
        ("xgboost", "xgboost"),
        ("sklearn", "sklearn"),
        ("scikit-learn", "sklearn"),
        ("PyTorch", "pytorch"),
        ("torch", "pytorch"),
        ("onnx", "onnx"),
        ("tf", "tensorflow"),
        ("hf", "huggingface"),
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", "xgboost"),
        ("sagemaker-scikit-learn:1.2-1-cpu-py3", "sklearn"),
        ("763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.1-cpu-py310", "pytorch"),
        ("huggingface-pytorch-inference:2.1-transformers4.37-cpu-py310-ubuntu22.04", "huggingface"),
        ("tensorflow-inference:2.13-cpu", "tensorflow"),
        ("", None),
        (None, None),
        ("modelhost/builtin", None),
        ("mxnet-inference:1.9", None),
    ],
)  # fmt: skip
def test_framework_hint(value: str | None, framework: str | None) -> None:
    assert framework_hint(value) == framework


def test_hint_is_tried_first() -> None:
    files = ["model.pt", "model.onnx"]
    assert detect(files).framework == "pytorch"  # type: ignore[union-attr]
    assert detect(files, "onnx") == Detection("onnx", "model.onnx")
    assert detect(["model.onnx"], "xgboost") == Detection("onnx", "model.onnx")  # only an order


def test_listing_skips_code_and_is_bounded_in_depth(tmp_path: Path) -> None:
    for rel in ("model.onnx", "code/inference.py", "a/1/saved_model.pb", "a/b/c/d/e.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert list_model_files(tmp_path) == ["model.onnx", "a/1/saved_model.pb"]


def test_detect_model_reads_the_hint_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"")
    (tmp_path / "model.onnx").write_bytes(b"")
    assert detect_model(tmp_path, {}) == Detection("pytorch", "model.pt")
    hinted = detect_model(tmp_path, {"MODELHOST_FRAMEWORK": "onnx"})
    assert hinted == Detection("onnx", "model.onnx")


def test_no_model_message_lists_every_framework(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFoundError) as caught:
        load_default_model(tmp_path)
    for expected in ("xgboost-model", "model.joblib", "*.onnx", "saved_model.pb", "config.json"):
        assert expected in str(caught.value)


def test_tensorflow_layout_without_tensorflow_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fixtures.framework_models import tensorflow_layout

    # as if tensorflow were not installed, whether it is or not (no skip either way)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(FrameworkNotInstalled) as caught:
        load_default_model(tensorflow_layout(tmp_path))
    assert str(caught.value) == (
        "This model needs tensorflow, which is not installed in the model server's environment: "
        "pip install tensorflow (or list it in code/requirements.txt)"
    )


def test_require_names_the_pip_package() -> None:
    with pytest.raises(FrameworkNotInstalled, match=r"pip install some-dist \(or list it"):
        require("modelhost_no_such_module_xyz", "some-dist")


def test_blocked_imports_look_uninstalled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert block_imports(" colorsys , ") == frozenset({"colorsys"})
    assert isinstance(sys.meta_path[0], _Blocker)
    with pytest.raises(FrameworkNotInstalled, match="This model needs colorsys"):
        require("colorsys", "colorsys")
    assert block_imports("") == frozenset()


def test_generic_models_get_no_framework_handlers() -> None:
    assert framework_handlers(object(), "application/json") == {}


@pytest.mark.parametrize(
    ("architectures", "task"),
    [
        (["BertForSequenceClassification"], "text-classification"),
        (["DistilBertForTokenClassification"], "token-classification"),
        (["GPT2LMHeadModel"], "text-generation"),
        (["LlamaForCausalLM"], "text-generation"),
        (["T5ForConditionalGeneration"], "text2text-generation"),
        (["BertModel"], "feature-extraction"),
        (["SomethingElse"], None),
        ([], None),
    ],
)
def test_huggingface_task_from_architecture(architectures: list[str], task: str | None) -> None:
    assert task_for(architectures) == task


@pytest.mark.parametrize(
    ("available", "gpu", "chosen"),
    [
        (["CPUExecutionProvider"], True, ["CPUExecutionProvider"]),
        (["CUDAExecutionProvider", "CPUExecutionProvider"], False, ["CPUExecutionProvider"]),
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            True,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
    ],
)
def test_onnx_providers(available: list[str], gpu: bool, chosen: list[str]) -> None:
    assert providers(available, gpu) == chosen
