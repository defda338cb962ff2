"""The pure container decisions: which images need an engine, the failure reason without one,
the engine command lines, and what a multi-model container needs (its label, its models'
mount; no engine is run here)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from modelhost.backends import images
from modelhost.backends.containers import MODELS_MOUNT, Engine, EngineFinder, container_name
from modelhost.backends.images import NoEngine, UnsupportedImage, command_for
from modelhost.backends.local import InstanceSpec
from modelhost.instance_types import Profile
from modelhost.multimodel.spec import LABEL_KEY, undeclared
from modelhost.publish import MultiModelSpec

IMAGE = "registry.example.com/team/custom-server:1.0"


def _no_engine() -> str:
    raise NoEngine(
        "docker info: Cannot connect to the Docker daemon; podman: not installed",
        ["docker", "podman"],
    )


def test_container_image_without_engine_names_the_engines_and_the_reason() -> None:
    with pytest.raises(UnsupportedImage) as err:
        command_for(IMAGE, probe=_no_engine)
    assert str(err.value).startswith(
        f"Image {IMAGE} needs a container engine; none answered (tried docker, podman): "
        "docker info: Cannot connect to the Docker daemon; podman: not installed."
    )


def test_container_image_with_an_engine_runs_serve() -> None:
    command = command_for(IMAGE, probe=lambda: "podman")
    assert command.container_image == IMAGE and command.engine == "podman"
    assert command.argv == [IMAGE, "serve"] and not command.builtin


@pytest.mark.parametrize(
    "image", [None, "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-inference:2.1"]
)
def test_builtin_and_framework_images_never_ask_for_an_engine(image: str | None) -> None:
    assert command_for(image, probe=_no_engine).builtin


def test_local_paths_never_ask_for_an_engine(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert command_for(str(exe), probe=_no_engine).container_image is None
    with pytest.raises(UnsupportedImage, match="not an executable"):
        command_for(str(tmp_path / "missing"), probe=_no_engine)


def test_finder_reports_a_missing_engine_and_remembers_it() -> None:
    finder = EngineFinder("/nonexistent/engine")
    with pytest.raises(NoEngine) as err:
        finder()
    assert err.value.tried == ("/nonexistent/engine",)
    assert "not installed" in err.value.reason
    with pytest.raises(NoEngine) as again:
        finder()
    assert again.value is err.value


def _spec(tmp_path: Path) -> InstanceSpec:
    return InstanceSpec(
        endpoint="ep",
        variant="AllTraffic",
        model_dir=tmp_path,
        environment={"A": "1", "B": "x=y"},
        image=IMAGE,
        profile=Profile(vcpus=1, memory_gib=0.5),
        log_path=tmp_path / "i.log",
    )


def test_run_command_follows_the_container_contract(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    argv = Engine("docker", "/usr/bin/docker", podman=False).run_argv(
        spec, IMAGE, "127.0.0.1", 4321
    )
    assert argv[:3] == ["/usr/bin/docker", "run", "--rm"]
    assert argv[-2:] == [IMAGE, "serve"]
    pairs = list(itertools.pairwise(argv))
    assert ("--name", container_name(spec)) in pairs and container_name(spec).startswith("mh-i-")
    assert ("-v", f"{tmp_path.resolve()}:/opt/ml/model:ro") in pairs
    assert ("-p", "127.0.0.1:4321:8080") in pairs
    assert ("--cpus", "1") in pairs and ("--memory", "512m") in pairs
    assert ("-e", "A=1") in pairs and ("-e", "B=x=y") in pairs
    assert not any("SAGEMAKER_BIND_TO_PORT" in a for a in argv)
    assert "-d" not in argv  # attached: the run process carries the container's log


def test_podman_gets_runc_and_ignore_flags(tmp_path: Path) -> None:
    engine = Engine("podman", "/usr/bin/podman", podman=True)
    argv = engine.run_argv(_spec(tmp_path), IMAGE, "127.0.0.1", 1)
    assert "--ulimit" in argv and "nofile=1024:1024" in argv
    assert engine.stop_argv("mh-x", 2.5)[-4:] == ["stop", "-t", "3", "mh-x"]
    assert engine.rm_argv(["mh-x"])[-4:] == ["rm", "-f", "--ignore", "mh-x"]
    assert Engine("docker", "docker", podman=False).rm_argv(["mh-x"]) == [
        "docker",
        "rm",
        "-f",
        "mh-x",
    ]


def test_exists_lists_exactly_one_container_by_name() -> None:
    argv = Engine("podman", "/usr/bin/podman", podman=True).exists_argv("mh-i-1")
    assert argv[-6:] == ["ps", "-a", "--filter", "name=^mh-i-1$", "--format", "{{.Names}}"]


def test_multi_model_instance_gets_its_models_mounted_read_only(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    cache = tmp_path / "cache" / "multimodel"
    spec.mounts = ((str(cache), MODELS_MOUNT),)
    argv = Engine("podman", "/usr/bin/podman", podman=True).run_argv(spec, IMAGE, "127.0.0.1", 1)
    pairs = list(itertools.pairwise(argv))
    assert ("-v", f"{cache.resolve()}:/opt/ml/models:ro") in pairs
    assert ("-v", f"{tmp_path.resolve()}:/opt/ml/model:ro") in pairs


def test_labels_are_read_with_image_inspect() -> None:
    argv = Engine("docker", "docker", podman=False).labels_argv(IMAGE)
    assert argv == ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", IMAGE]


def test_the_url_a_container_gets_is_the_mounted_path() -> None:
    mounted = MultiModelSpec("s3://b/p/", 1, mount=("/var/cache/mh/multimodel", MODELS_MOUNT))
    assert mounted.instance_path("/var/cache/mh/multimodel/ab12") == "/opt/ml/models/ab12"
    assert mounted.instance_path("/srv/models/a") is None  # not under the mount
    assert MultiModelSpec("s3://b/p/", 1).instance_path("/srv/models/a") == "/srv/models/a"


@pytest.mark.parametrize(
    ("labels", "declared"),
    [
        ({LABEL_KEY: "true"}, True),
        ({LABEL_KEY: "True"}, True),
        ({LABEL_KEY: "false"}, False),
        ({"org.opencontainers.image.title": "x"}, False),
        ({}, False),
    ],
)
def test_multi_model_image_needs_the_label(labels: dict[str, str], declared: bool) -> None:
    previous = images._label_reader
    asked: list[str] = []

    def reader(image: str) -> dict[str, str]:
        asked.append(image)
        return labels

    images.use_label_reader(reader)
    try:
        why = undeclared(IMAGE, command_for(IMAGE, probe=lambda: "podman"))
    finally:
        images.use_label_reader(previous)
    assert asked == [IMAGE]
    if declared:
        assert why is None
    else:
        assert why == (
            f"Your image {IMAGE} does not contain required "
            "com.amazonaws.sagemaker.capabilities.multi-models=true label(s)."
        )


def test_multi_model_image_without_a_label_reader_fails_clearly() -> None:
    previous = images._label_reader
    images.use_label_reader(None)
    try:
        with pytest.raises(UnsupportedImage, match="needs a container engine to read its labels"):
            undeclared(IMAGE, command_for(IMAGE, probe=lambda: "podman"))
    finally:
        images.use_label_reader(previous)
