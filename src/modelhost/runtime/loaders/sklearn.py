"""scikit-learn models saved with joblib: `model.joblib`, else one `*.pkl` / `*.joblib` file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

NAME = "sklearn"
PREFERRED = "model.joblib"
PATTERNS = ("*.pkl", "*.joblib")
DESCRIPTION = f"{PREFERRED}, or a single {' / '.join(PATTERNS)} file"


def find(model_dir: Path) -> Path | None:
    """The model file in `model_dir`, None when there is none; ValueError when ambiguous."""
    preferred = model_dir / PREFERRED
    if preferred.is_file():
        return preferred
    found = sorted(p for pattern in PATTERNS for p in model_dir.glob(pattern) if p.is_file())
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ValueError(
            f"several model files in {model_dir} ({names}); name one {PREFERRED} "
            "or define model_fn in code/inference.py"
        )
    return found[0] if found else None


def load(path: Path) -> Any:
    import joblib

    return joblib.load(path)
