"""scikit-learn models saved with joblib: `model.joblib`, else one `*.pkl` / `*.joblib` file.

The generic default handlers serve them (`model.predict(array)`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelhost.runtime.loaders._imports import require

NAME = "sklearn"
MODULE = "joblib"
PACKAGE = "scikit-learn"


def load(path: Path) -> Any:
    joblib = require(MODULE, "joblib")
    return joblib.load(path)


def is_model(model: Any) -> bool:
    return False  # served by the generic defaults


def handlers(default_accept: str) -> dict[str, Callable[..., Any]]:
    return {}
