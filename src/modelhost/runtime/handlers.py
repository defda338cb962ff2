"""The sagemaker-inference-toolkit handler contract: load the user module, run the chain.

`load_handler` imports `<model_dir>/code/<SAGEMAKER_PROGRAM>`, checks its handlers once (mixing,
arity), runs `pre_model_fn`, `model_fn` and `model_warmup_fn`, and returns a `ModelHandler`
whose `invoke` runs `transform_fn` or `input_fn -> predict_fn -> output_fn` for one request.

Streaming: when `transform_fn` or `output_fn` returns a generator (sync or async; also an
iterator), or `predict_fn` returns one and the default `output_fn` is in use, the result
is a `StreamingResult` holding a `ResponseStream`; the server sends each item as one HTTP chunk.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import AsyncGeneratorType, GeneratorType, ModuleType
from typing import Any, NamedTuple, TypeVar, final

import numpy as np

from modelhost.runtime import codecs
from modelhost.runtime.loaders import framework_handlers, load_default_model

DEFAULT_PROGRAM = "inference.py"
OCTET_STREAM = "application/octet-stream"
CHAIN_FNS = ("input_fn", "predict_fn", "output_fn")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_GENERATORS = (GeneratorType, AsyncGeneratorType)

T = TypeVar("T")


@dataclass(frozen=True)
class HandlerOptions:
    model_dir: str
    program: str | None = None  # SAGEMAKER_PROGRAM; None means inference.py, if present
    default_accept: str = codecs.JSON  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
    code_dir: str | None = None  # SAGEMAKER_SUBMIT_DIRECTORY, resolved; None: <model_dir>/code


class ModelLoadError(Exception):
    """Loading failed at `stage`; the message is the one line worth reporting."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.cause = cause


class InvocationResult(NamedTuple):
    body: bytes
    content_type: str
    custom_attributes: str | None  # None: echo the request's custom attributes


