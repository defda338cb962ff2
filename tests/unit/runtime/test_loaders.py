"""The default model_fn: framework loaders find and load model files (no sockets)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from modelhost.runtime.loaders import ModelNotFoundError, load_default_model
from tests.fixtures.models import sklearn_iris_dir


def test_loads_model_joblib_first(tmp_path: Path) -> None:
    joblib.dump({"which": "preferred"}, tmp_path / "model.joblib")
    joblib.dump({"which": "other"}, tmp_path / "other.pkl")
    assert load_default_model(tmp_path) == {"which": "preferred"}


@pytest.mark.parametrize("name", ["clf.pkl", "clf.joblib"])
def test_loads_a_single_candidate(tmp_path: Path, name: str) -> None:
    joblib.dump([1, 2, 3], tmp_path / name)
    assert load_default_model(str(tmp_path)) == [1, 2, 3]


def test_several_candidates_are_ambiguous(tmp_path: Path) -> None:
    joblib.dump(1, tmp_path / "a.pkl")
    joblib.dump(2, tmp_path / "b.joblib")
    with pytest.raises(ValueError, match=r"a\.pkl, b\.joblib"):
        load_default_model(tmp_path)


def test_no_model_names_what_it_looked_for(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError) as caught:
        load_default_model(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "model.joblib" in message
    assert "*.pkl" in message
    assert "model_fn" in message


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_default_model(tmp_path / "nope")


def test_sklearn_iris_fixture_loads_and_predicts(tmp_path: Path) -> None:
    model = load_default_model(sklearn_iris_dir(tmp_path / "iris"))
    prediction = model.predict(np.array([[5.1, 3.5, 1.4, 0.2]]))
    assert prediction.tolist() == [0]
