"""Default request decoders, response encoders and Accept negotiation (toolkit semantics).

JSON, CSV and JSON Lines bodies are text: they reach `input_fn` as `str`, everything else as
`bytes`. Errors carry the HTTP status the model server answers with (415 or 406).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
JSONLINES = "application/jsonlines"
ANY = "*/*"

TEXT_TYPES = frozenset({JSON, CSV, JSONLINES})

_CACHE_LIMIT = 256
_base_types: dict[str, str] = {}


class InvocationError(Exception):
    """A request the default handlers cannot serve; `status` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedContentType(InvocationError):
    status = 415


class UnsupportedAccept(InvocationError):
    status = 406


def base_type(media_type: str) -> str:
    """`"Application/JSON; charset=utf-8"` -> `"application/json"` (memoised: values repeat)."""
    found = _base_types.get(media_type)
    if found is None:
        found = media_type.partition(";")[0].strip().lower()
        if len(_base_types) < _CACHE_LIMIT:
            _base_types[media_type] = found
    return found


def is_text(content_type: str) -> bool:
    """True when a body of this type is handed to `input_fn` as `str` rather than `bytes`."""
    return base_type(content_type) in TEXT_TYPES


# --- decoders --------------------------------------------------------------------------------


def _as_text(data: str | bytes) -> str:
    return data if isinstance(data, str) else data.decode("utf-8")


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def _decode_json(data: str | bytes) -> Any:
    return np.array(json.loads(data))


def _decode_csv(data: str | bytes) -> Any:
    """One row per line, even with a single column ("1\n5\n10" is three rows, not one)."""
    return np.genfromtxt(io.StringIO(_as_text(data)), delimiter=",", ndmin=2)


def _decode_npy(data: str | bytes) -> Any:
    return np.load(io.BytesIO(_as_bytes(data)), allow_pickle=False)


def _decode_jsonlines(data: str | bytes) -> Any:
    lines = _as_text(data).splitlines()
    return np.array([json.loads(line) for line in lines if line.strip()])


_DECODERS: dict[str, Callable[[str | bytes], Any]] = {
    JSON: _decode_json,
    CSV: _decode_csv,
    NPY: _decode_npy,
    JSONLINES: _decode_jsonlines,
}


def decode(data: str | bytes, content_type: str | None) -> Any:
    """The default `input_fn`: turn a request body into a numpy array."""
    decoder = _DECODERS.get(base_type(content_type or ""))
    if decoder is None:
        raise UnsupportedContentType(
            f"Content type {content_type or '(none)'} is not supported by the default input_fn; "
            f"supported: {', '.join(_DECODERS)}. Define input_fn in inference.py for other types."
        )
    return decoder(data)


# --- encoders --------------------------------------------------------------------------------


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray | np.generic):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _encode_json(prediction: Any) -> bytes:
    if isinstance(prediction, np.ndarray):
        prediction = prediction.tolist()
    return json.dumps(prediction, default=json_default).encode("utf-8")


def _encode_csv(prediction: Any) -> bytes:
    stream = io.StringIO()
    np.savetxt(stream, np.asarray(prediction), delimiter=",", fmt="%s")
    return stream.getvalue().encode("utf-8")


def _encode_npy(prediction: Any) -> bytes:
    stream = io.BytesIO()
    np.save(stream, np.asarray(prediction), allow_pickle=False)
    return stream.getvalue()


def _encode_jsonlines(prediction: Any) -> bytes:
    rows = prediction.tolist() if isinstance(prediction, np.ndarray) else prediction
    lines = [json.dumps(row, default=json_default) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: _encode_json,
    CSV: _encode_csv,
    NPY: _encode_npy,
    JSONLINES: _encode_jsonlines,
}

SUPPORTED_ACCEPTS = tuple(_ENCODERS)


def negotiate(accept: str | None, default: str = JSON) -> str:
    """The response type for an Accept header: the first supported type in the list.

    Missing or `*/*` means `default`; `;q=` parameters are ignored (order decides).
    """
    if accept is not None and accept in _ENCODERS:
        return accept
    for item in (accept or ANY).split(","):
        media = base_type(item)
        if media == ANY:
            media = default
        if media in _ENCODERS:
            return media
    raise UnsupportedAccept(
        f"Accept {accept or ANY} is not supported by the default output_fn; "
        f"supported: {', '.join(SUPPORTED_ACCEPTS)} (*/* means {default}). "
        "Define output_fn in inference.py for other types."
    )


def encode(prediction: Any, accept: str | None, default: str = JSON) -> tuple[bytes, str]:
    """The default `output_fn`: serialise `prediction` as the negotiated type."""
    media = negotiate(accept, default)
    return _ENCODERS[media](prediction), media
