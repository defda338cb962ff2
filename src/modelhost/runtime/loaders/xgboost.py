"""XGBoost: `xgboost-model` (a pickled Booster or XGBoost's binary/JSON/UBJSON format), or one
`*.json` / `*.ubj` / `*.bst` file, loaded as an `xgboost.Booster`.

Default handlers, like the SageMaker XGBoost container's built-in serving:
- input: `text/csv` (also a missing or octet-stream type), `text/libsvm`, `application/json`,
  `application/x-npy` -> `xgboost.DMatrix` (a single row may be 1-D);
- predict: `booster.predict(dmatrix, validate_features=False)`;
- output: `text/csv` -> `0.1,0.9` (one line; multi-output rows one per line),
  `application/json` -> `{"predictions": [{"score": 0.1}, ...]}`, `application/jsonlines` ->
  one `{"score": ...}` per line, `application/x-npy` -> the array.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.runtime import codecs
from modelhost.runtime.loaders._imports import loaded, require

NAME = "xgboost"
MODULE = "xgboost"
PACKAGE = "xgboost-cpu"  # or xgboost (which also pulls a large CUDA library)
LIBSVM = ("text/libsvm", "text/x-libsvm")
_PICKLE_MAGIC = b"\x80"
_ACCEPTS = (codecs.CSV, codecs.JSON, codecs.JSONLINES, codecs.NPY)


def _xgb() -> Any:
    return require(MODULE, PACKAGE)


def load(path: Path) -> Any:
    xgb = _xgb()
    if path.suffix not in (".json", ".ubj", ".bst") and _is_pickle(path):
        with path.open("rb") as fh:
            return pickle.load(fh)  # the SageMaker XGBoost estimator pickles its Booster
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


def _is_pickle(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(1) == _PICKLE_MAGIC


def is_model(model: Any) -> bool:
    xgb = loaded(MODULE)
    return xgb is not None and isinstance(model, xgb.Booster)


# --- default handlers --------------------------------------------------------------------------


def input_fn(data: str | bytes, content_type: str) -> Any:
    media = codecs.base_type(content_type or codecs.CSV)
    if media in LIBSVM:
        return _xgb().DMatrix(_libsvm_matrix(_text(data)))
    if media == "application/octet-stream":
        media = codecs.CSV
    if media not in (codecs.CSV, codecs.JSON, codecs.NPY):
        raise codecs.UnsupportedContentType(
            f"Content type {content_type} is not supported by the XGBoost default input_fn; "
            f"supported: {codecs.CSV}, {', '.join(LIBSVM)}, {codecs.JSON}, {codecs.NPY}"
        )
    return _xgb().DMatrix(_rows(codecs.decode(data, media)))


def _text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8")


def _rows(array: Any) -> Any:
    array = np.asarray(array, dtype=np.float32)
    return array.reshape(1, -1) if array.ndim <= 1 else array


def _libsvm_matrix(text: str) -> Any:
    from scipy.sparse import csr_matrix

    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for row, line in enumerate(lines):
        for item in line.split():
            index, colon, value = item.partition(":")
            if colon:  # a leading label has no colon and is ignored
                rows.append(row)
                cols.append(int(index))
                values.append(float(value))
    return csr_matrix((values, (rows, cols)), shape=(len(lines), max(cols, default=-1) + 1))


def predict_fn(data: Any, model: Any) -> Any:
    xgb = _xgb()
    if not isinstance(data, xgb.DMatrix):
        data = xgb.DMatrix(_rows(data))
    return model.predict(data, validate_features=False)


def _csv(prediction: Any) -> bytes:
    array = np.asarray(prediction)
    if array.ndim <= 1:
        return ",".join(str(v) for v in array.reshape(-1).tolist()).encode()
    return "\n".join(",".join(str(v) for v in row) for row in array.tolist()).encode()


def _scores(prediction: Any) -> list[dict[str, Any]]:
    values = prediction.tolist() if isinstance(prediction, np.ndarray) else list(prediction)
    return [{"score": v} for v in values]


def _json(prediction: Any) -> bytes:
    return json.dumps({"predictions": _scores(prediction)}).encode()


def _jsonlines(prediction: Any) -> bytes:
    return "".join(json.dumps(s) + "\n" for s in _scores(prediction)).encode()


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    default = default_accept if default_accept in _ACCEPTS else codecs.JSON

    def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
        media = codecs.negotiate(accept, default)
        if media == codecs.CSV:
            return _csv(prediction), media
        if media == codecs.JSON:
            return _json(prediction), media
        if media == codecs.JSONLINES:
            return _jsonlines(prediction), media
        return codecs.encode(prediction, media, default)

    return {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
