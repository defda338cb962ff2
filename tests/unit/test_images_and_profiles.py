from __future__ import annotations

import sys
from pathlib import Path

import pytest

from modelhost.backends.images import UnsupportedImage, command_for, is_framework_image
from modelhost.instance_types import Profile, profile_for


@pytest.mark.parametrize(
    "image",
    [
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.1-cpu-py310",
        "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1",
    ],
)
def test_framework_images_use_the_builtin_server(image: str) -> None:
    assert is_framework_image(image)
    command = command_for(image)
    assert command.builtin and command.argv[:3] == [sys.executable, "-m", "modelhost.runtime"]


def test_no_image_uses_the_builtin_server() -> None:
    assert command_for(None).builtin


def test_executable_image_runs_with_serve(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert command_for(str(exe)).argv == [str(exe), "serve"]
    (tmp_path / "serve").write_text("#!/bin/sh\n")
    (tmp_path / "serve").chmod(0o755)
    assert command_for(str(tmp_path)).argv == [str(tmp_path / "serve")]


def test_other_images_are_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedImage, match="not a SageMaker framework image"):
        command_for("my-registry.local/custom:latest")


def test_profiles() -> None:
    assert profile_for("ml.m5.large") == Profile(2, 8)
    assert profile_for("ml.g5.xlarge").gpus == 1
    assert profile_for("ml.m7i.4xlarge") == Profile(16, 64.0)  # derived from the size
