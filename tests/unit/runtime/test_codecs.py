"""Default decoders/encoders and Accept negotiation (no sockets)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from modelhost.runtime import codecs


def test_base_type_drops_parameters_and_case() -> None:
    assert codecs.base_type("Application/JSON; charset=utf-8") == "application/json"
    assert codecs.is_text("text/csv; header=absent")
    assert not codecs.is_text("application/x-npy")


def test_decode_json_gives_an_array() -> None:
    decoded = codecs.decode("[[1, 2], [3, 4]]", "application/json")
    assert isinstance(decoded, np.ndarray)
    assert decoded.tolist() == [[1, 2], [3, 4]]


def test_decode_csv_rows() -> None:
    decoded = codecs.decode("1,2,3\n4,5,6\n", "text/csv")
    assert decoded.shape == (2, 3)
    assert decoded[1, 2] == 6.0


def test_decode_npy_round_trip() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    stream = io.BytesIO()
    np.save(stream, array)
    decoded = codecs.decode(stream.getvalue(), "application/x-npy")
    assert np.array_equal(decoded, array)
    assert decoded.dtype == np.float32


def test_decode_npy_refuses_pickles() -> None:
    stream = io.BytesIO()
    np.save(stream, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        codecs.decode(stream.getvalue(), "application/x-npy")


def test_decode_jsonlines_skips_blank_lines() -> None:
    decoded = codecs.decode("[1, 2]\n\n[3, 4]\n", "application/jsonlines")
    assert decoded.tolist() == [[1, 2], [3, 4]]


def test_decode_accepts_bytes_for_text_types() -> None:
    assert codecs.decode(b"[1]", "application/json").tolist() == [1]


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", None])
def test_decode_unsupported_type_is_415_naming_types(content_type: str | None) -> None:
    with pytest.raises(codecs.UnsupportedContentType) as caught:
        codecs.decode(b"x", content_type)
    assert caught.value.status == 415
    assert str(content_type or "(none)") in caught.value.message
    for supported in ("application/json", "text/csv", "application/x-npy"):
        assert supported in caught.value.message


def test_encode_json_converts_numpy() -> None:
    body, media = codecs.encode({"p": np.float32(0.5), "a": np.arange(2)}, "application/json")
    assert media == "application/json"
    assert body == b'{"p": 0.5, "a": [0, 1]}'


def test_encode_json_array() -> None:
    assert codecs.encode(np.array([1, 2]), "application/json")[0] == b"[1, 2]"


def test_encode_json_unknown_object_is_type_error() -> None:
    with pytest.raises(TypeError, match="object"):
        codecs.encode(object(), "application/json")


def test_encode_csv() -> None:
    body, media = codecs.encode(np.array([[1, 2], [3, 4]]), "text/csv")
    assert (body, media) == (b"1,2\n3,4\n", "text/csv")


def test_encode_npy_round_trip() -> None:
    body, media = codecs.encode(np.array([1.5, 2.5]), "application/x-npy")
    assert media == "application/x-npy"
    assert np.load(io.BytesIO(body)).tolist() == [1.5, 2.5]


def test_encode_jsonlines() -> None:
    body, _ = codecs.encode(np.array([[1, 2], [3, 4]]), "application/jsonlines")
    assert body == b"[1, 2]\n[3, 4]\n"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("text/csv", "text/csv"),
        ("text/html, text/csv;q=0.9, application/json", "text/csv"),
        ("application/x-npy; q=0.5", "application/x-npy"),
        ("text/html, */*;q=0.1", "application/json"),
        ("TEXT/CSV", "text/csv"),
    ],
)
def test_negotiate(accept: str | None, expected: str) -> None:
    assert codecs.negotiate(accept) == expected


def test_negotiate_any_uses_the_configured_default() -> None:
    assert codecs.negotiate("*/*", default="text/csv") == "text/csv"


def test_negotiate_unsupported_is_406_naming_types() -> None:
    with pytest.raises(codecs.UnsupportedAccept) as caught:
        codecs.negotiate("text/html, image/png")
    assert caught.value.status == 406
    assert "text/html, image/png" in caught.value.message
    assert "application/json" in caught.value.message


def test_negotiate_unsupported_default_is_406() -> None:
    with pytest.raises(codecs.UnsupportedAccept):
        codecs.negotiate(None, default="text/plain")


def test_decode_csv_one_column_is_one_row_per_line() -> None:
    rows = codecs.decode("1\n5\n10\n", "text/csv")
    assert rows.shape == (3, 1)
    assert codecs.decode("1,2,3", "text/csv").shape == (1, 3)
