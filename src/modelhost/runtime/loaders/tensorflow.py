"""TensorFlow: a SavedModel (`saved_model.pb` at the root, or TF Serving's
`<name>/<version>/saved_model.pb`, the highest version), loaded with `tf.saved_model.load`.

Default handlers follow TF Serving's REST API, which SageMaker's TensorFlow container proxies:
a JSON body `{"instances": [...]}` (or `{"inputs": ...}`, or a bare list; CSV rows too) goes to
the `serving_default` signature; the response is `{"predictions": [...]}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.runtime import codecs
from modelhost.runtime.loaders._imports import loaded, require

NAME = "tensorflow"
MODULE = "tensorflow"
PACKAGE = "tensorflow"
SIGNATURE = "serving_default"


def _tf() -> Any:
    return require(MODULE, PACKAGE)


def load(path: Path) -> Any:
    return _tf().saved_model.load(str(path))


def is_model(model: Any) -> bool:
    return loaded(MODULE) is not None and SIGNATURE in getattr(model, "signatures", {})


def input_fn(data: str | bytes, content_type: str) -> Any:
    media = codecs.base_type(content_type or codecs.JSON)
    if media != codecs.JSON:
        return codecs.decode(data, content_type)
    body = json.loads(data)
    if isinstance(body, dict):
        for key in ("instances", "inputs"):
            if key in body:
                return np.asarray(body[key])
    return np.asarray(body)


def predict_fn(data: Any, model: Any) -> Any:
    tf = _tf()
    signature = model.signatures[SIGNATURE]
    _, kwargs = signature.structured_input_signature
    names = sorted(kwargs)
    if len(names) != 1:
        raise ValueError(
            f"the {SIGNATURE} signature takes {len(names)} inputs ({', '.join(names)}); "
            "the default predict_fn feeds one: define predict_fn in code/inference.py"
        )
    spec = kwargs[names[0]]
    outputs = signature(**{names[0]: tf.constant(np.asarray(data), dtype=spec.dtype)})
    values = {k: v.numpy() for k, v in outputs.items()}
    return next(iter(values.values())) if len(values) == 1 else values


def _json_ready(prediction: Any) -> Any:
    if isinstance(prediction, dict):  # several outputs: one object per row, like TF Serving
        columns = {k: np.asarray(v).tolist() for k, v in prediction.items()}
        rows = len(next(iter(columns.values()), []))
        return [{k: col[i] for k, col in columns.items()} for i in range(rows)]
    return np.asarray(prediction).tolist()


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
        media = codecs.negotiate(accept, default_accept)
        if media == codecs.JSON:
            return json.dumps({"predictions": _json_ready(prediction)}).encode(), media
        return codecs.encode(prediction, media, default_accept)

    return {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
