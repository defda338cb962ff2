"""Hugging Face: a `save_pretrained` directory (config.json + weights, tokenizer files beside
them) served as `transformers.pipeline(HF_TASK, model=model_dir)`.

Like the SageMaker Hugging Face inference toolkit: the task comes from `HF_TASK`, else from the
architecture in config.json (`...ForSequenceClassification` -> text-classification, ...);
`HF_MODEL_ID` without local weights is looked up in the local Hugging Face cache only. The
loader sets `HF_HUB_OFFLINE=1` and `TRANSFORMERS_OFFLINE=1` unless they are set: nothing is
downloaded at run time.

Default handlers: a JSON body `{"inputs": ..., "parameters": {...}}` (or a bare value, which is
the inputs) -> `pipeline(inputs, **parameters)` -> JSON. CSV rows become a list of inputs; other
content types pass the raw bytes as `inputs` (audio, images).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from modelhost.runtime import codecs
from modelhost.runtime.loaders._imports import loaded, require
from modelhost.runtime.loaders.onnx import gpu_visible

NAME = "huggingface"
MODULE = "transformers"
PACKAGE = "transformers"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

# Architecture-name suffixes -> pipeline task, longest first.
_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("ForObjectDetection", "object-detection"),
    ("ForAudioClassification", "audio-classification"),
    ("Model", "feature-extraction"),
)


class TaskUnknown(ValueError):
    pass


def set_offline(env: MutableMapping[str, str]) -> None:
    """No Hub downloads at run time (unless the model's Environment says otherwise)."""
    for name in OFFLINE_VARS:
        env.setdefault(name, "1")


def task_for(architectures: list[str]) -> str | None:
    """The pipeline task for config.json's `architectures`, None when none is known."""
    for arch in architectures:
        for suffix, task in _TASKS:
            if arch.endswith(suffix):
                return task
    return None


def _task(model_dir: Path | None, env: MutableMapping[str, str]) -> str:
    task = env.get("HF_TASK")
    if task:
        return task
    architectures: list[str] = []
    if model_dir is not None and (model_dir / "config.json").is_file():
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        architectures = list(config.get("architectures") or [])
    inferred = task_for(architectures)
    if inferred is None:
        raise TaskUnknown(
            "cannot tell the pipeline task of this Hugging Face model "
            f"(architectures: {architectures or 'none in config.json'}): set HF_TASK in the "
            "model's Environment, e.g. HF_TASK=text-classification"
        )
    return inferred


def _pipeline(model: str, task: str) -> Any:
    set_offline(os.environ)
    transformers = require(MODULE, PACKAGE)
    torch = require("torch", "torch")  # transformers pipelines run on PyTorch
    device = "cuda" if gpu_visible() and torch.cuda.is_available() else "cpu"
    return transformers.pipeline(task, model=model, device=device)


def load(path: Path) -> Any:
    return _pipeline(str(path), _task(path, os.environ))


def load_hub_model(model_id: str) -> Any:
    """`HF_MODEL_ID` with no weights in the model dir: only a model already in the local cache."""
    try:
        return _pipeline(model_id, _task(None, os.environ))
    except OSError as exc:
        raise FileNotFoundError(
            f"HF_MODEL_ID={model_id} is not in the local Hugging Face cache and modelhost does "
            "not download models at run time: save_pretrained the model (and tokenizer) into "
            f"model.tar.gz instead ({exc})"
        ) from exc


def is_model(model: Any) -> bool:
    transformers = loaded(MODULE)
    return transformers is not None and isinstance(model, transformers.Pipeline)


# --- default handlers --------------------------------------------------------------------------


def input_fn(data: str | bytes, content_type: str) -> Any:
    media = codecs.base_type(content_type or codecs.JSON)
    if media == codecs.JSON:
        body = json.loads(data)
        return body if isinstance(body, dict) and "inputs" in body else {"inputs": body}
    if media == codecs.CSV:
        text = data if isinstance(data, str) else data.decode("utf-8")
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
        return {"inputs": [row[0] if len(row) == 1 else row for row in rows]}
    if media.startswith("text/"):
        return {"inputs": data if isinstance(data, str) else data.decode("utf-8")}
    return {"inputs": data}


def predict_fn(data: Any, model: Any) -> Any:
    if not isinstance(data, dict):
        return model(data)
    inputs = data.get("inputs", data)
    parameters = data.get("parameters") or {}
    return model(inputs, **parameters)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    torch = loaded("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
        media = codecs.negotiate(accept, default_accept)
        if media == codecs.JSON:
            return json.dumps(prediction, default=_plain).encode("utf-8"), media
        return codecs.encode(prediction, media, default_accept)

    return {"input_fn": input_fn, "predict_fn": predict_fn, "output_fn": output_fn}
