"""Which framework loads a model directory, decided from its file names alone (pure).

`detect(files, hint)` takes the model directory's relative POSIX paths (`list_model_files`
reads them, skipping `code/`) and returns a `Detection`: the framework and the path to load.
Rules, first match wins (a framework named by `hint` is tried first):

  xgboost      `xgboost-model` (the SageMaker XGBoost container's file name)
  sklearn      `model.joblib`
  huggingface  `config.json` plus weights (`*.safetensors`, `pytorch_model.bin`, ...) at the root
  tensorflow   `saved_model.pb` at the root, or `<name>/<version>/saved_model.pb`
  pytorch      `model.pt` / `model.pth`, else one `*.pt` / `*.pth`
  onnx         `model.onnx`, else one `*.onnx`
  sklearn      one `*.pkl` / `*.joblib`
  xgboost      one `*.ubj` / `*.bst` / `*.json` (Hugging Face's JSON files excepted)

Several candidates for one rule raise `AmbiguousModelError` (a ValueError).

`MODELHOST_FRAMEWORK` (the hint) accepts a framework name (`sklearn`, `scikit-learn`, `xgboost`,
`pytorch`, `torch`, `onnx`, `tensorflow`, `tf`, `huggingface`, `hf`) or a SageMaker framework
image URI / repository name (`.../sagemaker-xgboost:1.7-1`, `huggingface-pytorch-inference`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SKLEARN = "sklearn"
XGBOOST = "xgboost"
HUGGINGFACE = "huggingface"
TENSORFLOW = "tensorflow"
PYTORCH = "pytorch"
ONNX = "onnx"
FRAMEWORKS = (SKLEARN, XGBOOST, HUGGINGFACE, TENSORFLOW, PYTORCH, ONNX)

# Substrings of hint values, checked in this order ("huggingface-pytorch-..." is huggingface).
_HINTS: tuple[tuple[str, str], ...] = (
    ("huggingface", HUGGINGFACE),
    ("hf", HUGGINGFACE),
    ("xgboost", XGBOOST),
    ("scikit-learn", SKLEARN),
    ("sklearn", SKLEARN),
    ("onnx", ONNX),
    ("tensorflow", TENSORFLOW),
    ("tf", TENSORFLOW),
    ("pytorch", PYTORCH),
    ("torch", PYTORCH),
)

HF_CONFIG = "config.json"
HF_WEIGHTS = (
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)
# JSON files a save_pretrained directory holds that are never XGBoost models.
HF_JSON = frozenset(
    {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "preprocessor_config.json",
        "vocab.json",
    }
)
SKIPPED_DIRS = frozenset({"code", "__pycache__", ".ipynb_checkpoints"})
MAX_DEPTH = 4  # export/Servo/<version>/saved_model.pb
MAX_FILES = 20_000

DESCRIPTIONS = {
    XGBOOST: "xgboost-model, or one *.ubj / *.bst / *.json file",
    SKLEARN: "model.joblib, or one *.pkl / *.joblib file",
    HUGGINGFACE: "config.json with save_pretrained weights (*.safetensors, pytorch_model.bin)",
    TENSORFLOW: "saved_model.pb, or <name>/<version>/saved_model.pb",
    PYTORCH: "model.pt / model.pth (TorchScript), or one *.pt / *.pth file",
    ONNX: "model.onnx, or one *.onnx file",
}


class AmbiguousModelError(ValueError):
    """Several files could be the model; the message names them."""


@dataclass(frozen=True)
class Detection:
    framework: str
    path: str  # relative POSIX path of the file or directory to load; "" is the model dir


def framework_hint(value: str | None) -> str | None:
    """The framework a `MODELHOST_FRAMEWORK` value names, None when empty or unknown."""
    if not value:
        return None
    text = value.strip().lower()
    if text in FRAMEWORKS:
        return text
    repo = text.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    for word in (repo, text):
        parts = set(word.replace("_", "-").split("-"))
        for needle, framework in _HINTS:
            if needle in parts or (len(needle) > 3 and needle in word):
                return framework
    return None


def detect(files: Iterable[str], hint: str | None = None) -> Detection | None:
    """The framework and path to load for a model dir holding `files` (relative POSIX paths)."""
    paths = sorted(set(files))
    rules = list(_RULES)
    if hint is not None:
        rules.sort(key=lambda rule: rule[0] != hint)  # stable: the hint's rules first
    for framework, rule in rules:
        path = rule(paths)
        if path is not None:
            return Detection(framework, path)
    return None


# --- rules ---------------------------------------------------------------------------------


def _root(paths: Sequence[str]) -> list[str]:
    return [p for p in paths if "/" not in p]


def _matching(paths: Sequence[str], patterns: Sequence[str]) -> list[str]:
    return [p for p in paths if any(PurePosixPath(p).match(pat) for pat in patterns)]


def _one(
    paths: Sequence[str], preferred: Sequence[str], patterns: Sequence[str], what: str
) -> str | None:
    root = _root(paths)
    for name in preferred:
        if name in root:
            return name
    found = _matching(root, patterns)
    if len(found) > 1:
        raise AmbiguousModelError(
            f"several {what} model files ({', '.join(found)}); name one {preferred[0]} "
            "or define model_fn in code/inference.py"
        )
    return found[0] if found else None


def _xgboost_named(paths: Sequence[str]) -> str | None:
    return "xgboost-model" if "xgboost-model" in paths else None


def _sklearn_named(paths: Sequence[str]) -> str | None:
    return "model.joblib" if "model.joblib" in paths else None


def _huggingface(paths: Sequence[str]) -> str | None:
    root = _root(paths)
    return "" if HF_CONFIG in root and _matching(root, HF_WEIGHTS) else None


def _tensorflow(paths: Sequence[str]) -> str | None:
    if "saved_model.pb" in paths:
        return ""
    found = [str(PurePosixPath(p).parent) for p in paths if p.endswith("/saved_model.pb")]
    if not found:
        return None
    models = sorted({_tf_model_dir(p) for p in found})
    if len(models) > 1:
        raise AmbiguousModelError(
            f"several TensorFlow SavedModels ({', '.join(models)}); keep one, "
            "or define model_fn in code/inference.py"
        )
    return max((p for p in found if _tf_model_dir(p) == models[0]), key=_tf_version_key)


def _tf_model_dir(version_dir: str) -> str:
    """`name/1` -> `name` (TF Serving's <name>/<version>); anything else stays itself."""
    parent = PurePosixPath(version_dir)
    return str(parent.parent) if parent.name.isdigit() else version_dir


def _tf_version_key(version_dir: str) -> int:
    name = PurePosixPath(version_dir).name
    return int(name) if name.isdigit() else -1


def _pytorch(paths: Sequence[str]) -> str | None:
    return _one(paths, ("model.pt", "model.pth"), ("*.pt", "*.pth"), "PyTorch")


def _onnx(paths: Sequence[str]) -> str | None:
    return _one(paths, ("model.onnx",), ("*.onnx",), "ONNX")


def _sklearn(paths: Sequence[str]) -> str | None:
    return _one(paths, ("model.joblib",), ("*.pkl", "*.joblib"), "scikit-learn")


def _xgboost(paths: Sequence[str]) -> str | None:
    candidates = [p for p in paths if p not in HF_JSON and not p.endswith(".index.json")]
    return _one(candidates, ("xgboost-model",), ("*.ubj", "*.bst", "*.json"), "XGBoost")


_RULES: tuple[tuple[str, Callable[[Sequence[str]], str | None]], ...] = (
    (XGBOOST, _xgboost_named),
    (SKLEARN, _sklearn_named),
    (HUGGINGFACE, _huggingface),
    (TENSORFLOW, _tensorflow),
    (PYTORCH, _pytorch),
    (ONNX, _onnx),
    (SKLEARN, _sklearn),
    (XGBOOST, _xgboost),
)


# --- the one impure helper -----------------------------------------------------------------


def list_model_files(model_dir: Path) -> list[str]:
    """Relative POSIX paths of the files under `model_dir` (bounded depth and count)."""
    found: list[str] = []
    root_depth = len(model_dir.parts)
    for dirpath, dirnames, filenames in os.walk(model_dir):
        here = Path(dirpath)
        depth = len(here.parts) - root_depth
        dirnames[:] = sorted(
            d for d in dirnames if depth + 1 < MAX_DEPTH and not (depth == 0 and d in SKIPPED_DIRS)
        )
        rel = here.relative_to(model_dir)
        for name in sorted(filenames):
            found.append((rel / name).as_posix())
            if len(found) >= MAX_FILES:
                return found
    return found
