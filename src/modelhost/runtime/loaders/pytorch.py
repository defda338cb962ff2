"""PyTorch: a TorchScript `model.pt` / `model.pth` (or one `*.pt` / `*.pth`), `torch.jit.load`.

The model goes to CUDA when torch sees a GPU and the instance was given one (CUDA_VISIBLE_DEVICES
non-empty), else it stays on the CPU. A `model.pth` holding a state_dict (or any pickled object
that is not TorchScript) cannot be loaded without the model's class: that needs `model_fn` in
code/inference.py, as with SageMaker's PyTorch container.

Default handlers, like the SageMaker PyTorch toolkit's: JSON/CSV bodies become float32 tensors,
NPY keeps its dtype; predict runs `model(tensor)` in eval mode under `torch.no_grad()` and
returns a numpy array; output_fn also accepts tensors (moved to the CPU) from a user predict_fn.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.runtime import codecs
from modelhost.runtime.loaders._imports import loaded, require
from modelhost.runtime.loaders.onnx import gpu_visible

NAME = "pytorch"
MODULE = "torch"
PACKAGE = "torch"


class NotTorchScript(ValueError):
    """The file is not TorchScript: the default model_fn cannot rebuild the model."""


def _torch() -> Any:
    return require(MODULE, PACKAGE)


def device(torch: Any) -> Any:
    return torch.device("cuda" if gpu_visible() and torch.cuda.is_available() else "cpu")


def load(path: Path) -> Any:
    torch = _torch()
    target = device(torch)
    try:
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; SageMaker uses it
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=target)
    except RuntimeError as exc:
        raise NotTorchScript(
            f"{path.name} is not a TorchScript model; it looks like a "
            "state_dict or a pickled module, which needs the model's class to load: define "
            "model_fn(model_dir) in code/inference.py that builds the model and loads "
            f"{path.name} (or save it with torch.jit.script(model).save('{path.name}'))"
        ) from exc
    model.eval()
    return model


def is_model(model: Any) -> bool:
    torch = loaded(MODULE)
    return torch is not None and isinstance(model, torch.nn.Module)


# --- default handlers --------------------------------------------------------------------------


def input_fn(data: str | bytes, content_type: str) -> Any:
    torch = _torch()
    array = codecs.decode(data, content_type)
    if codecs.is_text(content_type):
        return torch.as_tensor(np.asarray(array, dtype=np.float32))
    return torch.from_numpy(np.asarray(array))


def _model_device(model: Any) -> Any:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def predict_fn(data: Any, model: Any) -> Any:
    torch = _torch()
    tensor = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    where = _model_device(model)
    if where is not None:
        tensor = tensor.to(where)
    model.eval()
    with torch.no_grad():
        output = model(tensor)
    return to_numpy(output)


def to_numpy(value: Any) -> Any:
    """Tensors (also inside lists, tuples and dicts) -> numpy arrays on the CPU."""
    torch = loaded(MODULE)
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, list | tuple):
        return [to_numpy(v) for v in value]
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    return value


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
        return codecs.encode(to_numpy(prediction), accept, default_accept)

    return {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
