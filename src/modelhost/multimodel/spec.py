"""A multi-model variant's ``MultiModelSpec`` (what the router needs), from its container, and
whether its server declares the MMS container API.

The built-in server always does. A container image declares it with the Docker label
``com.amazonaws.sagemaker.capabilities.multi-models=true`` (read with the engine's ``image
inspect``); a BYO executable, with the same
line in a ``labels`` file beside it (``<dir>/labels`` for an ``Image`` directory holding
``serve``, ``<executable>.labels`` for an executable).
"""

from __future__ import annotations

from pathlib import Path

from modelhost.backends.images import Command, image_labels
from modelhost.instance_types import Profile
from modelhost.publish import MultiModelSpec
from modelhost.settings import Settings
from modelhost.state.records import DeployedContainer

LABEL_KEY = "com.amazonaws.sagemaker.capabilities.multi-models"
MULTI_MODELS_LABEL = f"{LABEL_KEY}=true"
# What a multi-model container is told (CONTRACT.md section 4).
MULTI_MODEL_ENV = {"SAGEMAKER_MULTI_MODEL": "true"}
# Of an instance type's memory, the share models may fill (the rest: the server, the OS).
BUDGET_SHARE = 0.8


def multi_model_spec(
    container: DeployedContainer, profile: Profile, settings: Settings
) -> MultiModelSpec | None:
    """None for a single-model container."""
    if not container.multi_model:
        return None
    budget = settings.mme_memory_budget_bytes
    if budget is None:
        budget = int(profile.memory_gib * 2**30 * BUDGET_SHARE)
    return MultiModelSpec(container.model_data_url or "", budget, container.model_cache)


def undeclared(image: str | None, command: Command) -> str | None:
    """Why ``image`` (run as ``command``) cannot serve a multi-model endpoint (None: it can).
    A container image's labels are read with the engine (blocks: run it in a thread);
    UnsupportedImage when they cannot be."""
    if command.builtin or image is None:
        return None
    if command.container_image is not None:
        labels = image_labels(command.container_image)
        if labels.get(LABEL_KEY, "").strip().lower() == "true":
            return None
        return f"Your image {image} does not contain required {MULTI_MODELS_LABEL} label(s)."
    if not Path(image).is_absolute():
        return None
    path = Path(image)
    labels_file = path / "labels" if path.is_dir() else path.with_name(path.name + ".labels")
    try:
        lines = {line.strip() for line in labels_file.read_text().splitlines()}
    except OSError:
        lines = set()
    if MULTI_MODELS_LABEL in lines:
        return None
    return (
        f"Your image {image} does not contain required {MULTI_MODELS_LABEL} label(s) (for an "
        f"executable: a line in {labels_file})."
    )
