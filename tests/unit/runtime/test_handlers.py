"""Loading user code and running the handler chain in-process (no sockets)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost.runtime import codecs
from modelhost.runtime.handlers import (
    HandlerOptions,
    InvocationResult,
    ModelHandler,
    ModelLoadError,
    StreamingResult,
    default_predict_fn,
    load_handler,
    takes_context,
    user_functions,
)
from tests.fixtures.models import fixture_model_dir, sklearn_iris_dir

WriteModel = Callable[[str], Path]


def plain(result: InvocationResult | StreamingResult) -> InvocationResult:
    """The handler's answer when it is not a stream (narrowed for the type checker)."""
    assert isinstance(result, InvocationResult)
    return result


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """User modules go on sys.path and into sys.modules; undo that after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    sys.modules.pop("inference", None)
    sys.modules.pop("other", None)


@pytest.fixture
def write_model(tmp_path: Path) -> WriteModel:
    """Write `source` as <model_dir>/code/inference.py and return the model dir."""

    def write(source: str) -> Path:
        code = tmp_path / "model" / "code"
        code.mkdir(parents=True)
        (code / "inference.py").write_text(textwrap.dedent(source))
        return tmp_path / "model"

    return write


def load(model_dir: Path, **options: Any) -> ModelHandler:
    return load_handler(HandlerOptions(model_dir=str(model_dir), **options))


# --- arity -------------------------------------------------------------------------------------


def test_takes_context_by_arity() -> None:
    def plain(data: Any, content_type: Any) -> None: ...

    def with_ctx(data: Any, content_type: Any, context: Any) -> None: ...

    def with_default(data: Any, content_type: Any, context: Any = None) -> None: ...

    def var(data: Any, *rest: Any) -> None: ...

    def wrapper(*args: Any, **kwargs: Any) -> None: ...  # a decorator without functools.wraps

    assert not takes_context(plain, "input_fn", 2)
    assert takes_context(with_ctx, "input_fn", 2)
    assert takes_context(with_default, "input_fn", 2)
    # as the toolkit: *args gets exactly the usual arguments, never an extra context
    assert not takes_context(var, "input_fn", 2)
    assert not takes_context(wrapper, "input_fn", 2)


@pytest.mark.parametrize(
    "fn",
    [
        lambda data: None,
        lambda a, b, c, d: None,
        lambda a, b, *, flag: None,
        lambda *, flag: None,
    ],
)
def test_wrong_arity_is_a_clear_type_error(fn: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"predict_fn must take 2 positional arguments"):
        takes_context(fn, "predict_fn", 2)


def test_transform_fn_mixed_with_chain_fns_is_value_error(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept): return data
        def predict_fn(data, model): return data
        """
    )
    with pytest.raises(ModelLoadError) as caught:
        load(model_dir)
    assert isinstance(caught.value.cause, ValueError)
    assert "transform_fn" in str(caught.value)
    assert "predict_fn" in str(caught.value)


def test_user_functions_without_module_is_empty() -> None:
    assert user_functions(None) == {}


def test_bad_arity_fails_at_load_time(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def input_fn(data): return data
        """
    )
    with pytest.raises(ModelLoadError, match="input_fn must take 2"):
        load(model_dir)


# --- loading -----------------------------------------------------------------------------------


def test_import_error_names_the_missing_module(tmp_path: Path) -> None:
    model_dir = fixture_model_dir("badimport", tmp_path / "m")
    with pytest.raises(ModelLoadError) as caught:
        load(model_dir)
    message = str(caught.value)
    assert message.startswith("importing code/inference.py failed: ModuleNotFoundError")
    assert "modelhost_fixture_module_that_does_not_exist" in message


def test_model_fn_exception_is_reported(write_model: WriteModel) -> None:
    model_dir = write_model("def model_fn(model_dir): raise RuntimeError('no weights')\n")
    with pytest.raises(ModelLoadError, match=r"^model_fn failed: RuntimeError: no weights$"):
        load(model_dir)


def test_no_code_and_no_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load(tmp_path)
    assert str(caught.value).startswith("model_fn failed: ModelNotFoundError")
    assert "model.joblib" in str(caught.value)


def test_explicit_program_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"SAGEMAKER_PROGRAM=serve\.py"):
        load(tmp_path, program="serve.py")


def test_program_and_lib_dir_are_importable(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "lib").mkdir(parents=True)
    (code / "lib" / "helper_lib_mod.py").write_text("VALUE = 41\n")
    (code / "other.py").write_text(
        "import helper_lib_mod\n"
        "def model_fn(model_dir): return helper_lib_mod.VALUE + 1\n"
        "def transform_fn(model, data, content_type, accept): return str(model)\n"
    )
    try:
        handler = load(tmp_path, program="other")
        assert plain(handler.invoke(b"", None, None)).body == b"42"
    finally:
        sys.modules.pop("helper_lib_mod", None)


def test_hooks_run_in_order(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        calls = []
        def pre_model_fn(model_dir): calls.append("pre")
        def model_fn(model_dir): calls.append("model"); return calls
        def model_warmup_fn(model_dir, model, context):
            calls.append("warmup:" + context.system_properties["model_dir"])
        def transform_fn(model, data, content_type, accept): return ",".join(model)
        """
    )
    handler = load(model_dir)
    assert plain(handler.invoke(b"", None, None)).body == f"pre,model,warmup:{model_dir}".encode()


