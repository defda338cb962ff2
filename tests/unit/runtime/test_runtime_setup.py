"""What the runtime does before the model loads: configuration, code dir, requirements keys."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import pytest

from modelhost.runtime.__main__ import (
    ConfigError,
    log_level,
    model_server_timeout_s,
    worker_count,
)
from modelhost.runtime.requirements import (
    PYTHON_TAG,
    ensure_requirements,
    env_key,
    envs_dir,
    pip_command,
    pip_error,
)
from modelhost.runtime.sourcedir import SourceDirError, region, resolve_code_dir


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, logging.INFO),
        ("", logging.INFO),
        ("10", logging.DEBUG),
        ("20", logging.INFO),
        ("30", logging.WARNING),
        ("40", logging.ERROR),
        ("debug", logging.DEBUG),
        ("WARNING", logging.WARNING),
        ("Error", logging.ERROR),
    ],
)
def test_log_level(value: str | None, level: int) -> None:
    env = {} if value is None else {"SAGEMAKER_CONTAINER_LOG_LEVEL": value}
    assert log_level(env) == level


def test_bad_log_level() -> None:
    with pytest.raises(ConfigError, match="SAGEMAKER_CONTAINER_LOG_LEVEL"):
        log_level({"SAGEMAKER_CONTAINER_LOG_LEVEL": "loud"})


def test_workers_and_timeout() -> None:
    assert worker_count({}) == 1
    assert worker_count({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}) == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ConfigError, match="SAGEMAKER_MODEL_SERVER_WORKERS"):
            worker_count({"SAGEMAKER_MODEL_SERVER_WORKERS": bad})
    assert model_server_timeout_s({}) == 60
    assert model_server_timeout_s({"SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}) == 600


# --- requirements ----------------------------------------------------------------------------


def test_pip_error_quotes_the_last_error_line() -> None:
    output = (
        "Looking in indexes: https://example.invalid\n"
        "ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9\n"
        "ERROR: No matching distribution found for nosuchpkg==9.9\n"
    )
    assert pip_error(output) == "ERROR: No matching distribution found for nosuchpkg==9.9"
    assert pip_error("something odd\n\n") == "something odd"
    assert pip_error("") == "pip printed nothing"


def test_env_key_is_the_content_digest_per_python() -> None:
    key = env_key(b"numpy\n")
    assert key.endswith(f"-{PYTHON_TAG}")
    assert len(key.split("-")[0]) == 64
    assert key == env_key(b"numpy\n")
    assert key != env_key(b"numpy \n")


def test_envs_dir_default_and_configured(tmp_path: Path) -> None:
    assert envs_dir({"MODELHOST_ENVS_DIR": str(tmp_path)}) == tmp_path
    assert envs_dir({}).name == "modelhost-envs"


def test_pip_command_targets_the_directory(tmp_path: Path) -> None:
    argv = pip_command("/usr/bin/python3", tmp_path / "t", tmp_path / "requirements.txt")
    assert argv[:4] == ["/usr/bin/python3", "-m", "pip", "install"]
    assert argv[argv.index("--target") + 1] == str(tmp_path / "t")
    assert argv[-2:] == ["-r", str(tmp_path / "requirements.txt")]


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
def test_nothing_to_install(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "requirements.txt").write_text(content)
    assert ensure_requirements(tmp_path, tmp_path / "envs") is None
    assert not (tmp_path / "envs").exists()


def test_an_installed_directory_is_reused_without_pip(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("anything==1.0\n")
    done = tmp_path / "envs" / env_key(b"anything==1.0\n")
    done.mkdir(parents=True)
    assert ensure_requirements(tmp_path, tmp_path / "envs", python="/nonexistent") == done


# --- SAGEMAKER_SUBMIT_DIRECTORY --------------------------------------------------------------


def _sourcedir_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_default_code_dir(tmp_path: Path) -> None:
    assert resolve_code_dir({}, tmp_path, tmp_path / "c") == tmp_path / "code"


@pytest.mark.parametrize("value", ["/opt/ml/model/code", "file:///opt/ml/model/code"])
def test_container_paths_map_into_the_model_dir(tmp_path: Path, value: str) -> None:
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": value}
    assert resolve_code_dir(env, tmp_path, tmp_path / "c") == tmp_path / "code"


def test_local_directory_and_archive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(src)}
    assert resolve_code_dir(env, tmp_path / "model", tmp_path / "c") == src
    archive = tmp_path / "sourcedir.tar.gz"
    archive.write_bytes(_sourcedir_tar({"inference.py": b"X = 1\n"}))
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": f"file://{archive}"}
    code = resolve_code_dir(env, tmp_path / "model", tmp_path / "c")
    assert (code / "inference.py").read_text() == "X = 1\n"
    assert code.parent == tmp_path / "c"
    assert resolve_code_dir(env, tmp_path / "model", tmp_path / "c") == code  # extracted once


def test_missing_local_directory(tmp_path: Path) -> None:
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(tmp_path / "nope")}
    with pytest.raises(SourceDirError, match="no such directory"):
        resolve_code_dir(env, tmp_path / "model", tmp_path / "c")


def test_s3_sourcedir_from_the_local_object_store(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    key = objects / "bucket" / "job" / "source" / "sourcedir.tar.gz"
    key.parent.mkdir(parents=True)
    key.write_bytes(_sourcedir_tar({"inference.py": b"Y = 2\n", "lib/helper.py": b""}))
    env = {
        "SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/job/source/sourcedir.tar.gz",
        "MODELHOST_OBJECTS_DIR": str(objects),
    }
    code = resolve_code_dir(env, tmp_path / "model", tmp_path / "cache")
    assert (code / "inference.py").read_text() == "Y = 2\n"
    assert (code / "lib" / "helper.py").is_file()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/src.tar.gz"}, "no object store"),
        ({"SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/prefix/"}, "not a prefix"),
        (
            {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://bucket/none.tar.gz", "MODELHOST_OBJECTS_DIR": "."},
            "NoSuch",
        ),
    ],
)
def test_s3_sourcedir_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceDirError, match=message):
        resolve_code_dir(env, tmp_path / "model", tmp_path / "cache")


def test_unsafe_sourcedir_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_sourcedir_tar({"../escape.py": b""}))
    env = {"SAGEMAKER_SUBMIT_DIRECTORY": str(archive)}
    with pytest.raises(SourceDirError, match="escapes"):
        resolve_code_dir(env, tmp_path / "model", tmp_path / "cache")
    assert not (tmp_path / "escape.py").exists()
    assert not any(p.name.startswith("sourcedir-") for p in (tmp_path / "cache").iterdir())


def test_region_order() -> None:
    assert region({}) == "us-east-1"
    assert region({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-west-2"}) == "eu-west-2"
    assert region({"SAGEMAKER_REGION": "ap-south-1", "AWS_REGION": "eu-west-2"}) == "ap-south-1"
