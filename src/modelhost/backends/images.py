"""Which server runs an instance, decided from the container's Image (pure).

- no Image, or an official SageMaker framework image URI -> the built-in model server;
- an absolute path to an executable, or a directory holding ``serve`` -> that program, run as
  ``<program> serve`` (bring-your-own server in any language);
- anything else names a container image, run by a container engine (docker or podman) as
  ``<engine> run <image> serve`` (backends/containers.py), when one answers.

Whether an engine answers is asked through a probe: the server installs one
(``use_engine_probe``) when it builds its backends; without one (unit tests, tools) there is none.
An image's labels (a multi-model image declares itself with one) are read through a label reader
installed the same way (``use_label_reader``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
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
    # Set when a container engine runs the image: argv is then [image, "serve"], the engine's
    # name is in ``engine`` and backends/containers.py builds the real command line.
    container_image: str | None = None
    engine: str | None = None


class UnsupportedImage(Exception):
    pass


class NoEngine(Exception):
    """No container engine answered; ``tried`` names the engines asked."""

    def __init__(self, reason: str, tried: Sequence[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tried = tuple(tried)


# Returns the name of a container engine that answers, or raises NoEngine.
EngineProbe = Callable[[], str]
DEFAULT_ENGINES = ("docker", "podman")

_engine_probe: EngineProbe | None = None

# Returns a container image's labels (read with the engine), or raises UnsupportedImage saying
# why they cannot be read.
LabelReader = Callable[[str], dict[str, str]]

_label_reader: LabelReader | None = None


def use_engine_probe(probe: EngineProbe | None) -> None:
    """Install (or remove, with None) the probe ``command_for`` asks for container images."""
    global _engine_probe
    _engine_probe = probe


def use_label_reader(reader: LabelReader | None) -> None:
    """Install (or remove, with None) the reader ``image_labels`` asks."""
    global _label_reader
    _label_reader = reader


def image_labels(image: str) -> dict[str, str]:
    """The labels of the container image ``image``; UnsupportedImage when none can be read."""
    if _label_reader is None:
        raise UnsupportedImage(
            f"Image {image} needs a container engine to read its labels; none is configured."
        )
    return _label_reader(image)


def is_framework_image(image: str) -> bool:
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return any(repo == r or repo.startswith(r) for r in FRAMEWORK_REPOS) or image.startswith(
        "modelhost/builtin"
    )


def command_for(image: str | None, probe: EngineProbe | None = None) -> Command:
    """The command for ``image``; ``probe`` (default: the installed one) finds an engine."""
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
    probe = probe or _engine_probe
    try:
        if probe is None:
            raise NoEngine("no container engine is configured", DEFAULT_ENGINES)
        engine = probe()
    except NoEngine as exc:
        raise UnsupportedImage(
            f"Image {image} needs a container engine; none answered (tried "
            f"{', '.join(exc.tried)}): {exc.reason}. It is not a SageMaker framework image "
            "(those, or no image, run on the built-in model server) nor the absolute path of an "
            "executable that serves /ping and /invocations."
        ) from exc
    return Command([image, "serve"], builtin=False, container_image=image, engine=engine)