def test_default_predict_needs_a_predict_method(write_model: WriteModel) -> None:
    model_dir = write_model("def model_fn(model_dir): return object()\n")
    with pytest.raises(ModelLoadError, match="no predict method"):
        load(model_dir)


# --- the chain ---------------------------------------------------------------------------------


def test_echo_keeps_bytes_and_content_type(tmp_path: Path) -> None:
    handler = load(fixture_model_dir("echo", tmp_path / "m"))
    result = plain(handler.invoke(b"\x00\x01", "application/octet-stream", None))
    assert result == (b"\x00\x01", "application/octet-stream", None)


def test_sum_chain(tmp_path: Path) -> None:
    handler = load(fixture_model_dir("sum", tmp_path / "m"))
    result = plain(handler.invoke(b"[1, 2, 3.5]", "application/json", "*/*"))
    assert result.body == b'{"sum": 6.5}'
    assert result.content_type == "application/json"


def test_error_propagates(tmp_path: Path) -> None:
    handler = load(fixture_model_dir("error", tmp_path / "m"))
    with pytest.raises(ValueError, match="boom from predict_fn"):
        plain(handler.invoke(b"[1]", "application/json", None))


def test_text_types_arrive_as_str_others_as_bytes(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept):
            return type(data).__name__
        """
    )
    handler = load(model_dir)
    assert plain(handler.invoke(b"{}", "application/json; charset=utf-8", None)).body == b"str"
    assert plain(handler.invoke(b"1,2", "text/csv", None)).body == b"str"
    assert plain(handler.invoke(b"{}\n", "application/jsonlines", None)).body == b"str"
    assert plain(handler.invoke(b"\x93NUMPY", "application/x-npy", None)).body == b"bytes"
    assert plain(handler.invoke(b"x", None, None)).body == b"bytes"


def test_plain_body_gets_the_accept_type(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept): return b"ok"
        """
    )
    handler = load(model_dir, default_accept="text/csv")
    assert plain(handler.invoke(b"", None, "*/*")).content_type == "text/csv"
    assert plain(handler.invoke(b"", None, None)).content_type == "text/csv"
    assert plain(handler.invoke(b"", None, "application/x-npy")).content_type == "application/x-npy"


def test_json_values_are_encoded_as_json(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept): return {"label": [1, 2]}
        """
    )
    result = plain(load(model_dir).invoke(b"", None, None))
    assert (result.body, result.content_type) == (b'{"label": [1, 2]}', "application/json")


@pytest.mark.parametrize("bad", ["object()", "(b'x', 'a', 'b')", "(b'x', 3)"])
def test_bad_output_is_type_error(write_model: WriteModel, bad: str) -> None:
    model_dir = write_model(
        f"""
        def model_fn(model_dir): return None
        def transform_fn(model, data, content_type, accept): return {bad}
        """
    )
    with pytest.raises(TypeError, match="transform_fn"):
        plain(load(model_dir).invoke(b"", None, None))


def test_context_sees_headers_and_sets_custom_attributes(write_model: WriteModel) -> None:
    model_dir = write_model(
        """
        def model_fn(model_dir): return None
        def input_fn(data, content_type, context):
            return context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
        def predict_fn(data, model): return data
        def output_fn(prediction, accept, context):
            context.custom_attributes = "seen=" + prediction
            return prediction, "text/plain"
        """
    )
    handler = load(model_dir)
    assert handler.uses_context
    headers = {"x-amzn-sagemaker-custom-attributes": "trace=1"}
    result = plain(handler.invoke(b"", "application/json", None, headers))
    assert result == (b"trace=1", "text/plain", "seen=trace=1")


def test_without_context_nothing_is_built(tmp_path: Path) -> None:
    handler = load(fixture_model_dir("sum", tmp_path / "m"))
    assert not handler.uses_context
    assert plain(handler.invoke(b"[1]", "application/json", None)).custom_attributes is None


def test_default_handlers_415_and_406(tmp_path: Path) -> None:
    handler = load(sklearn_iris_dir(tmp_path / "iris"))
    with pytest.raises(codecs.UnsupportedContentType):
        plain(handler.invoke(b"x", "text/plain", None))
    with pytest.raises(codecs.UnsupportedAccept):
        plain(handler.invoke(b"[[1, 2, 3, 4]]", "application/json", "text/html"))


def test_default_handlers_match_in_process_predict(tmp_path: Path) -> None:
    handler = load(sklearn_iris_dir(tmp_path / "iris"))
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    expected = handler.model.predict(rows).tolist()
    as_json = plain(
        handler.invoke(b"[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]", "application/json", None)
    )
    assert as_json.body == str(expected).encode()
    as_csv = plain(handler.invoke(b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n", "text/csv", "text/csv"))
    assert as_csv.body.decode().split() == [str(v) for v in expected]


def test_default_predict_reshapes_one_row() -> None:
    class Shape:
        def predict(self, data: np.ndarray) -> tuple[int, ...]:
            return tuple(data.shape)

    assert default_predict_fn(np.array([1.0, 2.0, 3.0]), Shape()) == (1, 3)
    assert default_predict_fn(np.ones((2, 3)), Shape()) == (2, 3)
