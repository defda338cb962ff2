"""Default `model_fn` per framework, and the default handlers that go with each model type.

`load_default_model(model_dir)` detects the framework from the files in the model dir
(`detect.py`, pure; `MODELHOST_FRAMEWORK` may name the framework to try first) and calls that
loader. `framework_handlers(model, default_accept)` gives the framework's default
`input_fn`/`predict_fn`/`output_fn` for a loaded model, chosen by its type (so a user `model_fn`
that returns a Booster, a TorchScript module or a pipeline gets the right defaults too).

Each loader module offers `NAME`, `MODULE` and `PACKAGE` (what to import, what to pip install),
`load(path)`, `is_model(model)` (never imports the framework) and `handlers(default_accept)`.
Frameworks are imported lazily; a missing one raises `FrameworkNotInstalled` naming the package.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from modelhost.runtime.loaders import (
    huggingface,
    onnx,
    pytorch,
    sklearn,
    tensorflow,
    xgboost,
)
from modelhost.runtime.loaders._imports import FrameworkNotInstalled
from modelhost.runtime.loaders.detect import (
    DESCRIPTIONS,
    AmbiguousModelError,
    Detection,
    detect,
    framework_hint,
    list_model_files,
)

FRAMEWORK_ENV = "MODELHOST_FRAMEWORK"


class Loader(Protocol):
    NAME: str
    MODULE: str
    PACKAGE: str

    def load(self, path: Path) -> Any: ...

    def is_model(self, model: Any) -> bool: ...

    def handlers(self, default_accept: str) -> dict[str, Callable[..., Any]]: ...


LOADERS: dict[str, Loader] = {
    m.NAME: m for m in (sklearn, xgboost, huggingface, tensorflow, pytorch, onnx)
}


class ModelNotFoundError(FileNotFoundError):
    """No loader recognised a model file in the model directory."""


def detect_model(model_dir: Path, env: Mapping[str, str] | None = None) -> Detection | None:
    env = os.environ if env is None else env
    return detect(list_model_files(model_dir), framework_hint(env.get(FRAMEWORK_ENV)))


def load_default_model(model_dir: str | Path) -> Any:
    """Load the model in `model_dir` with the loader of the framework its files belong to."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelNotFoundError(f"model directory {directory} does not exist")
    found = detect_model(directory)
    if found is None:
        model_id = os.environ.get("HF_MODEL_ID")
        if model_id:
            return huggingface.load_hub_model(model_id)
        looked_for = "; ".join(f"{name}: {what}" for name, what in DESCRIPTIONS.items())
        raise ModelNotFoundError(
            f"no model file found in {directory} (looked for {looked_for}); "
            "define model_fn in code/inference.py to load other formats"
        )
    path = directory / found.path if found.path else directory
    return LOADERS[found.framework].load(path)


def framework_handlers(model: Any, default_accept: str) -> dict[str, Callable[..., Any]]:
    """The default handlers of the framework `model` belongs to; {} for the generic ones."""
    for loader in LOADERS.values():
        if loader.is_model(model):
            return loader.handlers(default_accept)
    return {}


__all__ = [
    "LOADERS",
    "AmbiguousModelError",
    "FrameworkNotInstalled",
    "ModelNotFoundError",
    "detect_model",
    "framework_handlers",
    "load_default_model",
]
