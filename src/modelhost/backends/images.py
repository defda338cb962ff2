"""Which server runs an instance, decided from the container's Image (pure).

- no Image, or an official SageMaker framework image URI -> the built-in model server;
- an absolute path to an executable, or a directory holding ``serve`` -> that program, run as
  ``<program> serve`` (bring-your-own server in any language);
- anything else needs a container engine, which the local backend does not have.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

# Repositories of the SageMaker framework images whose serving stack the built-in server mirrors.
FRAMEWORK_REPOS = (
    "sagemaker-scikit-learn",
    "sagemaker-xgboost",
    "pytorch-inference",
    "tensorflow-inference",
    "mxnet-inference",
    "huggingface-pytorch-inference",
    "huggingface-tensorflow-inference",
    "sagemaker-inference-pytorch",
    "sagemaker-sklearn",
    "modelhost/builtin",
)


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    builtin: bool


class UnsupportedImage(Exception):
    pass


def is_framework_image(image: str) -> bool:
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return any(repo == r or repo.startswith(r) for r in FRAMEWORK_REPOS) or image.startswith(
        "modelhost/builtin"
    )


def command_for(image: str | None) -> Command:
    if not image or is_framework_image(image):
        return Command([sys.executable, "-m", "modelhost.runtime", "serve"], builtin=True)
    path = Path(image)
    if path.is_absolute():
        if path.is_dir() and os.access(path / "serve", os.X_OK):
            return Command([str(path / "serve")], builtin=False)
        if path.is_file() and os.access(path, os.X_OK):
            return Command([str(path), "serve"], builtin=False)
        raise UnsupportedImage(
            f"Image {image} is not an executable file or a directory with serve."
        )
    raise UnsupportedImage(
        f"Image {image} is not a SageMaker framework image and modelhost runs instances as "
        "local processes: use a framework image URI (or none) for the built-in model server, "
        "or the absolute path of an executable that serves /ping and /invocations."
    )
