"""The ray backend's parts that need no cluster: resources from instance types, where a node
reads model data, the head's view of a remote process, the node side's model copy and its
failure, and how the settings and the CLI pick a backend."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from modelhost.backends import Backends, create_backend, no_engine_on_ray
from modelhost.backends.images import UnsupportedImage, command_for
from modelhost.backends.local import InstanceSpec
from modelhost.backends.node import (
    Launch,
    NodeInstance,
    RemoteProcess,
    actor_resources,
    object_store_env,
    preferred_node,
)
from modelhost.cli.main import app
from modelhost.instance_types import Profile, profile_for
from modelhost.settings import Settings


def test_an_instance_type_becomes_ray_resources() -> None:
    assert actor_resources(profile_for("ml.m5.large")) == {
        "num_cpus": 2.0,
        "memory": float(8 * 2**30),
    }
    gpu = actor_resources(Profile(vcpus=4, memory_gib=16.0, gpus=1))
    assert gpu["num_gpus"] == 1.0 and gpu["num_cpus"] == 4.0


def test_a_node_reads_model_data_from_the_platforms_object_store() -> None:
    s3 = {
        "MODELHOST_OBJECTS_DIR": "/data/objects",
        "MODELHOST_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "MODELHOST_S3_ACCESS_KEY_ID": "k",
        "MODELHOST_S3_SECRET_ACCESS_KEY": "s",
    }
    assert object_store_env(s3) == (Path("/data/objects"), "http://127.0.0.1:9000", ("k", "s"))
    local = {"MODELHOST_OBJECTS_DIR": "/data/objects"}
    assert object_store_env(local) == (Path("/data/objects"), None, None)


def test_the_heads_view_of_a_remote_process() -> None:
    proc = RemoteProcess()
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.05)
    proc.ended(None, "node lost")  # lost with its node or actor: reads as killed
    proc.ended(0, "stopped")  # the first end is the one that counts
    assert proc.poll() == -9 and proc.wait(1) == -9 and proc.cause == "node lost"


def launch(tmp_path: Path, model_url: str) -> Launch:
    spec = InstanceSpec(
        endpoint="ep",
        variant="AllTraffic",
        model_dir=tmp_path / "head-copy",
        environment={},
        image=None,
        profile=profile_for("ml.m5.large"),
        log_path=tmp_path / "logs" / "i.log",
        model_data_url=model_url,
    )
    env = {"MODELHOST_OBJECTS_DIR": str(tmp_path / "objects")}
    return Launch(spec, ["serve"], env, "us-east-1", 2**30, 2**30)


def test_a_node_makes_its_own_copy_of_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 100)
    node = NodeInstance(launch(tmp_path, str(model)), "127.0.0.1", [], tmp_path / "node")
    copy = node.model_dir()
    assert copy == node.work / "model" and (copy / "weights.bin").read_bytes() == b"w" * 100
    assert (tmp_path / "node" / "cache" / "models").is_dir()  # the node's own cache
    node.stop(grace=0.1)  # nothing started: only the working copy goes
    assert not node.work.exists()


def test_missing_model_data_is_a_reason_not_a_crash(tmp_path: Path) -> None:
    node = NodeInstance(launch(tmp_path, str(tmp_path / "nope")), "127.0.0.1", [], tmp_path / "n")
    answer = node.start()
    assert answer.keys() == {"error"}
    assert answer["error"].startswith("Could not get the model data on the node:")
    assert "nope" in answer["error"] and node.process is None


def test_the_local_backend_stays_the_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.backend == "local" and settings.ray_address is None
    backend = create_backend(settings, {})
    assert isinstance(backend, Backends) and backend.local_model_copy


def test_settings_and_cli_name_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHOST_BACKEND", "ray")
    monkeypatch.setenv("MODELHOST_RAY_ADDRESS", "10.0.0.5:6379")
    settings = Settings()
    assert (settings.backend, settings.ray_address) == ("ray", "10.0.0.5:6379")
    monkeypatch.setenv("MODELHOST_BACKEND", "kubernetes")
    with pytest.raises(ValidationError):
        Settings()


def test_serve_refuses_an_unknown_backend_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["serve", "--backend", "nomad", "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "backend" in result.output and "'local' or 'ray'" in result.output
    assert not (tmp_path / "d").exists()


def test_a_variants_instances_prefer_the_node_with_fewest_of_them() -> None:
    alive = ["a", "b", "c"]
    assert preferred_node(alive, {"a": 1, "b": 1}, {"a": 1, "b": 3}) == "c"
    assert preferred_node(alive, {"a": 1, "b": 1, "c": 1}, {"a": 2, "b": 1, "c": 4}) == "b"
    assert preferred_node(["b"], {"a": 0}, {}) == "b"  # "a" died: only the alive count
    assert preferred_node([], {}, {}) is None


def test_a_container_image_on_the_ray_backend_fails_saying_why() -> None:
    with pytest.raises(UnsupportedImage) as failed:
        command_for("my-registry/my-image:1", no_engine_on_ray)
    assert "none answered (tried the ray backend): it runs no container images" in str(failed.value)
