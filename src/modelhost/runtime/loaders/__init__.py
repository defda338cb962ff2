"""Default `model_fn`: the first framework loader that finds a model file in the model dir.

Each loader module offers `NAME`, `DESCRIPTION` (what it looks for), `find(model_dir)` and
`load(path)`. Add a framework by adding a module and listing it in `LOADERS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from modelhost.runtime.loaders import sklearn


class Loader(Protocol):
    NAME: str
    DESCRIPTION: str

    def find(self, model_dir: Path) -> Path | None: ...

    def load(self, path: Path) -> Any: ...


LOADERS: tuple[Loader, ...] = (sklearn,)


class ModelNotFoundError(FileNotFoundError):
    """No loader recognised a model file in the model directory."""


def load_default_model(model_dir: str | Path) -> Any:
    """Load the model in `model_dir` with the first loader that finds one."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelNotFoundError(f"model directory {directory} does not exist")
    for loader in LOADERS:
        path = loader.find(directory)
        if path is not None:
            return loader.load(path)
    looked_for = "; ".join(f"{loader.NAME}: {loader.DESCRIPTION}" for loader in LOADERS)
    raise ModelNotFoundError(
        f"no model file found in {directory} (looked for {looked_for}); "
        "define model_fn in code/inference.py to load other formats"
    )