class Context:
    """The `context` argument handlers may take (a subset of the MMS/toolkit context).

    `request_headers` keys are lower-case; set `custom_attributes` to send
    `X-Amzn-SageMaker-Custom-Attributes` back.
    """

    __slots__ = ("custom_attributes", "request_headers", "system_properties")

    def __init__(
        self, system_properties: dict[str, Any], request_headers: dict[str, str] | None = None
    ) -> None:
        self.system_properties = system_properties
        self.request_headers: dict[str, str] = request_headers or {}
        self.custom_attributes: str | None = None

    def get_request_header(self, idx: int, name: str) -> str | None:
        return self.request_headers.get(name.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return self.request_headers


class ResponseStream:
    """A streamed response body: the handler's iterator or async iterator of items.

    Items are `str` (sent as UTF-8) or bytes. Nothing runs until the server iterates, so
    `custom_attributes` is read once the first item is out (a generator may set it first).
    """

    __slots__ = ("context", "items")

    def __init__(self, items: Iterator[Any] | AsyncIterator[Any], context: Context | None) -> None:
        self.items = items
        self.context = context

    @property
    def custom_attributes(self) -> str | None:
        return self.context.custom_attributes if self.context is not None else None


@final
class StreamingResult(NamedTuple):
    """`InvocationResult` for a streamed body."""

    stream: ResponseStream
    content_type: str
    custom_attributes: str | None


# --- defaults ----------------------------------------------------------------------------------


def default_predict_fn(data: Any, model: Any) -> Any:
    """`model.predict(data)`; a 1-D array is one row."""
    if isinstance(data, np.ndarray) and data.ndim == 1:
        data = data.reshape(1, -1)
    return model.predict(data)


def _default_output_fn(default_accept: str) -> Callable[[Any, str], tuple[bytes, str]]:
    def output_fn(prediction: Any, accept: str) -> tuple[Any, str]:
        if isinstance(prediction, _GENERATORS):  # predict_fn streams: encode item by item
            return (
                _encode_items(prediction, accept, default_accept),
                _stream_type(accept, default_accept),
            )
        return codecs.encode(prediction, accept, default_accept)

    return output_fn


def _encode_item(item: Any, accept: str, default_accept: str) -> Any:
    if isinstance(item, bytes | str):
        return item
    return codecs.encode(item, accept, default_accept)[0]


def _stream_type(accept: str, default_accept: str) -> str:
    """The Content-Type of streamed items: the negotiated type; for a type the encoders do not
    know (str and bytes items pass as they are), the first type the caller accepts."""
    try:
        return codecs.negotiate(accept, default_accept)
    except codecs.InvocationError:
        return accept.split(",", 1)[0].split(";", 1)[0].strip()


def _encode_items(
    items: Iterator[Any] | AsyncIterator[Any], accept: str, default_accept: str
) -> Iterator[Any] | AsyncIterator[Any]:
    """Streamed predictions: str and bytes items pass as they are, others are encoded."""
    if isinstance(items, AsyncIterator):
        return _encode_async(items, accept, default_accept)
    return _encode_sync(items, accept, default_accept)


def _encode_sync(items: Iterator[Any], accept: str, default_accept: str) -> Iterator[Any]:
    try:
        for item in items:
            yield _encode_item(item, accept, default_accept)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


async def _encode_async(
    items: AsyncIterator[Any], accept: str, default_accept: str
) -> AsyncIterator[Any]:
    try:
        async for item in items:
            yield _encode_item(item, accept, default_accept)
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


# --- arity -------------------------------------------------------------------------------------


def takes_context(fn: Callable[..., Any], name: str, nargs: int) -> bool:
    """Whether `fn` takes a trailing `context` after its `nargs` arguments (checked once)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = [p for p in params if p.kind in _POSITIONAL]
    var = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    kw_required = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    too_few = len(positional) < nargs and not var
    if too_few or required > nargs + 1 or kw_required:
        raise TypeError(
            f"{name} must take {nargs} positional arguments, plus an optional trailing context; "
            f"its signature is {name}{inspect.signature(fn)}"
        )
    # As the toolkit: a context only when a named parameter is there for it (a decorator's
    # (*args, **kwargs) wrapper gets exactly the usual arguments).
    return len(positional) > nargs


# --- the chain ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """The resolved handler functions and, for each, whether it takes a context."""

    transform: Callable[..., Any] | None
    input: Callable[..., Any]
    predict: Callable[..., Any]
    output: Callable[..., Any]
    ctx_transform: bool
    ctx_input: bool
    ctx_predict: bool
    ctx_output: bool

    @property
    def uses_context(self) -> bool:
        if self.transform is not None:
            return self.ctx_transform
        return self.ctx_input or self.ctx_predict or self.ctx_output


def resolve_chain(fns: Mapping[str, Callable[..., Any]], default_accept: str) -> Chain:
    """Fill in the default handlers and detect context arguments (once, at load time)."""
    transform = fns.get("transform_fn")
    input_fn = fns.get("input_fn", codecs.decode)
    predict_fn = fns.get("predict_fn", default_predict_fn)
    output_fn = fns.get("output_fn", _default_output_fn(default_accept))
    return Chain(
        transform=transform,
        input=input_fn,
        predict=predict_fn,
        output=output_fn,
        ctx_transform=transform is not None and takes_context(transform, "transform_fn", 4),
        ctx_input=takes_context(input_fn, "input_fn", 2),
        ctx_predict=takes_context(predict_fn, "predict_fn", 2),
        ctx_output=takes_context(output_fn, "output_fn", 2),
    )


class ModelHandler:
    """One loaded model plus its handler chain; `invoke` serves one request."""

    def __init__(self, model: Any, chain: Chain, options: HandlerOptions) -> None:
        self.model = model
        self.default_accept = options.default_accept
        self.uses_context = chain.uses_context
        self.system_properties = _system_properties(options.model_dir)
        self._chain = chain
        self._transform = chain.transform

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        headers: dict[str, str] | None = None,
    ) -> InvocationResult | StreamingResult:
        """Run the chain; user exceptions propagate (the server turns them into 500).

        `headers` (lower-case names) only matter when a handler takes a context.
        """
        ctx = Context(self.system_properties, headers) if self.uses_context else None
        if not accept or accept == codecs.ANY:
            accept = self.default_accept
        content_type = content_type or OCTET_STREAM
        data = body.decode("utf-8") if codecs.is_text(content_type) else body
        if self._transform is not None:
            result = self._run_transform(data, content_type, accept, ctx)
        else:
            result = self._run_chain(data, content_type, accept, ctx)
        return _invocation_result(result, accept, ctx)

    # --- the same chain in steps, for batching (runtime/batching.py) --------------------------

    @property
    def batchable(self) -> bool:
        """Whether requests may share one predict_fn call: no transform_fn, and a predict_fn
        without a context (one context cannot stand for several requests)."""
        return self._transform is None and not self._chain.ctx_predict

    def decode(
        self, body: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> tuple[Any, Context | None]:
        """`input_fn` for one request: (its input, its context)."""
        ctx = Context(self.system_properties, headers) if self.uses_context else None
        content_type = content_type or OCTET_STREAM
        data = body.decode("utf-8") if codecs.is_text(content_type) else body
        c = self._chain
        x = c.input(data, content_type, ctx) if c.ctx_input else c.input(data, content_type)
        return x, ctx

    def predict(self, data: Any, ctx: Context | None) -> Any:
        c = self._chain
        return c.predict(data, self.model, ctx) if c.ctx_predict else c.predict(data, self.model)

    def encode(
        self, prediction: Any, accept: str | None, ctx: Context | None
    ) -> InvocationResult | StreamingResult:
        """`output_fn` for one request's prediction."""
        if not accept or accept == codecs.ANY:
            accept = self.default_accept
        c = self._chain
        result = c.output(prediction, accept, ctx) if c.ctx_output else c.output(prediction, accept)
        return _invocation_result(result, accept, ctx)

    def _run_transform(self, data: Any, content_type: str, accept: str, ctx: Context | None) -> Any:
        fn = self._chain.transform
        assert fn is not None
        if self._chain.ctx_transform:
            return fn(self.model, data, content_type, accept, ctx)
        return fn(self.model, data, content_type, accept)

    def _run_chain(self, data: Any, content_type: str, accept: str, ctx: Context | None) -> Any:
        c = self._chain
        x = c.input(data, content_type, ctx) if c.ctx_input else c.input(data, content_type)
        y = c.predict(x, self.model, ctx) if c.ctx_predict else c.predict(x, self.model)
        return c.output(y, accept, ctx) if c.ctx_output else c.output(y, accept)


def _system_properties(model_dir: str) -> dict[str, Any]:
    return {"model_dir": model_dir, "batch_size": 1, "server_name": "modelhost"}


def _invocation_result(
    result: Any, accept: str, ctx: Context | None
) -> InvocationResult | StreamingResult:
    """`body` or `(body, content_type)` -> the result; str bodies become UTF-8, iterators and
    generators a `StreamingResult`."""
    if isinstance(result, tuple):
        if len(result) != 2 or not isinstance(result[1], str):
            raise TypeError(
                "output_fn/transform_fn returned a tuple; expected (body, content_type)"
            )
        body, content_type = result
    else:
        body, content_type = result, accept
    custom = ctx.custom_attributes if ctx else None
    if isinstance(body, bytes):
        return InvocationResult(body, content_type, custom)
    if isinstance(body, str):
        return InvocationResult(body.encode("utf-8"), content_type, custom)
    if isinstance(body, bytearray | memoryview):
        return InvocationResult(bytes(body), content_type, custom)
    if isinstance(body, Iterator | AsyncIterator):
        return StreamingResult(ResponseStream(body, ctx), content_type, custom)
    if isinstance(body, dict | list | int | float | bool) or body is None:
        # MMS/TorchServe JSON-encode any other value; so do we
        text = json.dumps(body, default=codecs.json_default)
        return InvocationResult(text.encode(), codecs.JSON, custom)
    raise TypeError(
        f"output_fn/transform_fn must return bytes or str (or a (body, content_type) tuple), "
        f"or a generator of them; got {type(body).__name__}"
    )


# --- loading -----------------------------------------------------------------------------------


def _stage(stage: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except (Exception, SystemExit) as exc:
        raise ModelLoadError(stage, exc) from exc


def _program_path(code_dir: Path, program: str | None) -> Path | None:
    name = program or DEFAULT_PROGRAM
    path = code_dir / (name if name.endswith(".py") else f"{name}.py")
    if path.is_file():
        return path
    if program is not None:
        raise FileNotFoundError(f"SAGEMAKER_PROGRAM={program} but {path} does not exist")
    return None


def import_user_module(code_dir: Path, path: Path) -> ModuleType:
    """Import `path` as a top-level module with `code_dir` and `code_dir/lib` on sys.path."""
    for entry in (code_dir / "lib", code_dir):
        if str(entry) not in sys.path:
            sys.path.insert(0, str(entry))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def user_functions(module: ModuleType | None) -> dict[str, Callable[..., Any]]:
    """The handler functions `module` defines; ValueError when transform_fn is mixed in."""
    names = ("model_fn", "pre_model_fn", "model_warmup_fn", "transform_fn", *CHAIN_FNS)
    fns = {name: getattr(module, name) for name in names if callable(getattr(module, name, None))}
    mixed = [name for name in CHAIN_FNS if name in fns]
    if "transform_fn" in fns and mixed:
        raise ValueError(
            f"transform_fn replaces input_fn/predict_fn/output_fn; define either transform_fn or "
            f"those, not both (found transform_fn and {', '.join(mixed)})"
        )
    return fns


def _call_hook(fn: Callable[..., Any], name: str, args: tuple[Any, ...], ctx: Context) -> Any:
    return fn(*args, ctx) if takes_context(fn, name, len(args)) else fn(*args)


def load_handler(options: HandlerOptions) -> ModelHandler:
    """Import user code, load the model and warm it up; ModelLoadError says which step failed."""
    model_dir = options.model_dir
    code_dir = Path(options.code_dir) if options.code_dir else Path(model_dir) / "code"
    path = _stage("finding the inference script", _program_path, code_dir, options.program)
    label = f"code/{path.name}" if path else "handlers"
    module = _stage(f"importing {label}", import_user_module, code_dir, path) if path else None
    fns = _stage(f"checking {label}", user_functions, module)
    chain = _stage(f"checking {label}", resolve_chain, fns, options.default_accept)
    ctx = Context(_system_properties(model_dir))
    if "pre_model_fn" in fns:
        _stage("pre_model_fn", _call_hook, fns["pre_model_fn"], "pre_model_fn", (model_dir,), ctx)
    model_fn = fns.get("model_fn", load_default_model)
    model = _stage("model_fn", _call_hook, model_fn, "model_fn", (model_dir,), ctx)
    if "model_warmup_fn" in fns:
        warmup = fns["model_warmup_fn"]
        _stage("model_warmup_fn", _call_hook, warmup, "model_warmup_fn", (model_dir, model), ctx)
    accept = options.default_accept
    defaults = {} if chain.transform else framework_handlers(model, accept)
    if defaults:  # the model's framework has its own default handlers (loaders/)
        chain = _stage(f"checking {label}", resolve_chain, {**defaults, **fns}, accept)
    if chain.transform is None and chain.predict is default_predict_fn:
        _stage("checking the model", _check_predictable, model)
    return ModelHandler(model, chain, options)


def _check_predictable(model: Any) -> None:
    if not callable(getattr(model, "predict", None)):
        raise TypeError(
            f"the default predict_fn calls model.predict(data) but the {type(model).__name__} "
            "returned by model_fn has no predict method; define predict_fn or transform_fn"
        )
