"""ONNX: `model.onnx`, or one `*.onnx` file, run by an onnxruntime `InferenceSession`.

Providers: CUDA first when onnxruntime offers it and the instance has a GPU (a non-empty
CUDA_VISIBLE_DEVICES), then CPU. Intra-op threads follow OMP_NUM_THREADS, which the platform
sets from the instance type. Default predict: the decoded array, cast to the first input's
element type (a missing batch dimension is added), fed to the first input; the first output
comes back (the default output_fn encodes it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.runtime.loaders._imports import loaded, require

NAME = "onnx"
MODULE = "onnxruntime"
PACKAGE = "onnxruntime"

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def gpu_visible() -> bool:
    """Whether this instance was given a GPU: CUDA_VISIBLE_DEVICES unset or non-empty."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is None or value.strip() not in ("", "-1")


def providers(available: list[str], gpu: bool) -> list[str]:
    chosen = ["CUDAExecutionProvider"] if gpu and "CUDAExecutionProvider" in available else []
    return [*chosen, "CPUExecutionProvider"]


def load(path: Path) -> Any:
    ort = require(MODULE, PACKAGE)
    options = ort.SessionOptions()
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(
        str(path), options, providers=providers(ort.get_available_providers(), gpu_visible())
    )


def is_model(model: Any) -> bool:
    ort = loaded(MODULE)
    return ort is not None and isinstance(model, ort.InferenceSession)


def feed(session: Any, data: Any) -> dict[str, Any]:
    """The input feed for `data`: the first input, cast to its type, batch dim added if missing."""
    first = session.get_inputs()[0]
    dtype = _DTYPES.get(first.type)
    array = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    rank = len(first.shape) if first.shape is not None else array.ndim
    if array.ndim == rank - 1:
        array = array.reshape(1, *array.shape)
    return {first.name: array}


def predict_fn(data: Any, model: Any) -> Any:
    if isinstance(data, dict):  # {input name: array}: several inputs, fed as given
        outputs = model.run(None, data)
    else:
        outputs = model.run(None, feed(model, data))
    return outputs[0]


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    return {"predict_fn": predict_fn}
